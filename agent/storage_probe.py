"""Path facts and the shared-storage token probe (plain filesystem calls; run in a thread).

Two hosts prove they see the same storage like this: the source's agent writes a random token
into ``.baton-probe-<token>`` beside a disk, the destination's agent reads that file back and
compares, and the source removes it. Only that file name pattern is ever written or removed,
a write never replaces a file and no token operation follows a symlink.

A coordinator that dies between the write and the removal leaves the token file behind.
:func:`sweep_stale_tokens` removes such leftovers (at agent start, then every
:data:`SWEEP_EVERY_S`): only regular files whose whole name is a token file's, and only once
they are older than :data:`STALE_TOKEN_S` (a probe takes seconds), so a probe in flight, on this
host or another one seeing the same storage, is never disturbed.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from baton.schemas.agent import PathProbe, TokenAction, TokenOp, TokenResult

TOKEN_PREFIX = ".baton-probe-"
_TOKEN_NAME = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{8,64}")  # schemas ProbeToken
STALE_TOKEN_S = 600.0
SWEEP_EVERY_S = 600.0


def probe_path(path: str) -> PathProbe:
    p = Path(path)
    exists = p.exists()
    return PathProbe(
        path=path,
        exists=exists,
        is_dir=p.is_dir(),
        readable=exists and os.access(p, os.R_OK),
        writable=os.access(p if exists else p.parent, os.W_OK),
        size_bytes=p.stat().st_size if exists and p.is_file() else 0,
        fs_free_bytes=_free_bytes(p),
        fs_type=filesystem_type(p),
    )


def token_path(op: TokenOp) -> Path:
    return Path(op.beside).parent / f"{TOKEN_PREFIX}{op.token}"


def run_token_op(op: TokenOp) -> TokenResult:
    path = token_path(op)
    try:
        ok, detail = _TOKEN_ACTIONS[op.action](path, op.token)
    except OSError as exc:
        ok, detail = False, f"{exc.strerror or 'error'}: {path}"
    return TokenResult(action=op.action, token_path=str(path), ok=ok, detail=detail)


def _write(path: Path, token: str) -> tuple[bool, str]:
    # Exclusive and not through a symlink: the probe never overwrites or redirects a write.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    return True, "written"


def _read(path: Path, token: str) -> tuple[bool, str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False, "token file not found: this host does not see the same directory"
    with os.fdopen(fd, "rb") as source:
        found = source.read(len(token.encode()) + 1)  # bounded: a token file is tiny
    if found != token.encode():
        return False, "token file differs: this is not the same storage"
    return True, "token matches"


def _remove(path: Path, token: str) -> tuple[bool, str]:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return False, f"not a token file: {path}"
    path.unlink(missing_ok=True)
    return True, "removed"


_TOKEN_ACTIONS = {TokenAction.WRITE: _write, TokenAction.READ: _read, TokenAction.REMOVE: _remove}


def _existing_ancestor(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _free_bytes(p: Path) -> int:
    try:
        st = os.statvfs(_existing_ancestor(p))
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def filesystem_type(p: Path, mounts: Path = Path("/proc/self/mounts")) -> str | None:
    """The type of the filesystem holding ``p`` (longest matching mount point wins)."""
    target = str(_existing_ancestor(p).resolve())
    best, best_type = "", None
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def sweep_stale_tokens(dirs: Iterable[str], now: float,
                       older_than_s: float = STALE_TOKEN_S) -> list[str]:
    """Remove token files left in ``dirs`` (not below them) older than ``older_than_s``; the
    paths removed. Anything else, a symlink or a directory with a token's name included, stays."""
    removed = []
    for directory in sorted(set(dirs)):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # a pool directory that went away: nothing to sweep there
        for entry in entries:
            if not _TOKEN_NAME.fullmatch(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < older_than_s:
                    continue
                os.unlink(entry.path)
            except OSError:
                continue  # gone meanwhile, or not ours to remove: the next sweep sees again
            removed.append(entry.path)
    return removed
