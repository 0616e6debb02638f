"""The pre-copy model (agent/precopy_model.py), as tables: passes until the remainder fits the
pause, the remainder that stops shrinking, the working-set cap, the pass limit, disks first, the
strategy each case needs, and the time left of a running migration.

Rates are powers of two, so every expected figure is exact arithmetic written out by hand."""

from __future__ import annotations

import pytest

from baton.agent import convergence
from baton.agent.precopy_model import (
    DEFAULT_RAMP_MS,
    QEMU_DEFAULT_DOWNTIME_MS,
    STALL_S,
    Outcome,
    Prediction,
    Strategy,
    eta_s,
    pages_to_bytes,
    predict,
    simulate,
)

MIB = 1 << 20
GIB = 1 << 30
LINK = 128 * MIB  # 1 GiB in 8 s
NO = Outcome(False, None, None, 1)


@pytest.mark.parametrize(("name", "args", "kwargs", "expected"), [
    ("nothing dirtied: one pass, no pause", (GIB, 0, LINK, 300), {}, Outcome(True, 8.0, 0, 1)),
    # each pass re-sends half the one before (8, 4, 2, 1, 0.5 s); 32 MiB fit in 300 ms
    ("halving passes until the remainder fits", (GIB, 64 * MIB, LINK, 300), {},
     Outcome(True, 8 + 4 + 2 + 1 + 0.5 + 0.25, 250, 5)),
    ("a remainder exactly at the limit switches over", (GIB, 64 * MIB, LINK, 500), {},
     Outcome(True, 8 + 4 + 2 + 1 + 0.5, 500, 4)),
    ("dirtying as fast as the link: the remainder never shrinks", (GIB, LINK, LINK, 300), {}, NO),
    ("dirtying faster than the link", (GIB, 2 * LINK, LINK, 300), {}, NO),
    # 512 MiB dirtied during pass 1, but the guest touches only 256 MiB: 2, 1, 0.5 s, 0.25 s pause
    ("the working set caps what a pass dirties", (GIB, 64 * MIB, LINK, 300),
     {"working_set_bytes": 256 * MIB}, Outcome(True, 8 + 2 + 1 + 0.5 + 0.25, 250, 4)),
    ("a small working set lets a fast dirtier fit the pause", (GIB, 2 * LINK, LINK, 500),
     {"working_set_bytes": 64 * MIB}, Outcome(True, 8 + 0.5, 500, 1)),
    ("a fast dirtier's capped remainder stays put when it does not fit",
     (GIB, 2 * LINK, LINK, 300), {"working_set_bytes": 64 * MIB}, Outcome(False, None, None, 2)),
    ("disks are copied first", (GIB, 64 * MIB, LINK, 300), {"disk_bytes": 512 * MIB},
     Outcome(True, 4 + 8 + 4 + 2 + 1 + 0.5 + 0.25, 250, 5)),
    # mid-pass: 256 MiB still to send (2 s), then 1, 0.5 s and a 0.25 s pause
    ("mid-pass: the first pass sends what is left of it", (GIB, 64 * MIB, LINK, 300),
     {"remaining_bytes": 256 * MIB}, Outcome(True, 2 + 1 + 0.5 + 0.25, 250, 3)),
    ("mid-pass with nothing left and nothing dirtied", (GIB, 0, LINK, 300),
     {"remaining_bytes": 0, "disk_bytes": 64 * MIB}, Outcome(True, 0.5, 0, 1)),
    # half of memory is zero pages: pass 1 sends 512 MiB (4 s), and the guest dirties half as
    # much meanwhile: 2, 1, 0.5 s and a 0.25 s pause
    ("zero pages cost the first pass nothing", (GIB, 64 * MIB, LINK, 300),
     {"first_pass_bytes": 512 * MIB}, Outcome(True, 4 + 2 + 1 + 0.5 + 0.25, 250, 4)),
    ("whole pages beyond memory are memory", (GIB, 0, LINK, 300),
     {"first_pass_bytes": 2 * GIB}, Outcome(True, 8.0, 0, 1)),
    # mid-pass, what is left is what was counted: the whole pages do not apply
    ("mid-pass the first pass's whole pages are already counted", (GIB, 64 * MIB, LINK, 300),
     {"remaining_bytes": 256 * MIB, "first_pass_bytes": 128 * MIB},
     Outcome(True, 2 + 1 + 0.5 + 0.25, 250, 3)),
    # a guest dirtying twice as fast as the link re-sends 16 MiB after a first pass of 8: judged
    # against the 1 GiB that pass went through, that still shrank; pass 2 (32 MiB) did not
    ("a first pass of few whole pages is judged against all of memory",
     (GIB, 2 * LINK, LINK, 100), {"first_pass_bytes": 8 * MIB}, Outcome(False, None, None, 2)),
])
def test_simulate(name, args, kwargs, expected):
    assert expected == simulate(*args, **kwargs), name


# 1 TiB at 1 KiB/s, half dirtied again each pass: after pass k, 2**(40 - k) bytes are left, a
# pause of 2**(30 - k) s: exactly 1 s after the 30th pass, which is the last one allowed.
SLOW_LINK = 1024
PASS_S = [2.0 ** (30 - k) for k in range(30)]  # 2**30 s, 2**29 s, ..., 2 s


@pytest.mark.parametrize(("downtime_ms", "expected"), [
    (1000, Outcome(True, sum(PASS_S) + 1, 1000, 30)),
    (999, Outcome(False, None, None, 30)),
])
def test_the_pass_limit(downtime_ms, expected):
    assert expected == simulate(1 << 40, SLOW_LINK // 2, SLOW_LINK, downtime_ms)


@pytest.mark.parametrize("link_bps", [0, -1])
def test_a_link_rate_that_is_not_positive_is_refused(link_bps):
    with pytest.raises(ValueError, match="link rate must be positive"):
        simulate(GIB, 0, link_bps, 300)
    with pytest.raises(ValueError, match="link rate must be positive"):
        predict(GIB, 0, link_bps)


def prediction(strategy, total_s, downtime_ms, dirty_mib_s, converges=False):
    return Prediction(converges=converges, total_s=total_s, downtime_ms=downtime_ms,
                      strategy=strategy, dirty_rate_mib_s=dirty_mib_s, link_mib_s=128.0)


# 1 GiB dirtied at 120 MiB/s: each pass is 15/16 of the one before (from 8 s); the remainder
# fits 2 s only after pass 22, and 1 s not within 30 passes. Floats: compared approximately.
Q = 15 / 16
SLOW_TOTAL_S = sum(8 * Q**k for k in range(22)) + 8 * Q**22


@pytest.mark.parametrize(("name", "args", "kwargs", "expected"), [
    ("pre-copy at the limit asked for", (GIB, 64 * MIB, LINK), {},
     prediction(Strategy.PRECOPY, 15.75, 250, 64.0, converges=True)),
    ("pre-copy, disks first", (GIB, 64 * MIB, LINK), {"disk_bytes": 512 * MIB},
     prediction(Strategy.PRECOPY, 4 + 15.75, 250, 64.0, converges=True)),
    # 64 MiB dirtied as fast as sent: a 0.5 s pause every pass; fits at the first step, raised
    # after one stall window
    ("the ramp's first step", (64 * MIB, LINK, LINK), {},
     prediction(Strategy.DOWNTIME_RAMP, 0.5 + 0.5 + 10, 500, 128.0)),
    ("the ramp's first step, disks first", (64 * MIB, LINK, LINK), {"disk_bytes": 128 * MIB},
     prediction(Strategy.DOWNTIME_RAMP, 1 + 0.5 + 0.5 + 10, 500, 128.0)),
    ("the ramp's second step: two stall windows", (128 * MIB, LINK, LINK), {},
     prediction(Strategy.DOWNTIME_RAMP, 1 + 1 + 2 * 10, 1000, 128.0)),
    ("steps at or below the limit are not raised", (128 * MIB, LINK, LINK), {"downtime_ms": 500},
     prediction(Strategy.DOWNTIME_RAMP, 1 + 1 + 10, 1000, 128.0)),
    ("an operator's own steps", (128 * MIB, LINK, LINK), {"ramp_ms": (1500,)},
     prediction(Strategy.DOWNTIME_RAMP, 1 + 1 + 10, 1000, 128.0)),
    ("the pass limit, beaten only at the last step", (GIB, 120 * MIB, LINK), {},
     prediction(Strategy.DOWNTIME_RAMP, pytest.approx(SLOW_TOTAL_S + 3 * 10),
                round(8000 * Q**22), 120.0)),
    # first pass 8 s, then every page once more: 8 s
    ("post-copy when the ramp is spent", (GIB, 2 * LINK, LINK), {"allow_postcopy": True},
     prediction(Strategy.POSTCOPY, 8 + 8, 50, 256.0)),
    ("post-copy, disks first", (GIB, 2 * LINK, LINK),
     {"allow_postcopy": True, "disk_bytes": 512 * MIB},
     prediction(Strategy.POSTCOPY, 4 + 8 + 8, 50, 256.0)),
    ("post-copy when there is no ramp", (64 * MIB, LINK, LINK),
     {"allow_postcopy": True, "ramp_ms": ()},
     prediction(Strategy.POSTCOPY, 0.5 + 0.5, 50, 128.0)),
    ("only auto-converge ends it", (GIB, 2 * LINK, LINK), {},
     prediction(Strategy.AUTO_CONVERGE, None, None, 256.0)),
    ("no ramp, no post-copy", (64 * MIB, LINK, LINK), {"ramp_ms": ()},
     prediction(Strategy.AUTO_CONVERGE, None, None, 128.0)),
])
def test_predict(name, args, kwargs, expected):
    assert expected == predict(*args, **kwargs), name


@pytest.mark.parametrize(("name", "args", "kwargs", "expected"), [
    # 256 MiB left of the current pass: 2 s, then 1, 0.5 s and a 0.25 s pause
    ("mid-pass", (GIB, 256 * MIB, 64 * MIB, LINK, 300), {}, 2 + 1 + 0.5 + 0.25),
    ("disks still copying", (GIB, GIB, 64 * MIB, LINK, 300), {"disk_remaining_bytes": 128 * MIB},
     1 + 15.75),
    # 64 MiB left (0.5 s) of a 128 MiB guest dirtying 512 MiB/s: all 128 MiB dirtied, a 1 s pause
    ("the whole memory caps what a pass dirties", (128 * MIB, 64 * MIB, 4 * LINK, LINK, 1000),
     {}, 0.5 + 1),
    ("the remainder stops shrinking", (GIB, 512 * MIB, LINK, LINK, 300), {}, None),
    ("the link rate not known yet", (GIB, 512 * MIB, 0, None, 300), {}, None),
    ("the link rate zero", (GIB, 512 * MIB, 0, 0, 300), {}, None),
    ("the link rate negative", (GIB, 512 * MIB, 0, -1, 300), {}, None),
])
def test_eta(name, args, kwargs, expected):
    assert expected == eta_s(*args, **kwargs), name


@pytest.mark.parametrize(("pages_s", "page_size", "expected"), [
    (100, None, 409_600), (3, 2 * MIB, 6 * MIB), (0, None, 0),
])
def test_dirty_pages_to_bytes(pages_s, page_size, expected):
    actual = pages_to_bytes(pages_s) if page_size is None else pages_to_bytes(pages_s, page_size)
    assert expected == actual


def test_the_model_steps_as_the_stall_detector_does():
    assert (convergence.STALL_S, convergence.DEFAULT_STEPS_MS,
            convergence.QEMU_DEFAULT_DOWNTIME_MS) == (STALL_S, DEFAULT_RAMP_MS,
                                                      QEMU_DEFAULT_DOWNTIME_MS)


def test_a_pass_nearly_done_is_judged_whole_not_by_its_last_bytes():
    # 1 MiB left of a pass that has run 1 s at 32 MiB/s (33 MiB in all), 16 MiB/s dirtied:
    # 16.5 MiB to re-send is more than the 1 MiB left but half the pass: it still shrinks.
    outcome = simulate(128 * MIB, 16 * MIB, 32 * MIB, 300, remaining_bytes=1 * MIB,
                       pass_elapsed_s=1.0)
    assert outcome.converges and outcome.total_s is not None
    # 1/32 s, then 16.5 MiB (0.516 s) leaving 8.25 MiB (0.258 s): the pause
    assert 1 / 32 + 16.5 / 32 + 8.25 / 32 == pytest.approx(outcome.total_s)
    stalled = simulate(128 * MIB, 40 * MIB, 32 * MIB, 300, remaining_bytes=1 * MIB,
                       pass_elapsed_s=1.0)
    assert (False, None) == (stalled.converges, stalled.total_s)
