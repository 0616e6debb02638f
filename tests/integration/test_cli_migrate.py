"""``baton migrate|check|jobs|watch|abort|bandwidth`` against the real coordinator and fake agents.

Each command runs through click's CliRunner in a worker thread (the CLI runs its own event loop),
while the coordinator and the scripted fake agents serve on this test's loop.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from baton.cli.main import cli
from tests.integration.cli_runner import (  # the fixture is autouse here
    baton,
    logs_beside_the_cli_output,  # noqa: F401
)
from tests.integration.fake_agents import Script, domain

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)

async def test_migrate_follows_to_the_end_and_prints_the_record_as_json(nats_server, coordinator):
    result = await baton(nats_server, "migrate", "vm1", "--to", "h2", "--bandwidth", "50",
                         "-o", "json")
    record = json.loads(result.stdout)
    assert (0, "succeeded", 50) == (result.exit_code, record["phase"], record["bandwidth_mib_s"])
    assert {"migration_id", "vm", "source", "destination", "result"} <= set(record)


async def test_a_failed_migration_exits_1_with_libvirts_reason(nats_server, mesh, coordinator):
    mesh["h1"].script = Script(outcome="fail")
    result = await baton(nats_server, "migrate", "vm1", "--to", "h2")
    assert 1 == result.exit_code and "unexpectedly failed" in result.stdout


async def test_check_shows_every_check_and_exits_1_when_one_fails(nats_server, coordinator):
    result = await baton(nats_server, "check", "vm1", "--to", "h3")
    assert 1 == result.exit_code
    assert all(name in result.stdout for name in ("storage", "network", "cpu", "memory"))


async def test_without_to_check_ranks_the_hosts_and_migrate_says_where_it_placed_the_vm(
        nats_server, mesh, coordinator):
    checked = await baton(nats_server, "check", "vm1")
    assert 0 == checked.exit_code, checked.stdout
    ranking = [line.split("│")[1:4] for line in checked.stdout.splitlines()
               if line.startswith("│") and ("h2" in line or "h3" in line)][:2]
    assert "placement: h2 chosen" in checked.stdout
    assert [["1", "h2", "pass"], ["2", "h3", "fail"]] == [[c.strip() for c in row] for row in ranking]
    moved = await baton(nats_server, "migrate", "vm1")
    assert 0 == moved.exit_code, moved.stdout
    assert "vm1: h1 -> h2" in moved.stdout and "placed: h2 chosen of h2, h3" in moved.stdout
    mesh["h1"].add_domain(domain("vm9", memory_gib=64))
    refused = await baton(nats_server, "migrate", "vm9")
    assert 1 == refused.exit_code and "no host can take vm9" in refused.output


async def test_a_dry_run_prints_the_report_and_exits_0(nats_server, mesh, coordinator):
    result = await baton(nats_server, "migrate", "vm1", "--to", "h2", "--dry-run", "-o", "json")
    assert (0, True) == (result.exit_code, json.loads(result.stdout)["ok"])
    assert [] == mesh["h1"].asked("migration.start")


async def test_the_pool_options_reach_the_checks_and_a_bad_map_is_a_usage_error(
        nats_server, mesh, coordinator):
    pooled = await baton(nats_server, "check", "vm1", "--to", "h2", "--target-pool", "fast",
                         "-o", "json")
    [storage] = [c for c in json.loads(pooled.stdout)["checks"] if c["name"] == "storage"]
    assert (0, True) == (pooled.exit_code, storage["reason"].endswith(
        "vda into /var/lib/libvirt/pools/fast/vm1.qcow2"))
    mapped = await baton(nats_server, "migrate", "vm1", "--to", "h2", "--disk-map", "vdz=fast",
                         "--dry-run")
    assert (1, True) == (mapped.exit_code, "vm1 has no file-backed disk vdz" in mapped.output)
    for bad in (["--disk-map", "vda"], ["--disk-map", "vda=fast", "--disk-map", "vda=slow"]):
        usage = await baton(nats_server, "migrate", "vm1", "--to", "h2", *bad)
        assert (2, True) == (usage.exit_code, "--disk-map" in usage.output)
    assert [] == mesh["h1"].asked("migration.start")


async def test_detach_returns_the_id_and_jobs_lists_it(nats_server, coordinator):
    detached = await baton(nats_server, "migrate", "vmshared", "--to", "h2", "--detach",
                           "-o", "json")
    migration_id = json.loads(detached.stdout)["migration_id"]
    watched = await baton(nats_server, "watch", "--id", migration_id, "-o", "json")
    listed = await baton(nats_server, "jobs", "-o", "json")
    assert (0, 0) == (detached.exit_code, watched.exit_code)
    assert [migration_id] == [j["migration_id"] for j in json.loads(listed.stdout)]


async def test_abort_and_bandwidth_act_on_a_running_migration(nats_server, mesh, coordinator):
    mesh["h1"].script = Script(outcome="hang")
    detached = await baton(nats_server, "migrate", "vm1", "--to", "h2", "--detach", "-o", "json")
    migration_id = json.loads(detached.stdout)["migration_id"]
    await asyncio.sleep(0.5)
    capped = await baton(nats_server, "bandwidth", migration_id, "20")
    aborted = await baton(nats_server, "abort", migration_id, "-o", "json")
    assert (0, "now 20 MiB/s") == (capped.exit_code, capped.stdout.split("cap ")[1][:12])
    assert (0, "aborted") == (aborted.exit_code, json.loads(aborted.stdout)["phase"])


async def test_an_unknown_vm_exits_3_and_a_missing_coordinator_exits_4(nats_server, mesh):
    missing = await baton(nats_server, "migrate", "vm1", "--to", "h2")
    assert 4 == missing.exit_code and "baton-coordinator" in missing.stderr


async def test_an_unknown_vm_exits_3(nats_server, coordinator):
    result = await baton(nats_server, "migrate", "nope", "--to", "h2")
    assert 3 == result.exit_code and "nope" in result.stderr


def test_migrate_help_documents_the_options_and_exit_codes():
    result = CliRunner().invoke(cli, ["migrate", "--help"])
    assert 0 == result.exit_code
    assert all(o in result.stdout for o in ("--copy-storage", "--keep-source", "--detach",
                                            "Exit codes"))
