"""What every coordinator job (a migration, a storage move) runs on: start the agent's job, drive
it to an outcome, and finish unsuccessfully on a failure or an abort.

:class:`JobRunner` owns the waiting: subscription callbacks only store what arrived and wake the
runner; :meth:`JobRunner._drive` reacts to wake-ups, an abort request and a silent agent; the
progress pump lives in a TaskGroup owned by the runner. A subclass supplies its steps (``_run``),
how to start, steer and abort the agent's job, and what to do after a failure (its hooks below).

Error contract: ``run()`` never raises except on cancellation; every outcome ends in a terminal
phase published by the tracker. Anything unexpected becomes an ``internal`` error with an id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from baton.coordinator.admission import Admission
from baton.coordinator.agents import AgentClient
from baton.coordinator.phases import PhaseTracker
from baton.coordinator.progress import ProgressPump
from baton.coordinator.store import JobStore, MemoryStore
from baton.schemas import timeouts
from baton.schemas.codec import decode_any
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.events import JobStats
from baton.schemas.job import Phase
from baton.schemas.migration import MigrationRecord, SourceProgress
from baton.schemas.storage import StorageMoveRecord
from baton.schemas.subjects import MigrationEvent, Subjects

log = structlog.get_logger(__name__)
RecordT = TypeVar("RecordT", MigrationRecord, StorageMoveRecord)  # as phases.Record
FinishedT = TypeVar("FinishedT")
Callback = Callable[[Msg], Awaitable[None]]
WAKE_TICK = 1.0
TERMINAL = (Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED)


class Aborted(Exception):
    """The job was cancelled on request."""


@dataclass(frozen=True)
class RunnerDeps:
    nc: NATS
    agents: AgentClient
    subjects: Subjects
    store: JobStore = field(default_factory=MemoryStore)  # where each phase change is written
    admission: Admission | None = None  # the migration limits and queue; None: no limits


class JobRunner(Generic[RecordT, FinishedT]):
    """One job from ``pending`` to a terminal phase; the agent's outcome is a ``FinishedT``."""

    KIND: ClassVar[str]  # "migration", "storage move": for messages
    TOO_LATE_TO_ABORT: ClassVar[str]  # why an abort is refused once the job is completing
    CANCELLED: ClassVar[str]  # the error when the coordinator stops during the job
    STOPPED_EVENT: ClassVar[str]  # the log event of a failed or aborted job
    FINISHED_TYPE: ClassVar[type[Any]]
    FINISHED_EVENT: ClassVar[MigrationEvent]

    def __init__(self, record: RecordT, deps: RunnerDeps) -> None:
        self._deps = deps
        self._agents = deps.agents
        self.tracker: PhaseTracker[RecordT] = PhaseTracker(record, deps.subjects, deps.nc.publish,
                                                            store=deps.store)
        self.done = asyncio.Event()
        self._abort_reason: str | None = None
        self._wake = asyncio.Event()
        self._finished: FinishedT | None = None
        self._started = False  # the agent accepted the job
        self._timed_out: BatonError | None = None  # the completion timeout stopped the job

    @property
    def record(self) -> RecordT:
        return self.tracker.record

    # --- hooks ------------------------------------------------------------------------------

    async def _run(self) -> None:
        """The job's steps, from ``checking`` to a terminal phase."""
        raise NotImplementedError

    async def _start_agent_job(self) -> str:
        """Ask the agent to start; returns why the phase is now ``migrating``."""
        raise NotImplementedError

    async def _on_wake(self) -> None:
        """Follow what the agent reported since the last wake-up (e.g. the switch-over)."""

    async def _ask_agent_to_abort(self) -> None:
        raise NotImplementedError

    def _abort_error(self) -> BatonError:
        raise NotImplementedError

    def _completion_timeout_s(self) -> int | None:
        """How long the agent's job may run before it is aborted as timed out (None: no limit)."""
        return None

    async def _after_stop(self, error: BatonError) -> ErrorReply:
        """Once the agent's job has stopped: roll back; returns the error to record."""
        return error.to_reply()

    async def _subscriptions(self, pump: ProgressPump) -> list[tuple[str, Callback]]:
        """The subjects to follow while the agent's job runs, with their callbacks."""
        raise NotImplementedError

    # --- requests from the service (no waiting here) ---------------------------------------

    def request_abort(self, reason: str) -> None:
        phase = self.tracker.phase
        if phase in TERMINAL:
            raise BatonError(ErrorCode.CONFLICT, f"{self.KIND} already {phase}")
        if phase == Phase.COMPLETING:
            raise BatonError(ErrorCode.CONFLICT, self.TOO_LATE_TO_ABORT)
        if self._abort_reason is None:
            self._abort_reason = reason
            log.info("abort_requested", reason=reason)
        self._wake.set()

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> None:
        record: Any = self.record
        with structlog.contextvars.bound_contextvars(migration_id=record.migration_id,
                                                     vm=record.vm):
            try:
                await self._run()
            except Aborted:
                await self._finish_unsuccessfully(None)
            except BatonError as exc:
                await self._finish_unsuccessfully(exc)
            except asyncio.CancelledError:
                await self._fail_cancelled()
                raise
            except Exception:
                await self._finish_unsuccessfully(internal_error())
            finally:
                self.done.set()

    async def _fail_cancelled(self) -> None:
        await self.tracker.transition(Phase.FAILED, "coordinator stopped", error=BatonError(
            ErrorCode.UNAVAILABLE, self.CANCELLED).to_reply())

    async def _follow_agent_job(self) -> FinishedT:
        """Start the agent's job and wait for its outcome, relaying its progress meanwhile."""
        pump = ProgressPump(self.tracker, self._deps.subjects, self._deps.nc.publish)
        async with self._listening(pump), asyncio.TaskGroup() as tasks:
            pump_task = tasks.create_task(pump.run())
            try:
                outcome = await self._start_and_wait(pump)
            finally:
                pump_task.cancel()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _start_and_wait(self, pump: ProgressPump) -> FinishedT | BaseException:
        """The outcome, or the exception to raise once the progress pump has stopped."""
        try:
            detail = await self._start_agent_job()
            self._started = True
            await self.tracker.transition(Phase.MIGRATING, detail)
            pump.heard()
            return await self._drive(pump)
        except (BatonError, Aborted) as exc:
            return exc

    async def _drive(self, pump: ProgressPump) -> FinishedT:
        """Wait for the agent's outcome, reacting to its reports, aborts and silence."""
        abort_sent_at: float | None = None
        limit_s = self._completion_timeout_s()
        deadline = None if limit_s is None else time.monotonic() + limit_s
        next_probe = 0.0
        while self._finished is None:
            await self._wait_for_wake()
            await self._on_wake()
            if abort_sent_at is None and pump.silent_for() > timeouts.SOURCE_QUIET_PROBE \
                    and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + timeouts.SOURCE_QUIET_PROBE
                if await self._agent_forgot_job():
                    raise BatonError(ErrorCode.TIMEOUT, "the source agent answers but no longer "
                                     "runs the job (it restarted): its report is lost")
            if deadline is not None and time.monotonic() >= deadline and limit_s is not None \
                    and self._abort_reason is None and self.tracker.phase == Phase.MIGRATING:
                self._timed_out = timed_out(self.KIND, limit_s, pump.latest)
                self._abort_reason = self._timed_out.message
                log.warning("completion_timeout", limit_s=limit_s, **self._timed_out.details)
            if self._abort_reason is not None and abort_sent_at is None \
                    and self.tracker.phase == Phase.MIGRATING:
                await self._ask_agent_to_abort()
                abort_sent_at = time.monotonic()
            raise_if_late(abort_sent_at, pump.silent_for(), self._finished is None)
        return self._finished

    async def _agent_forgot_job(self) -> bool:
        """Asked once the agent has been quiet a while: True when it answers that it does not
        run the job (restarted), so its outcome will never come. Default: cannot tell."""
        return False

    async def _wait_for_wake(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAKE_TICK):
                await self._wake.wait()
        self._wake.clear()

    def _raise_if_aborted(self) -> None:
        if self._abort_reason is not None:
            raise Aborted()

    async def _enter_completing(self, reason: str) -> None:
        """The switch-over report went missing (or there is none): the outcome says it."""
        if self.tracker.phase == Phase.MIGRATING:
            await self.tracker.transition(Phase.COMPLETING, reason)

    # --- failure and abort -----------------------------------------------------------------

    async def _finish_unsuccessfully(self, error: BatonError | None) -> None:
        if error is None and self._timed_out is not None:
            error = self._timed_out  # stopped by its timeout: a failure, not an operator's abort
        aborted = error is None
        if error is None:
            error = self._abort_error()
        if self._started and self._finished is None:
            await self._stop_agent_job()
        reply = await self._after_stop(error)
        phase = Phase.ABORTED if aborted else Phase.FAILED
        log.info(self.STOPPED_EVENT, phase=phase, error=reply.message)
        await self.tracker.transition(phase, reply.message, error=reply)

    async def _stop_agent_job(self) -> None:
        """A failure while the agent's job may still run: cancel it and wait for the outcome."""
        await self._ask_agent_to_abort()
        deadline = time.monotonic() + timeouts.ABORT_SETTLE
        while self._finished is None and time.monotonic() < deadline:
            await self._wait_for_wake()

    # --- subscriptions ---------------------------------------------------------------------

    def _progress_callback(self, pump: ProgressPump) -> Callback:
        async def on_progress(msg: Msg) -> None:
            if (progress := decoded(msg, SourceProgress)) is not None:
                pump.offer(progress)
        return on_progress

    def _finished_callback(self, pump: ProgressPump) -> Callback:
        async def on_finished(msg: Msg) -> None:
            pump.heard()
            if (finished := decoded(msg, self.FINISHED_TYPE)) is not None:
                self._on_finished(finished)
        return on_finished

    def _on_finished(self, finished: Any) -> None:
        record: Any = self.record
        if finished.migration_id != record.migration_id or self._finished is not None:
            return
        self._note_finished(finished)
        self._finished = finished
        self._wake.set()

    def _note_finished(self, finished: FinishedT) -> None:
        """Log the agent's outcome as it arrives (optional)."""

    @contextlib.asynccontextmanager
    async def _listening(self, pump: ProgressPump) -> AsyncIterator[None]:
        nc = self._deps.nc
        subs = [await nc.subscribe(subject, cb=cb)
                for subject, cb in await self._subscriptions(pump)]
        try:
            yield
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()


def timed_out(kind: str, limit_s: int, latest: JobStats) -> BatonError:
    """The error of a job stopped by its completion timeout, with the figures it had reached."""
    mib = 1 << 20
    figures: dict[str, int | float] = {name: value for name, value in (
        ("processed_mib", _mib(latest.data_processed_bytes)),
        ("remaining_mib", _mib(latest.data_remaining_bytes)),
        ("total_mib", _mib(latest.data_total_bytes)),
        ("memory_iteration", latest.memory_iteration),
        ("memory_dirty_rate_pages_s", latest.memory_dirty_rate_pages_s),
        ("transfer_mib_s", None if latest.memory_bps is None
         else round(latest.memory_bps / mib, 1)),
        ("auto_converge_throttle_pct", latest.auto_converge_throttle_pct)) if value is not None}
    reached = (f"{figures['processed_mib']} MiB sent, {figures['remaining_mib']} MiB left"
               if {"processed_mib", "remaining_mib"} <= figures.keys() else "no figures yet")
    details = {name: str(value) for name, value in figures.items()} | {
        "timeout_s": str(limit_s)}
    return BatonError(ErrorCode.TIMEOUT, f"the {kind} did not complete within its {limit_s} s "
                      f"timeout ({reached}); it was aborted and the VM stays where it ran. A "
                      "guest that dirties memory faster than the link copies it never "
                      "converges: raise --bandwidth, add --auto-converge, or allow a longer "
                      "--timeout", **details)


def _mib(value: int | None) -> int | None:
    return None if value is None else value >> 20


def decoded(msg: Msg, type_: Any) -> Any:
    """An event from a subscription; a malformed one is logged and dropped."""
    try:
        return decode_any(msg.data, type_)
    except msgspec.DecodeError as exc:
        log.warning("malformed_event_dropped", subject=msg.subject, error=str(exc))
        return None


def raise_if_late(abort_sent_at: float | None, silent_for: float, waiting: bool) -> None:
    """Give up on an agent that neither confirms an abort nor says anything for too long."""
    if not waiting:
        return
    if abort_sent_at is not None and time.monotonic() - abort_sent_at > timeouts.ABORT_SETTLE:
        raise BatonError(ErrorCode.TIMEOUT, "the source agent did not confirm the abort within "
                         f"{timeouts.ABORT_SETTLE:g} s")
    if silent_for > timeouts.SOURCE_SILENCE_LIMIT:
        raise BatonError(ErrorCode.TIMEOUT, f"the source agent said nothing for {silent_for:.0f} "
                         "s during the migration")


def internal_error() -> BatonError:
    """Log the exception being handled with a fresh error id; the error names only the id."""
    error_id = uuid.uuid4().hex[:12]
    log.exception("migration_crashed", error_id=error_id)
    return BatonError(ErrorCode.INTERNAL, f"internal error (id {error_id}); the coordinator "
                      "logs say more", error_id=error_id)
