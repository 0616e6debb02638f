"""The admission rule (coordinator/admission.py): who may start now, in order of arrival."""

from __future__ import annotations

import dataclasses

import pytest

from baton.coordinator.admission import (
    Admission,
    Limits,
    Ticket,
    admissible,
    shares,
    why_waiting,
)

KUBEVIRT = Limits()  # 2 out, 2 in, 5 in the cluster


def t(name: str, source: str, destination: str, order: int = 0) -> Ticket:
    return Ticket(name, source, destination, order)


def names(tickets: list[Ticket]) -> list[str]:
    return [ticket.migration_id for ticket in tickets]


@pytest.mark.parametrize(("running", "waiting", "starts"), [
    ([], [t("a", "h1", "h2", 0), t("b", "h1", "h3", 1), t("c", "h1", "h4", 2)], ["a", "b"]),
    ([], [t("a", "h1", "h9", 0), t("b", "h2", "h9", 1), t("c", "h3", "h9", 2)], ["a", "b"]),
    ([t("r", "h1", "h2")], [t("a", "h1", "h3", 0), t("b", "h1", "h4", 1)], ["a"]),
    # one blocked by its own host does not hold up a later one between other hosts
    ([t("r1", "h1", "h2"), t("r2", "h1", "h3")], [t("a", "h1", "h4", 0), t("b", "h5", "h6", 1)],
     ["b"]),
    # the cluster's limit counts everyone, in order of arrival
    ([t(f"r{i}", f"s{i}", f"d{i}") for i in range(4)],
     [t("late", "x1", "y1", 9), t("early", "x2", "y2", 1)], ["early"]),
    ([t(f"r{i}", f"s{i}", f"d{i}") for i in range(5)], [t("a", "x", "y", 0)], []),
], ids=["two-out", "two-in", "out-counts-running", "no-head-of-line-block", "cluster-in-order",
        "cluster-full"])
def test_who_starts_now(running, waiting, starts):
    assert starts == names(admissible(waiting, running, KUBEVIRT))


def test_the_reason_names_the_limit_that_holds_a_migration_back():
    busy = [t("r1", "h1", "h2"), t("r2", "h1", "h3")]
    assert "2 migrations leave h1 (limit 2)" == why_waiting(t("a", "h1", "h4"), busy, KUBEVIRT)
    assert "2 migrations arrive at h2 (limit 2)" == why_waiting(
        t("a", "h7", "h2"), [t("r1", "h5", "h2"), t("r2", "h6", "h2")], KUBEVIRT)
    one = Limits(outbound=1, inbound=1, total=1)
    assert "1 migrations run in the cluster (limit 1)" == why_waiting(t("a", "h7", "h8"),
                                                                      busy[:1], one)
    assert "earlier requests wait for the same slots" == why_waiting(t("a", "h7", "h8"), [], one)


@pytest.mark.parametrize("below", [{"outbound": 0}, {"inbound": 0}, {"total": 0},
                                   {"host_bandwidth_mib_s": 0}])
def test_limits_below_one_are_refused(below):
    with pytest.raises(ValueError, match="at least 1"):
        Limits(**below)


def test_limits_of_one_are_taken():
    assert (1, 1, 1, 1) == dataclasses.astuple(Limits(outbound=1, inbound=1, total=1,
                                                      host_bandwidth_mib_s=1))


def test_a_freed_slot_goes_to_the_earliest_waiting_however_the_runners_wake():
    admission = Admission(Limits(outbound=1, inbound=1, total=1))
    woken: list[str] = []
    first, second, third = (admission.ticket(m, "h1", "h2") for m in ("m1", "m2", "m3"))
    assert admission.try_admit(first, lambda: woken.append("m1"))
    assert not admission.try_admit(second, lambda: woken.append("m2"))
    assert not admission.try_admit(third, lambda: woken.append("m3"))
    admission.leave("m1")
    assert ["m2", "m3"] == sorted(woken)
    assert not admission.try_admit(third, lambda: None)  # woke first, but m2 came first
    assert admission.try_admit(second, lambda: None)
    assert (["m2"], ["m3"]) == (names(admission.running), names(admission.waiting))
    admission.leave("m3")  # an abort while queued frees no slot and wakes nobody
    assert (["m2"], [], ["m2", "m3"]) == (names(admission.running), names(admission.waiting),
                                          sorted(woken))


def test_a_closed_admission_starts_nothing_more():
    admission = Admission(Limits())
    admission.close()
    ticket = admission.ticket("m1", "h1", "h2")
    assert not admission.try_admit(ticket, lambda: None)
    assert "shutting down" in admission.why_waiting(ticket)


def test_a_drains_parallel_limit_holds_its_own_migrations_only():
    running = [Ticket("r1", "h1", "h2", 0, "d1", 1)]
    waiting = [Ticket("a", "h1", "h3", 1, "d1", 1), Ticket("b", "h4", "h5", 2)]
    assert ["b"] == names(admissible(waiting, running, KUBEVIRT))
    assert "1 of its drain's migrations run (--parallel 1)" == why_waiting(waiting[0], running,
                                                                          KUBEVIRT)
    two = [Ticket(m, f"s{i}", f"d{i}", i, "d1", 2) for i, m in enumerate("abc")]
    assert ["a", "b"] == names(admissible(two, [], KUBEVIRT))


def test_the_cluster_limit_counts_each_admitted_one_once():
    limits = Limits(outbound=9, inbound=9, total=3)
    waiting = [t(m, f"s{i}", f"d{i}", i) for i, m in enumerate("abcd")]
    assert ["a", "b", "c"] == names(admissible(waiting, [], limits))


def test_a_drains_running_migrations_count_from_the_running_ones():
    running = [Ticket("r1", "h1", "h2", 0, "d1", 2), Ticket("r2", "h3", "h4", 0, "d2", 2)]
    waiting = [Ticket("a", "h5", "h6", 1, "d1", 2), Ticket("b", "h7", "h8", 2, "d1", 2)]
    assert ["a"] == names(admissible(waiting, running, KUBEVIRT))  # d1: r1 + a = 2


def test_an_admissions_tickets_keep_their_hosts():
    admission = Admission(Limits(outbound=1, inbound=1, total=5))
    first = admission.ticket("m1", "h1", "h2")
    assert ("h1", "h2") == (first.source, first.destination)
    assert admission.try_admit(first, lambda: None)
    assert not admission.try_admit(admission.ticket("m2", "h1", "h3"), lambda: None)  # out of h1
    assert not admission.try_admit(admission.ticket("m3", "h4", "h2"), lambda: None)  # into h2
    assert admission.try_admit(admission.ticket("m4", "h4", "h5"), lambda: None)
    admission.close()
    assert ("the coordinator is shutting down; the next one starts it"
            == admission.why_waiting(admission.ticket("m5", "h6", "h7")))


def test_two_running_migrations_of_a_drain_fill_its_parallel_2():
    running = [Ticket("r1", "h1", "h2", 0, "d1", 2), Ticket("r3", "h3", "h4", 0, "d1", 2)]
    waiting = [Ticket("a", "h5", "h6", 1, "d1", 2), Ticket("b", "h7", "h8", 2)]
    assert ["b"] == names(admissible(waiting, running, KUBEVIRT))


# --- the bandwidth budget ------------------------------------------------------------------------


def capped(name: str, source: str, destination: str, cap: int | None = None) -> Ticket:
    return Ticket(name, source, destination, cap_mib_s=cap)


@pytest.mark.parametrize(("running", "budget", "caps"), [
    ([capped("a", "h1", "h2", 30)], None, {"a": 30}),
    ([capped("a", "h1", "h2")], None, {"a": None}),
    ([capped("a", "h1", "h2", 30), capped("b", "h3", "h4")], None, {"a": 30, "b": None}),
    ([capped("a", "h1", "h2")], 100, {"a": 100}),
    ([capped("a", "h1", "h2", 30)], 100, {"a": 30}),
    # two leave h1: each gets half of h1's budget
    ([capped("a", "h1", "h2"), capped("b", "h1", "h3")], 100, {"a": 50, "b": 50}),
    # in and out of a host share its budget; the busiest of a migration's two hosts decides
    ([capped("a", "h1", "h2"), capped("b", "h3", "h2"), capped("c", "h2", "h4")], 90,
     {"a": 30, "b": 30, "c": 30}),
    ([capped("a", "h1", "h2"), capped("b", "h1", "h3"), capped("c", "h4", "h5")], 100,
     {"a": 50, "b": 50, "c": 100}),
    # a share is never below 1 MiB/s, and never above the migration's own cap
    ([capped(f"m{i}", "h1", f"d{i}") for i in range(3)], 2, {"m0": 1, "m1": 1, "m2": 1}),
    ([capped("a", "h1", "h2", 10), capped("b", "h1", "h3")], 100, {"a": 10, "b": 50}),
], ids=["own-cap", "uncapped", "each-own-cap", "alone", "own-cap-below-budget", "two-out", "in-and-out",
        "other-hosts", "at-least-1", "own-cap-wins"])
def test_each_running_migration_gets_its_share_of_its_hosts_budget(running, budget, caps):
    assert caps == shares(running, budget)


def test_the_runners_hear_their_new_share_as_migrations_come_and_go():
    admission = Admission(Limits(host_bandwidth_mib_s=100))
    heard: list[tuple[str, int | None]] = []
    first = admission.ticket("a", "h1", "h2")
    assert admission.try_admit(first, lambda: None, lambda cap: heard.append(("a", cap)))
    assert (100, []) == (admission.cap("a"), heard)  # its own admission: read with cap()
    assert (100, None) == (admission.share("a"), admission.share("nobody"))
    second = admission.ticket("b", "h1", "h3", cap_mib_s=80)
    assert admission.try_admit(second, lambda: None, lambda cap: heard.append(("b", cap)))
    assert ([("a", 50)], 50) == (heard, admission.cap("b"))
    admission.set_own_cap("b", 20)
    assert ([("a", 50), ("b", 20)], 20, 50) == (heard, admission.cap("b"), admission.share("b"))
    admission.leave("a")
    assert ([("a", 50), ("b", 20)], None) == (heard, admission.cap("a"))
    admission.set_own_cap("b", 200)
    assert ([("a", 50), ("b", 20), ("b", 100)], 100) == (heard, admission.cap("b"))


def test_a_ticket_keeps_the_migrations_own_cap():
    admission = Admission(Limits(host_bandwidth_mib_s=100))
    own = admission.ticket("a", "h1", "h2", cap_mib_s=30)
    assert admission.try_admit(own, lambda: None)
    assert (30, 30) == (own.cap_mib_s, admission.cap("a"))  # below its share of 100
