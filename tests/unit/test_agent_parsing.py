"""Pure parsers and name tables of the agent: libvirt XML, event enums, job statistics, sysfs."""

from __future__ import annotations

from pathlib import Path

from baton.agent import event_names, hostfacts, xmlparse
from baton.agent.jobstats import job_stats
from baton.schemas.events import BlockJobStatus, LifecycleKind

CAPS = """<capabilities><host><cpu><arch>x86_64</arch><model>EPYC-Rome</model>
<vendor>AMD</vendor><feature name='x2apic'/><feature name='ibpb'/></cpu></host>
<guest><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>
</capabilities>"""

DOMCAPS = """<domainCapabilities><cpu>
<mode name='host-passthrough' supported='no'/>
<mode name='host-model' supported='yes'><model fallback='forbid'>EPYC</model></mode>
<mode name='custom' supported='yes'><model usable='yes'>qemu64</model>
<model usable='no'>EPYC</model><model usable='yes'>Opteron_G2</model></mode>
</cpu></domainCapabilities>"""

DOMAIN = """<domain type='qemu'><name>g1</name><vcpu>2</vcpu>
<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
<devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/shared/g1.qcow2'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='cdrom'><target dev='sda'/><readonly/></disk>
<disk type='volume' device='disk'><source pool='fast' volume='g1-b'/><target dev='vdb'/></disk>
<interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='br-vm'/>
<model type='virtio'/></interface>
<interface type='network'><source network='default'/></interface>
</devices></domain>"""


def test_host_cpu_reads_arch_vendor_model_and_sorted_features():
    cpu = xmlparse.host_cpu(CAPS)
    assert ("x86_64", "AMD", "EPYC-Rome", ["ibpb", "x2apic"]) == (
        cpu.arch, cpu.vendor, cpu.model, cpu.features)


def test_host_cpu_keeps_libvirts_cpu_element_for_a_baseline():
    xml = xmlparse.host_cpu(CAPS).xml
    assert xml is not None and xml.startswith("<cpu><arch>x86_64</arch><model>EPYC-Rome</model>")
    assert xml.endswith('<feature name="ibpb" /></cpu>')


def test_kvm_is_preferred_over_qemu_among_guest_domain_types():
    assert ["kvm", "qemu"] == xmlparse.guest_virt_types(CAPS)


def test_domain_capabilities_give_host_model_and_only_usable_custom_models():
    assert ("EPYC", ["Opteron_G2", "qemu64"]) == xmlparse.domain_cpu_models(DOMCAPS)


def test_domain_facts_cover_disks_interfaces_and_cpu():
    facts = xmlparse.domain_facts(DOMAIN)
    assert ("qemu", 2) == (facts.virt_type, facts.vcpus)
    assert [("vda", "file", "/shared/g1.qcow2", "qcow2"), ("sda", "file", None, None),
            ("vdb", "volume", "g1-b", None)] == [
        (d.target, d.source_type, d.source_path, d.format) for d in facts.disks]
    assert (True, "fast") == (facts.disks[1].readonly, facts.disks[2].pool)
    assert [("bridge", "br-vm", "52:54:00:aa:bb:cc", "virtio"), ("network", "default", None, None)
            ] == [(i.type, i.source, i.mac, i.model) for i in facts.interfaces]
    assert facts.cpu_xml is not None and "qemu64" in facts.cpu_xml


def test_lifecycle_names_follow_libvirts_enums_and_unknown_values_survive():
    assert (LifecycleKind.RESUMED, "migrated") == event_names.lifecycle(4, 1)
    assert (LifecycleKind.STOPPED, "unknown_42") == event_names.lifecycle(5, 42)
    assert event_names.lifecycle(99, 0) is None
    assert BlockJobStatus.READY == event_names.block_job_status(3)
    assert "copy" == event_names.block_job_type(2)


def test_job_stats_map_libvirt_keys_and_downtime_by_completion():
    params = {"operation": 5, "time_elapsed": 1200, "downtime": 44, "memory_iteration": 3,
              "memory_processed": 10 << 20, "auto_converge_throttle": 20, "errmsg": "",
              "memory_constant": 900, "memory_normal_bytes": 6 << 20}
    done = job_stats(params, completed=True)
    running = job_stats(params, completed=False)
    assert ("migration_out", 1200, 44, None) == (done.operation, done.time_elapsed_ms,
                                                 done.downtime_ms, done.expected_downtime_ms)
    assert (None, 44) == (running.downtime_ms, running.expected_downtime_ms)
    assert (3, 10 << 20, 20, None) == (done.memory_iteration, done.memory_processed_bytes,
                                       done.auto_converge_throttle_pct, done.error_message)
    assert (900, 6 << 20) == (done.memory_constant_pages, done.memory_normal_bytes)


def _fake_device(root: Path, name: str, bridge: bool, flags: str, operstate: str, mtu: int) -> None:
    dev = root / name
    dev.mkdir(parents=True)
    if bridge:
        (dev / "bridge").mkdir()
    (dev / "flags").write_text(flags + "\n")
    (dev / "operstate").write_text(operstate + "\n")
    (dev / "mtu").write_text(f"{mtu}\n")


def test_bridges_are_listed_with_admin_state_and_mtu_and_plain_nics_are_not(tmp_path):
    _fake_device(tmp_path, "br-vm", True, "0x1003", "down", 1500)  # up, no ports yet
    _fake_device(tmp_path, "br-off", True, "0x1002", "down", 9000)
    _fake_device(tmp_path, "eth0", False, "0x1003", "up", 1500)
    found = hostfacts.bridges(tmp_path)
    assert [("br-off", False, 9000), ("br-vm", True, 1500)] == [
        (b.name, b.up, b.mtu) for b in found]


def test_passthrough_devices_are_migration_blockers_and_plain_ones_are_not():
    plain = xmlparse.domain_facts(DOMAIN)
    blocked = xmlparse.domain_facts(DOMAIN.replace(
        "</devices>", "<hostdev mode='subsystem' type='pci'/><filesystem type='mount'/></devices>"))
    assert [] == plain.migration_blockers
    assert ["a passed-through host device (<hostdev>)",
            "a shared host directory (<filesystem>)"] == blocked.migration_blockers
