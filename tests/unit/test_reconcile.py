"""The periodic reconcile (Coordinator.reconcile, issue #11 part 4): a record whose latest version
never reached the store is written again, and an unfinished record that nothing drives any more
is handed to a Takeover. In-memory store and NATS stand-ins; the Takeover's own decisions are
tested elsewhere (tests/unit/test_takeover.py, tests/integration/test_takeover.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from baton.coordinator.core import Coordinator
from baton.coordinator.job_runner import RunnerDeps
from baton.coordinator.phases import PhaseTracker
from baton.coordinator.store import MemoryStore
from baton.coordinator.takeover import Takeover
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import Phase
from baton.schemas.subjects import Subjects
from tests.unit.test_job_runner import Wire, record


class FlakyStore(MemoryStore):
    """Refuses the first ``failures`` writes, as a JetStream away for a while would."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.error = error or TimeoutError()

    async def put(self, rec: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error
        await super().put(rec)


class Driven:
    """A job of this process (a registry Job) with a tracker, as a runner has."""

    def __init__(self, tracker: PhaseTracker[Any], finished: bool) -> None:
        self.tracker = tracker
        self.done = asyncio.Event()
        if finished:
            self.done.set()

    @property
    def record(self) -> Any:
        return self.tracker.record

    def request_abort(self, reason: str) -> None: ...

    async def set_bandwidth(self, mib_s: int) -> Any: ...


def coordinator(store: MemoryStore) -> tuple[Coordinator, list[Any]]:
    spawned: list[Any] = []

    def spawn(coro: Any) -> asyncio.Task[None]:
        spawned.append(coro)
        coro.close()  # not run: the test looks at what would have been
        return asyncio.get_running_loop().create_future()  # type: ignore[return-value]

    deps = RunnerDeps(nc=Wire(), agents=None, subjects=Subjects(), store=store)  # type: ignore[arg-type]
    return Coordinator(deps, spawn), spawned


async def test_a_record_the_store_missed_is_written_again_by_the_next_pass():
    store = FlakyStore(failures=1)
    coord, _ = coordinator(store)
    tracker = PhaseTracker(record(), Subjects(), Wire().publish, store=store)
    job = Driven(tracker, finished=False)
    coord.registry.add(job)
    coord._track("m1", asyncio.get_running_loop().create_future())  # its runner still runs
    await tracker.transition(Phase.CHECKING)  # the store refuses this one
    missed = (tracker.unsaved, "m1" in store.records)
    acted = await coord.reconcile()
    assert (True, False) == missed
    assert (1, False, Phase.CHECKING) == (acted, tracker.unsaved, store.records["m1"].phase)
    assert 0 == await coord.reconcile()  # nothing left to do


async def test_a_record_another_coordinator_owns_is_not_written_again():
    store = FlakyStore(failures=1, error=BatonError(ErrorCode.CONFLICT, "another writer"))
    tracker = PhaseTracker(record(), Subjects(), Wire().publish, store=store)
    await tracker.transition(Phase.CHECKING)
    assert (False, {}) == (tracker.unsaved, store.records)


async def test_an_unfinished_record_nothing_drives_is_handed_to_a_takeover():
    store = MemoryStore()
    coord, spawned = coordinator(store)
    left = PhaseTracker(record(), Subjects(), Wire().publish, store=store)
    for phase in (Phase.CHECKING, Phase.PREPARING, Phase.MIGRATING):
        await left.transition(phase)
    coord.registry.add(Driven(left, finished=True))  # its runner ended without a final phase
    acted = await coord.reconcile()
    settler = coord.registry.get("m1")
    assert (1, 1) == (acted, len(spawned))
    assert isinstance(settler, Takeover) and Phase.MIGRATING == settler.record.phase
    assert "m1" in coord._tasks
    assert 0 == await coord.reconcile()  # now driven: left alone


async def test_finished_and_driven_records_are_left_alone():
    store = MemoryStore()
    coord, spawned = coordinator(store)
    ended = PhaseTracker(record(), Subjects(), Wire().publish, store=store)
    await ended.transition(Phase.FAILED)
    coord.registry.add(Driven(ended, finished=True))
    assert (0, []) == (await coord.reconcile(), spawned)


async def test_a_failing_pass_does_not_end_the_loop(monkeypatch):
    coord, _ = coordinator(MemoryStore())
    passes = 0

    async def failing() -> int:
        nonlocal passes
        passes += 1
        raise RuntimeError("boom")

    monkeypatch.setattr(coord, "reconcile", failing)
    loop = asyncio.ensure_future(coord.reconcile_forever(every_s=0.01))
    await asyncio.sleep(0.1)
    alive = not loop.done()
    loop.cancel()
    assert alive and passes > 2


async def test_saving_again_says_whether_the_record_reached_the_store():
    store = FlakyStore(failures=2)
    tracker = PhaseTracker(record(), Subjects(), Wire().publish, store=store)
    await tracker.transition(Phase.CHECKING)  # refused
    assert (False, True) == (await tracker.save(), tracker.unsaved)  # refused again
    assert (True, False) == (await tracker.save(), tracker.unsaved)
    assert Phase.CHECKING == store.records["m1"].phase
