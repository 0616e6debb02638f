"""The ranking of candidate destinations (coordinator/placement.py), pure."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from baton.coordinator import preflight
from baton.coordinator.placement import (
    Standing,
    none_fits,
    placement_of,
    rank,
    running_jobs,
    standing_of,
    weigh,
)
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.job import CheckStatus
from baton.schemas.migration import MigrationRecord, Phase
from baton.schemas.storage import StorageMoveRecord
from tests.support.samples import sample

GIB = 1024**3


def hosts(standings: list[Standing]) -> list[str]:
    return [s.host for s in rank(standings)]


def test_a_host_that_passes_beats_every_host_that_fails_whatever_its_figures():
    assert ["h9", "h1"] == hosts([
        Standing("h1", ok=False, memory_left_bytes=100 * GIB),
        Standing("h9", ok=True, warnings=3, running_jobs=4, memory_left_bytes=1)])


@pytest.mark.parametrize(("better", "worse"), [
    (Standing("h2", ok=True, warnings=0, running_jobs=5, memory_left_bytes=1),
     Standing("h1", ok=True, warnings=1, running_jobs=0, memory_left_bytes=99 * GIB)),
    (Standing("h2", ok=True, running_jobs=0, memory_left_bytes=1),
     Standing("h1", ok=True, running_jobs=1, memory_left_bytes=99 * GIB)),
    (Standing("h2", ok=True, memory_left_bytes=2 * GIB),
     Standing("h1", ok=True, memory_left_bytes=GIB)),
    (Standing("h1", ok=True, memory_left_bytes=GIB),
     Standing("h2", ok=True, memory_left_bytes=GIB)),
], ids=["fewer-warnings-first", "fewer-jobs-next", "more-memory-next", "host-id-last"])
def test_the_order_among_hosts_that_pass(better, worse):
    assert [better.host, worse.host] == hosts([worse, better])
    assert [better.host, worse.host] == hosts([better, worse])


def test_unknown_memory_ranks_after_known_memory_left():
    assert ["h2", "h1"] == hosts([Standing("h1", ok=True),
                                  Standing("h2", ok=True, memory_left_bytes=GIB)])


def test_the_placement_chooses_the_first_only_when_it_passes():
    chosen = placement_of([Standing("h3", ok=False, reason="network: no bridge"),
                           Standing("h2", ok=True, memory_left_bytes=GIB)])
    assert ("h2", [("h2", 1, True), ("h3", 2, False)]) == (
        chosen.chosen, [(c.host, c.rank, c.ok) for c in chosen.candidates])
    assert "network: no bridge" == chosen.candidates[1].reason
    assert chosen.candidates[0].reason.startswith("passes (0 warning(s), 0 job(s)")
    assert placement_of([Standing("h3", ok=False)]).chosen is None
    assert placement_of([]).chosen is None


def test_the_refusal_names_each_host_and_what_failed_there():
    refusal = none_fits("vm1", placement_of([
        Standing("h2", ok=False, reason="memory: 1 GiB free"),
        Standing("h3", ok=False, reason="network: no bridge")]))
    assert ErrorCode.PRECONDITION_FAILED == refusal.code
    assert "no host can take vm1 — h2: memory: 1 GiB free; h3: network: no bridge" == refusal.message
    assert "no other host" in none_fits("vm1", placement_of([])).message


def test_jobs_touching_a_host_count_both_ends_of_a_migration_and_a_disk_move_there():
    migration = msgspec.structs.replace(sample(MigrationRecord), source="h1", destination="h2",
                                        phase=Phase.MIGRATING)
    move = msgspec.structs.replace(sample(StorageMoveRecord), host="h2")
    records = [migration, move]
    assert (1, 2, 0) == tuple(running_jobs(records, h) for h in ("h1", "h2", "h3"))


async def test_weigh_checks_every_host_but_the_source_and_an_error_fails_that_host_only():
    asked: list[str] = []

    async def gather(host: str):
        asked.append(host)
        raise BatonError(ErrorCode.UNAVAILABLE, f"{host} is unreachable")

    chosen, reports = await weigh(["h1", "h2", "h3"], "h1", gather, lambda _: 0)
    assert (["h2", "h3"], None, {}) == (asked, chosen.chosen, reports)
    assert ["not checked: h2 is unreachable", "not checked: h3 is unreachable"] == [
        c.reason for c in chosen.candidates]


async def test_weigh_does_not_swallow_a_bug():
    async def gather(host: str):
        raise KeyError(host)

    with pytest.raises(KeyError):
        await weigh(["h1", "h2"], "h1", gather, lambda _: 0)


def test_unknown_memory_ranks_like_none_left_and_one_byte_left_beats_both():
    assert ["h1", "h2"] == hosts([Standing("h1", ok=True, memory_left_bytes=0),
                                  Standing("h2", ok=True)])
    assert ["h3", "h1", "h2"] == hosts([Standing("h1", ok=True, memory_left_bytes=0),
                                        Standing("h2", ok=True),
                                        Standing("h3", ok=True, memory_left_bytes=1)])


def test_a_candidate_carries_its_figures_and_the_placement_says_how_it_ranked():
    chosen = placement_of([Standing("h2", ok=True, warnings=1, running_jobs=2,
                                    memory_left_bytes=3 * GIB)])
    [c] = chosen.candidates
    assert (1, 2, 3 * GIB) == (c.warnings, c.running_jobs, c.memory_left_bytes)
    assert "passes (1 warning(s), 2 job(s) running there, 3.0 GiB left after the move)" == c.reason
    assert chosen.order.startswith("hosts that pass every check, then: fewest warnings")
    unknown = placement_of([Standing("h2", ok=True)]).candidates[0].reason
    assert unknown.endswith("memory left unknown)")
    big = placement_of([Standing("h2", ok=True, memory_left_bytes=100 * GIB)]).candidates[0]
    assert big.reason.endswith(", 100.0 GiB left after the move)")  # GiB: 1024**3 bytes


def test_the_refusals_code_and_details_name_the_hosts():
    refusal = none_fits("vm1", placement_of([Standing("h2", ok=False, reason="x"),
                                             Standing("h3", ok=False, reason="y")]))
    assert "h2,h3" == refusal.details["candidates"]
    assert ErrorCode.PRECONDITION_FAILED == none_fits("vm1", placement_of([])).code


async def test_weigh_reads_each_hosts_own_report_and_jobs():
    from tests.unit.test_preflight import facts  # a good destination h2 for a 1 GiB vm1

    async def gather(host: str):
        return dataclasses.replace(facts(), destination=host)

    chosen, reports = await weigh(["h1", "h2"], "h1", gather, {"h2": 3}.__getitem__)
    [c] = chosen.candidates
    assert ("h2", True, 3, 0, "h2") == (c.host, c.ok, c.running_jobs, c.warnings,
                                        reports["h2"].destination)
    assert c.reason.startswith("passes (0 warning(s), 3 job(s)")


def test_a_standing_counts_warnings_and_leaves_no_reason_when_it_passes():
    from tests.unit.test_preflight import facts

    base = facts()
    report = preflight.report(base)
    warned = msgspec.structs.replace(report, checks=[
        msgspec.structs.replace(c, status=CheckStatus.WARN) if i < 2 else c
        for i, c in enumerate(report.checks)])
    standing = standing_of(base, warned, 4)
    assert (True, 2, 4, "") == (standing.ok, standing.warnings, standing.running_jobs,
                                standing.reason)
    assert standing.memory_left_bytes == base.destination_caps.memory.available_bytes - GIB
    failed = msgspec.structs.replace(report, ok=False, checks=[
        msgspec.structs.replace(report.checks[0], status=CheckStatus.FAIL, reason="broken")])
    assert standing_of(base, failed, 0).reason == "pre-flight failed — hosts: broken"
