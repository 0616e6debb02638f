"""What the agent answers: the domain logic behind each endpoint, free of NATS.

Host capabilities are cached for :data:`CAPS_TTL_S` (libvirt facts cost several round trips;
pre-flight checks ask often) unless the request asks for a refresh. Filesystem work runs in
threads. A CPU comparison for a domain on another host fetches that domain's migratable CPU from
its agent through ``fetch_remote_domain``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from baton.agent import AGENT_VERSION, cpu_baseline, hostfacts, ownership, storage_probe
from baton.agent.disks import with_image_sizes
from baton.agent.hypervisor import Hypervisor
from baton.schemas.agent import (
    AgentStatus,
    CapsRequest,
    CpuBaselineReply,
    CpuBaselineRequest,
    CpuCompareReply,
    CpuCompareRequest,
    CpuCompatibility,
    DomainInfo,
    DomainsReply,
    DomainsRequest,
    HostCaps,
    Memory,
    StatusRequest,
    StorageProbeReply,
    StorageProbeRequest,
    TokenAction,
)
from baton.schemas.base import utc_now
from baton.schemas.errors import BatonError, ErrorCode

CAPS_TTL_S = 2.0
FetchRemoteDomain = Callable[[str, str], Awaitable[DomainInfo]]

log = structlog.get_logger(__name__)


class AgentCore:
    def __init__(self, host_id: str, hypervisor: Hypervisor, migration_uri: str,
                 fetch_remote_domain: FetchRemoteDomain, heartbeat_interval_s: float,
                 reserved_memory_bytes: int = 0) -> None:
        self.host_id = host_id
        self._hv = hypervisor
        self._migration_uri = migration_uri
        self._fetch_remote_domain = fetch_remote_domain
        self._caps: tuple[float, HostCaps] | None = None
        self._caps_lock = asyncio.Lock()
        self._reserved_memory_bytes = reserved_memory_bytes
        self.started_at = utc_now()
        self.heartbeat_interval_s = heartbeat_interval_s
        self.last_heartbeat_at: datetime | None = None

    async def caps(self, request: CapsRequest) -> HostCaps:
        # A fresh cache answers without the lock: the common case, on every pre-flight fan-out.
        if (fresh := self._fresh_caps(request)) is not None:
            return fresh
        async with self._caps_lock:  # concurrent askers share one libvirt read
            if (fresh := self._fresh_caps(request)) is None:
                fresh = await self._read_caps()
                self._caps = (time.monotonic(), fresh)
        return fresh

    def _fresh_caps(self, request: CapsRequest) -> HostCaps | None:
        cached = self._caps
        if request.refresh or cached is None or time.monotonic() - cached[0] > CAPS_TTL_S:
            return None
        return cached[1]

    async def _read_caps(self) -> HostCaps:
        facts = await self._hv.host_facts()
        bridges = await asyncio.to_thread(hostfacts.bridges)
        migration_tls = await asyncio.to_thread(hostfacts.migration_tls_ready)
        return HostCaps(host_id=self.host_id, hostname=facts.hostname,
                        migration_uri=self._migration_uri, migration_tls=migration_tls,
                        cpu=facts.cpu, versions=facts.versions,
                        memory=self._with_reserve(facts.memory), bridges=bridges, networks=facts.networks,
                        pools=facts.pools, collected_at=utc_now())

    def _with_reserve(self, memory: Memory) -> Memory:
        reserved = self._reserved_memory_bytes
        return Memory(total_bytes=memory.total_bytes, free_bytes=memory.free_bytes,
                      reserved_bytes=reserved,
                      available_bytes=max(0, memory.free_bytes - reserved))

    async def cpu_compare(self, request: CpuCompareRequest) -> CpuCompareReply:
        cpu_xml, virt_type = await self._guest_cpu(request)
        if cpu_xml is None:
            return CpuCompareReply(host_id=self.host_id, result=CpuCompatibility.SUPERSET,
                                   runnable=True, reason="the guest uses the hypervisor's default "
                                   "CPU model, which every host of this hypervisor runs")
        verdict = await self._hv.compare_cpu(cpu_xml, virt_type)
        return CpuCompareReply(host_id=self.host_id, result=verdict.result,
                               runnable=verdict.result != CpuCompatibility.INCOMPATIBLE,
                               reason=verdict.reason)

    async def cpu_baseline(self, request: CpuBaselineRequest) -> CpuBaselineReply:
        return await cpu_baseline.baseline_reply(self._hv, self.host_id, request)

    async def _guest_cpu(self, request: CpuCompareRequest) -> tuple[str | None, str | None]:
        if request.cpu_xml is not None:
            if request.domain is not None:
                raise BatonError(ErrorCode.BAD_REQUEST, "give either cpu_xml or domain, not both")
            return request.cpu_xml, None
        if request.domain is None:
            raise BatonError(ErrorCode.BAD_REQUEST, "give cpu_xml or domain")
        if request.domain_host in (None, self.host_id):
            guest = await self._hv.guest_cpu(request.domain)
            return guest.cpu_xml, guest.virt_type
        remote = await self._fetch_remote_domain(request.domain_host, request.domain)
        return remote.cpu_xml, remote.virt_type

    async def storage_probe(self, request: StorageProbeRequest) -> StorageProbeReply:
        if request.paths or (request.token is not None and request.token.action != TokenAction.READ):
            await self._refuse_outside_storage(request)
        def probe() -> StorageProbeReply:
            token = None if request.token is None else storage_probe.run_token_op(request.token)
            paths = [storage_probe.probe_path(p) for p in request.paths]
            return StorageProbeReply(host_id=self.host_id, paths=paths, token=token)
        return await asyncio.to_thread(probe)

    async def sweep_probe_tokens(self) -> list[str]:
        """Remove stale probe token files (a coordinator died mid-probe) from the directories a
        token may be written to: the active pools' and those of this host's domains' disks."""
        dirs = await self._token_dirs()
        removed = await asyncio.to_thread(storage_probe.sweep_stale_tokens, dirs, time.time())
        if removed:
            log.info("probe_tokens_swept", removed=removed)
        return removed

    async def _token_dirs(self) -> list[str]:
        pool_dirs = ownership.pool_dirs((await self.caps(CapsRequest())).pools)
        disks = [d.source_path for dom in await self._hv.domains(None, include_cpu_xml=False)
                 for d in dom.disks if d.source_path]
        return pool_dirs + [os.path.dirname(p) for p in disks]

    async def _refuse_outside_storage(self, request: StorageProbeRequest) -> None:
        """The probe is no way to learn about, make or delete files elsewhere: a path probed is
        a pool's directory, a file in one or a disk of this host's domains; a token file is
        written or removed only beside such a disk or in an active pool's directory."""
        pool_dirs = ownership.pool_dirs((await self.caps(CapsRequest())).pools)
        disks = [d.source_path for dom in await self._hv.domains(None, include_cpu_xml=False)
                 for d in dom.disks if d.source_path]
        token = request.token
        beside = [token.beside] if token is not None and token.action != TokenAction.READ else []
        if refused := await asyncio.to_thread(ownership.outside_dirs, beside,
                                              pool_dirs + [os.path.dirname(p) for p in disks]):
            raise BatonError(ErrorCode.FORBIDDEN, f"{refused[0]}: a probe token is written or "
                             "removed only beside this host's disks or in its pools' directories")
        if outside := await asyncio.to_thread(ownership.outside_storage, request.paths,
                                              pool_dirs, disks):
            raise BatonError(ErrorCode.FORBIDDEN, f"{', '.join(outside[:3])}: a probe looks only "
                             "at this host's pools, the files in them and its domains' disks")

    async def domains(self, request: DomainsRequest) -> DomainsReply:
        found = await self._hv.domains(request.names, request.include_cpu_xml)
        found = [await with_image_sizes(d) for d in found]
        return DomainsReply(host_id=self.host_id, domains=found)

    async def status(self, _request: StatusRequest) -> AgentStatus:
        return AgentStatus(host_id=self.host_id, agent_version=AGENT_VERSION,
                           started_at=self.started_at, libvirt_connected=self._hv.connected,
                           libvirt_uri=self._hv.uri, last_heartbeat_at=self.last_heartbeat_at,
                           heartbeat_interval_s=self.heartbeat_interval_s)
