"""One migration, from ``pending`` to a terminal phase.

pending → checking (read-only pre-flight) → preparing (destination pre-creates disks for a copy)
→ migrating (the source agent runs libvirt's peer-to-peer migration) → completing (the guest
resumed on the destination; confirm from both sides, delete the source's copied disks) →
succeeded. A failed check stops before anything is touched. On a failure or an abort after the
destination was touched, the runner confirms the VM still runs on the source and only then asks
the destination to remove the domain and the disks prepare created — never losing or
double-running a VM. The guest resuming on the destination (its resumed/migrated lifecycle
event) is the switch-over; after it an abort is refused and no roll-back removes the destination.

Subscription callbacks only store what arrived and wake the runner; all waiting happens in
:meth:`MigrationRunner._drive`. The progress pump lives in a TaskGroup owned by the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar, cast

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from coordinator import plan as planning
from coordinator import preflight
from coordinator.agents import AgentClient
from coordinator.completion import confirmation_problems, source_intact
from coordinator.phases import PhaseTracker
from coordinator.progress import ProgressPump
from schemas import timeouts
from schemas.agent import DomainInfo
from schemas.base import utc_now
from schemas.codec import decode_any
from schemas.errors import BatonError, ErrorCode
from schemas.events import LifecycleEvent, LifecycleKind
from schemas.migration import (
    AgentAbortRequest,
    CleanupRequest,
    MigrateRequest,
    MigrationRecord,
    Phase,
    SourceFinished,
    SourceProgress,
    SpeedRequest,
)
from schemas.subjects import EventName, MigrationEvent, Subjects

log = structlog.get_logger(__name__)
T = TypeVar("T")
WAKE_TICK = 1.0


class Aborted(Exception):
    """The migration was cancelled on request."""


@dataclass(frozen=True)
class RunnerDeps:
    nc: NATS
    agents: AgentClient
    subjects: Subjects


class MigrationRunner:
    def __init__(self, record: MigrationRecord, deps: RunnerDeps) -> None:
        self._deps = deps
        self._agents = deps.agents
        self.tracker = PhaseTracker(record, deps.subjects, deps.nc.publish)
        self.done = asyncio.Event()
        self._abort_reason: str | None = None
        self._wake = asyncio.Event()
        self._finished: SourceFinished | None = None
        self._switchover_seen = False
        self._plan: planning.MigrationPlan | None = None
        self._source_before: DomainInfo | None = None
        self._created_paths: list[str] = []
        self._touched = False  # the destination was asked to prepare or the source to start
        self._started = False  # the source agent accepted migration.start

    @property
    def record(self) -> MigrationRecord:
        return self.tracker.record

    # --- requests from the service (no waiting here) ---------------------------------------

    def request_abort(self, reason: str) -> None:
        phase = self.tracker.phase
        if phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED):
            raise BatonError(ErrorCode.CONFLICT, f"migration already {phase}")
        if phase == Phase.COMPLETING:
            raise BatonError(ErrorCode.CONFLICT, "the guest already resumed on the destination; "
                             "the migration can no longer be aborted")
        if self._abort_reason is None:
            self._abort_reason = reason
            log.info("abort_requested", reason=reason)
        self._wake.set()

    async def set_bandwidth(self, mib_s: int) -> MigrationRecord:
        if self.tracker.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED):
            raise BatonError(ErrorCode.CONFLICT, f"migration already {self.tracker.phase}")
        if self._started:
            await self._agents.speed(self.record.source, SpeedRequest(
                migration_id=self.record.migration_id, vm=self.record.vm, bandwidth_mib_s=mib_s))
        return self.tracker.update(bandwidth_mib_s=mib_s)

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> None:
        record = self.record
        with structlog.contextvars.bound_contextvars(migration_id=record.migration_id,
                                                     vm=record.vm):
            try:
                await self._run()
            except Aborted:
                await self._finish_unsuccessfully(None)
            except BatonError as exc:
                await self._finish_unsuccessfully(exc)
            except asyncio.CancelledError:
                log.warning("migration_cancelled", phase=self.tracker.phase)
                await self.tracker.transition(Phase.FAILED, "coordinator stopped", error=BatonError(
                    ErrorCode.UNAVAILABLE, "the coordinator stopped during the migration").to_reply())
                raise
            except Exception:
                await self._finish_unsuccessfully(_internal_error())
            finally:
                self.done.set()

    async def _run(self) -> None:
        await self.tracker.transition(Phase.CHECKING)
        facts = await self._check()
        self._raise_if_aborted()
        plan = planning.make_plan(facts)
        self._plan = plan
        await self.tracker.transition(Phase.PREPARING, f"storage {plan.storage}")
        await self._prepare(plan)
        self._raise_if_aborted()
        finished = await self._migrate(plan)
        await self._complete(finished)

    async def _check(self) -> preflight.Facts:
        request = self.record.request
        facts = await preflight.gather(self._agents, request.vm, self.record.source,
                                       self.record.destination, request.live, request.storage)
        report = preflight.report(facts)
        self._source_before = facts.domain
        self.tracker.update(checks=report.checks, storage=report.storage)
        if not report.ok:
            raise BatonError(ErrorCode.PRECONDITION_FAILED,
                             preflight.failure_summary(report.checks))
        return facts

    async def _prepare(self, plan: planning.MigrationPlan) -> None:
        if not plan.disks:
            return
        self._touched = True
        reply = await self._agents.prepare(self.record.destination, planning.prepare_request(
            self.record.migration_id, self.record.vm, plan))
        self._created_paths = list(reply.created_paths)
        log.info("destination_prepared", created_paths=self._created_paths)

    async def _migrate(self, plan: planning.MigrationPlan) -> SourceFinished:
        pump = ProgressPump(self.tracker, self._deps.subjects, self._deps.nc.publish)
        async with self._listening(pump), asyncio.TaskGroup() as tasks:
            pump_task = tasks.create_task(pump.run())
            try:
                outcome = await self._start_and_wait(plan, pump)
            finally:
                pump_task.cancel()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _start_and_wait(self, plan: planning.MigrationPlan,
                              pump: ProgressPump) -> SourceFinished | BaseException:
        """The outcome, or the exception to raise once the progress pump has stopped."""
        try:
            self._touched = True
            request = planning.start_request(self.record.migration_id, self.record.request, plan,
                                             self.record.bandwidth_mib_s)
            await self._agents.start(self.record.source, request)
            self._started = True
            await self.tracker.transition(Phase.MIGRATING, "source agent started the migration")
            pump.heard()
            return await self._drive(pump)
        except (BatonError, Aborted) as exc:
            return exc

    async def _drive(self, pump: ProgressPump) -> SourceFinished:
        """Wait for the source's outcome, reacting to the switch-over, aborts and silence."""
        abort_sent_at: float | None = None
        while self._finished is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAKE_TICK):
                    await self._wake.wait()
            self._wake.clear()
            await self._note_switchover()
            if self._abort_reason is not None and abort_sent_at is None \
                    and self.tracker.phase == Phase.MIGRATING:
                await self._ask_source_to_abort()
                abort_sent_at = time.monotonic()
            _raise_if_late(abort_sent_at, pump.silent_for(), self._finished is None)
        return self._finished

    async def _note_switchover(self) -> None:
        if self._switchover_seen and self.tracker.phase == Phase.MIGRATING:
            await self.tracker.transition(Phase.COMPLETING, "guest resumed on the destination")

    async def _ask_source_to_abort(self) -> None:
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
        if self.tracker.phase == Phase.MIGRATING:  # offline, or the resumed event went missing
            await self.tracker.transition(Phase.COMPLETING, "the source's migrate call returned")
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

    async def _finish_unsuccessfully(self, error: BatonError | None) -> None:
        aborted = error is None
        if aborted:
            reason = self._abort_reason or "the source agent cancelled the job"
            error = BatonError(ErrorCode.CONFLICT, f"aborted: {reason}")
        if self._started and self._finished is None:
            await self._stop_source_job()
        notes = await self._roll_back() if self._touched else ""
        reply = error.to_reply()
        if notes:
            reply = BatonError(reply.code, reply.message, **reply.details, rollback=notes).to_reply()
        phase = Phase.ABORTED if aborted else Phase.FAILED
        log.info("migration_stopped", phase=phase, error=reply.message)
        await self.tracker.transition(phase, reply.message, error=reply)

    async def _stop_source_job(self) -> None:
        """A failure while libvirt may still migrate: cancel it and wait for the outcome."""
        await self._ask_source_to_abort()
        deadline = time.monotonic() + timeouts.ABORT_SETTLE
        while self._finished is None and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAKE_TICK):
                    await self._wake.wait()
            self._wake.clear()

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
        return await self._clean_destination()

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
        return ""

    def _raise_if_aborted(self) -> None:
        if self._abort_reason is not None:
            raise Aborted()

    # --- subscriptions ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _listening(self, pump: ProgressPump) -> AsyncIterator[None]:
        """Subscribe to the source's reports and the destination's lifecycle events."""
        subjects, nc, record = self._deps.subjects, self._deps.nc, self.record

        async def on_progress(msg: Msg) -> None:
            if (progress := _decoded(msg, SourceProgress)) is not None:
                pump.offer(progress)

        async def on_finished(msg: Msg) -> None:
            pump.heard()
            if (finished := _decoded(msg, SourceFinished)) is not None:
                self._on_finished(finished)

        async def on_lifecycle(msg: Msg) -> None:
            if (event := _decoded(msg, LifecycleEvent)) is not None:
                self._on_lifecycle(event)

        subs = [
            await nc.subscribe(subjects.migration(record.migration_id,
                                                  MigrationEvent.SOURCE_PROGRESS), cb=on_progress),
            await nc.subscribe(subjects.migration(record.migration_id,
                                                  MigrationEvent.SOURCE_FINISHED), cb=on_finished),
            await nc.subscribe(subjects.events(record.destination, record.vm,
                                               EventName.LIFECYCLE), cb=on_lifecycle),
        ]
        try:
            yield
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def _on_finished(self, finished: SourceFinished) -> None:
        if finished.migration_id != self.record.migration_id or self._finished is not None:
            return
        log.info("source_finished", aborted=finished.aborted,
                 error=finished.error.message if finished.error else None)
        self._finished = finished
        self._wake.set()

    def _on_lifecycle(self, event: LifecycleEvent) -> None:
        if event.vm != self.record.vm or self._switchover_seen:
            return
        if event.event == LifecycleKind.RESUMED and event.detail == "migrated":
            self._switchover_seen = True
            self.tracker.update(switchover_at=event.at)
            log.info("switchover", at=event.at.isoformat())
            self._wake.set()


def _decoded(msg: Msg, type_: type[T]) -> T | None:
    """An event from a subscription; a malformed one is logged and dropped."""
    try:
        return cast(T, decode_any(msg.data, type_))
    except msgspec.DecodeError as exc:
        log.warning("malformed_event_dropped", subject=msg.subject, error=str(exc))
        return None


def _raise_if_late(abort_sent_at: float | None, silent_for: float, waiting: bool) -> None:
    if not waiting:
        return
    if abort_sent_at is not None and time.monotonic() - abort_sent_at > timeouts.ABORT_SETTLE:
        raise BatonError(ErrorCode.TIMEOUT, "the source agent did not confirm the abort within "
                         f"{timeouts.ABORT_SETTLE:g} s")
    if silent_for > timeouts.SOURCE_SILENCE_LIMIT:
        raise BatonError(ErrorCode.TIMEOUT, f"the source agent said nothing for {silent_for:.0f} "
                         "s during the migration")


def _internal_error() -> BatonError:
    error_id = uuid.uuid4().hex[:12]
    log.exception("migration_crashed", error_id=error_id)
    return BatonError(ErrorCode.INTERNAL, f"internal error (id {error_id}); the coordinator "
                      "logs say more", error_id=error_id)


def new_record(migration_id: str, request: MigrateRequest, source: str) -> MigrationRecord:
    now = utc_now()
    return MigrationRecord(migration_id=migration_id, vm=request.vm, source=source,
                           destination=request.destination, phase=Phase.PENDING,
                           storage=request.storage, request=request, created_at=now,
                           updated_at=now, bandwidth_mib_s=request.bandwidth_mib_s)
