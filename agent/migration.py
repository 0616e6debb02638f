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
from dataclasses import dataclass, field, replace
from enum import StrEnum

import msgspec
import structlog

from baton.agent import convergence, disks, ownership, precopy_model
from baton.agent.core import FetchRemoteDomain
from baton.agent.hypervisor import Hypervisor
from baton.agent.jobs import Publish, RunningJobs, crashed
from baton.agent.ledger import Entry, Ledger
from baton.agent.migration_plan import Definitions, MigrationFlag, MigrationPlan, plan_migration
from baton.agent.peers import CheckPeer
from baton.agent.prediction import PassClock, eta_of
from baton.agent.relocation import check_paths, relocate_disks
from baton.agent.start_cost import StartCost
from baton.schemas.agent import (
    PAUSED_POSTCOPY,
    PAUSED_POSTCOPY_FAILED,
    RUNNING_POSTCOPY,
    RUNNING_POSTCOPY_FAILED,
    DomainInfo,
    DomainState,
)
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
    PostcopySwitch,
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
POSTCOPY_RECOVERY_ATTEMPTS = 5  # resume calls
POSTCOPY_RECOVERY_WAIT_S = 3.0  # between readings of libvirt's facts
POSTCOPY_RECOVERY_WINDOW_S = 120.0  # then the operator is told how to go on
POSTCOPY_RESUME_SLACK_S = 60.0  # a resume call's bound beyond the time its memory needs
POSTCOPY_RESUME_UNCAPPED_S = 60.0  # the time the memory needs when no cap says it


def resume_bound_s(cap_mib_s: int | None, memory_total_bytes: int | None) -> float:
    """How long one post-copy resume call may run: twice the time the guest's whole memory
    (as libvirt last reported it) needs at the cap, or a minute without a cap, and
    :data:`POSTCOPY_RESUME_SLACK_S` more."""
    if not cap_mib_s:
        return POSTCOPY_RESUME_SLACK_S + POSTCOPY_RESUME_UNCAPPED_S
    return POSTCOPY_RESUME_SLACK_S + 2 * (memory_total_bytes or 0) / (cap_mib_s * precopy_model.MIB)


class PostcopyState(StrEnum):
    FAILED = "failed"  # paused, its stream broken: libvirt's post-copy recovery resumes it
    RUNNING = "running"  # still in post-copy: QEMU is sending the rest
    ENDED = "ended"  # no longer active here: moved, if the destination says so
    UNKNOWN = "unknown"  # libvirt could not be read, or a state post-copy does not explain


@dataclass
class _Running:
    request: StartRequest
    abort_requested: bool = False
    # A cap asked for (migration.speed) that must still reach QEMU: one set before libvirt's
    # migrate call applied its own parameters (it does just before the memory is sent) is
    # overwritten by the call's cap, so it is set again once memory is being sent.
    speed_pending: int | None = None
    speed_changed: bool = False  # the cap changed while it ran: its time says nothing of the start
    completed: asyncio.Future[JobStats] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    escalator: convergence.Escalator = field(init=False)  # kept across a post-copy recovery

    def __post_init__(self) -> None:
        self.escalator = convergence.Escalator(self.request)

    @property
    def in_postcopy(self) -> bool:
        return self.escalator.postcopy


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
        self.start_cost = StartCost()  # learned from the moves that complete here; read by
        # this host's predictions (agent/prediction.py)

    # --- source -------------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> StartReply:
        self._refuse_if_busy(request.migration_id, request.vm)
        [domain] = await self._hv.domains([request.vm], include_cpu_xml=False)
        plan = plan_migration(request, domain_active=domain.active,
                              definitions=await self._relocated_definitions(request))
        await self._check_peer(request.destination_host, request.destination_uri)
        await self._note_sending(request, domain)
        running = _Running(request)
        self._launch(request.migration_id, running, self._run(running, plan))
        log.info("migration_started", migration_id=request.migration_id, vm=request.vm,
                 destination=request.destination_uri, flags=sorted(plan.flags))
        return StartReply(migration_id=request.migration_id)

    async def _relocated_definitions(self, request: StartRequest) -> Definitions | None:
        """The definitions the destination gets when copies land at other paths (another pool):
        only copied disks move, to absolute paths; the rest of the definition is libvirt's."""
        paths = request.destination_paths
        if not paths:
            return None
        check_paths(request.copy_disks, paths)
        running = relocate_disks(await self._hv.migratable_xml(request.vm, inactive=False), paths)
        if not request.persistent:
            return Definitions(destination_xml=running)
        # Without its own, libvirt would persist the source's definition: the old paths.
        persistent = relocate_disks(await self._hv.migratable_xml(request.vm, inactive=True), paths)
        return Definitions(destination_xml=running, persistent_xml=persistent)

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
            error = await self._migrate_with_progress(running, plan)
            if error is not None and running.in_postcopy and not running.abort_requested:
                error = await self._recover_postcopy(running, plan, error)
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

    async def _recover_postcopy(self, running: _Running, plan: MigrationPlan,
                                failure: BatonError) -> BatonError | None:
        """A migration that failed after the post-copy switch: the guest runs on the destination
        without all its memory and the rest is only here, so neither side may be given up.
        libvirt's facts decide each step: paused with post-copy failed -> resume it
        (VIR_MIGRATE_POSTCOPY_RESUME: the two QEMUs reconnect and the rest is sent); still in
        post-copy -> QEMU is at it, wait; no longer here -> it ended, and counts as done only
        when the destination's agent reports the same domain running with all its memory."""
        request, error = running.request, failure
        resume = replace(plan, flags=plan.flags | {MigrationFlag.POSTCOPY_RESUME},
                         max_downtime_ms=None)
        attempts = 0
        deadline = asyncio.get_running_loop().time() + POSTCOPY_RECOVERY_WINDOW_S
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(POSTCOPY_RECOVERY_WAIT_S)
            state = await self._postcopy_state(request.vm)
            log.warning("postcopy_failed_recovering", migration_id=request.migration_id,
                        vm=request.vm, state=state, attempts=attempts, error=error.message)
            if state is PostcopyState.ENDED:
                if await self._arrived(request):
                    await self._finish_what_libvirt_left(request)
                    running.escalator.note(f"post-copy failed ({failure.message}); it completed "
                                           "all the same")
                    return None
                continue  # gone here, not yet proven there: read again
            if state is not PostcopyState.FAILED or attempts == POSTCOPY_RECOVERY_ATTEMPTS:
                continue
            attempts += 1
            again = await self._resume_within_bound(running, resume)
            if again is None:
                running.escalator.note(f"post-copy failed ({failure.message}); recovered "
                                       f"(attempt {attempts})")
                return None
            error = again
        return BatonError(ErrorCode.HYPERVISOR, f"post-copy failed and was not recovered "
                          f"({error.message}): the guest waits on "
                          f"{request.destination_host or 'the destination'} for the memory "
                          "still on this host; neither side was touched. Recover it when the "
                          f"link is back: virsh migrate --postcopy --postcopy-resume {request.vm} "
                          f"{request.destination_uri}", stage="postcopy")

    async def _resume_within_bound(self, running: _Running,
                                   resume: MigrationPlan) -> BatonError | None:
        """One resume call, given the time the rest of the memory needs at the cap and a
        minute more: a resume was seen to hang when the stream broke in the switch itself.
        Past it the call is cancelled (its job interrupted, agent/libvirt/migrate.py)."""
        bound_s = resume_bound_s(running.request.bandwidth_mib_s,
                                 running.escalator.memory_total_bytes)
        try:
            async with asyncio.timeout(bound_s):
                return await self._migrate_with_progress(running, resume)
        except TimeoutError:
            return BatonError(ErrorCode.TIMEOUT, f"the post-copy resume of {running.request.vm} "
                              f"did not end within {bound_s:.0f} s; it was interrupted")

    async def _postcopy_state(self, vm: str) -> PostcopyState:
        """Where the source's side of a post-copy migration stands, from libvirt here."""
        try:
            here = [d for d in await self._hv.domains(None, include_cpu_xml=False)
                    if d.name == vm]
        except BatonError:
            return PostcopyState.UNKNOWN
        if not here or not here[0].active:
            return PostcopyState.ENDED
        paused = here[0].state == DomainState.PAUSED
        if paused and here[0].state_reason == PAUSED_POSTCOPY_FAILED:
            return PostcopyState.FAILED
        if paused and here[0].state_reason == PAUSED_POSTCOPY:
            return PostcopyState.RUNNING
        return PostcopyState.UNKNOWN

    async def _finish_what_libvirt_left(self, request: StartRequest) -> None:
        """QEMU completed a move whose migrate call libvirt had given up on (seen in the lab
        after a resume call failed), so libvirt never undefined the source. Proven here (no
        longer active) and there (running, all its memory): undefine the inactive copy if the
        request said so, only that domain (by UUID)."""
        entry = await asyncio.to_thread(self._ledger.get, request.migration_id)
        if not request.undefine_source or entry is None or entry.sent_uuid is None:
            return
        here = [d for d in await self._hv.domains(None, include_cpu_xml=False)
                if d.name == request.vm and d.uuid == entry.sent_uuid and not d.active]
        if here and await self._hv.remove_domain(request.vm, entry.sent_uuid):
            log.info("source_undefined_after_postcopy", migration_id=request.migration_id,
                     vm=request.vm)

    async def _arrived(self, request: StartRequest) -> bool:
        """The destination's agent reports the domain (by UUID) running with all its memory."""
        entry = await asyncio.to_thread(self._ledger.get, request.migration_id)
        if entry is None or entry.sent_uuid is None or request.destination_host is None \
                or self._fetch_remote_domain is None:
            return False
        try:
            there = await self._fetch_remote_domain(request.destination_host, request.vm)
        except BatonError:
            return False
        return (there.uuid == entry.sent_uuid and there.state == DomainState.RUNNING
                and there.state_reason not in (RUNNING_POSTCOPY, RUNNING_POSTCOPY_FAILED))

    async def _migrate_with_progress(self, running: _Running,
                                     plan: MigrationPlan) -> BatonError | None:
        request = running.request
        async with asyncio.TaskGroup() as tasks:
            poller = tasks.create_task(self._report_progress(running, plan))
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
                                  aborted=error is not None and running.abort_requested,
                                  escalations=list(running.escalator.escalations),
                                  postcopy=running.in_postcopy)
        # A success (the only outcome with figures) teaches this host's start, unless it
        # switched to post-copy: that phase runs at a cap of its own.
        if stats is not None and not running.in_postcopy:
            self.start_cost.observe(bool(request.copy_disks), stats,
                                    None if running.speed_changed else request.bandwidth_mib_s)
        log.info("migration_finished", migration_id=request.migration_id, vm=request.vm,
                 ok=error is None, aborted=finished.aborted,
                 error=None if error is None else error.message)
        await self._send(request.migration_id, MigrationEvent.SOURCE_FINISHED, finished)

    async def _report_progress(self, running: _Running, plan: MigrationPlan) -> None:
        """Publish the job's figures every interval; apply the max downtime once a job runs, and
    a cap asked for once memory is being sent;
        with ``downtime_ramp``, raise it when the remainder stalls, and switch to post-copy
        when the request says when (agent/convergence.py)."""
        request = running.request
        downtime_pending = plan.max_downtime_ms
        ramp = running.escalator
        clock = PassClock()
        while True:
            await asyncio.sleep(request.progress_interval_ms / 1000)
            try:
                stats = await self._hv.job_stats(request.vm)
                if stats is not None and downtime_pending is not None:
                    await self._hv.set_max_downtime(request.vm, downtime_pending)
                    downtime_pending = None
                if stats is not None and (stats.memory_processed_bytes or 0) > 0 \
                        and (speed := running.speed_pending) is not None:
                    await self._hv.set_max_speed(request.vm, speed)
                    if running.speed_pending == speed:  # not changed again meanwhile
                        running.speed_pending = None
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
        running = self._find(request.migration_id, request.vm)
        running.speed_pending = request.bandwidth_mib_s
        running.speed_changed = True
        await self._hv.set_max_speed(request.vm, request.bandwidth_mib_s)
        if running.request.postcopy != PostcopySwitch.OFF:  # the post-copy phase has its own
            await self._hv.set_max_speed(request.vm, request.bandwidth_mib_s, postcopy=True)
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

    async def _domain_here(self, vm: str) -> DomainInfo | None:
        return next((d for d in await self._hv.domains(None, include_cpu_xml=False)
                     if d.name == vm), None)

    async def _defined_here(self, vm: str) -> bool:
        return await self._domain_here(vm) is not None

    # --- facts ---------------------------------------------------------------------------------

    async def status(self, request: MigrationStatusRequest) -> MigrationStatus:
        """libvirt's facts about the VM here and the ledger's about the migration, read now."""
        domain = await self._domain_here(request.vm)
        job, job_error = None, None
        if domain is not None and domain.active:
            try:
                job = await self._hv.job_stats(request.vm)
            except BatonError as exc:
                # A migration that ends between the two reads takes the domain with it (seen under
                # load: "no domain named ..."). Read again: a domain now gone or stopped is the
                # fact; one still running whose job cannot be read is said, not guessed.
                domain = await self._domain_here(request.vm)
                if domain is not None and domain.active:
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
