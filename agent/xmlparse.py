"""Pure parsers for the libvirt XML documents the agent reads (no libvirt import).

Each function takes the XML text libvirt returned and gives plain values or schema Structs; they
never raise on a missing optional element, because libvirt drivers differ in what they fill in.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from baton.schemas.agent import CpuInfo, DiskInfo, InterfaceInfo


@dataclass(frozen=True)
class DomainXmlFacts:
    virt_type: str
    vcpus: int
    disks: list[DiskInfo] = field(default_factory=list)
    interfaces: list[InterfaceInfo] = field(default_factory=list)
    cpu_xml: str | None = None
    migration_blockers: list[str] = field(default_factory=list)


def host_cpu(capabilities_xml: str) -> CpuInfo:
    """The host CPU from ``virConnectGetCapabilities``."""
    cpu = ET.fromstring(capabilities_xml).find("host/cpu")
    if cpu is None:
        return CpuInfo(arch="unknown", vendor="unknown", model="unknown")
    features = sorted({f.get("name", "") for f in cpu.findall("feature")} - {""})
    return CpuInfo(
        arch=cpu.findtext("arch", "unknown"),
        vendor=cpu.findtext("vendor", "unknown"),
        model=cpu.findtext("model", "unknown"),
        features=features,
        xml=ET.tostring(cpu, encoding="unicode").strip(),
    )


def host_uuid(capabilities_xml: str) -> str | None:
    """The host's UUID from ``virConnectGetCapabilities`` (SMBIOS, or libvirtd's ``host_uuid``);
    None when the driver gives none (libvirt's test driver)."""
    return (ET.fromstring(capabilities_xml).findtext("host/uuid") or "").strip() or None


def guest_virt_types(capabilities_xml: str) -> list[str]:
    """Domain types (kvm, qemu, test, ...) the host offers for guests, best first."""
    found = {d.get("type", "") for d in ET.fromstring(capabilities_xml).iter("domain")} - {""}
    preference = {"kvm": 0, "qemu": 1}
    return sorted(found, key=lambda t: (preference.get(t, 2), t))


def domain_cpu_models(domcaps_xml: str) -> tuple[str | None, list[str]]:
    """(host-model name, usable custom models) from ``virConnectGetDomainCapabilities``."""
    root = ET.fromstring(domcaps_xml)
    host_model = None
    usable: list[str] = []
    for mode in root.findall("cpu/mode"):
        if mode.get("name") == "host-model" and mode.get("supported") == "yes":
            host_model = mode.findtext("model")
        if mode.get("name") == "custom":
            usable = [m.text or "" for m in mode.findall("model") if m.get("usable") == "yes"]
    return host_model, sorted(m for m in usable if m)


def pool_type_and_path(pool_xml: str) -> tuple[str, str | None]:
    root = ET.fromstring(pool_xml)
    return root.get("type", "unknown"), root.findtext("target/path")


def network_forward_mode(network_xml: str) -> str | None:
    forward = ET.fromstring(network_xml).find("forward")
    return None if forward is None else forward.get("mode", "nat")


def domain_facts(domain_xml: str) -> DomainXmlFacts:
    root = ET.fromstring(domain_xml)
    cpu = root.find("cpu")
    return DomainXmlFacts(
        virt_type=root.get("type", "unknown"),
        vcpus=int(root.findtext("vcpu", "0") or 0),
        disks=[_disk(d) for d in root.findall("devices/disk")],
        interfaces=[_interface(i) for i in root.findall("devices/interface")],
        cpu_xml=None if cpu is None else ET.tostring(cpu, encoding="unicode"),
        migration_blockers=migration_blockers(root),
    )


# Devices that tie a guest to its host: QEMU refuses to migrate with them attached.
_BLOCKING_DEVICES = {
    "hostdev": "a passed-through host device (<hostdev>)",
    "filesystem": "a shared host directory (<filesystem>)",
    "shmem": "host shared memory (<shmem>)",
}


def migration_blockers(root: ET.Element) -> list[str]:
    found = [text for tag, text in _BLOCKING_DEVICES.items() if root.find(f"devices/{tag}") is not None]
    if any(i.get("type") == "hostdev" for i in root.findall("devices/interface")):
        found.append("a passed-through network device (<interface type='hostdev'>)")
    return found


def _disk(disk: ET.Element) -> DiskInfo:
    source = disk.find("source")
    driver = disk.find("driver")
    source_type = disk.get("type", "file")
    target = disk.find("target")
    return DiskInfo(
        target=target.get("dev", "") if target is not None else "",
        device=disk.get("device", "disk"),
        source_type=source_type,
        source_path=_disk_source_path(source_type, source),
        format=None if driver is None else driver.get("type"),
        pool=None if source is None else source.get("pool"),
        readonly=disk.find("readonly") is not None,
        shareable=disk.find("shareable") is not None,
    )


def _disk_source_path(source_type: str, source: ET.Element | None) -> str | None:
    if source is None:
        return None
    attribute = {"file": "file", "block": "dev", "dir": "dir", "network": "name"}.get(source_type)
    if attribute is None:  # volume: pool + volume name, resolved to a path by libvirt elsewhere
        return source.get("volume")
    return source.get(attribute)


def _interface(interface: ET.Element) -> InterfaceInfo:
    source = interface.find("source")
    kind = interface.get("type", "unknown")
    source_name = None
    if source is not None:
        source_name = source.get("bridge") or source.get("network") or source.get("dev")
    mac = interface.find("mac")
    model = interface.find("model")
    return InterfaceInfo(
        type=kind,
        source=source_name,
        mac=None if mac is None else mac.get("address"),
        model=None if model is None else model.get("type"),
    )
