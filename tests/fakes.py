"""A fake hypervisor for fast unit tests of agent logic (never a stand-in for the lab tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from baton.agent.hypervisor import CpuVerdict, GuestCpu, HostFacts
from baton.schemas.agent import CpuCompatibility, CpuInfo, DomainInfo, Memory, Versions
from baton.schemas.errors import BatonError, ErrorCode


@dataclass
class FakeHypervisor:
    uri: str = "fake:///"
    connected: bool = True
    verdict: CpuVerdict = field(
        default_factory=lambda: CpuVerdict(CpuCompatibility.SUPERSET, "fine"))
    guests: dict[str, GuestCpu] = field(default_factory=dict)
    host_fact_reads: int = 0
    compared: list[tuple[str, str | None]] = field(default_factory=list)

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

    async def domains(self, names: list[str] | None, include_cpu_xml: bool) -> list[DomainInfo]:
        self._require_connection()
        return []

    async def guest_cpu(self, domain: str) -> GuestCpu:
        self._require_connection()
        if domain not in self.guests:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {domain!r}")
        return self.guests[domain]

    async def compare_cpu(self, cpu_xml: str, virt_type: str | None) -> CpuVerdict:
        self._require_connection()
        self.compared.append((cpu_xml, virt_type))
        return self.verdict

    async def running_domain_count(self) -> int:
        self._require_connection()
        return len(self.guests)
