"""Pre-flight checks' exact verdicts and reasons, and gathering against a scripted agent client.

The reasons are what an operator reads to act on, so they are asserted in full.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from baton.coordinator.preflight import (
    DiskView,
    Facts,
    Intent,
    check_convergence,
    check_cpu,
    check_devices,
    check_encryption,
    check_hosts,
    check_memory,
    check_network,
    check_storage,
    check_vm,
    failure_summary,
    gather,
    migration_tls,
    probe_disks,
    report,
    resolved_storage,
)
from baton.schemas.agent import (
    Bridge,
    CpuCompareReply,
    CpuCompatibility,
    DiskInfo,
    InterfaceInfo,
    Network,
    PathProbe,
    StoragePool,
    StorageProbeReply,
    StorageProbeRequest,
    TokenAction,
    TokenResult,
)
from baton.schemas.agent import DomainState as D
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    CheckName,
    CheckResult,
    CheckStatus,
    PostcopySwitch,
    Prediction,
    StorageMode,
    Strategy,
)
from tests.integration.fake_agents import GIB, IMAGES, SHARED, domain, host_caps

PASS, WARN, FAIL = CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL
SAME_CPU = CpuCompareReply(host_id="h2", result=CpuCompatibility.IDENTICAL, runnable=True,
                           reason="same CPU")


def disk(path: str, *, gib: float = 10, readonly: bool = False, shareable: bool = False,
         target: str = "vda") -> DiskInfo:
    return DiskInfo(target=target, device="disk", source_type="file", source_path=path,
                    format="qcow2", capacity_bytes=int(gib * GIB), readonly=readonly,
                    shareable=shareable)


def view(d: DiskInfo, *, shared: bool = False, exists: bool | None = False) -> DiskView:
    probe = None if exists is None else PathProbe(path=d.source_path or "", exists=exists)
    return DiskView(d, shared=shared, on_destination=probe)


def facts(**changes: Any) -> Facts:
    vm = changes.pop("domain", None) or domain("vm1")
    base = Facts(vm="vm1", source="h1", destination="h2", live=True,
                 requested_storage=StorageMode.AUTO, domain=vm,
                 destination_caps=host_caps("h2"), on_destination=None,
                 source_caps=host_caps("h1"), disks=[view(vm.disks[0])], cpu=SAME_CPU)
    return dataclasses.replace(base, **changes)


def with_pools(*pools: StoragePool) -> Any:
    return msgspec.structs.replace(host_caps("h2"), pools=list(pools))


def pool(name: str, target: str | None, *, active: bool = True, free_gib: float = 100) -> StoragePool:
    return StoragePool(name=name, type="dir", target_path=target, active=active,
                       available_bytes=int(free_gib * GIB))


# --- DiskView ------------------------------------------------------------------------------------


def test_a_disk_view_path_is_the_source_path_or_empty():
    assert "/a/b.qcow2" == view(disk("/a/b.qcow2")).path
    nameless = DiskInfo(target="vda", device="disk", source_type="block")
    assert "" == DiskView(nameless, shared=False).path
    assert None is DiskView(nameless, shared=False).on_destination


@pytest.mark.parametrize(("shared", "readonly", "shareable", "copyable"), [
    (False, False, False, True), (True, False, False, False), (False, True, False, False),
    (False, False, True, False)])
def test_only_a_local_writable_unshared_disk_is_copied(shared, readonly, shareable, copyable):
    d = disk("/a/b.qcow2", readonly=readonly, shareable=shareable)
    assert copyable is DiskView(d, shared=shared).copyable


# --- resolved storage ---------------------------------------------------------------------------


def test_an_explicit_storage_mode_is_kept_whatever_the_probe_said():
    shared = facts(disks=[view(disk(f"{SHARED}/a.qcow2"), shared=True)])
    assert StorageMode.COPY == resolved_storage(
        dataclasses.replace(shared, requested_storage=StorageMode.COPY))
    assert StorageMode.SHARED == resolved_storage(
        dataclasses.replace(facts(), requested_storage=StorageMode.SHARED))


def test_auto_is_shared_only_when_every_disk_is_shared():
    a, b = disk(f"{SHARED}/a.qcow2"), disk(f"{SHARED}/b.qcow2", target="vdb")
    assert StorageMode.COPY == resolved_storage(
        facts(disks=[view(a, shared=True), view(b, shared=False)]))
    assert StorageMode.SHARED == resolved_storage(
        facts(disks=[view(a, shared=True), view(b, shared=True)]))
    assert StorageMode.SHARED == resolved_storage(facts(disks=[]))


# --- hosts and vm ---------------------------------------------------------------------------------


def test_hosts_reasons():
    assert CheckResult(name=CheckName.HOSTS, status=FAIL,
                       reason="source and destination are both 'h1': choose another "
                              "destination") == check_hosts(facts(destination="h1"))
    assert CheckResult(name=CheckName.HOSTS, status=PASS,
                       reason="h1 -> h2 (qemu+tcp://10.77.0.2/system); both agents answer") == \
        check_hosts(facts())


def test_vm_reasons():
    assert CheckResult(name=CheckName.VM, status=PASS,
                       reason="vm1 is running on h1, absent on h2") == check_vm(facts())
    there = check_vm(facts(on_destination=domain("vm1", state=D.SHUTOFF)))
    assert (FAIL, "vm1 is already defined on h2 (shutoff): undefine it there first or choose "
            "another destination") == (there.status, there.reason)
    off = check_vm(facts(domain=domain("vm1", state=D.SHUTOFF)))
    assert (FAIL, "vm1 is shutoff on h1: start it, or migrate it offline (--offline)") == \
        (off.status, off.reason)
    running = check_vm(facts(live=False))
    assert (FAIL, "vm1 is running on h1: an offline migration needs it shut off; shut it down "
            "or migrate it live") == (running.status, running.reason)
    both = check_vm(facts(live=False, on_destination=domain("vm1")))
    assert both.reason.count("; ") == 2 and both.reason.startswith("vm1 is already defined")
    offline = check_vm(facts(live=False, domain=domain("vm1", state=D.SHUTOFF)))
    assert (PASS, "vm1 is shutoff on h1, absent on h2") == (offline.status, offline.reason)


# --- storage ---------------------------------------------------------------------------------------


def test_a_probe_error_fails_storage_before_anything_else():
    result = check_storage(facts(probe_error="boom", disks=[]))
    assert CheckResult(name=CheckName.STORAGE, status=FAIL,
                       reason="could not probe the disks: boom") == result


def test_no_file_backed_disks_passes_storage():
    assert CheckResult(name=CheckName.STORAGE, status=PASS,
                       reason="the VM has no file-backed disks") == check_storage(facts(disks=[]))


def test_shared_storage_reasons_name_every_unseen_disk():
    a, b, c = (disk(f"{SHARED}/{n}.qcow2", target=t) for n, t in
               (("a", "vda"), ("b", "vdb"), ("c", "vdc")))
    ok = check_storage(facts(requested_storage=StorageMode.SHARED,
                             disks=[view(a, shared=True), view(b, shared=True)]))
    assert CheckResult(name=CheckName.STORAGE, status=PASS,
                       reason="h2 sees all 2 disk file(s) (shared storage proven by a token)") == ok
    bad = check_storage(facts(requested_storage=StorageMode.SHARED,
                              disks=[view(a, shared=False), view(b, shared=True),
                                     view(c, shared=False)]))
    assert (FAIL, f"h2 does not see {SHARED}/a.qcow2, {SHARED}/c.qcow2 (a token the source "
            "wrote beside it was not found there): put the disks on storage both hosts mount, "
            "or migrate with --copy-storage") == (bad.status, bad.reason)


def test_copy_reason_counts_and_sizes_the_local_disks():
    a, b = disk(f"{IMAGES}/a.qcow2", gib=1.5), disk(f"{IMAGES}/b.qcow2", gib=2, target="vdb")
    ro = disk(f"{SHARED}/iso.img", readonly=True, target="vdc")
    result = check_storage(facts(disks=[view(a), view(b), view(ro, exists=True)]))
    assert CheckResult(name=CheckName.STORAGE, status=PASS,
                       reason="copy 2 local disk(s), 3.5 GiB, into pools on h2") == result


def test_copies_into_other_pools_name_each_disk_and_where_it_lands():
    a, b = disk(f"{IMAGES}/a.qcow2", gib=1), disk(f"{IMAGES}/b.qcow2", gib=1, target="vdb")
    caps = with_pools(pool("default", IMAGES), pool("fast", "/srv/fast"))
    landed = [dataclasses.replace(view(a), landing="/srv/fast/a.qcow2"),
              dataclasses.replace(view(b), landing="/srv/fast/b.qcow2")]
    result = check_storage(facts(destination_caps=caps, disks=landed))
    assert (PASS, "copy 2 local disk(s), 2.0 GiB, into pools on h2; vda into /srv/fast/a.qcow2; "
            "vdb into /srv/fast/b.qcow2") == (result.status, result.reason)


def test_an_offline_copy_is_refused_naming_every_disk_and_what_to_do():
    off = msgspec.structs.replace(domain("vm1", state=D.SHUTOFF), active=False)
    a, b = disk(f"{IMAGES}/a.qcow2"), disk(f"{IMAGES}/b.qcow2", target="vdb")
    result = check_storage(facts(domain=off, live=False, disks=[view(a), view(b)]))
    assert (FAIL, f"vm1 is shutoff and its disks {IMAGES}/a.qcow2, {IMAGES}/b.qcow2 are not on "
            "storage h2 sees: libvirt cannot copy the disks of a domain that is not running; "
            "start it and migrate it live with --copy-storage, or put the disks on shared "
            "storage") == (result.status, result.reason)


def test_copy_with_only_shared_disks_has_nothing_to_copy():
    a = disk(f"{SHARED}/a.qcow2")
    local = disk(f"{IMAGES}/b.qcow2", target="vdb")
    result = check_storage(facts(requested_storage=StorageMode.COPY,
                                 disks=[view(a, shared=True, exists=True)]))
    assert (PASS, "every disk is on shared storage; nothing to copy") == \
        (result.status, result.reason)
    # auto with a mix copies the local one only
    mixed = check_storage(facts(disks=[view(a, shared=True, exists=True), view(local)]))
    assert (PASS, "copy 1 local disk(s), 10.0 GiB, into pools on h2") == \
        (mixed.status, mixed.reason)


@pytest.mark.parametrize(("readonly", "shareable"), [(True, False), (False, True)])
def test_a_readonly_or_shareable_local_disk_must_already_be_on_the_destination(readonly,
                                                                               shareable):
    ro = disk(f"{IMAGES}/iso.img", readonly=readonly, shareable=shareable)
    for exists in (False, None):
        result = check_storage(facts(disks=[view(ro, exists=exists)]))
        assert CheckResult(name=CheckName.STORAGE, status=FAIL, reason=(
            f"{IMAGES}/iso.img (read-only or shareable, so not copied) is missing on h2: copy it "
            "there first or detach it")) == result
    present = check_storage(facts(disks=[view(ro, exists=True)]))
    assert (PASS, "every disk is on shared storage; nothing to copy") == \
        (present.status, present.reason)


def test_a_shared_readonly_disk_is_not_required_on_the_destination_probe():
    ro = disk(f"{SHARED}/iso.img", readonly=True)
    result = check_storage(facts(requested_storage=StorageMode.COPY,
                                 disks=[view(ro, shared=True, exists=False)]))
    assert PASS == result.status


def test_a_copied_disk_already_on_the_destination_fails_but_an_absent_probe_does_not():
    a = disk(f"{IMAGES}/a.qcow2")
    result = check_storage(facts(disks=[view(a, exists=True)]))
    assert (FAIL, f"{IMAGES}/a.qcow2 already exists on h2: remove it there or move the VM "
            "elsewhere") == (result.status, result.reason)
    assert PASS == check_storage(facts(disks=[view(a, exists=None)])).status


def test_pool_problems_are_reported_per_directory():
    a = disk(f"{IMAGES}/a.qcow2", gib=60)
    b = disk(f"{IMAGES}/b.qcow2", gib=50, target="vdb")
    c = disk("/srv/vm/c.qcow2", gib=1, target="vdc")
    caps = with_pools(pool("default", IMAGES, free_gib=100))
    result = check_storage(facts(destination_caps=caps, disks=[view(a), view(b), view(c)]))
    assert (FAIL, "pool default on h2 has 100.0 GiB available, the disks need 110.0 GiB: free "
            "space there; h2 has no active storage pool at /srv/vm for /srv/vm/c.qcow2: define "
            "and start one there (virsh pool-define-as NAME dir --target /srv/vm), or copy into "
            "another pool (--target-pool POOL)") == \
        (result.status, result.reason)


def test_a_pool_must_be_active_and_its_target_may_end_in_a_slash():
    a = disk(f"{IMAGES}/a.qcow2")
    inactive = check_storage(facts(destination_caps=with_pools(pool("p", IMAGES, active=False))))
    assert (FAIL, f"h2 has no active storage pool at {IMAGES} for {IMAGES}/vm1.qcow2: define and "
            f"start one there (virsh pool-define-as NAME dir --target {IMAGES}), or copy into another "
            "pool (--target-pool POOL)") == \
        (inactive.status, inactive.reason)
    slashed = with_pools(pool("p", IMAGES + "/"), pool("none", None))
    assert PASS == check_storage(facts(destination_caps=slashed, disks=[view(a)])).status
    assert FAIL == check_storage(facts(destination_caps=with_pools(pool("none", None)),
                                       disks=[view(a)])).status


@pytest.mark.parametrize(("target", "path"), [
    ("/srv/VMX", "/srv/VMX/a.qcow2"),  # only the slashes are trimmed, whatever the name ends in
    ("/srv/VMX/", "/srv/VMX/a.qcow2"),
    ("/", "/a.qcow2"),  # a pool at the root matches a disk there
])
def test_a_pool_matches_its_directory_by_the_path_less_trailing_slashes(target, path):
    caps = with_pools(pool("p", target))
    assert PASS == check_storage(facts(destination_caps=caps, disks=[view(disk(path))])).status


def test_two_disks_in_one_pool_directory_are_named_together():
    a = disk(f"{IMAGES}/a.qcow2")
    b = disk(f"{IMAGES}/b.qcow2", target="vdb")
    result = check_storage(facts(destination_caps=with_pools(), disks=[view(a), view(b)]))
    assert result.reason == (f"h2 has no active storage pool at {IMAGES} for {IMAGES}/a.qcow2, "
                             f"{IMAGES}/b.qcow2: define and start one there (virsh "
                             f"pool-define-as NAME dir --target {IMAGES}), or copy into another pool "
                             "(--target-pool POOL)")


def test_the_roomiest_active_pool_at_the_directory_counts():
    a = disk(f"{IMAGES}/a.qcow2", gib=20)
    caps = with_pools(pool("small", IMAGES, free_gib=5), pool("big", IMAGES, free_gib=30),
                      pool("off", IMAGES, active=False, free_gib=500))
    assert PASS == check_storage(facts(destination_caps=caps, disks=[view(a)])).status
    caps = with_pools(pool("small", IMAGES, free_gib=5), pool("mid", IMAGES, free_gib=10),
                      pool("off", IMAGES, active=False, free_gib=500))
    result = check_storage(facts(destination_caps=caps, disks=[view(a)]))
    assert (FAIL, "pool mid on h2 has 10.0 GiB available, the disks need 20.0 GiB: free space "
            "there") == (result.status, result.reason)


def test_a_pool_exactly_as_large_as_the_disks_is_enough():
    a = disk(f"{IMAGES}/a.qcow2", gib=10)
    caps = with_pools(pool("exact", IMAGES, free_gib=10))
    assert PASS == check_storage(facts(destination_caps=caps, disks=[view(a)])).status
    tight = with_pools(StoragePool(name="tight", type="dir", target_path=IMAGES, active=True,
                                   available_bytes=10 * GIB - 1))
    assert FAIL == check_storage(facts(destination_caps=tight, disks=[view(a)])).status


# --- network -----------------------------------------------------------------------------------------


def nics(*pairs: tuple[str, str | None]) -> Any:
    return msgspec.structs.replace(domain("vm1"), interfaces=[
        InterfaceInfo(type=t, source=s) for t, s in pairs])


def test_network_pass_reason_names_every_interface():
    result = check_network(facts(domain=nics(("bridge", "br0"), ("network", "default"))))
    assert CheckResult(name=CheckName.NETWORK, status=PASS,
                       reason="br0, default: present and up on h2") == result
    none = check_network(facts(domain=nics()))
    assert (PASS, "the VM has no network interfaces: nothing to check") == \
        (none.status, none.reason)


def test_network_failure_reasons():
    caps = msgspec.structs.replace(
        host_caps("h2"), bridges=[Bridge(name="br1", up=False, mtu=1500)],
        networks=[Network(name="off", active=False)])
    result = check_network(facts(destination_caps=caps, domain=nics(
        ("bridge", "br0"), ("bridge", "br1"), ("network", "nat"), ("network", "off"),
        ("direct", "eth0"))))
    assert (FAIL, "; ".join([
        "bridge br0 does not exist on h2: create it there or attach the VM to a bridge both "
        "hosts have",
        "bridge br1 is down on h2: create it there or attach the VM to a bridge both hosts have",
        "libvirt network nat is not defined on h2: virsh net-start nat there (or define it)",
        "libvirt network off is inactive on h2: virsh net-start off there (or define it)",
    ])) == (result.status, result.reason)


def test_a_sourceless_interface_matches_no_bridge_or_network():
    caps = msgspec.structs.replace(host_caps("h2"), bridges=[Bridge(name="", up=True, mtu=1500)],
                                   networks=[Network(name="", active=True)])
    assert PASS == check_network(facts(destination_caps=caps,
                                       domain=nics(("bridge", None), ("network", None)))).status
    assert FAIL == check_network(facts(domain=nics(("bridge", None)))).status
    assert FAIL == check_network(facts(domain=nics(("network", None)))).status


def test_unchecked_interface_types_warn_with_their_names():
    result = check_network(facts(domain=nics(("direct", "eth0"), ("user", None))))
    assert CheckResult(name=CheckName.NETWORK, status=WARN, reason=(
        "interface type 'direct' (eth0) is not checked; interface type 'user' (None) is not "
        "checked")) == result


# --- cpu ---------------------------------------------------------------------------------------------


def test_cpu_pass_reasons():
    assert CheckResult(name=CheckName.CPU, status=PASS,
                       reason="h2 can run the guest CPU (identical: same CPU)") == \
        check_cpu(facts())
    assert CheckResult(name=CheckName.CPU, status=PASS, reason="h2 can run the guest CPU") == \
        check_cpu(facts(cpu=None))


def test_cpu_refused_reasons_live_and_offline():
    refused = CpuCompareReply(host_id="h2", result=CpuCompatibility.INCOMPATIBLE,
                              runnable=False, reason="lacks avx")
    problem = ("h2 cannot run the guest CPU: lacks avx; use a guest CPU model both hosts "
               "support (e.g. a named model instead of host-passthrough)")
    assert CheckResult(name=CheckName.CPU, status=FAIL, reason=problem) == \
        check_cpu(facts(cpu=refused))
    assert CheckResult(name=CheckName.CPU, status=WARN,
                       reason=problem + " (offline: it would not start there)") == \
        check_cpu(facts(cpu=refused, live=False))


def test_cpu_comparison_error_reasons():
    unsupported = BatonError(ErrorCode.UNSUPPORTED, "no way")
    assert CheckResult(name=CheckName.CPU, status=WARN,
                       reason="h2 cannot compare guest CPUs (no way); not checked") == \
        check_cpu(facts(cpu=SAME_CPU, cpu_error=unsupported))
    failed = BatonError(ErrorCode.TIMEOUT, "no answer")
    assert CheckResult(name=CheckName.CPU, status=FAIL,
                       reason="the CPU comparison on h2 failed: no answer") == \
        check_cpu(facts(cpu=SAME_CPU, cpu_error=failed))


# --- memory, devices -------------------------------------------------------------------------------


def test_memory_reasons():
    ok = check_memory(facts(domain=domain("vm1", memory_gib=2)))
    assert CheckResult(name=CheckName.MEMORY, status=PASS,
                       reason="h2 has 8.0 GiB available, the VM needs 2.0 GiB") == ok
    short = ("h2 has 8.0 GiB available but the VM needs 9.0 GiB: free memory there or choose "
             "another destination")
    assert CheckResult(name=CheckName.MEMORY, status=FAIL, reason=short) == \
        check_memory(facts(domain=domain("vm1", memory_gib=9)))
    assert CheckResult(name=CheckName.MEMORY, status=WARN,
                       reason=short + " (offline: only to start it there)") == \
        check_memory(facts(domain=domain("vm1", memory_gib=9), live=False))


def test_memory_exactly_enough_passes_one_kib_more_fails():
    caps = host_caps("h2", memory_gib=1)
    exact = dataclasses.replace(facts(domain=domain("vm1", memory_gib=1)), destination_caps=caps)
    assert PASS == check_memory(exact).status
    more = msgspec.structs.replace(domain("vm1", memory_gib=1), memory_kib=1024 * 1024 + 1)
    assert FAIL == check_memory(dataclasses.replace(exact, domain=more)).status


def test_devices_reasons():
    assert CheckResult(name=CheckName.DEVICES, status=PASS,
                       reason="no device blocks migration") == check_devices(facts())
    result = check_devices(facts(domain=domain("vm1", blockers=("hostdev a", "vfio b"))))
    assert (FAIL, "hostdev a blocks migration: detach it first; vfio b blocks migration: detach "
            "it first") == (result.status, result.reason)


# --- encryption ----------------------------------------------------------------------------------------


def test_encryption_reasons():
    assert CheckResult(name=CheckName.ENCRYPTION, status=PASS,
                       reason="the migration stream is encrypted (TLS)") == \
        check_encryption(facts())
    assert CheckResult(name=CheckName.ENCRYPTION, status=WARN, reason=(
        "h1 has no QEMU migration TLS certificates (qemu.conf migrate_tls_x509_cert_dir): guest "
        "memory and disks cross the network unencrypted")) == \
        check_encryption(facts(source_caps=None))
    assert False is migration_tls(facts(destination_caps=host_caps("h2", migration_tls=False)))
    assert True is migration_tls(facts())
    no_tls = facts(tls=False, source_caps=None)
    assert False is migration_tls(no_tls)
    assert CheckResult(name=CheckName.ENCRYPTION, status=WARN, reason=(
        "--no-tls: guest memory and disks cross the network unencrypted")) == \
        check_encryption(no_tls)


# --- convergence ---------------------------------------------------------------------------------


def test_convergence_reasons():
    assert CheckResult(name=CheckName.CONVERGENCE, status=PASS, reason=(
        "pre-copy: the guest runs on the source until the switch-over, and a failure before it "
        "leaves it there")) == check_convergence(facts())
    assert CheckResult(name=CheckName.CONVERGENCE, status=PASS,
                       reason="offline: no memory to copy") == \
        check_convergence(facts(live=False, intent=Intent(postcopy=AFTER_FIRST_PASS)))
    for switch, when in ((AFTER_FIRST_PASS, "strategy postcopy switches after the first pass"),
                         (PostcopySwitch.WHEN_STALLED, "strategy auto with --allow-postcopy "
                          "switches once raising the downtime limit no longer helps")):
        assert CheckResult(name=CheckName.CONVERGENCE, status=WARN, reason=(
            f"post-copy ({when}): from the switch on, the guest runs on the destination, and "
            "the move can be neither aborted nor rolled back to the source; if the link or "
            "either host fails before the last page arrives, the guest stays paused on the "
            "destination until the migration is recovered")) == \
            check_convergence(facts(intent=Intent(postcopy=switch)))


AFTER_FIRST_PASS = PostcopySwitch.AFTER_FIRST_PASS
MEASURED = "the guest dirties 12.5 MiB/s of 128 MiB (page-sampling)"
THROTTLING = ("throttling the guest's vCPUs (--strategy auto, which then starts with "
              "auto-converge, or --strategy auto-converge), or post-copy (--strategy postcopy, "
              "or auto with --allow-postcopy)")
PRECOPY_NOTE = ("pre-copy: the guest runs on the source until the switch-over, and a failure "
                "before it leaves it there")


def predicted(strategy: Strategy | None, total_s: float | None = None,
              downtime_ms: int | None = None, link: float | None = 30) -> Prediction:
    return Prediction(dirty_rate_mib_s=12.5, dirty_rate_mode="page-sampling", memory_mib=128,
                      link_mib_s=link, converges=strategy is Strategy.PRECOPY, total_s=total_s,
                      downtime_ms=downtime_ms, strategy=strategy)


@pytest.mark.parametrize(("asked", "prediction", "status", "reason"), [
    (Strategy.PRECOPY, predicted(Strategy.PRECOPY, 4.6, 120), PASS,
     f"{PRECOPY_NOTE}; {MEASURED}: at 30 MiB/s, pre-copy converges in about 4.6 s with a "
     "120 ms pause"),
    (Strategy.PRECOPY, predicted(None, link=None), PASS,
     f"{PRECOPY_NOTE}; {MEASURED}; give --bandwidth for a prediction of time and pause"),
    # a link rate without a strategy (not what an agent sends): the measurement only
    (Strategy.PRECOPY, predicted(None), PASS,
     f"{PRECOPY_NOTE}; {MEASURED}; give --bandwidth for a prediction of time and pause"),
    (Strategy.AUTO, predicted(Strategy.AUTO, 25.1, 1200), PASS,
     f"{PRECOPY_NOTE}; {MEASURED}: at 30 MiB/s, plain pre-copy does not converge; raising the "
     "downtime limit (--strategy auto) ends it, in about 25.1 s with a 1200 ms pause"),
    (Strategy.PRECOPY, predicted(Strategy.AUTO, 25.1, 1200), WARN,
     f"{MEASURED}: at 30 MiB/s, plain pre-copy does not converge; raising the downtime limit "
     "(--strategy auto) ends it, in about 25.1 s with a 1200 ms pause; with strategy precopy "
     "it would run until --timeout (if given) aborts it"),
    (Strategy.AUTO, predicted(Strategy.AUTO_CONVERGE), PASS,
     f"{PRECOPY_NOTE}; {MEASURED}: at 30 MiB/s, plain pre-copy does not converge; {THROTTLING} "
     "ends it"),
    (Strategy.PRECOPY, predicted(Strategy.AUTO_CONVERGE), WARN,
     f"{MEASURED}: at 30 MiB/s, plain pre-copy does not converge; {THROTTLING} ends it; with "
     "strategy precopy it would run until --timeout (if given) aborts it"),
    (Strategy.AUTO_CONVERGE, predicted(Strategy.AUTO_CONVERGE), PASS,
     f"{PRECOPY_NOTE}; {MEASURED}: at 30 MiB/s, plain pre-copy does not converge; {THROTTLING} "
     "ends it"),
])
def test_the_convergence_check_says_the_prediction_and_warns_when_the_strategy_falls_short(
        asked, prediction, status, reason):
    found = check_convergence(facts(intent=Intent(strategy=asked, predict=True),
                                    prediction=prediction))
    assert CheckResult(name=CheckName.CONVERGENCE, status=status, reason=reason) == found


def test_a_bounded_working_set_is_named():
    found = check_convergence(facts(
        intent=Intent(predict=True),
        prediction=msgspec.structs.replace(predicted(Strategy.PRECOPY, 3.6, 220),
                                           working_set_mib=32)))
    assert found.reason.endswith("the guest dirties 12.5 MiB/s of a 32 MiB working set of "
                                 "128 MiB (page-sampling): at 30 MiB/s, pre-copy converges in "
                                 "about 3.6 s with a 220 ms pause")


def test_auto_allowed_to_switch_is_enough_for_a_move_only_postcopy_ends():
    found = check_convergence(facts(
        intent=Intent(strategy=Strategy.AUTO, postcopy=PostcopySwitch.WHEN_STALLED,
                      predict=True),
        prediction=predicted(Strategy.POSTCOPY, 8.5, 50)))
    assert WARN == found.status  # the post-copy warning, not a shortfall
    assert found.reason.startswith(f"{MEASURED}: at 30 MiB/s, plain pre-copy does not converge; "
                                   "switching to post-copy ends it, in about 8.5 s with a 50 ms "
                                   "pause; post-copy (strategy auto switches after the "
                                   "first pass, as the prediction says nothing else ends this "
                                   "move): from the switch on")
    assert "would run until" not in found.reason


def test_a_prediction_that_failed_warns_with_its_reason_and_one_not_asked_for_is_silent():
    found = check_convergence(facts(intent=Intent(predict=True), prediction_error="timed out"))
    assert CheckResult(name=CheckName.CONVERGENCE, status=WARN,
                       reason="no prediction: timed out") == found
    assert PASS == check_convergence(facts(prediction_error="timed out")).status
    unmeasured = check_convergence(facts(intent=Intent(predict=True)))
    assert (WARN, "no prediction: the guest is not running") == (unmeasured.status,
                                                                 unmeasured.reason)


# --- report -----------------------------------------------------------------------------------------


def test_a_warning_does_not_stop_the_migration():
    result = report(facts(tls=False))
    assert (True, StorageMode.COPY) == (result.ok, result.storage)
    assert ("vm1", "h1", "h2") == (result.vm, result.source, result.destination)
    assert [WARN] == [c.status for c in result.checks if c.status != PASS]


def test_the_report_storage_is_the_resolved_mode():
    shared = facts(disks=[view(disk(f"{SHARED}/a.qcow2"), shared=True)])
    assert StorageMode.SHARED == report(shared).storage


def test_failure_summary_names_only_the_failures():
    checks = [CheckResult(name=CheckName.HOSTS, status=FAIL, reason="a"),
              CheckResult(name=CheckName.VM, status=WARN, reason="w"),
              CheckResult(name=CheckName.CPU, status=PASS, reason="p"),
              CheckResult(name=CheckName.MEMORY, status=FAIL, reason="b")]
    assert "pre-flight failed — hosts: a | memory: b" == failure_summary(checks)


# --- gathering against a scripted agent client -----------------------------------------------------


class Agents:
    """Answers like AgentClient, recording every storage probe."""

    def __init__(self, *, write_ok: bool | None = True, read_ok: bool | None = True,
                 write_detail: str = "", cpu_error: BatonError | None = None,
                 on_destination: Any = None) -> None:
        self.write_ok, self.read_ok, self.write_detail = write_ok, read_ok, write_detail
        self.cpu_error = cpu_error
        self.on_destination = on_destination
        self.probes: list[tuple[str, StorageProbeRequest]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.vm = msgspec.structs.replace(domain("vm1"), disks=[
            disk(f"{IMAGES}/a.qcow2"), disk(f"{IMAGES}/b.qcow2", target="vdb"),
            disk(f"{SHARED}/c.qcow2", target="vdc"),
            DiskInfo(target="vdd", device="disk", source_type="block")])

    async def domain(self, host: str, vm: str, include_cpu_xml: bool = False) -> Any:
        self.calls.append(("domain", host, vm, include_cpu_xml))
        return self.vm

    async def caps(self, host: str) -> Any:
        self.calls.append(("caps", host))
        return host_caps(host)

    async def domain_or_none(self, host: str, vm: str) -> Any:
        self.calls.append(("domain_or_none", host, vm))
        return self.on_destination

    async def cpu_compare(self, host: str, vm: str, vm_host: str) -> CpuCompareReply:
        self.calls.append(("cpu_compare", host, vm, vm_host))
        if self.cpu_error:
            raise self.cpu_error
        return SAME_CPU

    async def storage_probe(self, host: str, request: StorageProbeRequest) -> StorageProbeReply:
        self.probes.append((host, request))
        op = request.token
        assert op is not None
        if op.action == TokenAction.WRITE:
            ok = self.write_ok
        elif op.action == TokenAction.READ:
            ok = self.read_ok and op.beside.startswith(SHARED)
        else:
            ok = True
        token = None if ok is None else TokenResult(action=op.action, token_path="t", ok=ok,
                                                    detail=self.write_detail)
        paths = [PathProbe(path=p, exists=p.endswith("b.qcow2")) for p in request.paths]
        return StorageProbeReply(host_id=host, paths=paths, token=token)


async def test_gather_asks_both_agents_and_probes_each_directory_once():
    agents = Agents()
    got = await gather(agents, "vm1", "h1", "h2", live=False,  # type: ignore[arg-type]
                       storage=StorageMode.COPY, tls=False)
    assert ("vm1", "h1", "h2", False, StorageMode.COPY, False) == (
        got.vm, got.source, got.destination, got.live, got.requested_storage, got.tls)
    assert ("domain", "h1", "vm1", True) in agents.calls
    assert ("domain_or_none", "h2", "vm1") in agents.calls
    assert ("cpu_compare", "h2", "vm1", "h1") in agents.calls
    assert (agents.vm, None, SAME_CPU, None, None) == (
        got.domain, got.on_destination, got.cpu, got.cpu_error, got.probe_error)
    assert ("h2", "h1") == (got.destination_caps.host_id, got.source_caps.host_id)
    assert [(f"{IMAGES}/a.qcow2", False, False), (f"{IMAGES}/b.qcow2", False, True),
            (f"{SHARED}/c.qcow2", True, False)] == [
        (d.path, d.shared, d.on_destination.exists if d.on_destination else None)
        for d in got.disks]
    actions = [(h, r.token.action, r.token.beside, r.paths) for h, r in agents.probes
               if r.token]
    assert [("h1", TokenAction.WRITE, f"{IMAGES}/a.qcow2", []),
            ("h2", TokenAction.READ, f"{IMAGES}/a.qcow2",
             [f"{IMAGES}/a.qcow2", f"{IMAGES}/b.qcow2"]),
            ("h1", TokenAction.REMOVE, f"{IMAGES}/a.qcow2", []),
            ("h1", TokenAction.WRITE, f"{SHARED}/c.qcow2", []),
            ("h2", TokenAction.READ, f"{SHARED}/c.qcow2", [f"{SHARED}/c.qcow2"]),
            ("h1", TokenAction.REMOVE, f"{SHARED}/c.qcow2", [])] == actions
    tokens = [r.token.token for _, r in agents.probes if r.token]
    assert tokens[0] == tokens[1] == tokens[2] != tokens[3] == tokens[4] == tokens[5]
    assert len(tokens[0]) >= 24


async def test_gather_defaults_to_tls_and_keeps_a_cpu_error():
    err = BatonError(ErrorCode.UNSUPPORTED, "no")
    got = await gather(Agents(cpu_error=err, on_destination=domain("vm1")),  # type: ignore[arg-type]
                       "vm1", "h1", "h2", live=True, storage=StorageMode.AUTO)
    assert (True, None, err, True) == (got.tls, got.cpu, got.cpu_error, got.live)
    assert got.on_destination is not None


@pytest.mark.parametrize(("write_ok", "detail", "expected"), [
    (False, "read-only fs", "read-only fs"), (None, "", "no answer")])
async def test_a_token_the_source_cannot_write_leaves_every_disk_unprobed(write_ok, detail,
                                                                         expected):
    agents = Agents(write_ok=write_ok, write_detail=detail)
    views, error = await probe_disks(agents, "h1", "h2", agents.vm)  # type: ignore[arg-type]
    assert error == f"the source could not write a probe token beside {IMAGES}/a.qcow2: {expected}"
    assert [(f"{IMAGES}/a.qcow2", False), (f"{IMAGES}/b.qcow2", False),
            (f"{SHARED}/c.qcow2", False)] == [(v.path, v.shared) for v in views]
    assert [TokenAction.WRITE] == [r.token.action for _, r in agents.probes if r.token]


async def test_a_token_the_destination_does_not_answer_for_is_not_shared():
    agents = Agents(read_ok=None)
    views, error = await probe_disks(agents, "h1", "h2", agents.vm)  # type: ignore[arg-type]
    assert (None, [False, False, False]) == (error, [v.shared for v in views])


async def test_gather_reports_a_failed_probe():
    got = await gather(Agents(write_ok=False, write_detail="denied"),  # type: ignore[arg-type]
                       "vm1", "h1", "h2", live=True, storage=StorageMode.AUTO)
    assert got.probe_error == f"the source could not write a probe token beside {IMAGES}/a.qcow2: denied"


def test_the_memory_that_is_not_zero_pages_is_named_when_sampled():
    found = check_convergence(facts(
        intent=Intent(predict=True),
        prediction=msgspec.structs.replace(predicted(Strategy.PRECOPY, 2.9, 120), whole_mib=94,
                                           dirty_rate_mode="memory-peek")))
    assert "of 128 MiB (memory-peek; 94 MiB of it not zero pages): at 30 MiB/s" in found.reason
