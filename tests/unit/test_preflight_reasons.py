"""The words of every pre-flight check, exactly as `baton check` shows them, and the edge of each
decision (pure: facts in, verdicts out). Operators act on these words; scripts read the status."""

from __future__ import annotations

import dataclasses

import msgspec

from baton.coordinator.preflight import (
    DiskView,
    check_cpu,
    check_devices,
    check_hosts,
    check_memory,
    check_network,
    check_storage,
    check_vm,
    failure_summary,
    report,
)
from baton.schemas.agent import (
    Bridge,
    CpuCompareReply,
    CpuCompatibility,
    InterfaceInfo,
    Memory,
    Network,
    PathProbe,
    StoragePool,
)
from baton.schemas.agent import DomainState as D
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import CheckName, CheckStatus, StorageMode
from tests.integration.fake_agents import GIB, IMAGES, domain, host_caps
from tests.unit.test_preflight import facts

PASS, WARN, FAIL = CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL


def said(result) -> tuple[CheckStatus, str]:
    return result.status, result.reason


def with_nics(*nics: InterfaceInfo):
    return facts(vm=msgspec.structs.replace(domain("vm1"), interfaces=list(nics)))


def caps_with(**changes):
    return msgspec.structs.replace(host_caps("h2"), **changes)


# --- hosts and the VM ---------------------------------------------------------------------------


def test_hosts():
    assert (PASS, "h1 -> h2 (qemu+tcp://10.77.0.2/system); both agents answer") == said(
        check_hosts(facts()))
    result = check_hosts(facts(destination="h1"))
    assert (CheckName.HOSTS, FAIL, "source and destination are both 'h1': choose another "
            "destination") == (result.name, *said(result))


def test_vm():
    assert (PASS, "vm1 is running on h1, absent on h2") == said(check_vm(facts()))
    assert (FAIL, "vm1 is already defined on h2 (shutoff): undefine it there first or choose "
            "another destination") == said(check_vm(facts(
                on_destination=domain("vm1", state=D.SHUTOFF))))
    off = domain("vm1", state=D.SHUTOFF)
    assert (FAIL, "vm1 is shutoff on h1: start it, or migrate it offline (--offline)") == said(
        check_vm(facts(vm=off)))
    assert (FAIL, "vm1 is running on h1: an offline migration needs it shut off; shut it down "
            "or migrate it live") == said(check_vm(facts(live=False)))
    assert (PASS, "vm1 is shutoff on h1, absent on h2") == said(check_vm(facts(vm=off,
                                                                                live=False)))


# --- storage --------------------------------------------------------------------------------


def test_storage_when_the_probe_failed_or_there_is_nothing_to_probe():
    assert (FAIL, "could not probe the disks: agent down") == said(check_storage(facts(
        probe_error="agent down")))
    assert (PASS, "the VM has no file-backed disks") == said(check_storage(facts(disks=[])))


def test_shared_storage_proven_and_not_seen():
    assert (PASS, "h2 sees all 1 disk file(s) (shared storage proven by a token)") == said(
        check_storage(facts(shared=True)))
    unseen = facts(storage=StorageMode.SHARED)
    assert (FAIL, f"h2 does not see {IMAGES}/vm1.qcow2 (a token the source wrote beside it was "
            "not found there): put the disks on storage both hosts mount, or migrate with "
            "--copy-storage") == said(check_storage(unseen))


def test_copy_storage_words():
    assert (PASS, "copy 1 local disk(s), 10.0 GiB, into pools on h2") == said(
        check_storage(facts()))
    assert (FAIL, f"{IMAGES}/vm1.qcow2 already exists on h2: remove it there or move the VM "
            "elsewhere") == said(check_storage(facts(exists=True)))


def test_a_read_only_disk_missing_on_the_destination_and_one_present():
    vm = domain("vm1")
    ro = msgspec.structs.replace(vm.disks[0], readonly=True, source_path=f"{IMAGES}/iso.img")
    missing = DiskView(ro, shared=False, on_destination=PathProbe(path=ro.source_path or "",
                                                                  exists=False))
    present = dataclasses.replace(missing, on_destination=PathProbe(path=ro.source_path or "",
                                                                    exists=True))
    assert (FAIL, f"{IMAGES}/iso.img (read-only or shareable, so not copied) is missing on h2: "
            "copy it there first or detach it") == said(check_storage(facts(disks=[missing])))
    assert (PASS, "every disk is on shared storage; nothing to copy") == said(
        check_storage(facts(disks=[present])))


def test_a_disk_whose_directory_has_no_pool_there():
    caps = caps_with(pools=[StoragePool(name="default", type="dir", target_path="/other",
                                        active=True, available_bytes=100 * GIB)])
    assert (FAIL, f"h2 has no active storage pool at {IMAGES} for {IMAGES}/vm1.qcow2: define "
            f"and start one there (virsh pool-define-as NAME dir --target {IMAGES}), or copy into "
            "another pool (--target-pool POOL)") == said(
        check_storage(facts(caps=caps)))


def test_an_inactive_pool_does_not_count_and_a_trailing_slash_does_not_matter():
    inactive = caps_with(pools=[StoragePool(name="default", type="dir", target_path=IMAGES,
                                            active=False, available_bytes=100 * GIB)])
    assert FAIL == check_storage(facts(caps=inactive)).status
    slashed = caps_with(pools=[StoragePool(name="default", type="dir", target_path=IMAGES + "/",
                                           active=True, available_bytes=100 * GIB)])
    assert PASS == check_storage(facts(caps=slashed)).status


def test_pool_room_is_judged_on_the_roomiest_active_pool_and_exactly_enough_is_enough():
    def pools(*available: int):
        return caps_with(pools=[StoragePool(name=f"p{i}", type="dir", target_path=IMAGES,
                                            active=True, available_bytes=a)
                                for i, a in enumerate(available)])
    assert PASS == check_storage(facts(caps=pools(5 * GIB, 10 * GIB))).status  # a 10 GiB disk
    assert (FAIL, "pool p1 on h2 has 9.0 GiB available, the disks need 10.0 GiB: free space "
            "there") == said(check_storage(facts(caps=pools(5 * GIB, 9 * GIB))))


def test_a_disk_nobody_could_size_is_copied_with_a_warning_that_its_room_was_not_counted():
    vm = domain("vm1")
    unsized = msgspec.structs.replace(vm, disks=[msgspec.structs.replace(vm.disks[0],
                                                                         capacity_bytes=0)])
    assert (WARN, f"the size of vda ({IMAGES}/vm1.qcow2) is unknown (neither libvirt nor qemu-img "
            "could read it): the room on h2 was checked without it") == said(
        check_storage(facts(vm=unsized)))
    full = caps_with(pools=[StoragePool(name="p", type="dir", target_path=IMAGES, active=True,
                                        available_bytes=0)])
    assert FAIL == check_storage(facts(vm=unsized, caps=full, exists=True)).status  # problems first


# --- network ---------------------------------------------------------------------------------


def test_network_words():
    assert (PASS, "br0: present and up on h2") == said(check_network(with_nics(
        InterfaceInfo(type="bridge", source="br0"))))
    assert (PASS, "the VM has no network interfaces: nothing to check") == said(
        check_network(with_nics()))
    assert (FAIL, "bridge br9 does not exist on h2: create it there or attach the VM to a bridge "
            "both hosts have") == said(check_network(with_nics(InterfaceInfo(type="bridge",
                                                                              source="br9"))))
    down = facts(vm=msgspec.structs.replace(domain("vm1"), interfaces=[
        InterfaceInfo(type="bridge", source="br0")]), destination_caps=caps_with(
        bridges=[Bridge(name="br0", up=False, mtu=1500)]))
    assert (FAIL, "bridge br0 is down on h2: create it there or attach the VM to a bridge both "
            "hosts have") == said(check_network(down))


def test_libvirt_networks_and_other_interface_types():
    nic = InterfaceInfo(type="network", source="default")
    assert (PASS, "default: present and up on h2") == said(check_network(with_nics(nic)))
    inactive = dataclasses.replace(with_nics(nic), destination_caps=caps_with(
        networks=[Network(name="default", active=False)]))
    assert (FAIL, "libvirt network default is inactive on h2: virsh net-start default there (or "
            "define it)") == said(check_network(inactive))
    missing = dataclasses.replace(with_nics(nic), destination_caps=caps_with(networks=[]))
    assert (FAIL, "libvirt network default is not defined on h2: virsh net-start default there "
            "(or define it)") == said(check_network(missing))
    assert (WARN, "interface type 'direct' (eth0) is not checked") == said(check_network(
        with_nics(InterfaceInfo(type="direct", source="eth0"))))
    both = with_nics(InterfaceInfo(type="bridge", source="br0"),
                     InterfaceInfo(type="user", source=None))
    assert (WARN, "interface type 'user' (None) is not checked") == said(check_network(both))


# --- CPU, memory, devices ----------------------------------------------------------------------


def cpu(runnable: bool, result=CpuCompatibility.SUPERSET, reason="more features"):
    return CpuCompareReply(host_id="h2", result=result, runnable=runnable, reason=reason)


def test_cpu_words():
    assert (PASS, "h2 can run the guest CPU (superset: more features)") == said(
        check_cpu(facts(cpu=cpu(True))))
    assert (PASS, "h2 can run the guest CPU") == said(check_cpu(facts(cpu=None)))
    refused = ("h2 cannot run the guest CPU: lacks avx512; use a guest CPU model both hosts "
               "support (e.g. a named model instead of host-passthrough)")
    no = cpu(False, CpuCompatibility.INCOMPATIBLE, "lacks avx512")
    assert (FAIL, refused) == said(check_cpu(facts(cpu=no)))
    assert (WARN, refused + " (offline: it would not start there)") == said(
        check_cpu(facts(cpu=no, live=False)))


def test_a_cpu_comparison_that_could_not_be_made():
    assert (WARN, "h2 cannot compare guest CPUs (no comparison on this driver); not checked") == \
        said(check_cpu(facts(cpu=None, cpu_error=BatonError(
            ErrorCode.UNSUPPORTED, "no comparison on this driver"))))
    assert (FAIL, "the CPU comparison on h2 failed: agent down") == said(check_cpu(facts(
        cpu=None, cpu_error=BatonError(ErrorCode.UNAVAILABLE, "agent down"))))


def test_memory_words_and_edge():
    def memory(available: int, live: bool = True):
        caps = caps_with(memory=Memory(total_bytes=16 * GIB, free_bytes=available,
                                       available_bytes=available))
        return check_memory(facts(caps=caps, live=live))
    assert (PASS, "h2 has 1.0 GiB available, the VM needs 1.0 GiB") == said(memory(GIB))
    short = "h2 has 0.5 GiB available but the VM needs 1.0 GiB: free memory there or choose " \
            "another destination"
    assert (FAIL, short) == said(memory(GIB // 2))
    assert (FAIL, "h2 has 1.0 GiB available but the VM needs 1.0 GiB: free memory there or "
            "choose another destination") == said(memory(GIB - 1))
    assert (WARN, short + " (offline: only to start it there)") == said(memory(GIB // 2, False))


def test_devices_words():
    assert (PASS, "no device blocks migration") == said(check_devices(facts()))
    blocked = msgspec.structs.replace(domain("vm1"), migration_blockers=["hostdev 0000:01:00.0",
                                                                         "vfio"])
    assert (FAIL, "hostdev 0000:01:00.0 blocks migration: detach it first; vfio blocks migration: "
            "detach it first") == said(check_devices(facts(vm=blocked)))


def test_the_failure_summary_names_each_failed_check():
    result = report(facts(destination="h1", probe_error="agent down"))
    assert ("pre-flight failed — hosts: source and destination are both 'h1': choose another "
            "destination | storage: could not probe the disks: agent down") == \
        failure_summary(result.checks)
