"""What this agent made or moved, per migration id, kept on disk: the only things it may remove.

A caller with the coordinator's key can still name any path or VM in ``migration.cleanup`` or
``storage.abort``; NATS permissions cannot tell a right request from a harmful one. So the agent
writes down, before it acts, every file it creates (``prepare``'s copy targets, a storage move's
copies), the domain it expects to arrive (``prepare``: name and UUID, absent when prepared), and
the disks it sent away (``start`` with copies; usable once libvirt reported that migration done).
Clean-up acts only on what an entry names. The entries are files in the agent's state directory
(``--state-dir``), written atomically, so a restarted agent still knows what is its own.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import msgspec

from baton.schemas.job import MIGRATION_ID_PATTERN

# An entry outlives any migration by far: kept this long, then pruned when the agent starts.
KEEP_S = 30 * 24 * 3600


class Entry(msgspec.Struct, kw_only=True):
    migration_id: str
    vm: str
    # Destination: the domain prepare expects to arrive (it was not on this host then).
    incoming_uuid: str | None = None
    created_paths: list[str] = []  # files this agent created for the job
    # Source: disks a copy migration sent away, deletable once the migration completed.
    sent_paths: list[str] = []
    sent_completed: bool = False
    # Source: where the domain went and which one it was, so that after a restart of this agent
    # the completion can be proven from both hosts' libvirt (the migrate call's answer is lost).
    sent_to: str | None = None
    sent_uuid: str | None = None


_decoder = msgspec.json.Decoder(Entry)
_MIGRATION_ID = re.compile(MIGRATION_ID_PATTERN)


class Ledger:
    """Blocking file I/O: call its methods in a worker thread (``asyncio.to_thread``)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    @property
    def directory(self) -> Path:
        return self._dir

    def open(self) -> None:
        """Make the directory (owner only) and prune entries older than :data:`KEEP_S`."""
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        horizon = time.time() - KEEP_S
        for path in self._dir.glob("*.json"):
            if path.stat().st_mtime < horizon:
                path.unlink(missing_ok=True)

    def get(self, migration_id: str) -> Entry | None:
        path = self._path(migration_id)
        try:
            return _decoder.decode(path.read_bytes())
        except FileNotFoundError:
            return None

    def put(self, entry: Entry) -> None:
        """Replace the entry atomically and durably (a crash leaves the old one or the new one)."""
        path = self._path(entry.migration_id)
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as out:
            out.write(msgspec.json.encode(entry))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        directory = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _path(self, migration_id: str) -> Path:
        # Migration ids are validated on decode; re-check, because this names a file.
        if not _MIGRATION_ID.fullmatch(migration_id):
            raise ValueError(f"not a migration id: {migration_id!r}")
        return self._dir / f"{migration_id}.json"

