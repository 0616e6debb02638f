"""A fake hypervisor for fast unit tests of agent logic (never a stand-in for the lab tests).

It answers like :class:`baton.agent.libvirt.LibvirtHypervisor` where libvirt's test driver can
tell (``tests/contract/test_hypervisor_contract.py`` runs both): an unknown domain is
``not_found`` (except for ``remove_domain``, which answers False), ``domains(None)`` is sorted by
name and a CPU definition is only given when asked for, every call while disconnected is
``unavailable``, and ``verdict=None`` plays a driver that cannot compare CPUs (``unsupported``).
``baseline_cpu`` plays libvirt's baseline over a small CPU map (:data:`CPU_MODELS`): the common
features, the richest model within them, every feature listed; the refusals are libvirt's.
"""

from __future__ import annotations

import asyncio
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from baton.agent.hypervisor import BaselineResult, CpuVerdict, GuestCpu, HostFacts
from baton.schemas.agent import (
    BaselineApi,
    CpuCompatibility,
    CpuInfo,
    DomainInfo,
    DomainState,
    Memory,
    Versions,
)
from baton.schemas.errors import BatonError, ErrorCode

_WESTMERE = frozenset({"apic", "cx8", "fpu", "lm", "nx", "sse", "sse2", "syscall", "aes", "sse4.2"})
_HASWELL = _WESTMERE | {"avx", "avx2", "fma", "bmi1"}
# A toy CPU map: (vendor, features) of each model, as libvirt's cpu_map names them.
CPU_MODELS: dict[str, tuple[str | None, frozenset[str]]] = {
    "qemu64": (None, frozenset({"apic", "cx8", "fpu", "lm", "nx", "sse", "sse2", "svm",
                                "syscall"})),
    "Westmere": ("Intel", _WESTMERE),
    "Haswell-noTSX": ("Intel", _HASWELL),
    "EPYC": ("AMD", _HASWELL | {"svm", "sha-ni", "sse4a"}),
}


def _hypervisor_error(message: str) -> BatonError:
    return BatonError(ErrorCode.HYPERVISOR, f"computing a CPU baseline: {message}")


def _host_cpu_features(cpu_xml: str) -> tuple[str | None, frozenset[str]]:
    """(vendor given, every feature) of a host-style <cpu>, refused as libvirt refuses it."""
    try:
        root = ET.fromstring(cpu_xml)
    except ET.ParseError as exc:
        raise _hypervisor_error(f"(CPU_definition): {exc}") from None
    if root.tag != "cpu" or not root.findtext("arch"):
        raise _hypervisor_error("XML error: Missing CPU architecture")
    model = root.findtext("model")
    if not model:
        raise _hypervisor_error("XML error: Missing CPU model name")
    if model not in CPU_MODELS:
        raise _hypervisor_error(f"internal error: Unknown CPU model {model}")
    extra = {f.get("name", "") for f in root.findall("feature")} - {""}
    return root.findtext("vendor"), CPU_MODELS[model][1] | extra


def fake_baseline(cpu_xmls: list[str]) -> str:
    """The baseline's guest <cpu>, features expanded, over :data:`CPU_MODELS`."""
    if not cpu_xmls:
        raise _hypervisor_error("invalid argument: no CPUs given")
    cpus = [_host_cpu_features(xml) for xml in cpu_xmls]
    vendors = {vendor for vendor, _ in cpus if vendor}
    if len(vendors) > 1:
        raise _hypervisor_error("operation failed: CPU vendors do not match")
    common = frozenset.intersection(*(features for _, features in cpus))
    fitting = [(len(f), name) for name, (v, f) in CPU_MODELS.items()
               if f <= common and (v is None or not vendors or v in vendors)]
    if not fitting:
        raise _hypervisor_error("operation failed: no CPU model fits the CPUs' common features")
    root = ET.Element("cpu", mode="custom", match="exact")
    ET.SubElement(root, "model", fallback="forbid").text = max(fitting)[1]
    for vendor in vendors:
        ET.SubElement(root, "vendor").text = vendor
    for name in sorted(common):
        ET.SubElement(root, "feature", policy="require", name=name)
    return ET.tostring(root, encoding="unicode")


@dataclass
class FakeHypervisor:
    uri: str = "fake:///"
    connected: bool = True
    verdict: CpuVerdict | None = field(
        default_factory=lambda: CpuVerdict(CpuCompatibility.SUPERSET, "fine"))
    guests: dict[str, GuestCpu] = field(default_factory=dict)  # running domains, by their CPU
    defined: dict[str, DomainInfo] = field(default_factory=dict)  # domains with every fact
    host_fact_reads: int = 0
    compared: list[tuple[str, str | None]] = field(default_factory=list)
    pool_refreshes: int = 0
    baselined: list[list[str]] = field(default_factory=list)  # every baseline_cpu call's CPUs

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def wait_connected(self, within_s: float) -> bool:
        return self.connected

    def _require_connection(self) -> None:
        if not self.connected:
            raise BatonError(ErrorCode.UNAVAILABLE, "fake libvirt is down")

    async def host_facts(self) -> HostFacts:
        self._require_connection()
        self.host_fact_reads += 1
        return HostFacts(
            hostname="fakehost",
            cpu=CpuInfo(arch="x86_64", vendor="AMD", model="EPYC"),
            versions=Versions(libvirt="9.0.0", hypervisor="10.0.2", hypervisor_type="QEMU",
                              agent="0.1.0"),
            memory=Memory(total_bytes=8 << 30, free_bytes=4 << 30))

    def _known(self) -> dict[str, DomainInfo]:
        running = {name: _running_domain(name, cpu) for name, cpu in self.guests.items()}
        return running | self.defined

    def _lookup(self, name: str) -> DomainInfo:
        known = self._known()
        if name not in known:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {name!r} on this host")
        return known[name]

    async def page_digests(self, vm: str, pages: Sequence[int]) -> list[bytes]:
        """As the test driver: a running domain's every page reads the same non-zero bytes."""
        self._require_connection()
        domain = self._lookup(vm)
        if not domain.active:
            raise BatonError(ErrorCode.HYPERVISOR, f"reading the memory of {vm}: Requested "
                             "operation is not valid: domain is not running")
        return [hashlib.blake2b(b"\x01" * 4096, digest_size=8).digest() for _ in pages]

    async def domains(self, names: list[str] | None, include_cpu_xml: bool) -> list[DomainInfo]:
        self._require_connection()
        wanted = sorted(self._known()) if names is None else names
        found = [self._lookup(name) for name in wanted]
        return found if include_cpu_xml else [msgspec.structs.replace(d, cpu_xml=None)
                                              for d in found]

    async def guest_cpu(self, domain: str) -> GuestCpu:
        self._require_connection()
        if domain in self.guests:
            return self.guests[domain]
        info = self._lookup(domain)
        return GuestCpu(info.cpu_xml, info.virt_type)

    async def migratable_xml(self, vm: str, inactive: bool) -> str:
        self._require_connection()
        return definition_xml(self._lookup(vm))

    async def compare_cpu(self, cpu_xml: str, virt_type: str | None) -> CpuVerdict:
        self._require_connection()
        if self.verdict is None:
            raise BatonError(ErrorCode.UNSUPPORTED, "comparing CPUs: this function is not "
                             "supported by the connection driver")
        self.compared.append((cpu_xml, virt_type))
        return self.verdict

    async def baseline_cpu(self, cpu_xmls: list[str]) -> BaselineResult:
        self._require_connection()
        self.baselined.append(cpu_xmls)
        return BaselineResult(fake_baseline(cpu_xmls), BaselineApi.CPU_MAP)

    async def running_domain_count(self) -> int:
        self._require_connection()
        return sum(d.active for d in self._known().values())

    async def remove_domain(self, vm: str, uuid: str) -> bool:
        """Destroy and undefine the domain with that UUID; False when there is none, conflict
        when it has another name (like libvirt's adapter)."""
        self._require_connection()
        [found] = [d for d in self._known().values() if d.uuid == uuid] or [None]
        if found is None:
            return False
        if found.name != vm:
            raise BatonError(ErrorCode.CONFLICT, f"the domain with UUID {uuid} here is "
                             f"{found.name!r}, not {vm!r}: not removed")
        if found.state == DomainState.RUNNING:
            raise BatonError(ErrorCode.CONFLICT, f"{vm} is running on this host: a clean-up "
                             "never destroys a running guest")
        had_guest = self.guests.pop(vm, None) is not None
        return self.defined.pop(vm, None) is not None or had_guest

    async def refresh_pools(self) -> None:
        self._require_connection()
        self.pool_refreshes += 1


def definition_xml(info: DomainInfo) -> str:
    """A domain definition with the facts ``info`` holds (its name, UUID and file disks)."""
    root = ET.Element("domain", type=info.virt_type or "kvm")
    ET.SubElement(root, "name").text = info.name
    ET.SubElement(root, "uuid").text = info.uuid
    devices = ET.SubElement(root, "devices")
    for disk in info.disks:
        element = ET.SubElement(devices, "disk", type=disk.source_type, device=disk.device)
        ET.SubElement(element, "driver", name="qemu", type=disk.format or "raw")
        if disk.source_path:
            ET.SubElement(element, "source", file=disk.source_path)
        ET.SubElement(element, "target", dev=disk.target, bus="virtio")
    return ET.tostring(root, encoding="unicode")


def _running_domain(name: str, cpu: GuestCpu) -> DomainInfo:
    return DomainInfo(name=name, uuid=f"uuid-{name}", state=DomainState.RUNNING, active=True,
                      persistent=True, memory_kib=0, max_memory_kib=0, vcpus=1,
                      virt_type=cpu.virt_type, cpu_xml=cpu.cpu_xml)
