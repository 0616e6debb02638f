"""Baton's main job against real QEMU: ``baton migrate`` through the real coordinator and agents.

Every outcome is checked outside Baton: virsh on both hosts, the guest's console (its counter
keeps rising, no BUG/Oops/panic) and, for copies, the heartbeat records on the destination disk.
The CPU-incompatible pre-flight path cannot be produced here (the lab hosts are identical and a
guest CPU the destination refuses would not boot on the source either): it is proven against
fake agents in tests/unit/test_preflight.py and tests/integration/test_coordinator.py.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.lab.migrations import (
    MIB,
    check,
    final,
    migrate,
    record,
    start,
    throttle_pct,
    wait_copied,
    wait_phase,
)

pytestmark = pytest.mark.lab
BAD_CONSOLE = ("BUG", "Oops", "panic")
SAMPLE_EVERY_S = 0.5  # between readings of libvirt's job figures: sampling, not waiting for anything


def assert_guest_alive_on(lab, vm: str, host: str, seq_before: int) -> None:
    others = {"h1", "h2", "h3"} - {host}
    assert "running" == lab.domstate(host, vm)
    assert {None} == {lab.domstate(h, vm) for h in others}
    assert lab.wait_alive_past(vm, seq_before) > seq_before
    assert not any(bad in lab.console(vm) for bad in BAD_CONSOLE)


def persistent(lab, host: str, vm: str) -> bool:
    return "Persistent:     yes" in lab.virsh(host, "dominfo", vm)


def test_live_migration_on_shared_storage_moves_the_running_guest(stack, lab, guest):
    vm = guest("h1", dirty_mb=16, dirty_rate_mib_s=8)
    seq_before = lab.alive_seq(vm)
    code, rec = migrate(stack, vm, "--to", "h2")
    assert (0, "succeeded", "shared") == (code, rec["phase"], rec["storage"])
    assert rec["switchover_at"] and rec["result"]["downtime_ms"] is not None
    assert_guest_alive_on(lab, vm, "h2", seq_before)
    assert persistent(lab, "h2", vm)
    assert vm not in lab.domains("h1", all_=True)


def test_transient_keep_source_leaves_an_inactive_definition_behind(stack, lab, guest):
    vm = guest("h1")
    code, rec = migrate(stack, vm, "--to", "h2", "--transient", "--keep-source")
    assert (0, "succeeded") == (code, rec["phase"])
    assert ("shut off", True) == (lab.domstate("h1", vm), persistent(lab, "h1", vm))
    assert ("running", False) == (lab.domstate("h2", vm), persistent(lab, "h2", vm))


def test_shared_nothing_migration_copies_the_disk_content_into_the_target_pool(stack, lab, guest):
    vm = guest("h1", storage="local")
    lab.wait_alive_past(vm, 3)  # a few heartbeats are on the disk before the move
    before = lab.heartbeats(lab.disk_path(vm, "local", "h1")).max_seq
    code, rec = migrate(stack, vm, "--to", "h2", "--target-pool", "fast")
    assert (0, "succeeded", "copy") == (code, rec["phase"], rec["storage"])
    assert rec["result"]["disk_total_bytes"] > 0
    assert_guest_alive_on(lab, vm, "h2", lab.alive_seq(vm))
    assert not lab.disk_path(vm, "local", "h1").exists()  # Baton deleted the copied source
    landed = f"/var/lib/libvirt/pools/fast/{vm}.qcow2"
    # libvirt's own view: the running guest and its saved definition both use the copy
    running = [line.split() for line in lab.virsh("h2", "domblklist", vm).splitlines()[2:]]
    assert [["vda", landed]] == [b for b in running if b]
    assert f"<source file='{landed}'" in lab.virsh("h2", "dumpxml", "--inactive", vm)
    assert not lab.disk_path(vm, "local", "h2").exists()  # nothing at the source's directory
    lab.wait_alive_past(vm, lab.alive_seq(vm) + 2)
    copied = lab.heartbeats(lab.host_path("h2", landed))
    assert 0 == copied.corrupt_records
    assert set(range(max(1, before - 5), before + 1)) <= set(copied.valid_seqs)  # written on h1
    assert copied.max_seq > before  # and the guest kept writing on h2
    assert 1 == len(copied.boot_ids)  # the same boot: no restart hidden in the move


def rate_mib_s(jobinfo: dict[str, str]) -> float | None:
    """libvirt's measured memory transfer rate (``Memory bandwidth: 30.059 MiB/s``), if any."""
    value = jobinfo.get("Memory bandwidth", "")
    return float(value.split()[0]) if value.endswith("MiB/s") else None


def sample_job(lab, host: str, vm: str, count: int, timeout: float = 60) -> list[dict[str, str]]:
    """``count`` readings of libvirt's job info that show a transfer rate, taken as they come."""
    readings: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while len(readings) < count and time.monotonic() < deadline:
        info = lab.jobinfo(host, vm)
        if rate_mib_s(info) is not None:
            readings.append(info)
        time.sleep(SAMPLE_EVERY_S)
    assert count == len(readings), f"only {len(readings)} job readings from libvirt in {timeout} s"
    return readings


def qemu_cap_becomes(lab, vm: str, mib_s: int) -> None:
    lab._poll(lambda: lab.qemu_migration("h1", vm)["max-bandwidth"] == mib_s * MIB, 60,
              f"QEMU's max-bandwidth on h1 to become {mib_s} MiB/s")


def test_bandwidth_cap_and_a_change_while_running_reach_qemu(stack, lab, guest):
    """The cap is what QEMU applies (QMP max-bandwidth, read from the source during the job) and
    libvirt's measured rate stays under it; ``baton bandwidth`` changes QEMU's setting mid-job.
    The guest dirties 20 MiB/s, more than a 16 or 8 MiB/s cap can carry: the job cannot end
    until the cap is raised past it."""
    vm = guest("h1", memory_mib=128, dirty_mb=32, dirty_rate_mib_s=20)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "16")
    wait_phase(stack, migration_id, {"migrating"})
    qemu_cap_becomes(lab, vm, 16)
    rates = [rate_mib_s(info) for info in sample_job(lab, "h1", vm, 4)]
    assert all(rate is not None and rate <= 16 * 1.1 for rate in rates), rates
    stack.baton("bandwidth", migration_id, "8")
    qemu_cap_becomes(lab, vm, 8)
    assert ("migrating", 8) == tuple(record(stack, migration_id)[k] for k in ("phase", "bandwidth_mib_s"))
    stack.baton("bandwidth", migration_id, "256")
    raised = final(stack, migration_id)
    assert ("succeeded", 256) == (raised["phase"], raised["bandwidth_mib_s"])
    assert_guest_alive_on(lab, vm, "h2", 0)


def tls_creds_during_the_job(lab, vm: str) -> str:
    """QEMU's ``tls-creds`` migration parameter on the source, read while the job runs (libvirt
    sets it to its TLS object for VIR_MIGRATE_TLS and clears it when the job ends)."""
    lab._poll(lambda: lab.qemu_migration("h1", vm)["status"] == "active", 60,
              "QEMU on h1 to report an active migration")
    return str(lab.qemu_migration("h1", vm).get("tls-creds", ""))


@pytest.mark.parametrize("no_tls", [False, True], ids=["tls", "no-tls"])
def test_the_migration_stream_is_tls_unless_the_operator_says_no(stack, lab, guest, no_tls):
    """With both hosts' QEMU certificates in place the stream is encrypted (QEMU itself holds
    TLS credentials for the job); ``--no-tls`` sends it in the clear and pre-flight warns."""
    vm = guest("h1", memory_mib=128, dirty_mb=32, dirty_rate_mib_s=20)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "8",
                         *(["--no-tls"] if no_tls else []))
    wait_phase(stack, migration_id, {"migrating"})
    creds = tls_creds_during_the_job(lab, vm)
    stack.baton("bandwidth", migration_id, "256")
    done = final(stack, migration_id)
    encryption = {c["name"]: c["status"] for c in done["checks"]}["encryption"]
    assert ("succeeded", no_tls, "warn" if no_tls else "pass") == (
        done["phase"], creds == "", encryption)
    assert_guest_alive_on(lab, vm, "h2", 0)


def test_auto_converge_throttles_the_guest_and_plain_migration_does_not(stack, lab, guest):
    """A guest dirtying 40 MiB/s behind a 30 MiB/s cap: without auto-converge libvirt shows no
    throttle and the job is still copying after 10 s (then aborted, guest unharmed); with it,
    libvirt's throttle rises from the initial 20 % and the move finishes."""
    vm = guest("h1", memory_mib=128, dirty_mb=32, dirty_rate_mib_s=40)
    plain = start(stack, vm, "--to", "h2", "--bandwidth", "30", "--strategy", "precopy")
    wait_phase(stack, plain, {"migrating"})
    # watching, for 10 s (two passes and more at 30 MiB/s), that nothing throttles the guest
    plain_throttles, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline:
        plain_throttles.append(throttle_pct(lab, vm))
        time.sleep(SAMPLE_EVERY_S)
    assert {0} == set(plain_throttles), plain_throttles
    assert "migrating" == record(stack, plain)["phase"]
    stack.baton("abort", plain)
    assert "aborted" == final(stack, plain)["phase"]
    assert "running" == lab.domstate("h1", vm)

    converging = start(stack, vm, "--to", "h2", "--bandwidth", "30", "--strategy", "precopy",
                       "--auto-converge", "--ac-initial", "20", "--ac-increment", "10")
    wait_phase(stack, converging, {"migrating", "completing", "succeeded"})
    throttles: list[int] = []
    while (pct := throttle_pct(lab, vm)) is not None:
        throttles.append(pct)
        time.sleep(SAMPLE_EVERY_S)
    rec = final(stack, converging, 240)
    assert ("succeeded", True) == (rec["phase"], max(throttles, default=0) >= 20), throttles
    assert_guest_alive_on(lab, vm, "h2", 0)


def test_each_preflight_failure_stops_the_move_and_placement_takes_only_a_host_that_passes(
        stack, lab, guest):
    vm = guest("h1", storage="local", nic=True)
    code, to_h3 = migrate(stack, vm, "--to", "h3")
    assert (1, "failed", "fail") == (code, to_h3["phase"], check(to_h3, "network")["status"])
    assert "br-vm" in check(to_h3, "network")["reason"]
    code, not_shared = migrate(stack, vm, "--to", "h2", "--shared-storage")
    assert (1, "fail") == (code, check(not_shared, "storage")["status"])
    lab.exec("h2", "ip", "link", "set", "br-vm", "mtu", "1400")
    try:
        stack.baton("caps", "h2", "--refresh")
        smaller_mtu = json.loads(stack.baton("check", vm, "--to", "h2", "-o", "json",
                                             check=False).stdout)
    finally:
        lab.exec("h2", "ip", "link", "set", "br-vm", "mtu", "1500")
        stack.baton("caps", "h2", "--refresh")
    assert "MTU 1400 on h2 but 1500 on h1" in check(smaller_mtu, "network")["reason"]
    stack.restart_agent("h2", "--reserved-memory-mib", str(64 * 1024 * 1024))
    try:
        code, no_memory = migrate(stack, vm, "--to", "h2")
        nowhere = stack.baton("migrate", vm, check=False)  # no --to: h2 lacks memory, h3 the bridge
    finally:
        stack.restart_agent("h2")
    assert (1, "fail") == (code, check(no_memory, "memory")["status"])
    assert {"precondition_failed"} == {r["error"]["code"] for r in (to_h3, not_shared, no_memory)}
    assert (1, True) == (nowhere.returncode, f"no host can take {vm}" in nowhere.stderr)
    assert "h2: pre-flight failed — memory" in nowhere.stderr and "h3: pre-flight failed — network" \
        in nowhere.stderr, nowhere.stderr
    assert "running" == lab.domstate("h1", vm)
    assert vm not in lab.domains("h2", all_=True) + lab.domains("h3", all_=True)
    assert not lab.disk_path(vm, "local", "h2").exists()
    code, placed = migrate(stack, vm)  # h2 has its memory back; h3 still lacks br-vm
    assert (0, "succeeded", "h2") == (code, placed["phase"], placed["destination"])
    assert ["h2", "h3"] == [c["host"] for c in placed["placement"]["candidates"]]
    assert ("running", [vm]) == (lab.domstate("h2", vm), [d for d in lab.domains("h2") if d == vm])
    assert vm not in lab.domains("h1", all_=True) + lab.domains("h3", all_=True)
    listed = json.loads(stack.baton("vms", "-o", "json").stdout)  # the operator's view agrees
    assert [("h2", "running")] == [(r["host"], r["state"]) for r in listed["vms"] if r["vm"] == vm]


def test_abort_mid_migration_keeps_the_guest_on_the_source_and_cleans_the_destination(stack, lab, guest):
    vm = guest("h1", storage="local", memory_mib=128)
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "2")
    wait_phase(stack, migration_id, {"migrating"})
    wait_copied(lab, "h1", vm, at_least=2 * MIB)  # mid-copy by libvirt's own figures
    stack.baton("abort", migration_id)
    rec = final(stack, migration_id)
    assert "aborted" == rec["phase"]
    assert_guest_alive_on(lab, vm, "h1", seq_before)
    assert vm not in lab.domains("h2", all_=True)
    assert not lab.disk_path(vm, "local", "h2").exists()  # the pre-created copy target is gone


def test_destination_daemon_dying_mid_migration_fails_cleanly(stack, lab, guest):
    vm = guest("h1", memory_mib=128)
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "2")
    wait_phase(stack, migration_id, {"migrating"})
    lab.libvirtd("h2", "kill")
    try:
        rec = final(stack, migration_id)
    finally:
        lab.libvirtd("h2", "start")
    assert "failed" == rec["phase"]
    assert rec["error"]["message"]  # libvirt's reason, passed on
    assert_guest_alive_on(lab, vm, "h1", seq_before)
    lab.wait_domstate("h2", vm, None)  # h2's daemon drops the half-received guest on restart
    assert vm not in lab.domains("h2", all_=True)


def test_offline_migration_moves_a_shut_off_guest_definition(stack, lab, guest):
    vm = guest("h1")
    lab.virsh("h1", "destroy", vm)
    code, rec = migrate(stack, vm, "--to", "h2", "--offline")
    assert (0, "succeeded") == (code, rec["phase"])
    assert ("shut off", True) == (lab.domstate("h2", vm), persistent(lab, "h2", vm))
    assert vm not in lab.domains("h1", all_=True)


def test_an_offline_move_of_local_disks_is_refused_in_preflight_before_h2_is_touched(
        stack, lab, guest):
    vm = guest("h1", storage="local", start=False, wait=False)
    code, rec = migrate(stack, vm, "--to", "h2", "--offline")
    assert (1, "failed", "fail") == (code, rec["phase"], check(rec, "storage")["status"])
    assert "cannot copy the disks of a domain that is not running" in check(rec, "storage")["reason"]
    assert ("shut off", None) == (lab.domstate("h1", vm), lab.domstate("h2", vm))
    assert not lab.disk_path(vm, "local", "h2").exists()
