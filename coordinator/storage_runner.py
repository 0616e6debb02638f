"""One storage move, from ``pending`` to a terminal phase, with the migrations' phases:

pending → checking (read-only pre-flight on the VM's host) → preparing (the agent validates and
starts the block copies) → migrating (copying; the guest still uses the old files) → completing
(every copy in sync: the agent pivots, confirms both definitions, verifies the new files and
deletes the old ones) → succeeded. A failed check stops before anything is touched. Abort or
failure before the pivot: the agent cancels the copies and removes them; the VM keeps its old
files. Once the agent reports the copies ready, an abort is refused (the pivot is the switch-over).

The agent reports on ``baton.migrations.<id>.source.progress`` (relayed at least once a second
as ``progress``), ``.storage.stage`` and ``.storage.finished``. Subscription callbacks only store
what arrived and wake the runner; all waiting happens in :meth:`StorageMoveRunner._drive`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from nats.aio.msg import Msg

from coordinator import storage_checks
from coordinator.phases import PhaseTracker
from coordinator.progress import ProgressPump
from coordinator.runner import Aborted, RunnerDeps, _internal_error, _raise_if_late
from schemas import timeouts
from schemas.base import utc_now
from schemas.codec import decode_any
from schemas.errors import BatonError, ErrorCode
from schemas.job import Phase
from schemas.migration import SourceProgress
from schemas.storage import (
    AgentStorageAbortRequest,
    AgentStorageMoveRequest,
    StorageCheckReport,
    StorageMoveFinished,
    StorageMoveRecord,
    StorageMoveRequest,
    StorageStage,
    StorageStageEvent,
)
from schemas.subjects import MigrationEvent

log = structlog.get_logger(__name__)
WAKE_TICK = 1.0
PROGRESS_INTERVAL_MS = 500

# The phase each step the agent reports stands for (the copy is "migrating" data; from the moment
# every copy is in sync the agent switches the VM over, which is "completing").
STAGE_PHASES = {
    StorageStage.COPYING: Phase.MIGRATING,
    StorageStage.READY: Phase.COMPLETING,
    StorageStage.PIVOTED: Phase.COMPLETING,
}


def phase_for_stage(stage: StorageStage | None, current: Phase) -> Phase | None:
    """The phase to move to when the agent reports ``stage`` (None: stay)."""
    target = STAGE_PHASES.get(stage) if stage is not None else None
    if current == Phase.MIGRATING and target == Phase.COMPLETING:
        return target
    return None


def new_record(migration_id: str, request: StorageMoveRequest, host: str,
               report: StorageCheckReport) -> StorageMoveRecord:
    now = utc_now()
    return StorageMoveRecord(migration_id=migration_id, vm=request.vm, host=host,
                             destination_pool=request.destination_pool, phase=Phase.PENDING,
                             request=request, created_at=now, updated_at=now,
                             checks=report.checks, disks=report.disks,
                             bandwidth_mib_s=request.bandwidth_mib_s)


class StorageMoveRunner:
    def __init__(self, record: StorageMoveRecord, deps: RunnerDeps) -> None:
        self._deps = deps
        self._agents = deps.agents
        self.tracker = PhaseTracker(record, deps.subjects, deps.nc.publish)
        self.done = asyncio.Event()
        self._abort_reason: str | None = None
        self._wake = asyncio.Event()
        self._stage: StorageStage | None = None
        self._finished: StorageMoveFinished | None = None
        self._started = False  # the agent accepted storage.move

    @property
    def record(self) -> StorageMoveRecord:
        return self.tracker.record

    # --- requests from the service (no waiting here) ---------------------------------------

    def request_abort(self, reason: str) -> None:
        phase = self.tracker.phase
        if phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED):
            raise BatonError(ErrorCode.CONFLICT, f"storage move already {phase}")
        if phase == Phase.COMPLETING:
            raise BatonError(ErrorCode.CONFLICT, "the copies are in sync and the VM is being "
                             "switched to them; the move can no longer be aborted")
        if self._abort_reason is None:
            self._abort_reason = reason
            log.info("abort_requested", reason=reason)
        self._wake.set()

    async def set_bandwidth(self, mib_s: int) -> StorageMoveRecord:
        raise BatonError(ErrorCode.UNSUPPORTED, "a storage move's bandwidth is set when it "
                         "starts: abort it and move again with --bandwidth")

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> None:
        with structlog.contextvars.bound_contextvars(migration_id=self.record.migration_id,
                                                     vm=self.record.vm):
            try:
                await self._run()
            except Aborted:
                await self._finish_unsuccessfully(None)
            except BatonError as exc:
                await self._finish_unsuccessfully(exc)
            except asyncio.CancelledError:
                await self.tracker.transition(Phase.FAILED, "coordinator stopped", error=BatonError(
                    ErrorCode.UNAVAILABLE, "the coordinator stopped during the move").to_reply())
                raise
            except Exception:
                await self._finish_unsuccessfully(_internal_error())
            finally:
                self.done.set()

    async def _run(self) -> None:
        await self.tracker.transition(Phase.CHECKING)
        await self._check()
        self._raise_if_aborted()
        await self.tracker.transition(Phase.PREPARING, f"asking {self.record.host} to copy")
        pump = ProgressPump(self.tracker, self._deps.subjects, self._deps.nc.publish)
        async with self._listening(pump), asyncio.TaskGroup() as tasks:
            pump_task = tasks.create_task(pump.run())
            try:
                outcome = await self._start_and_wait(pump)
            finally:
                pump_task.cancel()
        if isinstance(outcome, BaseException):
            raise outcome
        await self._complete(outcome)

    async def _check(self) -> None:
        """Again at the start: the host may have changed since the request was accepted."""
        facts = await storage_checks.gather(self._agents, self.record.request, self.record.host)
        report = storage_checks.report(facts)
        self.tracker.update(checks=report.checks, disks=report.disks)
        if not report.ok:
            raise BatonError(ErrorCode.PRECONDITION_FAILED,
                             storage_checks.failure_summary(report.checks))

    async def _start_and_wait(self, pump: ProgressPump) -> StorageMoveFinished | BaseException:
        """The outcome, or the exception to raise once the progress pump has stopped."""
        record = self.record
        try:
            await self._agents.storage_move(record.host, AgentStorageMoveRequest(
                migration_id=record.migration_id, vm=record.vm, disks=record.disks,
                bandwidth_mib_s=record.bandwidth_mib_s, keep_source=record.request.keep_source,
                progress_interval_ms=PROGRESS_INTERVAL_MS))
            self._started = True
            await self.tracker.transition(Phase.MIGRATING, "copying " + ", ".join(
                d.target for d in record.disks) + f" into pool {record.destination_pool}")
            pump.heard()
            return await self._drive(pump)
        except (BatonError, Aborted) as exc:
            return exc

    async def _drive(self, pump: ProgressPump) -> StorageMoveFinished:
        abort_sent_at: float | None = None
        while self._finished is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAKE_TICK):
                    await self._wake.wait()
            self._wake.clear()
            await self._follow_stage()
            if self._abort_reason is not None and abort_sent_at is None \
                    and self.tracker.phase == Phase.MIGRATING:
                await self._ask_agent_to_abort()
                abort_sent_at = time.monotonic()
            _raise_if_late(abort_sent_at, pump.silent_for(), self._finished is None)
        return self._finished

    async def _follow_stage(self) -> None:
        to = phase_for_stage(self._stage, self.tracker.phase)
        if to is not None:
            await self.tracker.transition(to, "copies in sync: switching the VM to them")

    async def _ask_agent_to_abort(self) -> None:
        record = self.record
        try:
            await self._agents.storage_abort(record.host, AgentStorageAbortRequest(
                migration_id=record.migration_id, vm=record.vm, disks=record.disks))
        except BatonError as exc:  # e.g. conflict: the agent already pivots; its outcome follows
            log.warning("abort_not_delivered", error=str(exc))

    # --- completion ------------------------------------------------------------------------

    async def _complete(self, finished: StorageMoveFinished) -> None:
        self.tracker.update(result=finished.stats, outcome=finished.disks)
        if finished.aborted:
            raise Aborted()
        if finished.error is not None:
            raise BatonError.from_reply(finished.error)
        if self.tracker.phase == Phase.MIGRATING:  # the stage events went missing
            await self.tracker.transition(Phase.COMPLETING, "the agent finished the move")
        await self._confirm()
        kept = self.record.request.keep_source
        await self.tracker.transition(Phase.SUCCEEDED, "the VM uses the new files; old files "
                                      + ("kept" if kept else "deleted"), pivoted_at=finished.at)
        log.info("storage_move_completed")

    async def _confirm(self) -> None:
        """Ask the agent once more, independently of its report: every disk uses its copy."""
        domain = await self._agents.domain(self.record.host, self.record.vm)
        now = {d.target: d.source_path for d in domain.disks}
        wrong = [f"{m.target} uses {now.get(m.target)}" for m in self.record.disks
                 if now.get(m.target) != m.destination_path]
        if wrong:
            raise BatonError(ErrorCode.HYPERVISOR, "the agent reported the move done, but "
                             + "; ".join(wrong), stage="confirm")

    # --- failure and abort -----------------------------------------------------------------

    async def _finish_unsuccessfully(self, error: BatonError | None) -> None:
        aborted = error is None
        if error is None:
            error = BatonError(ErrorCode.CONFLICT, f"aborted: {self._abort_reason or 'by the agent'}"
                               "; the VM keeps its old files")
        if self._started and self._finished is None:
            await self._stop_agent_job()
        if self._finished is not None:
            self.tracker.update(outcome=self._finished.disks)
        phase = Phase.ABORTED if aborted else Phase.FAILED
        log.info("storage_move_stopped", phase=phase, error=error.message)
        await self.tracker.transition(phase, error.message, error=error.to_reply())

    async def _stop_agent_job(self) -> None:
        """A failure while the agent may still copy: ask it to cancel and wait for the outcome."""
        await self._ask_agent_to_abort()
        deadline = time.monotonic() + timeouts.ABORT_SETTLE
        while self._finished is None and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAKE_TICK):
                    await self._wake.wait()
            self._wake.clear()

    def _raise_if_aborted(self) -> None:
        if self._abort_reason is not None:
            raise Aborted()

    # --- subscriptions ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _listening(self, pump: ProgressPump) -> AsyncIterator[None]:
        nc, migration_id = self._deps.nc, self.record.migration_id

        async def on_progress(msg: Msg) -> None:
            if (progress := _decoded(msg, SourceProgress)) is not None:
                pump.offer(progress)

        async def on_stage(msg: Msg) -> None:
            pump.heard()
            stage = _decoded(msg, StorageStageEvent)
            if stage is not None and stage.migration_id == migration_id:
                self._stage = stage.stage
                self._wake.set()

        async def on_finished(msg: Msg) -> None:
            pump.heard()
            finished = _decoded(msg, StorageMoveFinished)
            if finished is not None and finished.migration_id == migration_id \
                    and self._finished is None:
                self._finished = finished
                self._wake.set()

        subject = self._deps.subjects.migration
        subs = [await nc.subscribe(subject(migration_id, event), cb=cb) for event, cb in (
            (MigrationEvent.SOURCE_PROGRESS, on_progress),
            (MigrationEvent.STORAGE_STAGE, on_stage),
            (MigrationEvent.STORAGE_FINISHED, on_finished))]
        try:
            yield
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()


def _decoded(msg: Msg, type_: Any) -> Any:
    """An event from a subscription; a malformed one is logged and dropped."""
    try:
        return decode_any(msg.data, type_)
    except msgspec.DecodeError as exc:
        log.warning("malformed_event_dropped", subject=msg.subject, error=str(exc))
        return None
