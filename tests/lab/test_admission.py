"""Admission control against real QEMU: with the coordinator limited to one migration at a
time, the others wait in phase ``queued`` touching no host, one is aborted there, and the other
runs once the first has ended (checked with virsh, the records' timestamps and the agents'
logs, never Baton's word alone)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.lab.migrations import final, record, start, wait_phase

pytestmark = pytest.mark.lab


def job_type(lab, host: str, vm: str) -> str:
    rows = dict(line.split(":", 1) for line in lab.virsh(host, "domjobinfo", vm).splitlines()
                if ":" in line)
    return rows["Job type"].strip()


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
