"""The agent's half of a migration: what the coordinator asks of a source or a destination.

Source: ``start`` answers at once and runs libvirt's migrate call in a task of the service's
TaskGroup; while it runs, the job's figures go out as :class:`SourceProgress`, and exactly one
:class:`SourceFinished` reports the outcome (with the completed job's figures, taken from
libvirt's job-completed event, because with UNDEFINE_SOURCE the domain is gone by then).
Destination: ``prepare`` notes the domain to expect and pre-creates copy targets (only in pool
directories, never over a file), removing what it made if any one fails.
Either side: ``cleanup`` removes a leftover domain and disk files, but only what this agent's
ledger (agent/ledger.py) says it made or sent away for that migration, and never a file in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field

import msgspec
import structlog

from baton.agent import convergence, disks, ownership
from baton.agent.core import FetchRemoteDomain
from baton.agent.hypervisor import Hypervisor
from baton.agent.jobs import Publish, RunningJobs, crashed
from baton.agent.ledger import Entry, Ledger
from baton.agent.migration_plan import MigrationPlan, plan_migration
from baton.agent.peers import CheckPeer
from baton.agent.prediction import PassClock, eta_of
from baton.schemas.agent import DomainInfo, DomainState
from baton.schemas.base import utc_now
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import JobCompletedEvent, JobStats, VmEvent
from baton.schemas.migration import (
    Ack,
    AgentAbortRequest,
    CleanupReply,
    CleanupRequest,
    MigrationStatus,
    MigrationStatusRequest,
    PathFact,
    PrepareReply,
    PrepareRequest,
    SourceFinished,
    SpeedRequest,
    StartReply,
    StartRequest,
)
from baton.schemas.subjects import MigrationEvent, Subjects

log = structlog.get_logger(__name__)
COMPLETED_EVENT_WAIT_S = 3.0


@dataclass
class _Running:
    request: StartRequest
    abort_requested: bool = False
    completed: asyncio.Future[JobStats] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class MigrationManager(RunningJobs[_Running]):
    KIND = "migration"
    VM_BUSY = "is already migrating"

    def __init__(self, host_id: str, hv: Hypervisor, subjects: Subjects, publish: Publish,
                 tasks: asyncio.TaskGroup, ledger: Ledger, check_peer: CheckPeer,
                 fetch_remote_domain: FetchRemoteDomain | None = None) -> None:
        super().__init__(host_id, subjects, publish, tasks)
        self._hv = hv
        self._ledger = ledger
        self._check_peer = check_peer
        self._fetch_remote_domain = fetch_remote_domain

    # --- source -------------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> StartReply:
        self._refuse_if_busy(request.migration_id, request.vm)
        [domain] = await self._hv.domains([request.vm], include_cpu_xml=False)
        plan = plan_migration(request, domain_active=domain.active)
        await self._check_peer(request.destination_host, request.destination_uri)
        await self._note_sending(request, domain)
        running = _Running(request)
        self._launch(request.migration_id, running, self._run(running, plan))
        log.info("migration_started", migration_id=request.migration_id, vm=request.vm,
                 destination=request.destination_uri, flags=sorted(plan.flags))
        return StartReply(migration_id=request.migration_id)

    async def _note_sending(self, request: StartRequest, domain: DomainInfo) -> None:
        """Write down the disks this migration copies away, before libvirt starts."""
        if await asyncio.to_thread(self._ledger.get, request.migration_id) is not None:
            raise BatonError(ErrorCode.CONFLICT, f"migration {request.migration_id} already "
                             "ran on this host; a new migration needs a new id")
        sent = [d.source_path for d in domain.disks
                if d.target in request.copy_disks and d.source_path]
        await asyncio.to_thread(self._ledger.put, Entry(
            migration_id=request.migration_id, vm=request.vm, sent_paths=sent,
            sent_to=request.destination_host, sent_uuid=domain.uuid))

    async def _note_sent(self, request: StartRequest) -> None:
        """libvirt reported the migration done: its copied disks are now this agent's to delete."""
        entry = await asyncio.to_thread(self._ledger.get, request.migration_id)
        if entry is not None:
            entry.sent_completed = True
            await asyncio.to_thread(self._ledger.put, entry)

    async def _run(self, running: _Running, plan: MigrationPlan) -> None:
        request = running.request
        try:
            error = await self._migrate_with_progress(request, plan)
            stats = None
            if error is None:
                await self._note_sent(request)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(COMPLETED_EVENT_WAIT_S):
                        stats = await running.completed
        except Exception:
            stats = None
            error = crashed("migration_task_failed", request.migration_id, "migrating")
        await self._finish(request, running, stats, error)

    async def _migrate_with_progress(self, request: StartRequest,
                                     plan: MigrationPlan) -> BatonError | None:
        async with asyncio.TaskGroup() as tasks:
            poller = tasks.create_task(self._report_progress(request, plan))
            try:
                await self._hv.migrate(request.vm, plan)
            except BatonError as exc:
                return exc
            finally:
                poller.cancel()
        return None

    async def _finish(self, request: StartRequest, running: _Running, stats: JobStats | None,
                      error: BatonError | None) -> None:
        finished = SourceFinished(migration_id=request.migration_id, host_id=self._host_id,
                                  at=utc_now(), stats=stats,
                                  error=None if error is None else error.to_reply(),
                                  aborted=error is not None and running.abort_requested)
        log.info("migration_finished", migration_id=request.migration_id, vm=request.vm,
                 ok=error is None, aborted=finished.aborted,
                 error=None if error is None else error.message)
        await self._send(request.migration_id, MigrationEvent.SOURCE_FINISHED, finished)

    async def _report_progress(self, request: StartRequest, plan: MigrationPlan) -> None:
        """Publish the job's figures every interval; apply the max downtime once a job runs;
        with ``downtime_ramp``, raise it when the remainder stalls, and switch to post-copy
        when the request says when (agent/convergence.py)."""
        downtime_pending = plan.max_downtime_ms
        ramp = convergence.Escalator(request)
        clock = PassClock()
        while True:
            await asyncio.sleep(request.progress_interval_ms / 1000)
            try:
                stats = await self._hv.job_stats(request.vm)
                if stats is not None and downtime_pending is not None:
                    await self._hv.set_max_downtime(request.vm, downtime_pending)
                    downtime_pending = None
            except BatonError as exc:  # the domain vanishes from the source as the move ends
                log.debug("migration_progress_unavailable", error=exc.message)
                continue
            if stats is not None and (step := ramp.next_step(stats)) is not None:
                try:
                    await self._escalate(request, step)
                    ramp.applied(step)
                except BatonError as exc:  # not taken: asked again at the next reading
                    log.warning("escalation_failed", migration_id=request.migration_id,
                                step=step.kind, error=exc.message)
            if stats is not None:
                await self._send_progress(request.migration_id, stats, ramp.escalations,
                                          postcopy=ramp.postcopy,
                                          eta_s=eta_of(stats, request, ramp.limit_ms,
                                                       ramp.postcopy,
                                                       clock.pass_elapsed_s(stats)))

    async def _escalate(self, request: StartRequest, step: convergence.Action) -> None:
        if step.kind is convergence.Kind.START_POSTCOPY:
            await self._hv.start_postcopy(request.vm)
            log.warning("postcopy_started", migration_id=request.migration_id, vm=request.vm,
                        reason=step.reason)
        else:
            await self._hv.set_max_downtime(request.vm, step.downtime_ms or 0)
            log.warning("downtime_raised", migration_id=request.migration_id, vm=request.vm,
                        reason=step.reason)

    def observe(self, event: VmEvent) -> None:
        """Catch the job-completed event of a migrating domain (it carries the final figures)."""
        if not isinstance(event, JobCompletedEvent):
            return
        for running in self._running.values():
            if running.request.vm == event.vm and not running.completed.done():
                running.completed.set_result(event.stats)

    def _find(self, migration_id: str, vm: str) -> _Running:
        running = self._running.get(migration_id)
        if running is None or running.request.vm != vm:
            raise BatonError(ErrorCode.NOT_FOUND,
                             f"no migration {migration_id} of {vm} runs on this host")
        return running

    async def speed(self, request: SpeedRequest) -> Ack:
        self._find(request.migration_id, request.vm)
        await self._hv.set_max_speed(request.vm, request.bandwidth_mib_s)
        return Ack(detail=f"bandwidth set to {request.bandwidth_mib_s} MiB/s")

    async def abort(self, request: AgentAbortRequest) -> Ack:
        running = self._find(request.migration_id, request.vm)
        running.abort_requested = True
        await self._hv.abort_job(request.vm)
        return Ack(detail="abort requested; the outcome follows as source.finished")

    # --- destination and clean-up -------------------------------------------------------------

    async def prepare(self, request: PrepareRequest) -> PrepareReply:
        entry = await self._expect_incoming(request)
        created: list[str] = []

        async def record(path: str) -> None:  # before qemu-img writes: a crash leaks nothing
            created.append(path)
            entry.created_paths.append(path)
            await asyncio.to_thread(self._ledger.put, entry)

        try:
            for plan in request.disks:
                await disks.create_disk(plan, record)
            await self._hv.refresh_pools()
        except BatonError:  # the error reply carries no paths: leave nothing the caller cannot see
            await asyncio.to_thread(disks.delete_unused, created, set())
            raise
        log.info("migration_prepared", migration_id=request.migration_id, created=created)
        return PrepareReply(created_paths=created)

    async def _expect_incoming(self, request: PrepareRequest) -> Entry:
        """Refuse what is not this agent's to make; note the domain to expect, absent here now."""
        if await asyncio.to_thread(self._ledger.get, request.migration_id) is not None:
            raise BatonError(ErrorCode.CONFLICT, f"migration {request.migration_id} was already "
                             "prepared or ran on this host; a new migration needs a new id")
        here = await self._hv.domains(None, include_cpu_xml=False)
        if clash := [d for d in here if d.name == request.vm or d.uuid == request.domain_uuid]:
            raise BatonError(ErrorCode.CONFLICT, f"{clash[0].name} (UUID {clash[0].uuid}) is "
                             "already defined on this host: a migration cannot bring it here")
        paths = [plan.path for plan in request.disks]
        if relative := [path for path in paths if not os.path.isabs(path)]:
            raise BatonError(ErrorCode.BAD_REQUEST, f"disk path must be absolute: {relative[0]}")
        pools = (await self._hv.host_facts()).pools
        if outside := await asyncio.to_thread(ownership.outside_pools, paths, pools):
            raise BatonError(ErrorCode.FORBIDDEN, f"{', '.join(outside)}: not in the directory "
                             "of an active storage pool of this host; an agent creates disks "
                             "only there")
        entry = Entry(migration_id=request.migration_id, vm=request.vm,
                      incoming_uuid=request.domain_uuid)
        await asyncio.to_thread(self._ledger.put, entry)
        return entry

    async def cleanup(self, request: CleanupRequest) -> CleanupReply:
        entry = await asyncio.to_thread(self._ledger.get, request.migration_id)
        if entry is not None and entry.sent_paths and not entry.sent_completed \
                and request.migration_id not in self._running:
            await self._prove_sent(entry)
        removed, reasons = False, []
        if request.remove_domain:
            removed, why_not = await self._remove_incoming(entry, request)
            reasons += [why_not] if why_not else []
        allowed, refused, refusals = ownership.deletable(entry, request.migration_id,
                                                         request.delete_paths)
        in_use = await self._paths_in_use()
        deleted, kept, unused_reasons = await asyncio.to_thread(disks.delete_unused, allowed,
                                                                in_use)
        if deleted:
            await self._hv.refresh_pools()
        log.info("migration_cleanup", migration_id=request.migration_id, vm=request.vm,
                 domain_removed=removed, deleted=deleted, kept=refused + kept)
        return CleanupReply(domain_removed=removed, deleted_paths=deleted, kept_paths=refused + kept,
                            detail="; ".join(reasons + refusals + unused_reasons))

    async def _prove_sent(self, entry: Entry) -> None:
        """The migrate call's answer was lost (this agent restarted during it): note the
        migration completed only if libvirt here no longer runs the domain and the destination's
        libvirt runs the same domain (by UUID). Anything less, and the sent disks stay."""
        if entry.sent_to is None or entry.sent_uuid is None or self._fetch_remote_domain is None:
            return
        here = [d for d in await self._hv.domains(None, include_cpu_xml=False)
                if d.name == entry.vm]
        if any(d.active for d in here):
            return
        try:
            there = await self._fetch_remote_domain(entry.sent_to, entry.vm)
        except BatonError as exc:
            log.warning("sent_not_proven", migration_id=entry.migration_id, error=exc.message)
            return
        if there.uuid != entry.sent_uuid or there.state != DomainState.RUNNING:
            return
        entry.sent_completed = True
        await asyncio.to_thread(self._ledger.put, entry)
        log.info("sent_proven", migration_id=entry.migration_id, destination=entry.sent_to)

    async def _remove_incoming(self, entry: Entry | None,
                               request: CleanupRequest) -> tuple[bool, str]:
        """Remove the domain only if it is the one this host prepared to receive (by UUID)."""
        uuid, why_not = ownership.incoming_domain(entry, request.migration_id, request.vm)
        if uuid is not None and await self._hv.remove_domain(request.vm, uuid):
            return True, ""
        if not await self._defined_here(request.vm):
            return False, ""  # nothing here to remove, nothing to explain
        return False, why_not or (f"{request.vm} here is not the domain (UUID {uuid}) that "
                                  f"migration {request.migration_id} brought: not removed")

    async def _defined_here(self, vm: str) -> bool:
        return any(d.name == vm for d in await self._hv.domains(None, include_cpu_xml=False))

    # --- facts ---------------------------------------------------------------------------------

    async def status(self, request: MigrationStatusRequest) -> MigrationStatus:
        """libvirt's facts about the VM here and the ledger's about the migration, read now."""
        here = [d for d in await self._hv.domains(None, include_cpu_xml=False)
                if d.name == request.vm]
        domain = here[0] if here else None
        job, job_error = None, None
        if domain is not None and domain.active:
            try:
                job = await self._hv.job_stats(request.vm)
            except BatonError as exc:  # said, not guessed: the caller sees it could not be read
                job_error = exc.message
        entry = await asyncio.to_thread(self._ledger.get, request.migration_id)
        running = self._running.get(request.migration_id)
        status = MigrationStatus(
            host_id=self._host_id, migration_id=request.migration_id, vm=request.vm,
            domain=domain, job=job, job_error=job_error, running_here=running is not None
            and running.request.vm == request.vm)
        if entry is None or entry.vm != request.vm:
            return status
        created, sent = await asyncio.to_thread(
            lambda: ([_fact(p) for p in entry.created_paths], [_fact(p) for p in entry.sent_paths]))
        return msgspec.structs.replace(status, known=True, incoming_uuid=entry.incoming_uuid,
                                       sent_completed=entry.sent_completed, created=created,
                                       sent=sent)

    async def _paths_in_use(self) -> set[str]:
        domains = await self._hv.domains(None, include_cpu_xml=False)
        return {d.source_path for dom in domains for d in dom.disks if d.source_path}


def _fact(path: str) -> PathFact:
    return PathFact(path=path, exists=os.path.lexists(path))
