"""Probe tokens a dead coordinator left behind (agent/storage_probe.py sweep_stale_tokens): only
old regular files whose whole name is a token file's go; in-flight probes and everything else
stay. Real files in a temporary directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

from baton.agent.storage_probe import STALE_TOKEN_S, TOKEN_PREFIX, sweep_stale_tokens

OLD = time.time() - STALE_TOKEN_S - 60


def make(path: Path, mtime: float = OLD) -> Path:
    path.write_text("x")
    os.utime(path, (mtime, mtime), follow_symlinks=False)
    return path


def test_only_stale_token_files_are_removed(tmp_path):
    stale = make(tmp_path / f"{TOKEN_PREFIX}abcdefgh12")
    fresh = make(tmp_path / f"{TOKEN_PREFIX}ijklmnop34", mtime=time.time() - 5)
    disk = make(tmp_path / "vm1.qcow2")
    lookalike = make(tmp_path / f"{TOKEN_PREFIX}short")  # not a token's name (8-64 chars)
    suffixed = make(tmp_path / f"{TOKEN_PREFIX}abcdefgh12.qcow2")
    target = make(tmp_path / "precious")
    link = tmp_path / f"{TOKEN_PREFIX}linklinklink"
    link.symlink_to(target)
    os.utime(link, (OLD, OLD), follow_symlinks=False)
    directory = tmp_path / f"{TOKEN_PREFIX}dirdirdirdir"
    directory.mkdir()
    os.utime(directory, (OLD, OLD))
    removed = sweep_stale_tokens([str(tmp_path), str(tmp_path)], time.time())
    assert [str(stale)] == removed
    assert all(p.exists() or p.is_symlink() for p in
               (fresh, disk, lookalike, suffixed, target, link, directory))


def test_subdirectories_and_missing_directories_are_not_swept(tmp_path):
    below = tmp_path / "sub"
    below.mkdir()
    nested = make(below / f"{TOKEN_PREFIX}abcdefgh12")
    assert [] == sweep_stale_tokens([str(tmp_path), str(tmp_path / "gone")], time.time())
    assert nested.exists()
