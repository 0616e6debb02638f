"""The drain plan (coordinator/drain_plan.py): destinations among the hosts that passed, memory
the plan itself uses up, longest first over the drain's lanes, the destination's inbound limit,
and the lower bound it is measured against."""

from __future__ import annotations

import pytest

from baton.coordinator.drain_plan import DrainVm, PlannedMove, plan_drain

GIB = 1024**3
MIB = 1024**2


def vm(name: str, gib: float, *hosts: str, memory_gib: float = 1) -> DrainVm:
    return DrainVm(name, int(gib * GIB), int(memory_gib * GIB), tuple(hosts))


def where(plan) -> dict[str, str]:
    return {m.vm: m.destination for m in plan.moves}


def test_the_vms_spread_over_the_hosts_that_passed_biggest_first():
    plan = plan_drain([vm("a", 1, "h2", "h3"), vm("b", 4, "h2", "h3"), vm("c", 2, "h2", "h3"),
                       vm("d", 1, "h3")], {"h2": None, "h3": None}, lanes=2, rate_mib_s=None,
                      inbound=2)
    # b (4) to h2 (first candidate), c (2) to h3 (less received), a (1) to h3, d only to h3
    assert {"b": "h2", "c": "h3", "a": "h3", "d": "h3"} == where(plan)
    assert (None, None, {}) == (plan.total_s, plan.lower_bound_s, plan.unplaced)


def test_a_host_is_not_filled_past_its_memory_by_the_drains_own_moves():
    plan = plan_drain([vm("a", 1, "h2", "h3", memory_gib=3), vm("b", 1, "h2", "h3", memory_gib=3),
                       vm("c", 1, "h2", memory_gib=3)],
                      {"h2": 4 * GIB, "h3": 4 * GIB}, lanes=2, rate_mib_s=None, inbound=2)
    assert {"a": "h2", "b": "h3"} == where(plan)
    assert {"c": "the hosts that pass its checks (h2) have no memory left for it once the "
            "drain's earlier VMs arrive"} == plan.unplaced


def test_a_vm_no_host_passes_for_stays_with_the_reason():
    plan = plan_drain([vm("a", 1)], {"h2": None}, lanes=1, rate_mib_s=100, inbound=2)
    assert ([], {"a": "no host passes its checks"}) == (plan.moves, plan.unplaced)


def test_longest_first_over_the_lanes_and_the_lower_bound():
    # 4 + 3 + 3 + 2 GiB over two lanes at 1024 MiB/s: 4|3, then 2 after the 3 (at 3 s) and 3
    # after the 4 (at 4 s)... longest first gives {4, 2} and {3, 3}: 6 s, the lower bound
    plan = plan_drain([vm("s", 2, "h2", "h3"), vm("m1", 3, "h2", "h3"), vm("m2", 3, "h2", "h3"),
                       vm("b", 4, "h2", "h3")], {"h2": None, "h3": None}, lanes=2,
                      rate_mib_s=1024, inbound=2)
    assert (6.0, 6.0) == (plan.total_s, plan.lower_bound_s)
    assert [("b", 0.0, 4.0), ("m1", 0.0, 3.0), ("m2", 3.0, 6.0), ("s", 4.0, 6.0)] == [
        (m.vm, m.start_s, m.end_s) for m in plan.moves]


def test_one_big_vm_bounds_the_drain_below():
    plan = plan_drain([vm("big", 8, "h2"), vm("small", 1, "h3")], {"h2": None, "h3": None},
                      lanes=4, rate_mib_s=1024, inbound=2)
    assert (8.0, 8.0) == (plan.total_s, plan.lower_bound_s)


def test_a_destination_takes_at_most_inbound_at_once():
    plan = plan_drain([vm(f"v{i}", 1, "h2") for i in range(3)], {"h2": None}, lanes=3,
                      rate_mib_s=1024, inbound=2)
    assert [0.0, 0.0, 1.0] == sorted(m.start_s or 0.0 for m in plan.moves)
    assert (2.0, 1.0) == (plan.total_s, plan.lower_bound_s)  # the lanes would allow 1 s


@pytest.mark.parametrize("rate", [None, 0])
def test_without_a_rate_there_are_no_times(rate):
    plan = plan_drain([vm("a", 1, "h2")], {"h2": None}, lanes=1, rate_mib_s=rate, inbound=2)
    assert [PlannedMove("a", "h2", None, None)] == plan.moves


def test_the_moves_come_in_start_order_with_fractional_times():
    # z (1.5 GiB) starts first on the one lane, then a (0.5 GiB): not the names' order
    plan = plan_drain([vm("a", 0.5, "h2"), vm("z", 1.5, "h2")], {"h2": None}, lanes=1,
                      rate_mib_s=1024, inbound=2)
    assert [("z", 0.0, 1.5), ("a", 1.5, 2.0)] == [(m.vm, m.start_s, m.end_s) for m in plan.moves]


def test_memory_exactly_enough_fits_and_every_candidate_is_named_when_none_has_room():
    fits = plan_drain([vm("a", 1, "h2", memory_gib=2)], {"h2": 2 * GIB}, lanes=1,
                      rate_mib_s=None, inbound=1)
    full = plan_drain([vm("a", 1, "h2", "h3", memory_gib=2)], {"h2": GIB, "h3": GIB}, lanes=1,
                      rate_mib_s=None, inbound=1)
    assert ({"a": "h2"}, {}) == (where(fits), fits.unplaced)
    assert full.unplaced["a"].startswith("the hosts that pass its checks (h2, h3) have no memory")


def test_times_are_given_to_the_millisecond():
    # 1 GiB at 3 GiB/s: a third of a second each, one after the other on the one lane
    plan = plan_drain([vm("a", 1, "h2"), vm("b", 1, "h2")], {"h2": None}, lanes=1,
                      rate_mib_s=3072, inbound=2)
    assert [(0.0, 0.333), (0.333, 0.667)] == [(m.start_s, m.end_s) for m in plan.moves]
    assert (0.667, 0.667) == (plan.total_s, plan.lower_bound_s)


def test_an_inbound_limit_below_one_still_lets_one_move_in():
    plan = plan_drain([vm("a", 1, "h2"), vm("b", 1, "h2")], {"h2": None}, lanes=2,
                      rate_mib_s=1024, inbound=0)
    assert [("a", 0.0, 1.0), ("b", 1.0, 2.0)] == [(m.vm, m.start_s, m.end_s) for m in plan.moves]


def test_a_vm_with_nowhere_to_go_does_not_stop_the_smaller_ones_behind_it():
    plan = plan_drain([vm("big", 8), vm("small", 1, "h2")], {"h2": None}, lanes=1,
                      rate_mib_s=1024, inbound=1)
    assert ({"small": "h2"}, ["big"]) == (where(plan), list(plan.unplaced))


def test_a_host_that_received_nothing_yet_ties_with_one_that_received_zero_bytes():
    # "a" sends no bytes to h3; for "b" both hosts have received nothing: the first candidate
    plan = plan_drain([vm("a", 0, "h3"), vm("b", 0, "h2", "h3")], {"h2": None, "h3": None},
                      lanes=1, rate_mib_s=1024, inbound=1)
    assert {"a": "h3", "b": "h2"} == where(plan)


def test_a_drain_of_nothing_to_copy_takes_no_time():
    plan = plan_drain([vm("a", 0, "h2")], {"h2": None}, lanes=1, rate_mib_s=1024, inbound=1)
    assert (0.0, 0.0) == (plan.total_s, plan.lower_bound_s)
