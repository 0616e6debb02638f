"""Which of the files and domains a request names are this agent's to create or remove.

Defence in depth behind NATS's permissions (see agent/ledger.py): a clean-up removes only what
this agent's ledger says it made or sent away for that migration id, and ``prepare`` creates files
only inside the directories of the host's active libvirt pools. Pure, except that the
``outside_*`` functions resolve paths on the filesystem.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from baton.agent.ledger import Entry
from baton.schemas.agent import StoragePool


def _norm(path: str) -> str:
    return os.path.normpath(path)


def own_paths(entry: Entry | None) -> tuple[set[str], set[str]]:
    """(paths this agent may delete for the entry, paths it sent away whose migration has not
    completed here)."""
    if entry is None:
        return set(), set()
    created = {_norm(p) for p in entry.created_paths}
    sent = {_norm(p) for p in entry.sent_paths}
    return (created | sent, set()) if entry.sent_completed else (created, sent)


def deletable(entry: Entry | None, migration_id: str,
              paths: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """Split a clean-up's paths: (this agent's to delete, refused, reasons for the refused)."""
    own, unfinished = own_paths(entry)
    allowed, refused, reasons = [], [], []
    for path in paths:
        if _norm(path) in own:
            allowed.append(path)
            continue
        refused.append(path)
        if _norm(path) in unfinished:
            reasons.append(f"{path} was sent away by migration {migration_id}, which has not "
                           "completed on this host: kept")
        else:
            reasons.append(f"{path} was not created by this agent for migration {migration_id}: "
                           "an agent deletes only files it made")
    return allowed, refused, reasons


def incoming_domain(entry: Entry | None, migration_id: str, vm: str) -> tuple[str | None, str]:
    """(the UUID of the domain this agent may remove for the migration, or None and why not)."""
    if entry is None or entry.incoming_uuid is None:
        return None, (f"{vm} is not a domain this host prepared to receive in migration "
                      f"{migration_id}: not removed")
    if entry.vm != vm:
        return None, (f"migration {migration_id} brings {entry.vm} here, not {vm}: "
                      f"{vm} not removed")
    return entry.incoming_uuid, ""


def pool_dirs(pools: Iterable[StoragePool]) -> list[str]:
    return [p.target_path for p in pools if p.active and p.target_path]


def outside_dirs(paths: Iterable[str], dirs: Iterable[str]) -> list[str]:
    """The paths whose directory is none of ``dirs`` (both resolved: reads the filesystem, so
    call it in a thread; a symlink cannot lead a path out of an allowed directory)."""
    allowed = {os.path.realpath(d) for d in dirs}
    return [path for path in paths if os.path.realpath(os.path.dirname(path)) not in allowed]


def outside_storage(paths: Iterable[str], pool_paths: Iterable[str],
                    disks: Iterable[str]) -> list[str]:
    """The paths that are neither a pool's directory, nor a file in one, nor one of ``disks``
    (all resolved, as in :func:`outside_dirs`)."""
    pools = {os.path.realpath(d) for d in pool_paths}
    known = {os.path.realpath(d) for d in disks}
    def inside(path: str) -> bool:
        real = os.path.realpath(path)  # a symlink in a pool cannot lead the probe out of it
        return real in pools or os.path.dirname(real) in pools or real in known
    return [path for path in paths if not inside(path)]


def outside_pools(paths: Iterable[str], pools: Iterable[StoragePool]) -> list[str]:
    """The paths whose directory is not an active pool's directory."""
    return outside_dirs(paths, pool_dirs(pools))
