"""The agent's side of a storage move: a running VM's disks into another pool on this host.

``start`` validates and answers at once; the move runs in a task of the service's TaskGroup:

1. blockCopy of every disk into its new file (a transient job on a persistent VM) → ``copying``
2. wait until every copy is READY (libvirt's block-job event; the live XML's ``<mirror
   ready='yes'>`` covers a missed event), publishing bytes copied / total and the rate
3. from here on an abort is refused → ``ready``; pivot each disk (blockJobAbort with PIVOT)
4. confirm the live AND the saved definition point at the new file; libvirt 9.0 rewrites both on
   the pivot, and if a libvirt did not, the saved definition is redefined → ``pivoted``
5. verify the new file (``qemu-img info/check -U``: format and virtual size kept)
6. only then delete the old file, unless ``keep_source``, and never one a domain still uses.

Abort or failure before a disk's pivot: its copy job is cancelled (blockJobAbort without pivot),
the VM keeps the old file, and the partial copy is deleted. Exactly one
:class:`StorageMoveFinished` reports the outcome.

Crash safety: the old file goes only once both definitions point at the verified copy, so an agent
that dies between steps leaves at worst an extra file, never a VM without its data. A copy job
outlives the agent inside libvirt; :meth:`StorageMoveManager.abort` with the move's disks cancels
it and removes the partial copy even after a restart made this agent forget the move — only
copies the agent's ledger (agent/ledger.py) says this move made, whatever the request names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field

import structlog

from baton.agent import disks, ownership
from baton.agent.block_copy import BlockCopier, copy_destination_xml
from baton.agent.jobs import Publish, RunningJobs, crashed
from baton.agent.ledger import Entry, Ledger
from baton.schemas.agent import DomainInfo
from baton.schemas.base import utc_now
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import BlockJobEvent, BlockJobStatus, JobStats, VmEvent
from baton.schemas.migration import Ack
from baton.schemas.storage import (
    AgentStorageAbortRequest,
    AgentStorageMoveReply,
    AgentStorageMoveRequest,
    DiskMove,
    DiskOutcome,
    StorageMoveFinished,
    StorageStage,
    StorageStageEvent,
)
from baton.schemas.subjects import MigrationEvent, Subjects

log = structlog.get_logger(__name__)
MIB = 1024 * 1024


class _Aborted(Exception):
    """An abort request reached the move before its pivot."""


@dataclass
class _Move:
    request: AgentStorageMoveRequest
    started_at: float = field(default_factory=time.monotonic)
    abort_requested: bool = False
    pivoting: bool = False  # past the point of no return: aborts are refused
    copying: set[str] = field(default_factory=set)  # targets whose copy job was started
    ready: set[str] = field(default_factory=set)
    broken: dict[str, str] = field(default_factory=dict)  # target -> how its job ended early
    pivoted: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)  # targets whose old file was deleted
    removed: set[str] = field(default_factory=set)  # targets whose partial copy was deleted
    details: dict[str, str] = field(default_factory=dict)
    stats: JobStats | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def targets(self) -> set[str]:
        return {d.target for d in self.request.disks}


def start_problems(request: AgentStorageMoveRequest, domain: DomainInfo) -> list[str]:
    """What in the VM as it is now contradicts the request (pure)."""
    if not domain.active:
        return [f"{request.vm} is {domain.state}: a block copy needs a running VM"]
    have = {d.target: d for d in domain.disks}
    problems = []
    for move in request.disks:
        disk = have.get(move.target)
        if disk is None or disk.source_path != move.source_path:
            problems.append(f"{request.vm} {move.target} is not {move.source_path} any more")
        elif (disk.format or "raw") != move.format:
            problems.append(f"{move.target} is {disk.format}, not {move.format}")
    return problems


def path_problems(moves: list[DiskMove]) -> list[str]:
    """Destination files that exist already or have no directory (filesystem; run in a thread)."""
    problems = []
    for move in moves:
        if os.path.lexists(move.destination_path):
            problems.append(f"{move.destination_path} already exists; refusing to overwrite it")
        elif not os.path.isdir(os.path.dirname(move.destination_path)):
            problems.append(f"directory {os.path.dirname(move.destination_path)} does not exist")
    return problems


class StorageMoveManager(RunningJobs[_Move]):
    KIND = "storage move"
    VM_BUSY = "is already moving its disks"

    def __init__(self, host_id: str, hv: BlockCopier, subjects: Subjects, publish: Publish,
                 tasks: asyncio.TaskGroup, ledger: Ledger) -> None:
        super().__init__(host_id, subjects, publish, tasks)
        self._hv = hv
        self._ledger = ledger

    # --- endpoints ----------------------------------------------------------------------------

    async def start(self, request: AgentStorageMoveRequest) -> AgentStorageMoveReply:
        self._refuse_if_busy(request.migration_id, request.vm)
        if not request.disks:
            raise BatonError(ErrorCode.BAD_REQUEST, "no disks to move")
        [domain] = await self._hv.domains([request.vm], include_cpu_xml=False)
        problems = start_problems(request, domain)
        problems += await asyncio.to_thread(path_problems, request.disks)
        if problems:
            raise BatonError(ErrorCode.PRECONDITION_FAILED, "; ".join(problems))
        await self._refuse_outside_pools(request)
        await self._note_copies(request)
        move = _Move(request)
        self._launch(request.migration_id, move, self._run(move))
        log.info("storage_move_started", migration_id=request.migration_id, vm=request.vm,
                 disks=[d.target for d in request.disks])
        return AgentStorageMoveReply(migration_id=request.migration_id)

    async def _refuse_outside_pools(self, request: AgentStorageMoveRequest) -> None:
        """libvirt creates each copy as root wherever it is told: only in a pool's directory."""
        pools = (await self._hv.host_facts()).pools
        paths = [d.destination_path for d in request.disks]
        if outside := await asyncio.to_thread(ownership.outside_pools, paths, pools):
            raise BatonError(ErrorCode.FORBIDDEN, f"{', '.join(outside)}: not in the directory "
                             "of an active storage pool of this host; an agent copies disks "
                             "only there")

    async def _note_copies(self, request: AgentStorageMoveRequest) -> None:
        """Write down the copies before libvirt makes them: only those may a later abort delete."""
        if await asyncio.to_thread(self._ledger.get, request.migration_id) is not None:
            raise BatonError(ErrorCode.CONFLICT, f"job {request.migration_id} already ran on this "
                             "host; a new storage move needs a new id")
        await asyncio.to_thread(self._ledger.put, Entry(
            migration_id=request.migration_id, vm=request.vm,
            created_paths=[d.destination_path for d in request.disks]))

    async def abort(self, request: AgentStorageAbortRequest) -> Ack:
        move = self._running.get(request.migration_id)
        if move is None:
            return await self._abort_forgotten(request)
        if move.request.vm != request.vm:
            raise BatonError(ErrorCode.NOT_FOUND, f"no storage move {request.migration_id} of "
                             f"{request.vm} runs on this host")
        if move.pivoting:
            raise BatonError(ErrorCode.CONFLICT, "the copies are in sync and the VM is being "
                             "switched to them; the move can no longer be aborted")
        move.abort_requested = True
        move.wake.set()
        return Ack(detail="abort requested; the outcome follows as storage.finished")

    def observe(self, event: VmEvent) -> None:
        """Block-job events of a moving VM: READY marks a copy in sync; any other end before
        our own pivot means the copy is lost (libvirt failed it, or someone cancelled it)."""
        if not isinstance(event, BlockJobEvent):
            return
        for move in self._running.values():
            if move.request.vm != event.vm or event.disk not in move.targets:
                continue
            if event.status == BlockJobStatus.READY:
                move.ready.add(event.disk)
            elif not move.pivoting:
                move.broken.setdefault(event.disk, str(event.status))
            move.wake.set()

    # --- the move -----------------------------------------------------------------------------

    async def _run(self, move: _Move) -> None:
        error: BatonError | None = None
        aborted = False
        try:
            await self._move(move)
        except _Aborted:
            aborted = True
            error = BatonError(ErrorCode.CONFLICT, "aborted before the pivot: the VM keeps its "
                               "old files and the partial copies were removed")
        except BatonError as exc:
            error = exc
        except Exception:
            error = crashed("storage_move_task_failed", move.request.migration_id,
                            "moving the disks")
        if error is not None:
            await self._roll_back(move)
        await self._finish(move, error, aborted)

    async def _move(self, move: _Move) -> None:
        await self._start_copies(move)
        await self._stage(move, StorageStage.COPYING, "copying "
                          + ", ".join(d.target for d in move.request.disks))
        await self._until_ready(move)
        await self._stage(move, StorageStage.READY, "copies in sync; pivoting")
        for disk in move.request.disks:
            await self._pivot(move, disk)
        await self._stage(move, StorageStage.PIVOTED, "the VM uses the new files")
        for disk in move.request.disks:
            await self._verify_and_release(move, disk)
        await self._hv.refresh_pools()

    async def _start_copies(self, move: _Move) -> None:
        request = move.request
        cap = None if request.bandwidth_mib_s is None else request.bandwidth_mib_s * MIB
        for disk in request.disks:
            self._raise_if_stopped(move)
            await self._hv.block_copy(request.vm, disk.target,
                                      copy_destination_xml(disk.destination_path, disk.format), cap)
            move.copying.add(disk.target)
        await self._hv.refresh_pools()  # the new files show up in the destination pool

    async def _until_ready(self, move: _Move) -> None:
        """Report progress until every copy is in sync; then mark the point of no return."""
        interval = move.request.progress_interval_ms / 1000
        while True:
            self._raise_if_stopped(move)
            await self._report_progress(move)
            self._raise_if_stopped(move)
            if move.ready >= move.targets:
                move.pivoting = True  # no await since the last abort check: no abort slips in
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await move.wake.wait()
            move.wake.clear()

    def _raise_if_stopped(self, move: _Move) -> None:
        if move.abort_requested:
            raise _Aborted()
        if move.broken:
            target, how = next(iter(move.broken.items()))
            raise BatonError(ErrorCode.HYPERVISOR, f"the copy of {target} ended ({how}) before "
                             "the pivot; the VM keeps its old files")

    async def _report_progress(self, move: _Move) -> None:
        vm, copied, total = move.request.vm, 0, 0
        for target in sorted(move.targets):
            job = await self._hv.block_job_progress(vm, target)
            if job is None:
                move.broken.setdefault(target, "its job disappeared")
                continue
            total += job.end_bytes
            copied += min(job.cur_bytes, job.end_bytes)
            in_sync = job.end_bytes > 0 and job.cur_bytes >= job.end_bytes
            if in_sync and target not in move.ready \
                    and (await self._hv.disk_sources(vm, target)).mirror_ready:
                move.ready.add(target)  # the READY event went missing (e.g. a reconnect)
        move.stats = progress_stats(copied, total, time.monotonic() - move.started_at)
        await self._send_progress(move.request.migration_id, move.stats)

    async def _pivot(self, move: _Move, disk: DiskMove) -> None:
        vm = move.request.vm
        await self._hv.block_job_abort(vm, disk.target, pivot=True)
        move.pivoted.add(disk.target)
        log.info("storage_pivoted", vm=vm, target=disk.target, path=disk.destination_path)
        sources = await self._hv.disk_sources(vm, disk.target)
        if sources.live != disk.destination_path:
            raise BatonError(ErrorCode.HYPERVISOR, f"after the pivot {vm} {disk.target} uses "
                             f"{sources.live}, not {disk.destination_path}; nothing was deleted")
        if sources.persistent not in (None, disk.destination_path):
            # This libvirt left the saved definition on the old file: a restart would boot stale
            # data. Save it pointing at the copy before anything is deleted.
            log.warning("saved_definition_repointed", vm=vm, target=disk.target)
            await self._hv.define_disk_source(vm, disk.target, disk.destination_path)
            sources = await self._hv.disk_sources(vm, disk.target)
        if sources.persistent not in (None, disk.destination_path):
            raise BatonError(ErrorCode.HYPERVISOR, f"the saved definition of {vm} still points "
                             f"{disk.target} at {sources.persistent}; the old file is kept")

    async def _verify_and_release(self, move: _Move, disk: DiskMove) -> None:
        problem = await verify_copy(disk)
        if problem is not None:
            raise BatonError(ErrorCode.HYPERVISOR, f"{problem}; the VM runs on the copy and the "
                             f"old file {disk.source_path} is kept")
        if move.request.keep_source:
            move.details[disk.target] = f"old file {disk.source_path} kept as asked"
            return
        deleted, _kept, reasons = await self._delete_unused([disk.source_path])
        if deleted:
            move.deleted.add(disk.target)
        else:
            move.details[disk.target] = "; ".join(reasons)

    # --- failure, abort and the outcome -------------------------------------------------------

    async def _roll_back(self, move: _Move) -> None:
        """Cancel every copy not yet pivoted and delete what it wrote; never raises."""
        vm = move.request.vm
        pending = [d for d in move.request.disks if d.target not in move.pivoted]
        for disk in pending:
            if disk.target in move.copying:
                try:
                    await self._hv.block_job_abort(vm, disk.target, pivot=False)
                except BatonError as exc:  # the job may have ended on its own already
                    log.info("copy_cancel_failed", target=disk.target, error=exc.message)
        try:
            written = await asyncio.to_thread(_existing, [d.destination_path for d in pending])
            deleted, _kept, reasons = await self._delete_unused(written)
            await self._hv.refresh_pools()
        except BatonError as exc:
            log.error("partial_copy_not_removed", error=exc.message)
            return
        move.removed |= {d.target for d in pending if d.destination_path in deleted}
        if reasons:
            log.warning("partial_copy_kept", reasons=reasons)

    async def _delete_unused(self, paths: list[str]) -> tuple[list[str], list[str], list[str]]:
        domains = await self._hv.domains(None, include_cpu_xml=False)
        in_use = {d.source_path for dom in domains for d in dom.disks if d.source_path}
        return await asyncio.to_thread(disks.delete_unused, paths, in_use)

    async def _abort_forgotten(self, request: AgentStorageAbortRequest) -> Ack:
        """An abort for a move this agent does not run (it restarted): clean up what it names."""
        if not request.disks:
            raise BatonError(ErrorCode.NOT_FOUND, f"no storage move {request.migration_id} runs "
                             "on this host")
        entry = await asyncio.to_thread(self._ledger.get, request.migration_id)
        _mine, _refused, reasons = ownership.deletable(
            entry if entry is not None and entry.vm == request.vm else None,
            request.migration_id, [d.destination_path for d in request.disks])
        if reasons:
            raise BatonError(ErrorCode.FORBIDDEN, "; ".join(reasons) + "; nothing was touched")
        move = _Move(AgentStorageMoveRequest(migration_id=request.migration_id, vm=request.vm,
                                             disks=request.disks))
        for disk in request.disks:
            sources = await self._hv.disk_sources(request.vm, disk.target)
            if sources.live == disk.destination_path:
                move.pivoted.add(disk.target)  # already switched: leave it alone
            elif await self._hv.block_job_progress(request.vm, disk.target) is not None:
                move.copying.add(disk.target)
        await self._roll_back(move)
        return Ack(detail=f"cancelled {sorted(move.copying)}, removed copies of "
                   f"{sorted(move.removed)}, left {sorted(move.pivoted)} (already switched)")

    async def _finish(self, move: _Move, error: BatonError | None, aborted: bool) -> None:
        finished = StorageMoveFinished(
            migration_id=move.request.migration_id, host_id=self._host_id, at=utc_now(),
            stats=move.stats, disks=[_outcome(move, d) for d in move.request.disks],
            error=None if error is None else error.to_reply(), aborted=aborted)
        log.info("storage_move_finished", migration_id=move.request.migration_id,
                 vm=move.request.vm, ok=error is None, aborted=aborted,
                 error=None if error is None else error.message)
        await self._send(move.request.migration_id, MigrationEvent.STORAGE_FINISHED, finished)

    async def _stage(self, move: _Move, stage: StorageStage, detail: str) -> None:
        log.info("storage_move_stage", migration_id=move.request.migration_id, stage=stage)
        event = StorageStageEvent(migration_id=move.request.migration_id, host_id=self._host_id,
                                  at=utc_now(), stage=stage, detail=detail)
        await self._send(move.request.migration_id, MigrationEvent.STORAGE_STAGE, event)


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if os.path.lexists(p)]


def _outcome(move: _Move, disk: DiskMove) -> DiskOutcome:
    pivoted = disk.target in move.pivoted
    return DiskOutcome(target=disk.target,
                       path=disk.destination_path if pivoted else disk.source_path,
                       pivoted=pivoted, source_deleted=disk.target in move.deleted,
                       copy_removed=disk.target in move.removed,
                       detail=move.details.get(disk.target, ""))


def progress_stats(copied: int, total: int, elapsed_s: float) -> JobStats:
    """Copy figures as the migrations' JobStats (the average rate since the copy started)."""
    rate = int(copied / elapsed_s) if elapsed_s > 0 else 0
    return JobStats(operation="block_copy", time_elapsed_ms=int(elapsed_s * 1000),
                    data_total_bytes=total, data_processed_bytes=copied,
                    data_remaining_bytes=max(total - copied, 0), disk_total_bytes=total,
                    disk_processed_bytes=copied, disk_remaining_bytes=max(total - copied, 0),
                    disk_bps=rate)


async def verify_copy(disk: DiskMove) -> str | None:
    """What is wrong with the new file, or None: same format, same virtual size, clean check."""
    found_format, size = await disks.image_info(disk.destination_path)
    if found_format != disk.format:
        return f"{disk.destination_path} is {found_format}, expected {disk.format}"
    if disk.capacity_bytes and size != disk.capacity_bytes:
        return (f"{disk.destination_path} has a virtual size of {size} bytes, expected "
                f"{disk.capacity_bytes}")
    return await disks.check_image(disk.destination_path, found_format)
