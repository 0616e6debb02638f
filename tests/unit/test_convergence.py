"""The stall detector and downtime ramp (agent/convergence.py), as a table: progress, stall,
the first pass and the disks not judged, each escalation step, the ramp spent."""

from __future__ import annotations

import pytest

from baton.agent.convergence import (
    WAIT,
    Action,
    Kind,
    Ramp,
    Reading,
    decide,
    ramp_up_to,
)

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
