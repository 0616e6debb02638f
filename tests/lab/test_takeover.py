"""A coordinator or a source agent killed mid-migration: the record is settled from libvirt's
facts (issue #11). Real QEMU, real nats-server with JetStream, nkeys and TLS; ``kill -9``, so the
process killed writes and says nothing on its way out.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from baton.mesh import client
from baton.schemas.migration import Ack, AgentAbortRequest
from baton.schemas.subjects import AgentEndpoint, Subjects
from tests.lab.migrations import MIB, final, start, wait_copied, wait_phase

pytestmark = pytest.mark.lab
S = Subjects()


def assert_runs_only_on(lab, vm: str, host: str, other: str, seq_before: int) -> None:
    assert ("running", None) == (lab.domstate(host, vm), lab.domstate(other, vm))
    lab.wait_alive_past(vm, seq_before)  # the guest goes on writing where it runs


def test_a_copy_finished_while_no_coordinator_ran_is_completed_by_the_next_one(stack, lab, guest):
    vm = guest("h1", storage="local", dirty_rate_mib_s=1)  # converges soon after its disk
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "8")
    wait_phase(stack, migration_id, {"migrating"})
    wait_copied(lab, "h1", vm, at_least=4 * MIB)  # mid-copy by libvirt's own figures
    stack.restart_coordinator(crash=True)
    rec = final(stack, migration_id)
    assert "succeeded" == rec["phase"]  # written by the new coordinator: the old one is dead
    assert_runs_only_on(lab, vm, "h2", "h1", seq_before)
    assert not lab.disk_path(vm, "local", "h1").exists()  # the copied source, deleted once proven
    assert lab.disk_path(vm, "local", "h2").exists()


def test_a_migration_that_failed_while_no_coordinator_ran_is_rolled_back_by_the_next_one(
        stack, lab, guest):
    vm = guest("h1", storage="local", dirty_rate_mib_s=1)  # converges soon after its disk
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "2")
    wait_phase(stack, migration_id, {"migrating"})
    stack.coordinator.kill()  # gone without a word; the migration runs on under libvirt
    stack.coordinator.wait()
    asyncio.run(_abort_on_the_source(stack, migration_id, vm))
    lab._poll(lambda: lab.jobinfo("h1", vm).get("Job type", "None") == "None", 60,
              f"the migration job of {vm} on h1 to end")
    assert lab.disk_path(vm, "local", "h2").exists()  # the pre-created copy target, left over
    stack.restart_coordinator()
    rec = final(stack, migration_id)
    assert "failed" == rec["phase"]
    assert "rolled back" in rec["error"]["message"]
    assert_runs_only_on(lab, vm, "h1", "h2", seq_before)
    assert vm not in lab.domains("h2", all_=True)
    assert not lab.disk_path(vm, "local", "h2").exists()
    assert lab.disk_path(vm, "local", "h1").exists()


def test_a_source_agent_killed_mid_copy_still_ends_in_a_finished_record_and_no_leftovers(
        stack, lab, guest):
    """libvirt carries on without the agent; its report is lost with it. After SOURCE_SILENCE_LIMIT
    the coordinator reads both hosts' facts, finishes the move, and the restarted agent deletes
    the copied disk once both hosts' libvirt prove the guest runs on h2."""
    vm = guest("h1", storage="local", dirty_rate_mib_s=1)  # converges soon after its disk
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "8")
    wait_phase(stack, migration_id, {"migrating"})
    wait_copied(lab, "h1", vm, at_least=4 * MIB)  # mid-copy by libvirt's own figures
    stack.restart_agent("h1", crash=True)
    rec = final(stack, migration_id, timeout=400)
    assert ("succeeded", None) == (rec["phase"], rec["error"])
    assert_runs_only_on(lab, vm, "h2", "h1", seq_before)
    assert not lab.disk_path(vm, "local", "h1").exists()
    assert lab.disk_path(vm, "local", "h2").exists()


def test_a_destination_agent_killed_mid_copy_loses_nothing(stack, lab, guest):
    """libvirt on h2 goes on receiving without its agent; the restarted agent answers the
    confirmation from libvirt's facts."""
    vm = guest("h1", storage="local", dirty_rate_mib_s=1)  # converges soon after its disk
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "8")
    wait_phase(stack, migration_id, {"migrating"})
    wait_copied(lab, "h1", vm, at_least=4 * MIB)  # mid-copy by libvirt's own figures
    stack.restart_agent("h2", crash=True)
    rec = final(stack, migration_id, timeout=400)
    assert ("succeeded", None) == (rec["phase"], rec["error"])
    assert_runs_only_on(lab, vm, "h2", "h1", seq_before)
    assert not lab.disk_path(vm, "local", "h1").exists()


def test_a_standby_coordinator_takes_over_a_killed_leaders_migration(stack, lab, guest):
    standby = stack.start_standby()
    log = stack.log_dir / "coordinator-2.log"
    lab._poll(lambda: "coordinator_standby" in log.read_text(), 30, "the standby to wait")
    vm = guest("h1", storage="local", dirty_rate_mib_s=1)  # converges soon after its disk
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "8")
    wait_phase(stack, migration_id, {"migrating"})
    assert stack.coordinator is not None
    killed_at = time.monotonic()
    stack.coordinator.kill()
    stack.coordinator.wait()
    stack.coordinator = standby  # it serves from now on (and the stack stops it at the end)
    stack.standbys.remove(standby)
    stack.wait_for_coordinator()
    print(f"the standby answered {time.monotonic() - killed_at:.1f} s after the leader's death")
    rec = final(stack, migration_id)
    assert "succeeded" == rec["phase"]
    assert "coordinator_leads" in log.read_text()
    assert_runs_only_on(lab, vm, "h2", "h1", seq_before)
    assert not lab.disk_path(vm, "local", "h1").exists()


def test_a_disk_move_that_finished_while_no_coordinator_ran_is_recorded_by_the_next_one(
        stack, lab, guest):
    """The agent moves the disk to its end alone; its report is lost with the coordinator."""
    vm = guest("h1", pool="slow")
    old, new = f"/var/lib/libvirt/pools/slow/{vm}.qcow2", f"/var/lib/libvirt/pools/fast/{vm}.qcow2"
    accepted = json.loads(stack.baton("move-disk", vm, "--to-pool", "fast", "--bandwidth", "16",
                                      "--detach", "-o", "json").stdout)
    wait_phase(stack, accepted["migration_id"], {"migrating"})
    stack.restart_coordinator(crash=True)
    rec = final(stack, accepted["migration_id"])
    assert ("succeeded", None) == (rec["phase"], rec["error"])
    blocks = [line.split() for line in lab.virsh("h1", "domblklist", vm).splitlines()[2:]]
    assert [["vda", new]] == [b for b in blocks if b]
    assert (False, True) == (lab.host_path("h1", old).exists(), lab.host_path("h1", new).exists())
    assert "No current block job" in lab.virsh("h1", "blockjob", vm, "vda", "--info")


async def _abort_on_the_source(stack, migration_id: str, vm: str) -> None:
    """The job fails while nobody coordinates (here: cancelled with the coordinator's key)."""
    nc = await client.connect(stack.access("coordinator"))
    try:
        await client.request(nc, S.agent("h1", AgentEndpoint.MIGRATION_ABORT),
                             AgentAbortRequest(migration_id=migration_id, vm=vm), Ack, 30)
    finally:
        await nc.drain()
