"""Disk images for tests of what the agent deletes or keeps: real qcow2 files made with qemu-img,
and the two kinds of damage ``qemu-img check`` tells apart (corruption, exit 2; leaks, exit 3).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

MIB = 1024 * 1024
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
needs_qemu_io = pytest.mark.skipif(shutil.which("qemu-io") is None, reason="needs qemu-io")
_L1_TABLE_OFFSET, _REFCOUNT_TABLE_OFFSET = 40, 48  # byte positions in the qcow2 header


def make_image(path: Path, size: int = 4 * MIB, disk_format: str = "qcow2") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", disk_format, str(path), str(size)],
                   check=True)
    return path


def _zero_entry(path: Path, header_field: int) -> None:
    with path.open("r+b") as f:
        (offset,) = struct.unpack(">Q", f.read(header_field + 8)[header_field:])
        f.seek(offset)
        f.write(b"\0" * 8)


def corrupt(path: Path) -> Path:
    """Zero the first refcount-table entry: every cluster then has refcount 0 (check exits 2)."""
    _zero_entry(path, _REFCOUNT_TABLE_OFFSET)
    return path


def leak(path: Path) -> Path:
    """Write a cluster, then drop its L1 entry: its clusters leak (check exits 3)."""
    subprocess.run(["qemu-io", "-c", "write 0 64k", str(path)], check=True, capture_output=True)
    _zero_entry(path, _L1_TABLE_OFFSET)
    return path
