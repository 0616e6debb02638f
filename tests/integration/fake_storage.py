"""The files the fake agents (:mod:`tests.integration.fake_agents`) see, and the real agent's rules
for them.

:class:`FakeStorage` holds the disk files and shared-storage tokens of every fake host; a file in a
shared directory is seen by every host, any other file only by its own. :class:`HostFiles` is one
host's view: its directories are its pools' and the shared ones, and each method answers as the
real agent's filesystem code does (``agent/storage_probe.py``, ``agent/disks.py``,
``agent/storage_move.py``), with the same error codes and reasons.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from baton.agent.storage_probe import token_path
from baton.schemas.agent import PathProbe, TokenAction, TokenOp, TokenResult
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import DiskPlan
from baton.schemas.storage import DiskMove

GIB = 1024**3
SHARED = "/srv/shared"
FS_FREE_BYTES = 50 * GIB
# What `qemu-img create -f` makes without options (the real prepare runs qemu-img).
QEMU_IMG_FORMATS = frozenset({"raw", "qcow2", "qed", "vmdk", "vdi", "vpc", "vhdx"})


@dataclass
class FakeStorage:
    shared_dirs: set[str] = field(default_factory=lambda: {SHARED})
    files: dict[str, set[str]] = field(default_factory=dict)  # scope (host or "shared") -> paths
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def scope(self, host: str, path: str) -> str:
        return "shared" if os.path.dirname(path) in self.shared_dirs else host

    def exists(self, host: str, path: str) -> bool:
        return path in self.files.get(self.scope(host, path), set())

    def add(self, host: str, path: str) -> None:
        self.files.setdefault(self.scope(host, path), set()).add(path)

    def remove(self, host: str, path: str) -> None:
        self.files.get(self.scope(host, path), set()).discard(path)


class HostFiles:
    """One host's files, answered as the real agent answers; ``pool_dirs`` reads them now."""

    def __init__(self, storage: FakeStorage, host: str, pool_dirs: Callable[[], set[str]]) -> None:
        self.storage = storage
        self.host = host
        self._pool_dirs = pool_dirs

    def is_dir(self, path: str) -> bool:
        return path in self._pool_dirs() | self.storage.shared_dirs

    def exists(self, path: str) -> bool:
        return self.is_dir(path) or self.storage.exists(self.host, path)

    # --- storage.probe ----------------------------------------------------------------------

    def probe(self, path: str) -> PathProbe:
        exists = self.exists(path)
        return PathProbe(path=path, exists=exists, is_dir=self.is_dir(path), readable=exists,
                         writable=exists or self.is_dir(os.path.dirname(path)),
                         fs_free_bytes=FS_FREE_BYTES)

    def token_op(self, op: TokenOp) -> TokenResult:
        directory = os.path.dirname(op.beside)
        # One file per token, as the real agent's .baton-probe-<token>: probes of the same
        # directory at once (placement checks every host together) do not see each other's.
        where = str(token_path(op))
        key = (self.storage.scope(self.host, op.beside), where)
        if op.action == TokenAction.REMOVE:  # the real agent's unlink(missing_ok=True)
            self.storage.tokens.pop(key, None)
            return TokenResult(action=op.action, token_path=where, ok=True, detail="removed")
        if not self.is_dir(directory):
            return TokenResult(action=op.action, token_path=where, ok=False,
                               detail=f"No such file or directory: {where}")
        if op.action == TokenAction.WRITE:
            self.storage.tokens[key] = op.token
            return TokenResult(action=op.action, token_path=where, ok=True, detail="written")
        ok = self.storage.tokens.get(key) == op.token
        return TokenResult(action=op.action, token_path=where, ok=ok,
                           detail="token matches" if ok else "token file not found or differs")

    # --- migration.prepare and .cleanup -----------------------------------------------------

    def create_disks(self, plans: list[DiskPlan]) -> list[str]:
        """Create each disk in turn; if one cannot be, remove those made and raise."""
        created: list[str] = []
        try:
            for plan in plans:
                self._check_new_disk(plan)
                self.storage.add(self.host, plan.path)
                created.append(plan.path)
        except BatonError:
            for path in created:
                self.storage.remove(self.host, path)
            raise
        return created

    def _check_new_disk(self, plan: DiskPlan) -> None:
        directory = os.path.dirname(plan.path)
        if not os.path.isabs(plan.path):
            raise BatonError(ErrorCode.BAD_REQUEST, f"disk path must be absolute: {plan.path}")
        if self.exists(plan.path):
            raise BatonError(ErrorCode.CONFLICT, f"{plan.path} already exists on this host; "
                             "refusing to overwrite it")
        if not self.is_dir(directory):
            raise BatonError(ErrorCode.PRECONDITION_FAILED,
                             f"directory {directory} does not exist on this host")
        if plan.format not in QEMU_IMG_FORMATS:
            raise BatonError(ErrorCode.HYPERVISOR, f"qemu-img create {plan.path} failed: "
                             f"Unknown file format '{plan.format}'")

    def delete_unused(self, paths: list[str],
                      in_use: set[str]) -> tuple[list[str], list[str], list[str]]:
        """Delete each path unless a domain uses it: (deleted, kept, reasons for the kept ones)."""
        deleted, kept, reasons = [], [], []
        for path in paths:
            if path in in_use:
                kept.append(path)
                reasons.append(f"{path} is still used by a domain on this host")
            elif not self.storage.exists(self.host, path):
                kept.append(path)
                reasons.append(f"{path} was already gone")
            else:
                self.storage.remove(self.host, path)
                deleted.append(path)
        return deleted, kept, reasons

    # --- storage.move -----------------------------------------------------------------------

    def destination_problems(self, moves: list[DiskMove]) -> list[str]:
        """Destination files that exist already or have no directory."""
        problems = []
        for move in moves:
            path, directory = move.destination_path, os.path.dirname(move.destination_path)
            if self.exists(path):
                problems.append(f"{path} already exists; refusing to overwrite it")
            elif not self.is_dir(directory):
                problems.append(f"directory {directory} does not exist")
        return problems
