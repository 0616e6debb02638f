"""The agent-facing half of coordinator/job_runner.py: starting the agent's job, waiting for its
outcome, giving up on a silent or stubborn agent, stopping the agent's job after a failure, and
the subscription callbacks. A scripted agent on an in-memory NATS stand-in (no I/O); the waits
are shrunk to hundredths of a second."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, ClassVar

import msgspec
import pytest
import structlog

from baton.coordinator import job_runner
from baton.coordinator.job_runner import Aborted, JobRunner, RunnerDeps
from baton.coordinator.store import MemoryStore
from baton.schemas import timeouts
from baton.schemas.base import utc_now
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.migration import JobStats, MigrationRecord, Phase, SourceFinished, SourceProgress
from baton.schemas.subjects import MigrationEvent, Subjects
from tests.unit.test_job_runner import finished, record

SLOW = 5.0  # a wait the job must not sit out: well over what a test that passes takes


class Sub:
    def __init__(self, wire: Wire, subject: str, fails: bool) -> None:
        self.wire, self.subject, self.fails = wire, subject, fails

    async def unsubscribe(self) -> None:
        self.wire.unsubscribed.append(self.subject)
        if self.fails:
            raise RuntimeError("connection closed")


class Wire:
    """The NATS stand-in: phase events as (phase, reason), subscriptions by subject."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, str]] = []
        self.callbacks: dict[str, Any] = {}
        self.unsubscribed: list[str] = []

    async def publish(self, subject: str, data: bytes) -> None:
        if subject.endswith(".phase"):
            event = msgspec.json.decode(data)
            self.phases.append((event["phase"], event["reason"]))

    async def subscribe(self, subject: str, cb: Any = None) -> Sub:
        self.callbacks[subject] = cb
        return Sub(self, subject, fails=subject == "finished")


def msg(data: bytes, subject: str = "finished") -> Any:
    return SimpleNamespace(data=data, subject=subject)


class Agent(JobRunner[MigrationRecord, SourceFinished]):
    """A job that starts the agent's job and follows it; the agent's replies are scripted.

    ``confirms``: the agent reports an aborted outcome this long after being asked to abort
    (None: never). ``fails_on_wake``: the first wake-up raises this error (a step that failed
    while the agent's job ran)."""

    KIND: ClassVar[str] = "migration"
    TOO_LATE_TO_ABORT: ClassVar[str] = "too late"
    CANCELLED: ClassVar[str] = "the coordinator stopped during the migration"
    STOPPED_EVENT: ClassVar[str] = "stopped"
    FINISHED_TYPE: ClassVar[type[Any]] = SourceFinished
    FINISHED_EVENT: ClassVar[MigrationEvent] = MigrationEvent.SOURCE_FINISHED

    def __init__(self, confirms: float | None = 0.0, fails_on_wake: BatonError | None = None,
                 outcome_after: float | None = None) -> None:
        self.wire, self.store = Wire(), MemoryStore()
        super().__init__(record(), RunnerDeps(nc=self.wire, agents=None, subjects=Subjects(),  # type: ignore[arg-type]
                                              store=self.store))
        self.confirms = confirms
        self.fails_on_wake = fails_on_wake
        self.outcome_after = outcome_after
        self.aborts_asked = 0
        self.outcome_seen_after_stop: list[SourceFinished | None] = []
        self.outcome: SourceFinished | None = None
        self.woken = asyncio.Event()
        self.wakes = 0

    async def _run(self) -> None:
        await self.tracker.transition(Phase.CHECKING)
        await self.tracker.transition(Phase.PREPARING)
        self.outcome = await self._follow_agent_job()
        if self.outcome.aborted:
            raise Aborted()
        await self._enter_completing("the source's migrate call returned")
        await self._enter_completing("once completing, said no more")
        await self.tracker.transition(Phase.SUCCEEDED, "done")

    async def _start_agent_job(self) -> str:
        if self.outcome_after is not None:
            asyncio.get_running_loop().call_later(self.outcome_after, self._on_finished,
                                                  finished())
        return "the source agent started the migration"

    async def _on_wake(self) -> None:
        self.wakes += 1
        self.woken.set()
        if self.fails_on_wake is not None:
            error, self.fails_on_wake = self.fails_on_wake, None
            raise error

    async def _ask_agent_to_abort(self) -> None:
        self.aborts_asked += 1
        if self.confirms is not None:
            asyncio.get_running_loop().call_later(self.confirms, self._on_finished,
                                                  finished(aborted=True))

    def _abort_error(self) -> BatonError:
        return BatonError(ErrorCode.CONFLICT, "aborted: on request")

    async def _after_stop(self, error: BatonError) -> ErrorReply:
        self.outcome_seen_after_stop.append(self._finished)
        return error.to_reply()

    async def _subscriptions(self, pump: Any) -> list[tuple[str, Any]]:
        return [("progress", self._progress_callback(pump)),
                ("finished", self._finished_callback(pump))]


@pytest.fixture
def quick(monkeypatch):
    """Wake-ups every 10 ms; the silence and abort limits as each test sets them."""
    monkeypatch.setattr(job_runner, "WAKE_TICK", 0.01)

    def limits(silence: float = SLOW * 4, settle: float = SLOW * 4) -> None:
        monkeypatch.setattr(timeouts, "SOURCE_SILENCE_LIMIT", silence)
        monkeypatch.setattr(timeouts, "ABORT_SETTLE", settle)
    return limits


async def run(job: Agent, within: float = SLOW) -> float:
    """Run the job to its end; how long it took (a job stuck past ``within`` fails the test)."""
    started = time.monotonic()
    await asyncio.wait_for(job.run(), within)
    return time.monotonic() - started


# --- the run ---------------------------------------------------------------------------------


async def test_the_job_runs_with_its_id_and_vm_bound_to_every_log_line():
    seen: list[dict[str, Any]] = []

    class Bound(Agent):
        async def _run(self) -> None:
            seen.append(structlog.contextvars.get_contextvars())
    await Bound().run()
    assert {"migration_id": "m1", "vm": "vm1"} == {k: seen[0].get(k) for k in ("migration_id", "vm")}
    assert "migration_id" not in structlog.contextvars.get_contextvars()


async def test_the_agents_outcome_ends_the_wait_and_the_start_reason_is_announced(quick):
    quick()
    job = Agent(outcome_after=0.02)
    await run(job)
    assert [("checking", ""), ("preparing", ""),
            ("migrating", "the source agent started the migration"),
            ("completing", "the source's migrate call returned"), ("succeeded", "done")] == \
        job.wire.phases
    assert job.outcome is not None and not job.outcome.aborted
    assert (0, ["progress", "finished"]) == (job.aborts_asked, job.wire.unsubscribed)
    assert job.done.is_set()
    assert Phase.SUCCEEDED == job.store.records["m1"].phase  # every phase change is written


async def test_a_report_and_the_outcome_wake_the_runner_at_once_and_once_each(monkeypatch):
    monkeypatch.setattr(job_runner, "WAKE_TICK", SLOW)  # no tick comes within the test

    class Reporting(Agent):
        async def _start_agent_job(self) -> str:
            loop = asyncio.get_running_loop()
            loop.call_later(0.01, self._wake.set)  # a report, say the switch-over
            loop.call_later(0.05, self._on_finished, finished())
            return "started"
    job = Reporting()
    took = await run(job)
    assert (Phase.SUCCEEDED, 2) == (job.record.phase, job.wakes)
    assert took < SLOW / 2


async def test_an_abort_is_acted_on_at_once_not_at_the_next_tick(monkeypatch):
    monkeypatch.setattr(job_runner, "WAKE_TICK", SLOW)

    class AbortedEarly(Agent):
        async def _start_agent_job(self) -> str:
            self.request_abort("operator")  # while the agent starts its job
            return "started"
    job = AbortedEarly(confirms=0.0)
    took = await run(job)
    assert (Phase.ABORTED, 1) == (job.record.phase, job.aborts_asked)
    assert took < SLOW / 2


async def test_the_silence_is_counted_from_when_the_agent_accepted_the_job(quick):
    quick(silence=0.3)

    class SlowStart(Agent):
        async def _start_agent_job(self) -> str:
            await asyncio.sleep(0.4)  # longer than the silence limit: the agent was busy
            return await super()._start_agent_job()
    job = SlowStart(outcome_after=0.05)
    await run(job)
    assert Phase.SUCCEEDED == job.record.phase


def test_a_step_between_two_others_stops_only_once_an_abort_was_asked():
    job = Agent()
    job._raise_if_aborted()
    job.request_abort("operator")
    with pytest.raises(Aborted):
        job._raise_if_aborted()


# --- a silent agent, an abort it does not confirm ---------------------------------------------


async def test_an_agent_silent_past_the_limit_fails_the_job_and_its_job_is_stopped(quick):
    quick(silence=0.05, settle=0.05)
    job = Agent(confirms=None)
    await run(job)
    assert job.record.error is not None
    assert (Phase.FAILED, ErrorCode.TIMEOUT, "the source agent said nothing for 0 s during the "
            "migration") == (job.record.phase, job.record.error.code, job.record.error.message)
    assert 1 == job.aborts_asked  # the failed job's agent job is asked to stop, once


async def test_a_quiet_agent_is_asked_whether_it_still_runs_the_job_once_per_probe_interval(
        quick, monkeypatch):
    """Every SOURCE_QUIET_PROBE while it stays quiet, not at every wake-up (every 10 ms here)."""
    quick()
    monkeypatch.setattr(timeouts, "SOURCE_QUIET_PROBE", 0.1)

    class Quiet(Agent):
        probes = 0

        async def _agent_forgot_job(self) -> bool:
            self.probes += 1
            return False  # it answers that the job runs
    job = Quiet(outcome_after=0.55)
    took = await run(job)
    assert Phase.SUCCEEDED == job.record.phase
    assert 2 <= job.probes <= took / 0.1 + 1, (job.probes, took)


async def test_a_job_whose_agent_cannot_be_asked_about_its_job_waits_out_a_quiet_spell(
        quick, monkeypatch):
    """By default a runner cannot tell whether a quiet agent still runs the job (a disk move's
    agent is never asked): only the silence limit ends the wait."""
    quick()
    monkeypatch.setattr(timeouts, "SOURCE_QUIET_PROBE", 0.05)
    job = Agent(outcome_after=0.3)
    await run(job)
    assert (Phase.SUCCEEDED, None) == (job.record.phase, job.record.error)


async def test_an_agent_that_forgot_the_job_fails_it_at_once_saying_its_report_is_lost(
        quick, monkeypatch):
    quick()
    monkeypatch.setattr(timeouts, "SOURCE_QUIET_PROBE", 0.05)

    class Restarted(Agent):
        async def _agent_forgot_job(self) -> bool:
            return True
    job = Restarted()
    await run(job)
    assert job.record.error is not None
    assert (Phase.FAILED, ErrorCode.TIMEOUT, "the source agent answers but no longer runs the "
            "job (it restarted): its report is lost") == (
        job.record.phase, job.record.error.code, job.record.error.message)


async def test_an_abort_the_agent_never_confirms_times_out_after_the_settle_time(quick):
    quick(settle=0.05)
    job = Agent(confirms=None)
    task = asyncio.ensure_future(run(job))
    await job.woken.wait()  # the agent's job runs: the runner is waiting for its outcome
    job.request_abort("operator")
    await task
    assert job.record.error is not None
    assert (Phase.FAILED, ErrorCode.TIMEOUT, "the source agent did not confirm the abort within "
            "0.05 s") == (job.record.phase, job.record.error.code, job.record.error.message)
    assert 2 == job.aborts_asked  # the abort, then the stop of the failed job


async def test_an_abort_the_agent_confirms_ends_the_job_aborted_without_asking_again(quick):
    quick()
    job = Agent(confirms=0.02)
    task = asyncio.ensure_future(run(job))
    await job.woken.wait()  # the agent's job runs: the runner is waiting for its outcome
    job.request_abort("operator")
    job.request_abort("a second operator")  # asked once, with the first reason
    took = await task
    assert job.record.error is not None
    assert (Phase.ABORTED, "aborted: on request", 1) == (
        job.record.phase, job.record.error.message, job.aborts_asked)
    assert took < SLOW / 2


async def test_an_abort_before_the_agent_job_runs_is_sent_once_it_does(quick):
    quick()
    job = Agent(confirms=0.0)
    job.request_abort("operator")  # still pending: nothing to send to an agent yet
    await run(job)
    assert (Phase.ABORTED, 1) == (job.record.phase, job.aborts_asked)


# --- stopping the agent's job after a failure -------------------------------------------------


async def test_a_failure_while_the_agent_job_runs_waits_for_its_stopped_outcome(quick):
    quick(settle=SLOW)
    job = Agent(confirms=0.05, fails_on_wake=BatonError(ErrorCode.UNAVAILABLE, "lost the host"))
    took = await run(job)
    assert job.record.error is not None
    assert (Phase.FAILED, "lost the host", 1) == (job.record.phase, job.record.error.message,
                                                  job.aborts_asked)
    [seen] = job.outcome_seen_after_stop  # the roll-back runs once the agent's job stopped
    assert seen is not None and seen.aborted
    assert took < SLOW / 2  # and not a moment past the outcome
    assert ("failed", "lost the host") == job.wire.phases[-1]


async def test_a_failure_gives_up_waiting_for_the_agent_after_the_settle_time(quick):
    quick(settle=0.05)
    job = Agent(confirms=None, fails_on_wake=BatonError(ErrorCode.UNAVAILABLE, "lost the host"))
    took = await run(job)
    assert (Phase.FAILED, [None]) == (job.record.phase, job.outcome_seen_after_stop)
    assert 0.05 <= took < SLOW / 2


async def test_with_no_settle_time_left_a_failure_does_not_wait_at_all(quick, monkeypatch):
    """The clock stands still: the wait ends when the deadline is reached, not after it."""
    quick(settle=0.0)
    monkeypatch.setattr(job_runner, "time", SimpleNamespace(monotonic=lambda: 1000.0))
    job = Agent(confirms=None, fails_on_wake=BatonError(ErrorCode.UNAVAILABLE, "lost the host"))
    await run(job, within=1.0)
    assert (Phase.FAILED, [None]) == (job.record.phase, job.outcome_seen_after_stop)


async def test_a_failure_before_the_agent_accepted_the_job_stops_nothing(quick):
    quick()

    class Refused(Agent):
        async def _start_agent_job(self) -> str:
            raise BatonError(ErrorCode.CONFLICT, "the source agent is busy")
    job = Refused()
    await run(job)
    assert (Phase.FAILED, 0, "the source agent is busy") == (
        job.record.phase, job.aborts_asked, job.wire.phases[-1][1])


# --- the subscription callbacks ---------------------------------------------------------------


class Pump:
    def __init__(self) -> None:
        self.offered: list[SourceProgress] = []
        self.heard_count = 0

    def offer(self, progress: SourceProgress) -> None:
        self.offered.append(progress)

    def heard(self) -> None:
        self.heard_count += 1


async def test_progress_reaches_the_pump_and_a_malformed_report_is_dropped():
    pump, job = Pump(), Agent()
    on_progress = job._progress_callback(pump)  # type: ignore[arg-type]
    progress = SourceProgress(migration_id="m1", host_id="h1", at=utc_now(),
                              stats=JobStats(data_processed_bytes=5))
    await on_progress(msg(b"{not json", "progress"))
    await on_progress(msg(encode(progress), "progress"))
    assert [progress] == pump.offered


async def test_an_outcome_counts_as_hearing_from_the_agent_even_when_malformed():
    pump, job = Pump(), Agent()
    on_finished = job._finished_callback(pump)  # type: ignore[arg-type]
    await on_finished(msg(b"{not json"))
    assert (1, None, False) == (pump.heard_count, job._finished, job._wake.is_set())
    await on_finished(msg(encode(finished(aborted=True))))
    assert job._finished is not None
    assert (2, True, True) == (pump.heard_count, job._finished.aborted, job._wake.is_set())


async def test_every_subscription_is_ended_even_when_one_cannot_be(quick):
    quick()
    job = Agent(outcome_after=0.0)
    await run(job)
    assert ["progress", "finished"] == sorted(job.wire.callbacks, reverse=True)
    assert ["progress", "finished"] == job.wire.unsubscribed


# --- the completion timeout ------------------------------------------------------------------


class Limited(Agent):
    """A job with a completion timeout; the agent reports figures once, then nothing changes."""

    def __init__(self, limit_s: float | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit_s = limit_s

    def _completion_timeout_s(self) -> Any:
        return self.limit_s

    async def _start_agent_job(self) -> str:
        stats = JobStats(data_processed_bytes=600 << 20, data_remaining_bytes=90 << 20,
                         data_total_bytes=690 << 20, memory_iteration=7)
        report = SourceProgress(migration_id="m1", host_id="h1", stats=stats, at=utc_now())
        await self.wire.callbacks["progress"](msg(encode(report), "progress"))
        return await super()._start_agent_job()


async def test_a_job_past_its_timeout_is_aborted_and_fails_as_timed_out_with_its_figures(quick):
    quick()
    job = Limited(0.05, confirms=0.0)
    await run(job)
    error = job.record.error
    assert (Phase.FAILED, 1) == (job.record.phase, job.aborts_asked)
    assert error is not None and ErrorCode.TIMEOUT == error.code
    assert error.message.startswith("the migration did not complete within its 0.05 s timeout "
                                    "(600 MiB sent, 90 MiB left); it was aborted")
    assert {"processed_mib": "600", "remaining_mib": "90", "total_mib": "690",
            "memory_iteration": "7"}.items() <= error.details.items()
    assert [Phase.FAILED] == [Phase(p) for p, _ in job.wire.phases[-1:]]


async def test_a_timed_out_job_whose_abort_is_never_confirmed_fails_saying_so(quick):
    """Not as cleanly timed out: its agent's job may still run."""
    quick(settle=0.05)
    job = Limited(0.05, confirms=None)
    await run(job)
    assert job.record.error is not None
    assert (Phase.FAILED, "the source agent did not confirm the abort within 0.05 s") == (
        job.record.phase, job.record.error.message)


async def test_a_job_that_ends_within_its_timeout_is_not_stopped(quick):
    quick()
    job = Limited(SLOW, outcome_after=0.05)
    await run(job)
    assert (Phase.SUCCEEDED, 0) == (job.record.phase, job.aborts_asked)


async def test_without_a_timeout_a_long_job_is_left_to_run(quick):
    quick()
    job = Limited(None, outcome_after=0.3)
    await run(job)
    assert (Phase.SUCCEEDED, 0) == (job.record.phase, job.aborts_asked)


async def test_an_operators_abort_stays_an_abort_even_with_a_timeout(quick):
    quick()

    class AbortedEarly(Limited):
        async def _start_agent_job(self) -> str:
            self.request_abort("operator")
            return await super()._start_agent_job()
    job = AbortedEarly(SLOW, confirms=0.0)
    await run(job)
    assert Phase.ABORTED == job.record.phase


async def test_the_sources_escalations_reach_the_record_and_the_store(quick):
    quick()

    class Escalating(Agent):
        async def _start_agent_job(self) -> str:
            for steps in (["a"], ["a"], ["a", "b"]):
                report = SourceProgress(migration_id="m1", host_id="h1", stats=JobStats(),
                                        at=utc_now(), escalations=steps)
                await self.wire.callbacks["progress"](msg(encode(report), "progress"))
            return await super()._start_agent_job()
    job = Escalating(outcome_after=0.02)
    await run(job)
    assert (Phase.SUCCEEDED, ["a", "b"]) == (job.record.phase, job.record.escalations)
    assert ["a", "b"] == job.store.records["m1"].escalations  # stored with the next phase


async def test_the_sources_postcopy_switch_reaches_the_record_and_is_never_undone(quick):
    quick()

    class SwitchingToPostcopy(Agent):
        async def _start_agent_job(self) -> str:
            for postcopy in (False, True, False):  # a late report never takes it back
                report = SourceProgress(migration_id="m1", host_id="h1", stats=JobStats(),
                                        at=utc_now(), postcopy=postcopy)
                await self.wire.callbacks["progress"](msg(encode(report), "progress"))
            return await super()._start_agent_job()
    job = SwitchingToPostcopy(outcome_after=0.02)
    await run(job)
    assert (Phase.SUCCEEDED, True) == (job.record.phase, job.record.postcopy)
    assert job.store.records["m1"].postcopy


async def test_a_job_already_completing_is_not_aborted_by_its_timeout(quick):
    quick()

    class SwitchedOver(Limited):
        async def _on_wake(self) -> None:  # the destination resumed the guest: too late to abort
            await super()._on_wake()
            await self._enter_completing("guest resumed on the destination")
    job = SwitchedOver(0.01, outcome_after=0.2)
    with structlog.testing.capture_logs() as logged:
        await run(job)
    assert (Phase.SUCCEEDED, 0) == (job.record.phase, job.aborts_asked)
    assert "completion_timeout" not in [entry["event"] for entry in logged]


def test_a_timed_out_error_carries_every_figure_reached_and_says_what_to_do():
    mib = 1 << 20
    error = job_runner.timed_out("migration", 60, JobStats(
        data_processed_bytes=600 * mib, data_remaining_bytes=90 * mib, data_total_bytes=690 * mib,
        memory_iteration=7, memory_dirty_rate_pages_s=10240, memory_bps=31 * mib + int(0.48 * mib),
        auto_converge_throttle_pct=40))
    assert (ErrorCode.TIMEOUT, None) == (error.code, error.error_id)
    assert error.message == (
        "the migration did not complete within its 60 s timeout (600 MiB sent, 90 MiB left); it "
        "was aborted and the VM stays where it ran. A guest that dirties memory faster than the "
        "link copies it never converges: raise --bandwidth, add --auto-converge, or allow a "
        "longer --timeout")
    assert {"processed_mib": "600", "remaining_mib": "90", "total_mib": "690",
            "memory_iteration": "7", "memory_dirty_rate_pages_s": "10240",
            "transfer_mib_s": "31.5", "auto_converge_throttle_pct": "40",
            "timeout_s": "60"} == error.details


def test_a_job_timed_out_before_any_figure_says_so_and_keeps_only_its_limit():
    error = job_runner.timed_out("disk move", 5, JobStats(data_processed_bytes=3 << 20))
    assert "the disk move did not complete within its 5 s timeout (no figures yet);" in \
        error.message
    assert {"processed_mib": "3", "timeout_s": "5"} == error.details
    both = job_runner.timed_out("disk move", 5, JobStats(data_processed_bytes=3 << 20,
                                                         data_remaining_bytes=1 << 20))
    assert "within its 5 s timeout (3 MiB sent, 1 MiB left);" in both.message
