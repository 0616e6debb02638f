"""One migration, from ``pending`` to a terminal phase.

pending → checking (read-only pre-flight) → preparing (destination pre-creates disks for a copy)
→ migrating (the source agent runs libvirt's peer-to-peer migration) → completing (the guest
resumed on the destination; confirm from both sides, delete the source's copied disks) →
succeeded. A failed check stops before anything is touched. On a failure or an abort after the
destination was touched, the runner confirms the VM still runs on the source and only then asks
the destination to remove the domain and the disks prepare created — never losing or
double-running a VM. The guest resuming on the destination (its resumed/migrated lifecycle
event) is the switch-over; after it an abort is refused and no roll-back removes the destination.

The waiting (start → drive → outcome, abort and silence handling) is
:class:`coordinator.job_runner.JobRunner`'s; this module holds what only a migration does.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.aio.msg import Msg

from baton.coordinator import holds, preflight
from baton.coordinator import plan as planning
from baton.coordinator.completion import confirmation_problems, source_intact
from baton.coordinator.job_runner import TERMINAL, Aborted, Callback, JobRunner, RunnerDeps, decoded
from baton.coordinator.progress import ProgressPump, note_source_steps
from baton.coordinator.verdict import Decision, Verdict, decide
from baton.schemas import timeouts
from baton.schemas.agent import DomainInfo
from baton.schemas.base import utc_now
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.events import LifecycleEvent, LifecycleKind
from baton.schemas.migration import (
    AgentAbortRequest,
    CleanupRequest,
    DrainTag,
    MigrateRequest,
    MigrationRecord,
    MigrationStatusRequest,
    Phase,
    Placement,
    SourceFinished,
    SpeedRequest,
    Strategy,
)
from baton.schemas.subjects import EventName, MigrationEvent

log = structlog.get_logger(__name__)


class MigrationRunner(JobRunner[MigrationRecord, SourceFinished]):
    KIND = "migration"
    TOO_LATE_TO_ABORT = ("the guest already resumed on the destination; the migration can no "
                         "longer be aborted")
    CANCELLED = "the coordinator stopped during the migration"
    STOPPED_EVENT = "migration_stopped"
    FINISHED_TYPE = SourceFinished
    FINISHED_EVENT = MigrationEvent.SOURCE_FINISHED

    def __init__(self, record: MigrationRecord, deps: RunnerDeps) -> None:
        super().__init__(record, deps)
        self._switchover_seen = False
        self._plan: planning.MigrationPlan | None = None
        self._source_before: DomainInfo | None = None
        self._created_paths: list[str] = []
        self._touched = False  # the destination was asked to prepare or the source to start
        self._job_ended = False  # both hosts' libvirt showed no job of the VM any more
        self._cap = record.bandwidth_mib_s  # what libvirt's job should run at (budget applied)
        self._applied_cap: int | None = None  # what the source was last told

    async def set_bandwidth(self, mib_s: int) -> MigrationRecord:
        if self.tracker.phase in TERMINAL:
            raise BatonError(ErrorCode.CONFLICT, f"migration already {self.tracker.phase}")
        admission = self._deps.admission
        share = None if admission is None else admission.share(self.record.migration_id)
        cap = mib_s if share is None else min(mib_s, share)  # the budget may hold it lower
        if self._started:
            applied, self._applied_cap = self._applied_cap, cap  # not sent twice by a wake
            try:
                await self._tell_source(cap)
            except BatonError:
                self._applied_cap = applied
                raise
        if admission is not None:
            admission.set_own_cap(self.record.migration_id, mib_s)
        self._cap = cap
        return self.tracker.update(bandwidth_mib_s=mib_s, budget_mib_s=_held(cap, mib_s))

    def _cap_changed(self, cap: int | None) -> None:
        """The bandwidth budget's share changed (another migration came or went)."""
        self._cap = cap
        self._wake.set()

    async def _apply_budget(self) -> None:
        if not self._started or self._cap is None or self._cap == self._applied_cap \
                or self.tracker.phase != Phase.MIGRATING:
            return
        cap = self._cap
        try:
            await self._tell_source(cap)
        except BatonError as exc:  # tried again at the next wake
            log.warning("budget_cap_not_applied", cap_mib_s=cap, error=str(exc))
            return
        log.info("budget_cap_applied", cap_mib_s=cap)
        self.tracker.update(budget_mib_s=_held(cap, self.record.bandwidth_mib_s))

    async def _tell_source(self, cap: int) -> None:
        await self._agents.speed(self.record.source, SpeedRequest(
            migration_id=self.record.migration_id, vm=self.record.vm, bandwidth_mib_s=cap))
        self._applied_cap = cap

    # --- the run ---------------------------------------------------------------------------

    def _completion_timeout_s(self) -> int | None:
        return self.record.request.timeout_s

    async def _fail_cancelled(self) -> None:
        if self.tracker.phase == Phase.QUEUED:  # touched nothing: the next coordinator runs it
            log.info("migration_left_queued")
            return
        log.warning("migration_cancelled", phase=self.tracker.phase)
        await super()._fail_cancelled()

    async def run(self) -> None:
        """The whole run holds its slot (coordinator/admission.py), roll-back included: a queued
        migration starts only once this one has left both hosts."""
        admission = self._deps.admission
        if admission is None:
            return await super().run()
        async with admission.held(self.record.migration_id):
            await super().run()

    async def _wait_for_slot(self) -> None:
        """Phase ``queued`` until the admission rule lets this migration start (or an abort)."""
        admission = self._deps.admission
        if admission is None:
            return
        record = self.record
        drain = record.drain
        ticket = admission.ticket(record.migration_id, record.source, record.destination,
                                  None if drain is None else drain.drain_id,
                                  None if drain is None else drain.parallel,
                                  record.bandwidth_mib_s)
        while not admission.try_admit(ticket, self._wake.set, self._cap_changed):
            if self.tracker.phase != Phase.QUEUED:
                await self.tracker.transition(
                    Phase.QUEUED, f"waiting for a slot: {admission.why_waiting(ticket)}")
            self._raise_if_aborted()
            await self._wait_for_wake()
        # the record now, not the one queued: the operator may have changed its cap meanwhile
        asked = self.record.bandwidth_mib_s
        if asked != ticket.cap_mib_s and asked is not None:
            admission.set_own_cap(record.migration_id, asked)  # changed queued
        self._cap = admission.cap(record.migration_id)
        self._raise_if_aborted()

    async def _run(self) -> None:
        await self._wait_for_slot()
        await self.tracker.transition(Phase.CHECKING)
        await holds.hold_at("checking")
        facts = await self._check()
        self._raise_if_aborted()
        plan = planning.make_plan(facts)
        self._plan = plan
        if plan.auto_choice:
            self.tracker.update(auto_choice=plan.auto_choice)
        await self.tracker.transition(Phase.PREPARING, f"storage {plan.storage}")
        await self._prepare(plan)
        await holds.hold_at("prepared")
        self._raise_if_aborted()
        try:
            finished = await self._follow_agent_job()
        except BatonError as exc:
            finished = await self._finished_by_facts(exc)
        await self._complete(finished)

    async def _finished_by_facts(self, silence: BatonError) -> SourceFinished:
        """The source agent went silent (killed, restarted: its report is lost) while libvirt
        carried on. Both hosts' facts say how it ended: the guest runs on the destination only
        -> finish as a success; anything else -> the failure goes on, with what the facts say
        (a roll-back then still needs its own proof)."""
        if silence.code != ErrorCode.TIMEOUT or self._abort_reason \
                or self.tracker.phase not in (Phase.MIGRATING, Phase.COMPLETING) \
                or not self.record.request.live or self._source_before is None:
            raise silence
        deadline = time.monotonic() + timeouts.FACTS_SETTLE
        while True:
            try:
                decision = await self._decide_from_facts(self._source_before.uuid)
            except BatonError as exc:
                raise BatonError(silence.code, f"{silence.message}; its facts cannot be read "
                                 f"({exc.message})") from None
            if decision.verdict is Verdict.ROLL_FORWARD:
                log.warning("finished_by_facts", reason=decision.reason)
                await self._enter_completing(f"the source agent fell silent; {decision.reason}")
                return SourceFinished(migration_id=self.record.migration_id,
                                      host_id=self.record.source, at=utc_now())
            if decision.verdict is not Verdict.WAIT:
                self._job_ended = True  # libvirt says no job runs: nothing left to abort
            if decision.verdict is not Verdict.WAIT or time.monotonic() > deadline:
                raise BatonError(silence.code, f"{silence.message}; {decision.reason}") from None
            await asyncio.sleep(timeouts.CONFIRM_POLL)

    async def _agent_forgot_job(self) -> bool:
        """The source's agent answers, runs no such migration, and its outcome did not arrive
        meanwhile (the report it published before forgetting a finished job wins)."""
        asked = MigrationStatusRequest(migration_id=self.record.migration_id, vm=self.record.vm)
        try:
            status = await self._agents.migration_status(self.record.source, asked)
        except BatonError:
            return False  # not answering: the silence limit decides
        if status.running_here:
            return False
        await asyncio.sleep(timeouts.CONFIRM_POLL)  # an outcome published just before it
        return self._finished is None

    async def _stop_agent_job(self) -> None:
        """Ask the source to abort; wait for its outcome, or for both hosts' libvirt to show the
        job gone (the outcome may never come: a start that timed out, an agent restarted)."""
        if self._job_ended:
            return
        await self._ask_agent_to_abort()
        deadline = time.monotonic() + timeouts.ABORT_SETTLE
        while self._finished is None and time.monotonic() < deadline:
            if await self._no_job_left():
                return
            await self._wait_for_wake()

    async def _decide_from_facts(self, uuid: str) -> Decision:
        """verdict.decide on both agents' migration.status, read now (raises if unreadable)."""
        asked = MigrationStatusRequest(migration_id=self.record.migration_id, vm=self.record.vm)
        return decide(uuid, await self._agents.migration_status(self.record.source, asked),
                      await self._agents.migration_status(self.record.destination, asked))

    async def _no_job_left(self) -> bool:
        if self._source_before is None:
            return False
        try:
            decision = await self._decide_from_facts(self._source_before.uuid)
        except BatonError:
            return False
        return decision.verdict is not Verdict.WAIT

    async def _check(self) -> preflight.Facts:
        request = self.record.request
        facts = await preflight.gather(self._agents, request.vm, self.record.source,
                                       self.record.destination, request.live, request.storage,
                                       request.tls,
                                       preflight.intent_of(request,
                                                           predict=request.strategy == Strategy.AUTO))
        report = preflight.report(facts)
        self._source_before = facts.domain
        self.tracker.update(checks=report.checks, storage=report.storage,
                            prediction=report.prediction)
        if not report.ok:
            raise BatonError(ErrorCode.PRECONDITION_FAILED,
                             preflight.failure_summary(report.checks))
        return facts

    async def _prepare(self, plan: planning.MigrationPlan) -> None:
        """Also without disks to copy: the destination's agent notes which domain (by UUID) it
        is to receive, the only one a roll-back may later ask it to remove."""
        self._touched = True
        uuid = None if self._source_before is None else self._source_before.uuid
        reply = await self._agents.prepare(self.record.destination, planning.prepare_request(
            self.record.migration_id, self.record.vm, plan, uuid))
        self._created_paths = list(reply.created_paths)
        log.info("destination_prepared", created_paths=self._created_paths)

    async def _start_agent_job(self) -> str:
        assert self._plan is not None  # made before preparing
        self._touched = True
        request = planning.start_request(self.record.migration_id, self.record.request,
                                         self._plan, self._cap)
        self._applied_cap = self._cap
        if self._cap is not None:
            self.tracker.update(budget_mib_s=_held(self._cap, self.record.bandwidth_mib_s))
        try:
            await self._agents.start(self.record.source, request)
        except BatonError as exc:
            if exc.code == ErrorCode.TIMEOUT:  # it may run all the same: stop it as if it did
                self._started = True
            raise
        return "source agent started the migration"

    async def _on_wake(self) -> None:
        if self.tracker.phase != Phase.MIGRATING:
            return
        await self._apply_budget()
        if self._switchover_seen:
            await self.tracker.transition(Phase.COMPLETING, "guest resumed on the destination")
        elif self.record.postcopy:  # its resume event says "post-copy", not "migrated"
            await self.tracker.transition(Phase.COMPLETING, "switched to post-copy: the guest "
                                          "runs on the destination")

    async def _ask_agent_to_abort(self) -> None:
        try:
            await self._agents.abort(self.record.source, AgentAbortRequest(
                migration_id=self.record.migration_id, vm=self.record.vm))
        except BatonError as exc:
            log.warning("abort_not_delivered", error=str(exc))

    # --- completion ------------------------------------------------------------------------

    async def _complete(self, finished: SourceFinished) -> None:
        if finished.aborted:
            raise Aborted()
        if finished.error is not None:
            raise BatonError.from_reply(finished.error)
        self.tracker.update(result=finished.stats)
        await self._enter_completing("the source's migrate call returned")
        await holds.hold_at("completing")
        await self._confirm()
        await self._delete_copied_source_disks()
        await self.tracker.transition(Phase.SUCCEEDED, "confirmed on both hosts")
        log.info("migration_completed")

    async def _confirm(self) -> None:
        """Re-ask both agents until the outcome is as requested, or CONFIRM_WINDOW passes."""
        deadline = time.monotonic() + timeouts.CONFIRM_WINDOW
        while True:
            try:
                problems = confirmation_problems(
                    self.record.request, self.record.destination,
                    await self._agents.domain_or_none(self.record.destination, self.record.vm),
                    await self._agents.domain_or_none(self.record.source, self.record.vm),
                    self._source_before is None or self._source_before.persistent)
            except BatonError as exc:
                problems = [str(exc)]
            if not problems:
                return
            if time.monotonic() > deadline:
                raise BatonError(ErrorCode.HYPERVISOR, "libvirt reported the migration done, "
                                 "but: " + "; ".join(problems), stage="confirm")
            await asyncio.sleep(timeouts.CONFIRM_POLL)

    async def _delete_copied_source_disks(self) -> None:
        plan = self._plan
        if plan is None or not plan.disks or not self.record.request.undefine_source:
            return
        try:
            reply = await self._agents.cleanup(self.record.source, CleanupRequest(
                migration_id=self.record.migration_id, vm=self.record.vm,
                delete_paths=plan.copy_paths))
            log.info("source_disks_deleted", deleted=reply.deleted_paths, kept=reply.kept_paths)
        except BatonError as exc:
            log.warning("source_disks_not_deleted", error=str(exc), paths=plan.copy_paths)

    # --- failure, abort and roll-back ------------------------------------------------------

    def _abort_error(self) -> BatonError:
        reason = self._abort_reason or "the source agent cancelled the job"
        return BatonError(ErrorCode.CONFLICT, f"aborted: {reason}")

    async def _after_stop(self, error: BatonError) -> ErrorReply:
        notes = await self._roll_back() if self._touched else ""
        reply = error.to_reply()
        if notes:
            reply = BatonError(reply.code, reply.message, **reply.details, rollback=notes).to_reply()
        return reply

    async def _roll_back(self) -> str:
        """Remove what the destination holds, only once the source is proven to keep the VM."""
        record = self.record
        if self._switchover_seen:
            log.error("rollback_skipped", why="guest resumed on the destination")
            return "not rolled back: the guest had resumed on the destination; check both hosts"
        try:
            now = await self._agents.domain_or_none(record.source, record.vm)
        except BatonError as exc:
            log.error("rollback_skipped", why="source unreachable", error=str(exc))
            return f"not rolled back: cannot confirm the VM on {record.source} ({exc.message})"
        if not source_intact(self._source_before, now):
            log.error("rollback_skipped", why="VM not intact on source")
            return f"not rolled back: the VM is not intact on {record.source}; check both hosts"
        if record.request.live and (refused := await self._facts_refuse_roll_back()):
            return refused
        return await self._clean_destination()

    async def _facts_refuse_roll_back(self) -> str:
        """Both hosts' libvirt facts must say "roll back" (coordinator/verdict.py); while a job
        still runs on either, ask again until ABORT_SETTLE passes. Empty when they do."""
        assert self._source_before is not None  # source_intact() held
        deadline = time.monotonic() + timeouts.ABORT_SETTLE
        while True:
            try:
                decision = await self._decide_from_facts(self._source_before.uuid)
            except BatonError as exc:
                log.error("rollback_skipped", why="facts unreadable", error=str(exc))
                return (f"not rolled back: cannot read the migration's facts ({exc.message}); "
                        "check both hosts")
            if decision.verdict is Verdict.ROLL_BACK:
                return ""
            if decision.verdict is not Verdict.WAIT or time.monotonic() > deadline:
                log.error("rollback_skipped", why=decision.reason, verdict=decision.verdict)
                return f"not rolled back ({decision.verdict}): {decision.reason}; check both hosts"
            await asyncio.sleep(timeouts.CONFIRM_POLL)

    async def _clean_destination(self) -> str:
        record = self.record
        try:
            reply = await self._agents.cleanup(record.destination, CleanupRequest(
                migration_id=record.migration_id, vm=record.vm, remove_domain=True,
                delete_paths=self._created_paths))
        except BatonError as exc:
            log.error("destination_cleanup_failed", error=str(exc))
            return f"destination clean-up failed: {exc.message}"
        log.info("destination_cleaned", removed=reply.domain_removed,
                 deleted=reply.deleted_paths, kept=reply.kept_paths)
        if reply.kept_paths:
            return f"destination kept {', '.join(reply.kept_paths)}: {reply.detail}"
        if reply.detail:  # the agent refused to remove the domain
            return f"destination kept {record.vm}: {reply.detail}"
        return ""

    # --- subscriptions ---------------------------------------------------------------------

    async def _subscriptions(self, pump: ProgressPump) -> list[tuple[str, Callback]]:
        """The source's reports and the destination's lifecycle events."""
        subjects, record = self._deps.subjects, self.record

        async def on_lifecycle(msg: Msg) -> None:
            if (event := decoded(msg, LifecycleEvent)) is not None:
                self._on_lifecycle(event)

        return [
            (subjects.agent_report(record.source, record.migration_id,
                                   MigrationEvent.SOURCE_PROGRESS), self._progress_callback(pump)),
            (subjects.agent_report(record.source, record.migration_id, self.FINISHED_EVENT),
             self._finished_callback(pump)),
            (subjects.events(record.destination, record.vm, EventName.LIFECYCLE), on_lifecycle),
        ]

    def _note_finished(self, finished: SourceFinished) -> None:
        log.info("source_finished", aborted=finished.aborted,
                 error=finished.error.message if finished.error else None)
        if finished.escalations or finished.postcopy:  # none said: keep what progress said
            note_source_steps(self.tracker, finished.escalations, finished.postcopy)

    def _on_lifecycle(self, event: LifecycleEvent) -> None:
        if event.vm != self.record.vm or self._switchover_seen:
            return
        if event.event == LifecycleKind.RESUMED and event.detail == "migrated":
            self._switchover_seen = True
            self.tracker.update(switchover_at=event.at)
            log.info("switchover", at=event.at.isoformat())
            self._wake.set()


def _held(cap: int, asked: int | None) -> int | None:
    """The budget's cap when it holds the migration below what was asked, else None."""
    return cap if asked is None or cap < asked else None


def new_record(migration_id: str, request: MigrateRequest, source: str,
               placement: Placement | None = None, drain: DrainTag | None = None,
               ) -> MigrationRecord:
    """``request`` names its destination (the one placement chose, when the operator gave none)."""
    if request.destination is None:
        raise ValueError("a migration record needs a destination: place the VM first")
    now = utc_now()
    return MigrationRecord(migration_id=migration_id, vm=request.vm, source=source,
                           destination=request.destination, phase=Phase.PENDING,
                           storage=request.storage, request=request, created_at=now,
                           updated_at=now, bandwidth_mib_s=request.bandwidth_mib_s,
                           placement=placement, drain=drain)
