"""``baton drain`` through the real coordinator and scripted fake agents (h1 holds vm1 on a
local disk, vmshared on shared storage and the shut-off vmoff; h2 is a good destination; h3
lacks the VMs' bridge)."""

from __future__ import annotations

import json

import pytest

from baton.schemas.migration import Phase
from tests.integration.cli_runner import (  # the fixture is autouse here
    baton,
    logs_beside_the_cli_output,  # noqa: F401
)
from tests.integration.fake_agents import Script, domain

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)

async def test_a_dry_run_plans_each_vm_and_moves_nothing(nats_server, mesh, coordinator):
    result = await baton(nats_server, "drain", "h1", "--dry-run", "-o", "json")
    plan = json.loads(result.stdout)
    assert 0 == result.exit_code, result.output
    # the moving ones in the plan's order (biggest first: vm1 copies its 10 GiB disk), then the rest
    assert [("vm1", "h2", True), ("vmshared", "h2", True), ("vmoff", None, False)] == [
        (i["vm"], i["destination"], i["active"]) for i in plan["items"]]
    assert plan["drain_id"] is None and [] == mesh["h1"].asked("migration.start")
    assert (None, None) == (plan["total_s"], plan["items"][0]["start_s"])  # no cap: no times


async def test_a_dry_run_at_a_cap_says_when_each_vm_moves_and_how_close_to_the_bound(
        nats_server, mesh, coordinator):
    result = await baton(nats_server, "drain", "h1", "--dry-run", "--bandwidth", "1024",
                         "--parallel", "1", "-o", "json")
    plan = json.loads(result.stdout)
    # one lane at 1 GiB/s: vm1 sends 1 GiB of memory and its 10 GiB disk, vmshared 1 GiB
    assert [("vm1", 0.0, 11.0), ("vmshared", 11.0, 12.0)] == [
        (i["vm"], i["start_s"], i["end_s"]) for i in plan["items"] if i["destination"]]
    assert (12.0, 12.0) == (plan["total_s"], plan["lower_bound_s"])


async def test_drain_with_parallel_1_moves_them_one_after_the_other_and_exits_0(
        nats_server, mesh, coordinator, watcher):
    result = await baton(nats_server, "drain", "h1", "--parallel", "1", "-o", "json")
    assert 0 == result.exit_code, result.output
    records = {r["vm"]: r for r in json.loads(result.stdout)["migrations"]}
    assert {"vm1": "succeeded", "vmshared": "succeeded"} == {
        vm: r["phase"] for vm, r in records.items()}
    assert {"vm1", "vmshared"} <= set(mesh["h2"].domains) and "vmoff" in mesh["h1"].domains
    first, second = sorted(records.values(), key=lambda r: r["created_at"])
    ended = next(e.at for e in watcher.phases if e.migration_id == first["migration_id"]
                 and e.phase == Phase.SUCCEEDED)
    began = next(e.at for e in watcher.phases if e.migration_id == second["migration_id"]
                 and e.phase == Phase.CHECKING)
    assert ended <= began  # --parallel 1: the second waited in phase queued
    assert Phase.QUEUED in watcher.phases_of(second["migration_id"])


async def test_a_vm_no_host_can_take_stays_the_rest_move_and_the_drain_exits_1(
        nats_server, mesh, coordinator):
    mesh["h1"].add_domain(domain("vmbig", memory_gib=64))
    result = await baton(nats_server, "drain", "h1")
    assert 1 == result.exit_code
    summary = [line for line in result.stdout.splitlines() if "vmbig" in line]
    assert "stays" in summary[0] and "not moved" in summary[-1], result.stdout
    assert {"vm1", "vmshared"} <= set(mesh["h2"].domains) and "vmbig" in mesh["h1"].domains


async def test_abort_stops_the_hosts_drain_and_every_vm_stays(nats_server, mesh, coordinator,
                                                              watcher):
    mesh["h1"].script = Script(outcome="hang")
    detached = await baton(nats_server, "drain", "h1", "--detach", "-o", "json")
    ids = [i["migration_id"] for i in json.loads(detached.stdout)["items"] if i["migration_id"]]
    assert 2 == len(ids)
    await watcher.until(ids[0], {Phase.MIGRATING})
    aborted = await baton(nats_server, "drain", "h1", "--abort", "-o", "json")
    assert 0 == aborted.exit_code, aborted.output
    assert sorted(ids) == sorted(i["migration_id"] for i in json.loads(aborted.stdout)["items"])
    assert {Phase.ABORTED} == {(await watcher.final(m)).phase for m in ids}
    assert {"vm1", "vmshared"} <= set(mesh["h1"].domains)
    again = await baton(nats_server, "drain", "h1", "--abort")
    assert 3 == again.exit_code  # nothing left to abort: not found


async def test_aborting_a_drain_leaves_migrations_it_did_not_start_alone(
        nats_server, mesh, coordinator, watcher):
    mesh["h1"].script = Script(outcome="hang")
    own = json.loads((await baton(nats_server, "migrate", "vmshared", "--to", "h2", "--detach",
                                  "-o", "json")).stdout)["migration_id"]
    detached = await baton(nats_server, "drain", "h1", "--detach", "-o", "json")
    items = {i["vm"]: i for i in json.loads(detached.stdout)["items"]}
    assert items["vmshared"]["reason"] == f"already in job {own}"
    drained_id = items["vm1"]["migration_id"]
    await watcher.until(drained_id, {Phase.MIGRATING})
    aborted = await baton(nats_server, "drain", "h1", "--abort", "-o", "json")
    assert [drained_id] == [i["migration_id"] for i in json.loads(aborted.stdout)["items"]]
    assert Phase.ABORTED == (await watcher.final(drained_id)).phase
    assert Phase.MIGRATING == watcher.phases_of(own)[-1]  # not the drain's: still running
    await baton(nats_server, "abort", own)
