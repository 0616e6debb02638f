"""``baton move-disk`` moves a running QEMU guest's disk between pools, proven on the host itself.

Every outcome is checked independently of Baton's reports: ``virsh domblklist`` (the live
definition), ``virsh dumpxml --inactive`` (the saved one), the files in the host's pool
directories, the guest's console (alive and uncorrupted) and the heartbeat records the guest
writes to its disk every second (their content, read back from the file the guest uses now).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.lab.labctl import CORRUPTION_RE, Lab
from tests.lab.stack import BatonStack

pytestmark = pytest.mark.lab
SLOW = "/var/lib/libvirt/pools/slow"
FAST = "/var/lib/libvirt/pools/fast"
HOST = "h1"


def live_disks(lab: Lab, vm: str) -> dict[str, str]:
    rows = [line.split() for line in lab.virsh(HOST, "domblklist", vm).splitlines()[2:]]
    return {row[0]: row[1] for row in rows if len(row) == 2}


def saved_disk(lab: Lab, vm: str) -> str:
    xml = lab.virsh(HOST, "dumpxml", "--inactive", vm)
    return re.findall(r"<source file='([^']+)'", xml)[0]


def move(stack: BatonStack, vm: str, *args: str, check: bool = True) -> Any:
    out = stack.baton("move-disk", vm, *args, "-o", "json", check=check)
    return json.loads(out.stdout) if check else out


def assert_alive(lab: Lab, vm: str) -> None:
    seq = lab.alive_seq(vm)
    assert lab.wait_alive_past(vm, seq, timeout=60) > seq
    assert not CORRUPTION_RE.search(lab.console(vm))


def test_a_writing_guest_moves_from_slow_to_fast_with_every_record_intact(stack, lab, guest):
    vm = guest(HOST, pool="slow")
    old, new = f"{SLOW}/{vm}.qcow2", f"{FAST}/{vm}.qcow2"
    seq_at_start = lab.alive_seq(vm)
    before = lab.heartbeats(lab.host_path(HOST, old))

    record = move(stack, vm, "--to-pool", "fast", "--bandwidth", "8")  # 64 MiB: about 8 s
    seq_at_end = lab.alive_seq(vm)

    assert ("coordinator.storage_move", "succeeded") == (record["kind"], record["phase"])
    assert {"vda": new} == live_disks(lab, vm)
    assert new == saved_disk(lab, vm)
    assert (False, True) == (lab.host_path(HOST, old).exists(), lab.host_path(HOST, new).exists())
    assert seq_at_end - seq_at_start >= 4, "the guest wrote heartbeats while the copy ran"
    assert_alive(lab, vm)
    after = lab.heartbeats(lab.host_path(HOST, new))
    assert (0, 1) == (after.corrupt_records, len(after.boot_ids))
    assert set(before.valid_seqs) <= set(after.valid_seqs)
    assert set(range(1, seq_at_end + 1)) <= set(after.valid_seqs), "every record up to the pivot"


def test_after_a_restart_the_guest_boots_from_the_new_file(stack, lab, guest):
    vm = guest(HOST, pool="slow")
    old, new = f"{SLOW}/{vm}.qcow2", f"{FAST}/{vm}.qcow2"
    lab.wait_alive_past(vm, 6)  # records 4.. of this boot outlive the next boot's first three
    move(stack, vm, "vda", "--to-pool", "fast")

    lab.virsh(HOST, "destroy", vm)
    lab.virsh(HOST, "start", vm)
    lab.wait_console(vm, r"GUEST-READY[\s\S]*GUEST-READY[\s\S]*alive seq=3 ", timeout=180)

    assert {"vda": new} == live_disks(lab, vm)
    assert not lab.host_path(HOST, old).exists()
    beats = lab.heartbeats(lab.host_path(HOST, new))
    assert (0, 2) == (beats.corrupt_records, len(beats.boot_ids)), "the new boot writes the new file"
    assert_alive(lab, vm)


def test_keep_source_leaves_the_old_file_in_place(stack, lab, guest):
    vm = guest(HOST, pool="slow")
    old, new = f"{SLOW}/{vm}.qcow2", f"{FAST}/{vm}.qcow2"

    record = move(stack, vm, "--to-pool", "fast", "--keep-source")

    assert "succeeded" == record["phase"]
    assert ({"vda": new}, new) == (live_disks(lab, vm), saved_disk(lab, vm))
    assert (True, True) == (lab.host_path(HOST, old).exists(), lab.host_path(HOST, new).exists())
    assert_alive(lab, vm)


def test_an_abort_mid_copy_keeps_the_vm_on_its_old_file_and_removes_the_copy(stack, lab, guest):
    vm = guest(HOST, pool="slow")
    old, new = f"{SLOW}/{vm}.qcow2", f"{FAST}/{vm}.qcow2"
    accepted = move(stack, vm, "--to-pool", "fast", "--bandwidth", "2", "--detach")
    wait_phase(stack, accepted["migration_id"], "migrating")
    wait_until(lambda: lab.host_path(HOST, new).exists(), "the copy to start")

    out = stack.baton("abort", accepted["migration_id"], "-o", "json")

    assert "aborted" == json.loads(out.stdout)["phase"]
    assert ({"vda": old}, old) == (live_disks(lab, vm), saved_disk(lab, vm))
    assert (True, False) == (lab.host_path(HOST, old).exists(), lab.host_path(HOST, new).exists())
    assert "No current block job" in lab.virsh(HOST, "blockjob", vm, "vda", "--info")
    assert_alive(lab, vm)


def test_bad_requests_are_refused_before_anything_is_copied(stack, lab, guest):
    vm = guest(HOST, pool="slow", disk_mib=16 * 1024 * 1024)  # 16 TiB virtual, thin on disk
    refusals = {
        "nosuch": "has no storage pool 'nosuch'",
        "slow": "already in pool slow",
        "fast": "GiB available, the disks need 16384.00 GiB",
    }
    for pool, reason in refusals.items():
        out = move(stack, vm, "--to-pool", pool, check=False)
        assert (1, True) == (out.returncode, reason in out.stderr), out.stderr

    assert {"vda": f"{SLOW}/{vm}.qcow2"} == live_disks(lab, vm)
    assert not lab.host_path(HOST, f"{FAST}/{vm}.qcow2").exists()
    jobs = json.loads(stack.baton("jobs", "-o", "json").stdout)
    assert [] == [j for j in jobs if j["vm"] == vm], "refused requests never become jobs"
    assert "No current block job" in lab.virsh(HOST, "blockjob", vm, "vda", "--info")


def wait_phase(stack: BatonStack, migration_id: str, phase: str, timeout: float = 60) -> None:
    def reached() -> bool:
        jobs = json.loads(stack.baton("jobs", "-o", "json").stdout)
        return any(j["migration_id"] == migration_id and j["phase"] == phase for j in jobs)
    wait_until(reached, f"{migration_id} to reach {phase}", timeout)


def wait_until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.3)
