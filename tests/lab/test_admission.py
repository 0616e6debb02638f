"""Admission control against real QEMU: with the coordinator limited to one migration at a
time, the others wait in phase ``queued`` touching no host, one is aborted there, and the other
runs once the first has ended (checked with virsh, the records' timestamps and the agents'
logs, never Baton's word alone)."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime

import pytest

from tests.lab.migrations import MIB, final, record, start, wait_phase

pytestmark = pytest.mark.lab
SAMPLE_EVERY_S = 0.5  # between readings of libvirt's jobs: sampling, not waiting for anything


def job_type(lab, host: str, vm: str) -> str:
    """libvirt's job type of ``vm`` on ``host``; "gone" once the domain left it."""
    out = lab.virsh(host, "domjobinfo", vm, check=False)
    rows = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return rows["Job type"].strip() if "Job type" in rows else "gone"


def at(rec, field: str) -> datetime:
    return datetime.fromisoformat(rec[field])


def test_with_a_limit_of_one_the_others_queue_one_is_aborted_there_and_the_other_runs_after(
        stack, lab, guest):
    stack.restart_coordinator(env={"BATON_MAX_MIGRATIONS": "1"})
    try:
        first_vm, second_vm, third_vm = (guest("h1", dirty_mb=8, dirty_rate_mib_s=2)
                                         for _ in range(3))
        first = start(stack, first_vm, "--to", "h2", "--bandwidth", "8")
        wait_phase(stack, first, {"migrating"})
        second = start(stack, second_vm, "--to", "h2")
        third = start(stack, third_vm, "--to", "h2")
        queued = [wait_phase(stack, m, {"queued"}, timeout=30) for m in (second, third)]
        assert ["queued", "queued"] == [r["phase"] for r in queued]
        # libvirt runs one migration job on h1: the first's; the queued guests have none
        assert ("Unbounded", "None", "None") == tuple(
            job_type(lab, "h1", vm) for vm in (first_vm, second_vm, third_vm))
        aborted = json.loads(stack.baton("abort", third, "-o", "json").stdout)
        assert "aborted" == aborted["phase"]
        done_first, done_second = final(stack, first), final(stack, second)
    finally:
        stack.restart_coordinator()
    assert ("succeeded", "succeeded") == (done_first["phase"], done_second["phase"])
    assert at(done_second, "switchover_at") > at(done_first, "updated_at")  # after, not beside
    assert ("running", None) == (lab.domstate("h1", third_vm), lab.domstate("h2", third_vm))
    assert [None, None] == [lab.domstate("h1", vm) for vm in (first_vm, second_vm)]
    # the aborted one never reached either agent
    agent_logs = "".join((stack.log_dir / f"agent-{h}.log").read_text() for h in ("h1", "h2"))
    assert third not in agent_logs and second in agent_logs
    assert "aborted" == record(stack, third)["phase"]


def running_jobs(lab, vms: list[str]) -> int:
    """How many of ``vms`` libvirt on h1 shows with a migration job right now."""
    return sum(1 for vm in vms if job_type(lab, "h1", vm) == "Unbounded")


def most_at_once(records: list[dict]) -> int:
    """The most migrations whose libvirt jobs overlapped, from the records' own figures: each
    ran from (switch-over - libvirt's elapsed time) to its record's end."""
    spans = [(at(r, "switchover_at").timestamp() - r["result"]["time_elapsed_ms"] / 1000,
              at(r, "updated_at").timestamp()) for r in records]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_drain_parallel_2_empties_the_host_two_at_a_time_and_the_bridged_guest_avoids_h3(
        stack, lab, guest):
    local = guest("h1", storage="local", dirty_mb=8, dirty_rate_mib_s=2)
    bridged = guest("h1", nic=True, dirty_mb=8, dirty_rate_mib_s=2)  # h3 has no br-vm
    shared = [guest("h1", dirty_mb=8, dirty_rate_mib_s=2) for _ in range(2)]
    vms = [local, bridged, *shared]
    seq_before = {vm: lab.alive_seq(vm) for vm in vms}
    # --strategy precopy: auto's dirty-rate measurement took 6-10 s per move on a loaded CI
    # runner, longer than the 3-5 s libvirt jobs it precedes, so a pair's jobs could run one
    # after the other though both held a slot; without it a pair's jobs start together.
    proc = subprocess.Popen([*stack.baton_argv(), "drain", "h1", "--parallel", "2",
                             "--bandwidth", "32", "--strategy", "precopy", "-o", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=stack.baton_env())
    seen = []
    while proc.poll() is None:  # sampling libvirt while the drain runs
        seen.append(running_jobs(lab, vms))
        time.sleep(SAMPLE_EVERY_S)
    stdout, stderr = proc.communicate()
    assert 0 == proc.returncode, stdout + stderr
    records = json.loads(stdout)["migrations"]
    assert sorted(vms) == sorted(r["vm"] for r in records)
    assert {"succeeded"} == {r["phase"] for r in records}
    assert (max(seen) <= 2, 2) == (True, most_at_once(records)), (seen, records)  # 2, not 1
    where = {vm: [h for h in ("h1", "h2", "h3") if lab.domstate(h, vm) is not None] for vm in vms}
    assert all(len(hosts) == 1 and hosts != ["h1"] for hosts in where.values()), where
    assert ["h2"] == where[bridged]
    for vm in vms:
        assert lab.wait_alive_past(vm, seq_before[vm]) > seq_before[vm]


def test_two_migrations_from_one_host_share_its_budget_and_the_survivor_gets_it_back(
        stack, lab, guest):
    """A 20 MiB/s budget per host: QEMU's own max-bandwidth (QMP, read on h1) is 20 for one
    migration, 10 for each of two, and 20 again once one was aborted. The guests dirty more
    than 20 MiB/s, so neither can end on its own meanwhile."""
    stack.restart_coordinator(env={"BATON_HOST_BANDWIDTH": "20"})
    try:
        a, b = (guest("h1", memory_mib=128, dirty_mb=32, dirty_rate_mib_s=40) for _ in range(2))
        first = start(stack, a, "--to", "h2")
        wait_phase(stack, first, {"migrating"})
        qemu_cap_is(lab, a, 20)
        second = start(stack, b, "--to", "h2")
        wait_phase(stack, second, {"migrating"})
        qemu_cap_is(lab, b, 10)
        qemu_cap_is(lab, a, 10)  # changed while it ran
        assert (None, 10) == tuple(record(stack, first)[k]
                                   for k in ("bandwidth_mib_s", "budget_mib_s"))
        assert "aborted" == json.loads(stack.baton("abort", second, "-o", "json").stdout)["phase"]
        qemu_cap_is(lab, a, 20)
        assert "aborted" == json.loads(stack.baton("abort", first, "-o", "json").stdout)["phase"]
    finally:
        stack.restart_coordinator()
    assert ("running", "running") == (lab.domstate("h1", a), lab.domstate("h1", b))


def qemu_cap_is(lab, vm: str, mib_s: int) -> None:
    lab._poll(lambda: lab.qemu_migration("h1", vm)["max-bandwidth"] == mib_s * MIB, 60,
              f"QEMU's max-bandwidth for {vm} on h1 to become {mib_s} MiB/s")
