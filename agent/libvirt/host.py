"""What libvirt tells about the host: hostname, CPU, versions, memory, networks, storage pools;
whether the host CPU can run a guest's CPU; refreshing the pools.

Facts that cannot change while a connection lives (hostname, CPU and its models, versions, virt
types) are read once per connection: :meth:`HostReader.forget` drops them when a new one opens.
Every call goes through :meth:`Connection.call` (a worker thread with a deadline).
"""

from __future__ import annotations

import contextlib
from typing import Any

import libvirt
import msgspec

from baton.agent import AGENT_VERSION, xmlparse
from baton.agent.hypervisor import BaselineResult, CpuVerdict, HostFacts
from baton.agent.libvirt import values as libvirt_values
from baton.agent.libvirt.connection import Connection
from baton.schemas.agent import (
    BaselineApi,
    CpuCompatibility,
    Memory,
    Network,
    StoragePool,
    Versions,
)

# hostname, CPU, versions, virt types, host UUID
_Static = tuple[str, Any, Versions, list[str], str | None]


class HostReader:
    """Host facts, with what cannot change cached for the life of one connection."""

    def __init__(self) -> None:
        self._static: _Static | None = None

    def forget(self) -> None:
        """A new connection opened: read the static facts again."""
        self._static = None

    async def facts(self, connection: Connection) -> HostFacts:
        return await connection.call("reading host facts", self._read_facts)

    async def compare_cpu(self, connection: Connection, cpu_xml: str,
                          virt_type: str | None) -> CpuVerdict:
        return await connection.call("comparing CPUs",
                                     lambda conn: self._compare_cpu(conn, cpu_xml, virt_type))

    async def baseline_cpu(self, connection: Connection, cpu_xmls: list[str]) -> BaselineResult:
        return await connection.call("computing a CPU baseline",
                                     lambda conn: self._baseline_cpu(conn, cpu_xmls))

    # --- blocking readers (worker threads) ----------------------------------------------------

    def _static_facts(self, conn: libvirt.virConnect) -> _Static:
        """Facts that cannot change while a connection lives: read once per connection."""
        if self._static is None:
            caps = conn.getCapabilities()
            cpu = xmlparse.host_cpu(caps)
            virt_types = xmlparse.guest_virt_types(caps)
            cpu = _with_domain_cpu_models(conn, cpu, virt_types)
            versions = Versions(libvirt=libvirt_values.version(conn.getLibVersion()),
                                hypervisor=libvirt_values.version(conn.getVersion()),
                                hypervisor_type=conn.getType(), agent=AGENT_VERSION)
            self._static = (conn.getHostname(), cpu, versions, virt_types, xmlparse.host_uuid(caps))
        return self._static

    def _read_facts(self, conn: libvirt.virConnect) -> HostFacts:
        hostname, cpu, versions, _, uuid = self._static_facts(conn)
        return HostFacts(hostname=hostname, cpu=cpu, versions=versions, memory=_memory(conn),
                         networks=_networks(conn), pools=_pools(conn), host_uuid=uuid)

    def _compare_cpu(self, conn: libvirt.virConnect, cpu_xml: str, virt_type: str | None) -> CpuVerdict:
        _, cpu, _, virt_types, _ = self._static_facts(conn)
        vtype = virt_type or (virt_types[0] if virt_types else None)
        result = conn.compareHypervisorCPU(None, cpu.arch, None, vtype, cpu_xml, 0)
        if result == libvirt.VIR_CPU_COMPARE_IDENTICAL:
            return CpuVerdict(CpuCompatibility.IDENTICAL, "the host CPU is identical to the guest CPU")
        if result == libvirt.VIR_CPU_COMPARE_SUPERSET:
            return CpuVerdict(CpuCompatibility.SUPERSET,
                              "the host provides every CPU feature the guest needs")
        return CpuVerdict(CpuCompatibility.INCOMPATIBLE, _incompatibility_reason(conn, cpu.arch,
                                                                                  vtype, cpu_xml))


    def _baseline_cpu(self, conn: libvirt.virConnect, cpu_xmls: list[str]) -> BaselineResult:
        """baselineHypervisorCPU for this host's hypervisor (its preferred virt type); a driver
        without it (libvirt's test driver, some others) gets the older baselineCPU, which knows
        libvirt's CPU map but not what the hypervisor can provide, and the result says so."""
        _, _, _, virt_types, _ = self._static_facts(conn)
        vtype = virt_types[0] if virt_types else None
        expand = libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES
        try:
            return BaselineResult(conn.baselineHypervisorCPU(None, None, None, vtype, cpu_xmls,
                                                             expand), BaselineApi.HYPERVISOR)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
        return BaselineResult(conn.baselineCPU(cpu_xmls, expand), BaselineApi.CPU_MAP)


async def refresh_pools(connection: Connection) -> None:
    def refresh(conn: libvirt.virConnect) -> None:
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            with contextlib.suppress(libvirt.libvirtError):  # busy: it refreshes next time
                pool.refresh(0)
    await connection.call("refreshing storage pools", refresh)


def _incompatibility_reason(conn: libvirt.virConnect, arch: str, vtype: str | None, xml: str) -> str:
    """Ask again with FAIL_INCOMPATIBLE: libvirt then names the missing features."""
    try:
        conn.compareHypervisorCPU(None, arch, None, vtype, xml,
                                  libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)
    except libvirt.libvirtError as exc:
        return exc.get_error_message() or "the host CPU cannot run the guest CPU"
    return "the host CPU cannot run the guest CPU"


def _with_domain_cpu_models(conn: libvirt.virConnect, cpu: Any, virt_types: list[str]) -> Any:
    for virt_type in virt_types:
        try:
            domcaps = conn.getDomainCapabilities(None, cpu.arch, None, virt_type, 0)
        except libvirt.libvirtError:
            continue  # unsupported driver or an accelerator that is present but unusable
        host_model, usable = xmlparse.domain_cpu_models(domcaps)
        return msgspec.structs.replace(cpu, host_model=host_model, usable_models=usable)
    return cpu


def _memory(conn: libvirt.virConnect) -> Memory:
    try:
        stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
    except libvirt.libvirtError:  # e.g. the test driver: fall back to node info
        return Memory(total_bytes=conn.getInfo()[1] * 1024 * 1024,
                      free_bytes=max(conn.getFreeMemory(), 0))
    return libvirt_values.memory_from_stats(stats)


def _networks(conn: libvirt.virConnect) -> list[Network]:
    out = []
    for net in conn.listAllNetworks():
        try:
            bridge = net.bridgeName()
        except libvirt.libvirtError:
            bridge = None  # networks of forward type hostdev/direct have no bridge
        out.append(Network(name=net.name(), active=bool(net.isActive()), bridge=bridge,
                           forward_mode=xmlparse.network_forward_mode(net.XMLDesc(0))))
    return sorted(out, key=lambda n: n.name)


def _pools(conn: libvirt.virConnect) -> list[StoragePool]:
    out = []
    for pool in conn.listAllStoragePools():
        kind, path = xmlparse.pool_type_and_path(pool.XMLDesc(0))
        _state, capacity, allocation, available = pool.info()
        out.append(StoragePool(name=pool.name(), type=kind, target_path=path,
                               active=bool(pool.isActive()), capacity_bytes=capacity,
                               allocation_bytes=allocation, available_bytes=available))
    return sorted(out, key=lambda p: p.name)
