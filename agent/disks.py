"""Disk files a migration creates or leaves behind (qemu-img and the filesystem; no libvirt).

Pre-created copy targets use ``qemu-img create`` so they stay thin (a volume created through a
libvirt dir pool is fully allocated). Deleting refuses any path a defined domain still uses.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from schemas.errors import BatonError, ErrorCode
from schemas.migration import DiskPlan

QEMU_IMG_TIMEOUT_S = 60.0


def _check_target(plan: DiskPlan) -> Path:
    path = Path(plan.path)
    if not path.is_absolute():
        raise BatonError(ErrorCode.BAD_REQUEST, f"disk path must be absolute: {plan.path}")
    if path.exists():
        raise BatonError(ErrorCode.CONFLICT, f"{plan.path} already exists on this host; "
                         "refusing to overwrite it (remove it or pick another destination)")
    if not path.parent.is_dir():
        raise BatonError(ErrorCode.PRECONDITION_FAILED,
                         f"directory {path.parent} does not exist on this host")
    return path


async def create_disk(plan: DiskPlan) -> None:
    path = await asyncio.to_thread(_check_target, plan)
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "create", "-q", "-f", plan.format, str(path), str(plan.capacity_bytes),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(QEMU_IMG_TIMEOUT_S):
            _, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BatonError(ErrorCode.TIMEOUT, f"qemu-img create {plan.path} took too long") from None
    if proc.returncode != 0:
        raise BatonError(ErrorCode.HYPERVISOR,
                         f"qemu-img create {plan.path} failed: {stderr.decode().strip()}")


def delete_unused(paths: list[str], in_use: set[str]) -> tuple[list[str], list[str], list[str]]:
    """Delete each path unless a domain uses it: (deleted, kept, reasons for the kept ones)."""
    deleted, kept, reasons = [], [], []
    for path in paths:
        if os.path.realpath(path) in in_use or path in in_use:
            kept.append(path)
            reasons.append(f"{path} is still used by a domain on this host")
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            kept.append(path)
            reasons.append(f"{path} was already gone")
            continue
        except OSError as exc:
            kept.append(path)
            reasons.append(f"{path}: {exc.strerror}")
            continue
        deleted.append(path)
    return deleted, kept, reasons
