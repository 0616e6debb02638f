"""``kill -9`` of the coordinator in each phase of a migration (issue #11, the kill matrix), on
real QEMU with JetStream records: once things settle the VM runs on exactly one host, its disk's
records are intact, the record's final phase says where it runs, and nothing of the migration
is left behind.

Phases last milliseconds, so the coordinator is started to hold there (``BATON_HOLD_AT``,
coordinator/holds.py), and killed once its log says it holds; the coordinator started next has
no hold and settles the record from both hosts' libvirt facts.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.lab.migrations import final, start, wait_phase
from tests.lab.stack import BatonStack

pytestmark = pytest.mark.lab


def kill_when_held(stack: BatonStack, migration_id: str, point: str, timeout: float = 120) -> None:
    """Wait for the coordinator's ``held_at`` line for this migration, then SIGKILL it and start
    a coordinator without the hold."""
    log = stack.log_dir / "coordinator.log"
    deadline = time.monotonic() + timeout
    while not any(held(line, migration_id, point) for line in log.read_text().splitlines()):
        assert time.monotonic() < deadline, f"the coordinator never held {migration_id} at {point}"
        time.sleep(0.2)
    stack.restart_coordinator(crash=True)


def held(line: str, migration_id: str, point: str) -> bool:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return False
    return (entry.get("event"), entry.get("migration_id"), entry.get("point")) == (
        "held_at", migration_id, point)


def migrate_and_kill_at(stack: BatonStack, vm: str, point: str) -> dict:
    stack.restart_coordinator(hold_at=point)
    migration_id = start(stack, vm, "--to", "h2")
    kill_when_held(stack, migration_id, point)
    return final(stack, migration_id)


def assert_left_nothing_on(lab, vm: str, host: str) -> None:
    assert vm not in lab.domains(host, all_=True)
    assert not lab.disk_path(vm, "local", host).exists()


def written_before(lab, vm: str) -> int:
    """The last heartbeat record on the guest's disk before the migration (a few are there)."""
    lab.wait_alive_past(vm, 3)
    return lab.heartbeats(lab.disk_path(vm, "local", "h1")).max_seq


def assert_runs_on(lab, vm: str, host: str, before: int) -> None:
    """Running on ``host``, its disk there holding every record written before (none torn)
    and new ones: the same boot, no byte lost."""
    assert "running" == lab.domstate(host, vm)
    lab.wait_alive_past(vm, lab.alive_seq(vm) + 2)
    records = lab.heartbeats(lab.disk_path(vm, "local", host))
    assert (0, 1) == (records.corrupt_records, len(records.boot_ids))
    assert set(range(max(1, before - 5), before + 1)) <= set(records.valid_seqs)
    assert records.max_seq > before


def test_killed_while_checking_the_vm_stays_and_the_record_fails(stack, lab, guest):
    vm = guest("h1", storage="local")
    seq_before = written_before(lab, vm)
    rec = migrate_and_kill_at(stack, vm, "checking")
    assert "failed" == rec["phase"]
    assert "before the migration began" in rec["error"]["message"]
    assert_runs_on(lab, vm, "h1", seq_before)
    assert_left_nothing_on(lab, vm, "h2")


def test_killed_once_the_destination_prepared_its_disks_are_removed(stack, lab, guest):
    vm = guest("h1", storage="local")
    seq_before = written_before(lab, vm)
    rec = migrate_and_kill_at(stack, vm, "prepared")
    assert "failed" == rec["phase"]
    assert "rolled back" in rec["error"]["message"]
    assert_runs_on(lab, vm, "h1", seq_before)
    assert_left_nothing_on(lab, vm, "h2")


def test_killed_while_completing_the_migration_is_finished_by_the_next_one(stack, lab, guest):
    vm = guest("h1", storage="local")
    seq_before = written_before(lab, vm)
    rec = migrate_and_kill_at(stack, vm, "completing")
    assert ("succeeded", None) == (rec["phase"], rec["error"])
    assert_runs_on(lab, vm, "h2", seq_before)
    assert_left_nothing_on(lab, vm, "h1")  # the copied source disk deleted, once proven


def test_killed_mid_migration_on_shared_storage_the_next_one_finishes_it(stack, lab, guest):
    vm = guest("h1", storage="shared", dirty_rate_mib_s=1)  # slow enough to converge at 4 MiB/s
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "4")
    wait_phase(stack, migration_id, {"migrating"})
    job_ran = lab.jobinfo("h1", vm).get("Job type", "None") != "None"
    stack.restart_coordinator(crash=True)  # libvirt's job runs on without anyone watching
    rec = final(stack, migration_id)
    assert job_ran  # the kill came mid-migration, not after it
    assert ("succeeded", None) == (rec["phase"], rec["error"])
    assert ("running", None) == (lab.domstate("h2", vm), lab.domstate("h1", vm))
    lab.wait_alive_past(vm, seq_before + 2)
    assert lab.disk_path(vm, "shared").exists()  # shared: one disk, never copied, never deleted
