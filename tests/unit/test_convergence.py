"""The stall detector and downtime ramp (agent/convergence.py), as a table: progress, stall,
the first pass and the disks not judged, each escalation step, the ramp spent."""

from __future__ import annotations

import pytest

from baton.agent.convergence import (
    WAIT,
    Action,
    Escalator,
    Kind,
    Ramp,
    Reading,
    decide,
    ramp_up_to,
)
from baton.schemas.events import JobStats
from baton.schemas.migration import PostcopySwitch, StartRequest

MIB = 1 << 20
RAMP = Ramp(steps_ms=(500, 1000, 2000), stall_s=10)


def readings(*points: tuple[float, int, int]) -> list[Reading]:
    """(elapsed s, MiB left, pass) per reading."""
    return [Reading(t, left * MIB, it) for t, left, it in points]


STEADY = readings((0, 100, 1), (5, 40, 2), (10, 20, 3), (15, 21, 4), (20, 20, 5), (25, 22, 6))


@pytest.mark.parametrize(("name", "history", "downtime_ms", "escalated_at", "expected"), [
    ("nothing read yet", [], 300, 0, WAIT),
    ("first pass only, however long", readings((0, 100, 1), (30, 60, 1)), 300, 0, WAIT),
    ("second pass, window not yet full", readings((0, 100, 1), (5, 40, 2), (12, 30, 3)), 300,
     0, WAIT),
    ("converging: new lows all along", readings((0, 90, 2), (5, 60, 3), (10, 30, 4),
                                                (15, 10, 5)), 300, 0, WAIT),
    ("a new low in the last window", readings((0, 30, 2), (8, 30, 3), (12, 29, 4)), 300, 0,
     WAIT),
    ("stalled: first step", STEADY, 300, 0, Action(Kind.RAISE_DOWNTIME, 500)),
    ("stalled: next step above the limit", STEADY, 500, 0, Action(Kind.RAISE_DOWNTIME, 1000)),
    ("stalled: last step", STEADY, 1000, 0, Action(Kind.RAISE_DOWNTIME, 2000)),
    ("stalled with the ramp spent", STEADY, 2000, 0, WAIT),
    ("an operator's higher limit skips the steps below it", STEADY, 1500, 0,
     Action(Kind.RAISE_DOWNTIME, 2000)),
    ("just raised: the stall clock restarts", STEADY, 500, 20, WAIT),
    ("raised long enough ago and still stalled", STEADY + readings((35, 22, 7), (40, 23, 8)),
     500, 25, Action(Kind.RAISE_DOWNTIME, 1000)),
])
def test_decide(name, history, downtime_ms, escalated_at, expected):
    action = decide(history, RAMP, downtime_ms, escalated_at)
    assert (expected.kind, expected.downtime_ms) == (action.kind, action.downtime_ms), name


def test_an_escalation_says_why():
    action = decide(STEADY, RAMP, 300)
    assert "no progress for 10 s at pass 6 (20 MiB left): downtime limit 300 -> 500 ms" == \
        action.reason


@pytest.mark.parametrize(("ceiling", "steps"), [
    (None, (500, 1000, 2000)), (800, (500, 800)), (300, (300,)), (5000, (500, 1000, 2000, 5000)),
])
def test_the_ramp_ends_at_the_operators_ceiling(ceiling, steps):
    assert steps == ramp_up_to(ceiling).steps_ms


AFTER_FIRST = Ramp(steps_ms=(500, 1000, 2000), stall_s=10,
                   postcopy=PostcopySwitch.AFTER_FIRST_PASS)
WHEN_STALLED = Ramp(steps_ms=(500, 1000, 2000), stall_s=10,
                    postcopy=PostcopySwitch.WHEN_STALLED)
POSTCOPY = Action(Kind.START_POSTCOPY)


@pytest.mark.parametrize(("name", "history", "ramp", "downtime_ms", "expected"), [
    ("after the first pass: not while it runs", readings((0, 100, 1), (30, 60, 1)), AFTER_FIRST,
     300, WAIT),
    ("after the first pass: nothing read yet", [], AFTER_FIRST, 300, WAIT),
    ("after the first pass: at pass 2, converging or not", readings((0, 100, 1), (5, 40, 2)),
     AFTER_FIRST, 300, POSTCOPY),
    ("after the first pass: the disks (pass 0) are not a pass", readings((0, 0, 0), (9, 0, 0)),
     AFTER_FIRST, 300, WAIT),
    ("when stalled: the ramp comes first", STEADY, WHEN_STALLED, 300,
     Action(Kind.RAISE_DOWNTIME, 500)),
    ("when stalled: the last step comes first", STEADY, WHEN_STALLED, 1000,
     Action(Kind.RAISE_DOWNTIME, 2000)),
    ("when stalled: ramp spent and stalled", STEADY, WHEN_STALLED, 2000, POSTCOPY),
    ("when stalled: ramp spent but converging", readings((0, 90, 2), (5, 60, 3), (10, 30, 4),
                                                         (15, 10, 5)), WHEN_STALLED, 2000, WAIT),
    ("when stalled: no ramp at all", STEADY, Ramp((), 10, PostcopySwitch.WHEN_STALLED), 300,
     POSTCOPY),
    ("never: ramp spent and stalled", STEADY, RAMP, 2000, WAIT),
])
def test_decide_the_postcopy_switch(name, history, ramp, downtime_ms, expected):
    action = decide(history, ramp, downtime_ms)
    assert (expected.kind, expected.downtime_ms) == (action.kind, action.downtime_ms), name


def test_a_postcopy_switch_says_why():
    assert "no progress for 10 s at pass 6 (20 MiB left) at a downtime limit of 2000 ms: " \
        "switched to post-copy" == decide(STEADY, WHEN_STALLED, 2000).reason
    assert "first pass sent (40 MiB left at pass 2): switched to post-copy" == \
        decide(readings((0, 100, 1), (5, 40, 2)), AFTER_FIRST, 300).reason


def stalled_reading(second: int) -> JobStats:
    return JobStats(time_elapsed_ms=second * 1000, memory_remaining_bytes=20 * MIB,
                    memory_iteration=2 + second)


def start(**options) -> StartRequest:
    return StartRequest(migration_id="m1", vm="g1", destination_uri="qemu+tcp://h2/system",
                        **options)


def test_the_escalator_switches_once_and_then_decides_nothing():
    escalator = Escalator(start(postcopy=PostcopySwitch.AFTER_FIRST_PASS))
    step = escalator.next_step(stalled_reading(1))
    assert step is not None and Kind.START_POSTCOPY == step.kind
    escalator.applied(step)
    assert (True, [step.reason]) == (escalator.postcopy, escalator.escalations)
    assert [None] * 20 == [escalator.next_step(stalled_reading(s)) for s in range(2, 22)]


def test_without_the_ramp_a_when_stalled_switch_comes_at_the_first_stall():
    escalator = Escalator(start(postcopy=PostcopySwitch.WHEN_STALLED))
    steps = [escalator.next_step(stalled_reading(s)) for s in range(1, 13)]
    assert [None] * 10 == steps[:10]  # a whole stall window first
    assert steps[10] is not None and Kind.START_POSTCOPY == steps[10].kind


def test_an_escalator_with_nothing_to_do_never_asks():
    escalator = Escalator(start())
    assert (False, [None] * 30) == (escalator.enabled, [escalator.next_step(stalled_reading(s))
                                                         for s in range(1, 31)])


def test_readings_of_pass_two_are_judged():
    # every reading at pass 2, no new low for a whole window: the first pass ended, so judged
    at_pass_two = readings((0, 20, 2), (5, 20, 2), (11, 20, 2))
    assert Kind.RAISE_DOWNTIME == decide(at_pass_two, RAMP, 300).kind


def test_the_ceiling_keeps_the_postcopy_switch():
    for ceiling in (None, 800):
        assert PostcopySwitch.WHEN_STALLED == ramp_up_to(ceiling,
                                                         PostcopySwitch.WHEN_STALLED).postcopy


def test_the_escalator_steps_up_to_the_operators_ceiling_and_restarts_its_window():
    escalator = Escalator(start(downtime_ramp=True, max_downtime_ms=400))
    steps = []
    for second in range(1, 40):
        step = escalator.next_step(stalled_reading(second))
        if step is not None:
            escalator.applied(step)
            steps.append((second, step.downtime_ms))
    # 400 ms is in force from the start and is the ramp's last step: nothing to raise
    assert [] == steps
    ramped = Escalator(start(downtime_ramp=True))
    for second in range(1, 40):
        step = ramped.next_step(stalled_reading(second))
        if step is not None:
            ramped.applied(step)
            steps.append((second, step.downtime_ms))
    # judged from the first reading past pass 1 (second 1): a 10 s window, then a new one
    # from each raise's reading
    assert [(11, 500), (21, 1000), (31, 2000)] == steps


def test_the_escalator_remembers_the_guests_memory_between_readings():
    escalator = Escalator(start())
    escalator.next_step(JobStats(memory_total_bytes=128 * MIB))
    escalator.next_step(JobStats())
    assert 128 * MIB == escalator.memory_total_bytes
