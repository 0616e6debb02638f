"""Disk files a migration creates or leaves behind (qemu-img and the filesystem; no libvirt).

Pre-created copy targets use ``qemu-img create`` so they stay thin (a volume created through a
libvirt dir pool is fully allocated). Deleting refuses any path a defined domain still uses.
A storage move's copy is verified with ``qemu-img info -U`` and ``qemu-img check -U``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from baton.schemas.agent import DomainInfo
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import DiskPlan

QEMU_IMG_TIMEOUT_S = 60.0


def _exists(path: str) -> BatonError:
    return BatonError(ErrorCode.CONFLICT, f"{path} already exists on this host; refusing to "
                      "overwrite it (remove it or pick another destination)")


def _check_target(plan: DiskPlan) -> Path:
    path = Path(plan.path)
    if not path.is_absolute():
        raise BatonError(ErrorCode.BAD_REQUEST, f"disk path must be absolute: {plan.path}")
    if os.path.lexists(path):
        raise _exists(plan.path)
    if not path.parent.is_dir():
        raise BatonError(ErrorCode.PRECONDITION_FAILED,
                         f"directory {path.parent} does not exist on this host")
    return path


def reserve_disk(plan: DiskPlan) -> None:
    """Create the empty file exclusively (blocking): O_EXCL never takes over a file someone
    else made, even one that appeared since the check; O_NOFOLLOW never writes through a link."""
    path = _check_target(plan)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise _exists(plan.path) from None
    os.close(fd)


async def fill_disk(plan: DiskPlan) -> None:
    """Write the empty image into the reserved file (qemu-img create keeps it thin)."""
    code, _, stderr = await _qemu_img("create", "-q", "-f", plan.format, plan.path,
                                      str(plan.capacity_bytes))
    if code != 0:
        raise BatonError(ErrorCode.HYPERVISOR, f"qemu-img create {plan.path} failed: {stderr}")


async def create_disk(plan: DiskPlan, record: Callable[[str], Awaitable[None]] | None = None) -> None:
    """Reserve the file, let ``record`` note it as this agent's, then write the image. Any
    failure after the reservation removes the file again: it is ours and holds nothing."""
    await asyncio.to_thread(reserve_disk, plan)
    try:
        if record is not None:
            await record(plan.path)
        await fill_disk(plan)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(plan.path)
        raise


def delete_unused(paths: list[str], in_use: set[str]) -> tuple[list[str], list[str], list[str]]:
    """Delete each path unless a domain uses it: (deleted, kept, reasons for the kept ones).

    Both sides are compared resolved: a file in use through a symlink, or named by another
    spelling of its path, is still in use."""
    deleted, kept, reasons = [], [], []
    resolved_in_use = {os.path.realpath(used) for used in in_use}
    for path in paths:
        if os.path.realpath(path) in resolved_in_use:
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


# --- verifying a copy (storage moves) ---------------------------------------------------------


async def _qemu_img(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(QEMU_IMG_TIMEOUT_S):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BatonError(ErrorCode.TIMEOUT, f"qemu-img {args[0]} took too long") from None
    return proc.returncode or 0, stdout.decode(), stderr.decode().strip()


async def image_info(path: str) -> tuple[str, int]:
    """(format, virtual size) of an image, read while a VM may use it (``-U``)."""
    rc, out, err = await _qemu_img("info", "-U", "--output=json", path)
    if rc != 0:
        raise BatonError(ErrorCode.HYPERVISOR, f"qemu-img info {path} failed: {err}")
    info = json.loads(out)
    return str(info.get("format", "")), int(info.get("virtual-size", 0))


async def with_image_sizes(domain: DomainInfo) -> DomainInfo:
    """``domain`` with each file disk that libvirt could not size (zeros: its volume is in no
    refreshed pool and the domain was too busy for blockInfo) sized from the image itself. Seen
    under load: a 16 TiB disk read as 0 bytes passed a move's free-space check."""
    unsized = [d for d in domain.disks if d.device == "disk" and d.source_type == "file"
               and d.source_path and d.capacity_bytes == 0]
    if not unsized:
        return domain
    sized = {}
    for disk in unsized:
        with contextlib.suppress(BatonError):  # no image to read: the size stays unknown (0)
            _format, sized[disk.target] = await image_info(disk.source_path or "")
    disks = [msgspec.structs.replace(d, capacity_bytes=sized[d.target]) if d.target in sized
             else d for d in domain.disks]
    return msgspec.structs.replace(domain, disks=disks)


async def check_image(path: str, disk_format: str) -> str | None:
    """A problem ``qemu-img check`` finds in a qcow2 image, or None (leaks are harmless)."""
    if disk_format != "qcow2":
        return None  # raw has no metadata to check
    rc, out, err = await _qemu_img("check", "-U", "-f", disk_format, path)
    if rc in (0, 3):  # 3: leaked clusters only, which waste space but lose nothing
        return None
    return f"qemu-img check {path} exited {rc}: {(err or out).strip()[:500]}"
