"""The fixed start of a host's moves (agent/start_cost.py): read off completed capped moves,
learned per kind, the median of the last few."""

from __future__ import annotations

import pytest

from baton.agent.start_cost import KEPT, MOST_S, PRIOR_S, StartCost, observed_start_s
from baton.schemas.events import JobStats

MIB = 1 << 20


def done(elapsed_s: float, sent_mib: float | None = None, **figures) -> JobStats:
    sent = None if sent_mib is None else round(sent_mib * MIB)
    return JobStats(time_elapsed_ms=round(elapsed_s * 1000), data_processed_bytes=sent,
                    **figures)


@pytest.mark.parametrize(("stats", "cap", "start_s"), [
    (done(2.5, 96), 48, 0.5),  # 96 MiB at 48 MiB/s is 2 s of the 2.5
    (done(2.0, 96), 48, 0.0),  # sent at the cap from the first millisecond
    # without libvirt's total, memory and disks are added
    (done(3.0, memory_processed_bytes=96 * MIB, disk_processed_bytes=24 * MIB), 48, 0.5),
    (done(2.25, memory_processed_bytes=96 * MIB), 48, 0.25),
    (done(2.0, 96 - 0.001), 48, pytest.approx(0.0, abs=1e-4)),
    (done(MOST_S + 10.0, 480), 48, MOST_S),  # the longest start still learned
    (done(3.0, 2), 1, 1.0),  # the lowest cap there is
    (done(0.9, 40), 48, pytest.approx(0.9 - 40 / 48)),  # a move of under a second
])
def test_a_capped_moves_start_is_its_time_less_its_bytes_at_the_cap(stats, cap, start_s):
    assert start_s == observed_start_s(stats, cap)


@pytest.mark.parametrize(("stats", "cap"), [
    (JobStats(data_processed_bytes=96 * MIB), 48),  # no elapsed time
    (done(2.5), 48),  # no bytes
    (done(0.0, 0), 48),  # nothing ran
    (done(2.5, 96), 0),
    (done(1.9, 96), 48),  # faster than its cap: the cap was not what held it
    (done(MOST_S + 10.01, 480), 48),  # "started" longer than a start takes
    (done(4.1, 96), 48),  # 96 MiB in 4.1 s is under half of 48 MiB/s: the cap did not hold it
])
def test_nothing_is_read_off_a_move_the_cap_did_not_hold_or_without_figures(stats, cap):
    assert None is observed_start_s(stats, cap)


def test_half_the_cap_on_average_still_counts_as_held_by_it():
    assert 2.0 == observed_start_s(done(4.0, 96), 48)  # 24 MiB/s: exactly half


def test_before_any_move_the_prior_stands_for_both_kinds():
    start = StartCost()
    assert (PRIOR_S, PRIOR_S) == (start.seconds(copy=False), start.seconds(copy=True))


def test_shared_and_copy_moves_are_learned_apart():
    start = StartCost()
    start.observe(True, done(2.9, 96), 48)
    assert (PRIOR_S, pytest.approx(0.9)) == (start.seconds(copy=False), start.seconds(copy=True))


def test_the_median_of_the_last_moves_stands_so_one_slow_start_moves_nothing():
    start = StartCost()
    for elapsed_s in (2.2, 2.3, 2.9):
        start.observe(False, done(elapsed_s, 96), 48)
    assert pytest.approx(0.3) == start.seconds(copy=False)
    for _ in range(KEPT):  # the older ones age out
        start.observe(False, done(2.5, 96), 48)
    assert pytest.approx(0.5) == start.seconds(copy=False)


def test_a_move_without_one_cap_throughout_or_unread_teaches_nothing():
    start = StartCost()
    start.observe(False, done(2.9, 96), None)  # no cap, or it changed while it ran
    start.observe(False, done(1.0, 96), 48)  # faster than its cap
    assert PRIOR_S == start.seconds(copy=False)
