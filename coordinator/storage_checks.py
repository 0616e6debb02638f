"""Pre-flight for a storage move: gather facts from the VM's host, then judge them purely.

:func:`gather` is the only I/O (read-only): the domain, the host's pools, every domain defined
there (a disk another VM also uses must not move under it) and whether the destination files or
the pool's free space say otherwise. Each ``check_*`` is pure, ``StorageFacts -> StorageCheckResult``,
with a reason a person can act on; all run and are reported together.

Room: the pool must have the disks' *virtual size* (capacity) available, not just what they
occupy now. A copy of a thin qcow2 starts at its allocation, but the guest keeps writing and may
grow it to its capacity, and a raw copy is written in full; a pool that fills up mid-copy pauses
the guest on an I/O error, which is worse than a refusal up front.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field, replace

from baton.coordinator.agents import AgentClient
from baton.schemas.agent import DiskInfo, DomainInfo, HostCaps, StoragePool, StorageProbeRequest
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import CheckStatus
from baton.schemas.storage import (
    DiskMove,
    StorageCheckName,
    StorageCheckReport,
    StorageCheckResult,
    StorageMoveRequest,
)

GIB = 1024**3
MOVABLE_FORMATS = frozenset({"qcow2", "raw"})


@dataclass(frozen=True)
class StorageFacts:
    request: StorageMoveRequest
    host: str
    domain: DomainInfo
    caps: HostCaps
    others: list[DomainInfo] = field(default_factory=list)  # the other domains on the host
    existing: frozenset[str] = frozenset()  # destination paths that already exist
    free_bytes: int | None = None  # the pool directory's filesystem, measured now


# --- gathering (I/O) --------------------------------------------------------------------------


async def gather(agents: AgentClient, request: StorageMoveRequest, host: str) -> StorageFacts:
    """Ask the host's agent everything the checks need. Raises for an unknown VM or host."""
    domain, caps, everyone = await asyncio.gather(
        agents.domain(host, request.vm), agents.caps(host), agents.all_domains(host))
    facts = StorageFacts(request=request, host=host, domain=domain, caps=caps,
                         others=[d for d in everyone if d.name != request.vm])
    pool = find_pool(facts)
    if pool is None or not pool.target_path:
        return facts
    paths = [m.destination_path for m in plan(facts)]
    probe = await agents.storage_probe(host, StorageProbeRequest(paths=[pool.target_path, *paths]))
    existing = frozenset(p.path for p in probe.paths[1:] if p.exists)
    free = probe.paths[0].fs_free_bytes if probe.paths and probe.paths[0].exists else None
    return replace(facts, existing=existing, free_bytes=free)


async def locate(agents: AgentClient, vm: str) -> str:
    """The host that holds ``vm`` (a running copy wins over an inactive definition)."""
    hosts = await agents.discover_hosts()
    found = await asyncio.gather(*(agents.domain_or_none(h, vm) for h in hosts),
                                 return_exceptions=True)
    return pick_host(vm, [(h, d) for h, d in zip(hosts, found, strict=True)
                          if isinstance(d, DomainInfo)])


def pick_host(vm: str, holders: list[tuple[str, DomainInfo]]) -> str:
    if not holders:
        raise BatonError(ErrorCode.NOT_FOUND, f"no host has a VM named {vm!r}")
    choices = [h for h, d in holders if d.active] or [h for h, _ in holders]
    if len(choices) > 1:
        raise BatonError(ErrorCode.BAD_REQUEST, f"{vm} is defined on {', '.join(choices)}: say "
                         "which host holds the disks to move (host / --host)")
    return choices[0]


# --- what would move (pure) -------------------------------------------------------------------


def find_pool(facts: StorageFacts) -> StoragePool | None:
    return next((p for p in facts.caps.pools if p.name == facts.request.destination_pool), None)


def in_pool(disk: DiskInfo, pool: StoragePool) -> bool:
    if disk.pool == pool.name:
        return True
    directory = os.path.dirname(disk.source_path or "")
    return bool(pool.target_path) and directory.rstrip("/") == (pool.target_path or "").rstrip("/")


def selected(facts: StorageFacts) -> list[DiskInfo]:
    """The disks the request names: one by target, or every disk device (not cdroms)."""
    disks = facts.domain.disks
    if facts.request.disk is not None:
        return [d for d in disks if d.target == facts.request.disk]
    return [d for d in disks if d.device == "disk"]


def to_move(facts: StorageFacts) -> list[DiskInfo]:
    """Selected disks not already in the pool (asking for all skips those already there)."""
    pool = find_pool(facts)
    chosen = selected(facts)
    if pool is None or facts.request.disk is not None:
        return chosen
    return [d for d in chosen if not in_pool(d, pool)]


def plan(facts: StorageFacts) -> list[DiskMove]:
    pool = find_pool(facts)
    if pool is None or not pool.target_path:
        return []
    return [DiskMove(target=d.target, source_path=d.source_path or "",
                     destination_path=os.path.join(pool.target_path,
                                                   os.path.basename(d.source_path or "")),
                     format=d.format or "", capacity_bytes=d.capacity_bytes,
                     allocation_bytes=d.allocation_bytes)
            for d in to_move(facts)]


# --- checks (pure) ----------------------------------------------------------------------------


def _result(name: StorageCheckName, problems: list[str], ok_reason: str,
            warnings: list[str] | None = None) -> StorageCheckResult:
    if problems:
        return StorageCheckResult(name=name, status=CheckStatus.FAIL, reason="; ".join(problems))
    if warnings:
        return StorageCheckResult(name=name, status=CheckStatus.WARN, reason="; ".join(warnings))
    return StorageCheckResult(name=name, status=CheckStatus.PASS, reason=ok_reason)


def check_vm(facts: StorageFacts) -> StorageCheckResult:
    vm = facts.domain
    problems = [] if vm.active else [
        f"{vm.name} is {vm.state} on {facts.host}: a live block copy needs it running; start it"]
    return _result(StorageCheckName.VM, problems, f"{vm.name} is {vm.state} on {facts.host}")


def check_disk(facts: StorageFacts) -> StorageCheckResult:
    chosen = selected(facts)
    if not chosen:
        have = ", ".join(d.target for d in facts.domain.disks) or "none"
        what = f"no disk {facts.request.disk}" if facts.request.disk else "no disks"
        return _result(StorageCheckName.DISK, [f"{facts.domain.name} has {what} (its disks: {have})"], "")
    problems = [p for d in chosen for p in disk_problems(facts, d)]
    moving = to_move(facts)
    return _result(StorageCheckName.DISK, problems, "; ".join(
        f"{d.target}: {d.format} {d.capacity_bytes / GIB:.2f} GiB at {d.source_path}"
        for d in moving) or "nothing to move")


def disk_problems(facts: StorageFacts, disk: DiskInfo) -> list[str]:
    name = f"{disk.target} ({disk.source_path or 'no file'})"
    if disk.device != "disk" or disk.readonly:
        return [f"{name} is a read-only {disk.device}; only writable disks move"]
    if disk.source_type != "file" or not disk.source_path:
        return [f"{name} is a {disk.source_type} disk; only file-backed disks move"]
    problems = []
    if disk.shareable:
        problems.append(f"{name} is marked shareable: other VMs may write it during the copy")
    users = sorted(o.name for o in facts.others
                   if any(d.source_path == disk.source_path for d in o.disks))
    if users:
        problems.append(f"{name} is also used by {', '.join(users)} on {facts.host}")
    if (disk.format or "") not in MOVABLE_FORMATS:
        problems.append(f"{name} has format {disk.format or 'unknown'}; the copy keeps the format"
                        f" and Baton moves {' and '.join(sorted(MOVABLE_FORMATS))} only")
    return problems


def check_pool(facts: StorageFacts) -> StorageCheckResult:
    pool = find_pool(facts)
    name, host = facts.request.destination_pool, facts.host
    if pool is None:
        known = ", ".join(p.name for p in facts.caps.pools) or "none"
        return _result(StorageCheckName.POOL, [f"{host} has no storage pool {name!r} (its pools: "
                                        f"{known})"], "")
    problems = pool_state_problems(pool, host) + placement_problems(facts, pool)
    need, free = room_needed(facts), available_bytes(facts, pool)
    if need > free:
        problems.append(f"pool {name} has {free / GIB:.2f} GiB available, the disks need "
                        f"{need / GIB:.2f} GiB (their virtual size): free space or pick "
                        "another pool")
    return _result(StorageCheckName.POOL, problems, f"pool {name} ({pool.target_path}) is active with "
                   f"{free / GIB:.2f} GiB available for {need / GIB:.2f} GiB",
                   unsized_warnings(to_move(facts), f"in pool {name}"))


def unsized_warnings(disks: list[DiskInfo], room: str) -> list[str]:
    """A warning per disk nobody could size (libvirt nor qemu-img: 0 bytes), whose room
    (``room``: where it goes) was checked without it. Said, not refused: it may well fit."""
    return [f"the size of {d.target} ({d.source_path}) is unknown (neither libvirt nor qemu-img "
            f"could read it): the room {room} was checked without it"
            for d in disks if not d.capacity_bytes]


def pool_state_problems(pool: StoragePool, host: str) -> list[str]:
    if not pool.active:
        return [f"pool {pool.name} is inactive on {host}: virsh pool-start {pool.name}"]
    if not pool.target_path:
        return [f"pool {pool.name} ({pool.type}) has no directory; Baton copies into "
                "directory-backed pools only"]
    return []


def placement_problems(facts: StorageFacts, pool: StoragePool) -> list[str]:
    problems = []
    if facts.request.disk is not None:
        problems += [f"{d.target} is already in pool {pool.name} ({d.source_path}): choose "
                     "another pool" for d in selected(facts) if in_pool(d, pool)]
    elif selected(facts) and not to_move(facts):
        problems.append(f"every disk of {facts.domain.name} is already in pool {pool.name}")
    problems += [f"{m.destination_path} already exists in pool {pool.name}: remove or rename it"
                 for m in plan(facts) if m.destination_path in facts.existing]
    return problems


def room_needed(facts: StorageFacts) -> int:
    return sum(d.capacity_bytes for d in to_move(facts))


def available_bytes(facts: StorageFacts, pool: StoragePool) -> int:
    """libvirt's figure is as of the pool's last refresh; the filesystem's is from just now."""
    if facts.free_bytes is None:
        return pool.available_bytes
    return min(pool.available_bytes, facts.free_bytes)


CHECKS = (check_vm, check_disk, check_pool)


def report(facts: StorageFacts) -> StorageCheckReport:
    checks = [check(facts) for check in CHECKS]
    return StorageCheckReport(vm=facts.domain.name, host=facts.host,
                              destination_pool=facts.request.destination_pool,
                              ok=all(c.status != CheckStatus.FAIL for c in checks),
                              checks=checks, disks=plan(facts))


def failure_summary(checks: list[StorageCheckResult]) -> str:
    failed = [f"{c.name}: {c.reason}" for c in checks if c.status == CheckStatus.FAIL]
    return "storage move refused — " + " | ".join(failed)
