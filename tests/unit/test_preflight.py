"""Each pre-flight check's pass / warn / fail, judged from hand-made facts (no I/O).

The lab hosts are identical machines, so a CPU the destination refuses cannot be staged there:
the CPU-incompatible path is proven here against canned comparison answers, as the lab issue
allows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from baton.coordinator.preflight import (
    DiskView,
    Facts,
    check_cpu,
    check_devices,
    check_encryption,
    check_hosts,
    check_memory,
    check_network,
    check_storage,
    check_vm,
    failure_summary,
    migration_tls,
    report,
    resolved_storage,
)
from baton.schemas.agent import (
    Bridge,
    CpuCompareReply,
    CpuCompatibility,
    InterfaceInfo,
    Network,
    PathProbe,
)
from baton.schemas.agent import DomainState as D
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import CheckName, CheckStatus, StorageMode
from tests.integration.fake_agents import GIB, IMAGES, SHARED, domain, host_caps

PASS, WARN, FAIL = CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL


def facts(*, shared: bool = False, exists: bool = False, storage=StorageMode.AUTO,
          live: bool = True, vm=None, caps=None, **changes: Any) -> Facts:
    vm = vm or domain("vm1", directory=SHARED if shared else IMAGES)
    disk = vm.disks[0]
    probe = PathProbe(path=disk.source_path, exists=exists or shared)
    base = Facts(vm="vm1", source="h1", destination="h2", live=live, requested_storage=storage,
                 domain=vm, destination_caps=caps or host_caps("h2"), on_destination=None,
                 source_caps=host_caps("h1"),
                 disks=[DiskView(disk, shared=shared, on_destination=probe)],
                 cpu=CpuCompareReply(host_id="h2", result=CpuCompatibility.IDENTICAL,
                                     runnable=True, reason="same CPU"))
    return dataclasses.replace(base, **changes)


def test_every_check_passes_for_a_running_vm_on_a_good_destination():
    result = report(facts())
    assert (True, [PASS] * len(CheckName)) == (result.ok, [c.status for c in result.checks])
    assert list(CheckName) == [c.name for c in result.checks]


def test_auto_storage_resolves_to_shared_only_when_the_token_proves_it():
    assert StorageMode.SHARED == resolved_storage(facts(shared=True))
    assert StorageMode.COPY == resolved_storage(facts(shared=False))
    assert StorageMode.COPY == resolved_storage(facts(shared=True, probe_error="agent down"))


def test_same_source_and_destination_fails_hosts():
    assert FAIL == check_hosts(facts(destination="h1")).status


def test_vm_already_defined_on_the_destination_fails_with_what_to_do():
    result = check_vm(facts(on_destination=domain("vm1", state=D.SHUTOFF)))
    assert FAIL == result.status and "undefine it there" in result.reason


def test_live_migration_of_a_shut_off_vm_fails_and_offline_of_a_running_one_too():
    assert FAIL == check_vm(facts(vm=domain("vm1", state=D.SHUTOFF))).status
    assert FAIL == check_vm(facts(live=False)).status
    assert PASS == check_vm(facts(live=False, vm=domain("vm1", state=D.SHUTOFF))).status


def test_shared_storage_requested_but_not_visible_on_the_destination_fails():
    result = check_storage(facts(storage=StorageMode.SHARED))
    assert FAIL == result.status and "--copy-storage" in result.reason


def test_shared_storage_proven_by_the_token_passes():
    assert PASS == check_storage(facts(shared=True, storage=StorageMode.SHARED)).status


def test_copy_needs_a_pool_at_the_disks_directory_on_the_destination():
    caps = host_caps("h2")
    elsewhere = msgspec.structs.replace(caps.pools[0], target_path="/data")
    result = check_storage(facts(caps=msgspec.structs.replace(caps, pools=[elsewhere])))
    assert FAIL == result.status and "no active storage pool at /var/lib/libvirt/images" in \
        result.reason


def test_copy_needs_room_for_the_disks_virtual_size():
    result = check_storage(facts(caps=host_caps("h2", pool_free_gib=5)))
    assert FAIL == result.status and "need 10.0 GiB" in result.reason


def test_copy_refuses_a_disk_path_that_already_exists_on_the_destination():
    result = check_storage(facts(exists=True))
    assert FAIL == result.status and "already exists on h2" in result.reason


def test_a_failed_probe_fails_storage_with_the_agents_reason():
    result = check_storage(facts(probe_error="no agent answers for host 'h1'"))
    assert FAIL == result.status and "no agent answers" in result.reason


def test_a_missing_or_down_bridge_fails_network():
    assert FAIL == check_network(facts(caps=host_caps("h2", bridges=("br9",)))).status
    caps = host_caps("h2")
    down = msgspec.structs.replace(caps, bridges=[Bridge(name="br0", up=False, mtu=1500)])
    result = check_network(facts(caps=down))
    assert FAIL == result.status and "br0 is down" in result.reason


def test_an_offline_move_of_local_disks_fails_storage_before_anything_is_touched():
    off = msgspec.structs.replace(domain("vm1", state=D.SHUTOFF), active=False)
    result = check_storage(facts(vm=off, live=False))
    assert FAIL == result.status and "cannot copy the disks of a domain that is not running" \
        in result.reason
    shared_off = msgspec.structs.replace(domain("vm1", directory=SHARED, state=D.SHUTOFF),
                                         active=False)
    assert PASS == check_storage(facts(vm=shared_off, shared=True, live=False)).status


def test_a_destination_bridge_with_a_smaller_mtu_fails_network_and_a_larger_one_passes():
    def with_mtu(host: str, mtu: int):
        return msgspec.structs.replace(host_caps(host), bridges=[Bridge(name="br0", up=True,
                                                                          mtu=mtu)])
    smaller = check_network(facts(caps=with_mtu("h2", 1400), source_caps=with_mtu("h1", 1500)))
    assert (FAIL, "bridge br0 carries MTU 1400 on h2 but 1500 on h1: the guest's larger frames "
            "would be dropped there (ip link set br0 mtu 1500 on h2)") == (smaller.status,
                                                                         smaller.reason)
    for source_mtu in (1400, 1500):  # same, or the destination carries more
        assert PASS == check_network(facts(caps=with_mtu("h2", 1500),
                                           source_caps=with_mtu("h1", source_mtu))).status
    assert PASS == check_network(facts(caps=with_mtu("h2", 1400), source_caps=None)).status


def test_libvirt_networks_must_exist_and_be_active():
    vm = msgspec.structs.replace(domain("vm1"), interfaces=[
        InterfaceInfo(type="network", source="default")])
    caps = host_caps("h2")
    assert PASS == check_network(facts(vm=vm, caps=caps)).status
    inactive = msgspec.structs.replace(caps, networks=[Network(name="default", active=False)])
    assert FAIL == check_network(facts(vm=vm, caps=inactive)).status


def test_an_interface_type_we_cannot_check_is_a_warning():
    vm = msgspec.structs.replace(domain("vm1"), interfaces=[InterfaceInfo(type="user")])
    assert WARN == check_network(facts(vm=vm)).status


def test_an_incompatible_cpu_fails_with_libvirts_reason():
    refused = CpuCompareReply(host_id="h2", result=CpuCompatibility.INCOMPATIBLE,
                              runnable=False, reason="host CPU lacks avx512f")
    result = check_cpu(facts(cpu=refused))
    assert FAIL == result.status and "avx512f" in result.reason
    assert WARN == check_cpu(facts(cpu=refused, live=False,
                                   vm=domain("vm1", state=D.SHUTOFF))).status


def test_cpu_comparison_unsupported_is_a_warning_and_other_errors_fail():
    unsupported = BatonError(ErrorCode.UNSUPPORTED, "not supported by the test driver")
    assert WARN == check_cpu(facts(cpu=None, cpu_error=unsupported)).status
    timeout = BatonError(ErrorCode.TIMEOUT, "no answer")
    assert FAIL == check_cpu(facts(cpu=None, cpu_error=timeout)).status


@pytest.mark.parametrize(("memory_gib", "live", "status"), [
    (1, True, PASS), (8, True, PASS), (9, True, FAIL), (9, False, WARN)])
def test_destination_memory_must_hold_the_vm(memory_gib, live, status):
    vm = domain("vm1", memory_gib=memory_gib, state=D.RUNNING if live else D.SHUTOFF)
    assert status == check_memory(facts(vm=vm, live=live)).status


def test_a_device_that_blocks_migration_fails_devices():
    result = check_devices(facts(vm=domain("vm1", blockers=("hostdev 0000:03:00.0",))))
    assert FAIL == result.status and "hostdev 0000:03:00.0" in result.reason


def test_all_checks_are_reported_together_and_the_summary_names_each_failure():
    bad = facts(caps=host_caps("h2", bridges=(), memory_gib=0.5),
                vm=domain("vm1", blockers=("hostdev",)))
    result = report(bad)
    failed = [c.name for c in result.checks if c.status == FAIL]
    assert (False, [CheckName.NETWORK, CheckName.MEMORY, CheckName.DEVICES]) == (result.ok, failed)
    assert failure_summary(result.checks).count("|") == 2


def test_free_bytes_of_a_roomy_pool_are_reported_when_passing():
    assert f"{10 * GIB / GIB:.1f} GiB" in check_storage(facts()).reason


# --- encryption of the migration stream ---------------------------------------------------------


def test_the_stream_is_encrypted_when_asked_and_both_hosts_have_qemu_certificates():
    result = check_encryption(facts())
    assert (True, CheckStatus.PASS) == (migration_tls(facts()), result.status)


@pytest.mark.parametrize("source_tls, destination_tls, lacking", [
    (False, True, "h1"), (True, False, "h2"), (False, False, "h1 and h2")])
def test_a_host_without_qemu_certificates_means_a_warned_unencrypted_stream(
        source_tls, destination_tls, lacking):
    these = facts(source_caps=host_caps("h1", migration_tls=source_tls),
                  destination_caps=host_caps("h2", migration_tls=destination_tls))
    result = check_encryption(these)
    assert (False, CheckStatus.WARN) == (migration_tls(these), result.status)
    assert result.reason.startswith(f"{lacking} has no QEMU migration TLS certificates")


def test_a_source_whose_caps_are_unknown_is_not_trusted_with_tls():
    assert False is migration_tls(facts(source_caps=None))


def test_no_tls_is_the_operators_call_and_is_warned_about():
    result = check_encryption(facts(tls=False))
    assert (False, CheckStatus.WARN, "--no-tls: guest memory and disks cross the network "
            "unencrypted") == (migration_tls(facts(tls=False)), result.status, result.reason)
