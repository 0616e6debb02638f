"""The base every coordinator job runs on (coordinator/job_runner.py), with a scripted job and
an in-memory NATS stand-in that records what was published (no I/O, no agents)."""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

import msgspec
import pytest

from baton.coordinator import job_runner
from baton.coordinator.job_runner import (
    Aborted,
    JobRunner,
    RunnerDeps,
    internal_error,
    raise_if_late,
)
from baton.schemas import timeouts
from baton.schemas.base import utc_now
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    MigrateRequest,
    MigrationRecord,
    Phase,
    SourceFinished,
    StorageMode,
)
from baton.schemas.subjects import MigrationEvent, Subjects


class Wire:
    """What the runner publishes, decoded: phase events as (phase, reason)."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, str]] = []

    async def publish(self, subject: str, data: bytes) -> None:
        if subject.endswith(".phase"):
            event = msgspec.json.decode(data)
            self.phases.append((event["phase"], event["reason"]))

    async def subscribe(self, subject: str, cb: Any = None) -> Any:
        raise AssertionError("a scripted job subscribes to nothing")


def record() -> MigrationRecord:
    now = utc_now()
    return MigrationRecord(migration_id="m1", vm="vm1", source="h1", destination="h2",
                           phase=Phase.PENDING, storage=StorageMode.AUTO,
                           request=MigrateRequest(vm="vm1", destination="h2"),
                           created_at=now, updated_at=now)


class Scripted(JobRunner[MigrationRecord, SourceFinished]):
    """A job whose steps are a coroutine the test gives."""

    KIND: ClassVar[str] = "migration"
    TOO_LATE_TO_ABORT: ClassVar[str] = "too late"
    CANCELLED: ClassVar[str] = "the coordinator stopped during the migration"
    STOPPED_EVENT: ClassVar[str] = "stopped"
    FINISHED_TYPE: ClassVar[type[Any]] = SourceFinished
    FINISHED_EVENT: ClassVar[MigrationEvent] = MigrationEvent.SOURCE_FINISHED

    def __init__(self, steps: Any) -> None:
        self.wire = Wire()
        super().__init__(record(), RunnerDeps(nc=self.wire, agents=None, subjects=Subjects()))  # type: ignore[arg-type]
        self._steps = steps

    async def _run(self) -> None:
        await self._steps(self)

    def _abort_error(self) -> BatonError:
        return BatonError(ErrorCode.CONFLICT, "aborted: on request")


def finished(migration_id: str = "m1", **fields: Any) -> SourceFinished:
    return SourceFinished(migration_id=migration_id, host_id="h1", at=utc_now(), **fields)


async def test_a_bug_in_a_job_fails_it_as_internal_with_an_error_id():
    async def steps(job: Scripted) -> None:
        await job.tracker.transition(Phase.CHECKING)
        raise RuntimeError("a bug")
    job = Scripted(steps)
    await job.run()
    error = job.record.error
    assert error is not None and job.done.is_set()
    assert (Phase.FAILED, ErrorCode.INTERNAL) == (job.record.phase, error.code)
    assert re.fullmatch(r"internal error \(id [0-9a-f]{12}\); the coordinator logs say more",
                        error.message)
    assert error.error_id is not None and error.error_id in error.message


def test_internal_errors_get_fresh_ids():
    first, second = internal_error(), internal_error()
    assert first.error_id is not None and second.error_id is not None
    assert (ErrorCode.INTERNAL, 12) == (first.code, len(first.error_id))
    assert first.error_id != second.error_id


async def test_a_failure_is_recorded_and_announced_with_its_message():
    async def steps(job: Scripted) -> None:
        await job.tracker.transition(Phase.CHECKING)
        raise BatonError(ErrorCode.PRECONDITION_FAILED, "pre-flight failed — hosts: same host")
    job = Scripted(steps)
    await job.run()
    assert [("checking", ""), ("failed", "pre-flight failed — hosts: same host")] == \
        job.wire.phases


async def test_an_abort_ends_the_job_aborted_with_its_reason():
    async def steps(job: Scripted) -> None:
        await job.tracker.transition(Phase.CHECKING)
        raise Aborted()
    job = Scripted(steps)
    await job.run()
    assert job.record.error is not None
    assert (Phase.ABORTED, "aborted: on request") == (job.record.phase, job.record.error.message)
    assert ("aborted", "aborted: on request") == job.wire.phases[-1]


async def test_a_cancelled_job_records_that_the_coordinator_stopped():
    started = asyncio.Event()

    async def steps(job: Scripted) -> None:
        await job.tracker.transition(Phase.CHECKING)
        started.set()
        await asyncio.Event().wait()
    job = Scripted(steps)
    task = asyncio.ensure_future(job.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert job.record.error is not None
    assert (Phase.FAILED, ErrorCode.UNAVAILABLE, "the coordinator stopped during the migration") \
        == (job.record.phase, job.record.error.code, job.record.error.message)
    assert ("failed", "coordinator stopped") == job.wire.phases[-1]


async def test_an_abort_of_a_finished_or_completing_job_is_refused_with_its_phase():
    async def steps(job: Scripted) -> None:
        await job.tracker.transition(Phase.CHECKING)
        await job.tracker.transition(Phase.PREPARING)
        await job.tracker.transition(Phase.MIGRATING)
        await job._enter_completing("the source's migrate call returned")
    job = Scripted(steps)
    await job._run()
    with pytest.raises(BatonError) as late:
        job.request_abort("operator")
    assert (ErrorCode.CONFLICT, "too late") == (late.value.code, late.value.message)
    assert ("completing", "the source's migrate call returned") == job.wire.phases[-1]
    await job.tracker.transition(Phase.SUCCEEDED)
    with pytest.raises(BatonError) as done:
        job.request_abort("operator")
    assert "migration already succeeded" == done.value.message


def test_only_the_first_outcome_of_this_job_counts():
    job = Scripted(None)
    job._on_finished(finished("m9"))  # another job's report
    assert job._finished is None
    job._on_finished(finished(aborted=True))
    job._on_finished(finished())  # a late second report changes nothing
    assert job._finished is not None and job._finished.aborted


# --- giving up on a silent or stubborn agent (pure, on a frozen clock) --------------------------


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(job_runner.time, "monotonic", lambda: now[0])
    return now


def test_silence_up_to_the_limit_is_borne_and_past_it_is_a_timeout(clock):
    raise_if_late(None, timeouts.SOURCE_SILENCE_LIMIT, waiting=True)
    with pytest.raises(BatonError) as caught:
        raise_if_late(None, timeouts.SOURCE_SILENCE_LIMIT + 0.5, waiting=True)
    assert (ErrorCode.TIMEOUT, "the source agent said nothing for 60 s during the migration") \
        == (caught.value.code, caught.value.message)
    raise_if_late(None, 10 * timeouts.SOURCE_SILENCE_LIMIT, waiting=False)  # the outcome came


def test_an_abort_unconfirmed_up_to_the_settle_time_is_borne_and_past_it_is_a_timeout(clock):
    raise_if_late(clock[0] - timeouts.ABORT_SETTLE, 0, waiting=True)
    with pytest.raises(BatonError) as caught:
        raise_if_late(clock[0] - timeouts.ABORT_SETTLE - 0.1, 0, waiting=True)
    assert (ErrorCode.TIMEOUT, "the source agent did not confirm the abort within 30 s") == (
        caught.value.code, caught.value.message)
