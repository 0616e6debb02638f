"""Scripted fake agents for the coordinator's integration tests.

Each :class:`FakeAgent` is a real ``nats.micro`` service answering the agent subjects from
``schemas.subjects`` with canned facts, and records every request it gets. A source agent runs a
:class:`Script` when asked to start: SourceProgress figures, then the destination's resumed/migrated
lifecycle event and a SourceFinished — or a failure, or a hang until aborted. Disk files and
shared-storage tokens live in one :class:`FakeStorage` the hosts share, so the token probe proves
exactly the directories marked shared. These are stand-ins for the agent contract, never for the
lab tests against real QEMU.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
from nats.micro import ServiceConfig, add_service
from nats.micro.service import EndpointConfig

from baton.mesh.daemon import announce_ready
from baton.mesh.rpc import typed_handler
from baton.schemas.agent import (
    AgentStatus,
    Bridge,
    CapsRequest,
    CpuCompareReply,
    CpuCompareRequest,
    CpuCompatibility,
    CpuInfo,
    DiskInfo,
    DomainInfo,
    DomainsReply,
    DomainsRequest,
    DomainState,
    HostCaps,
    InterfaceInfo,
    Memory,
    Network,
    PathProbe,
    StatusRequest,
    StoragePool,
    StorageProbeReply,
    StorageProbeRequest,
    TokenAction,
    TokenResult,
    Versions,
)
from baton.schemas.base import utc_now
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.events import JobStats, LifecycleEvent, LifecycleKind
from baton.schemas.migration import (
    Ack,
    AgentAbortRequest,
    CleanupReply,
    CleanupRequest,
    PrepareReply,
    PrepareRequest,
    SourceFinished,
    SourceProgress,
    SpeedRequest,
    StartReply,
    StartRequest,
)
from baton.schemas.storage import (
    AgentStorageAbortRequest,
    AgentStorageMoveReply,
    AgentStorageMoveRequest,
    DiskOutcome,
    StorageMoveFinished,
    StorageStage,
    StorageStageEvent,
)
from baton.schemas.subjects import AGENT_SERVICE, AgentEndpoint, EventName, MigrationEvent, Subjects

GIB = 1024**3
IMAGES = "/var/lib/libvirt/images"
FAST = "/var/lib/libvirt/pools/fast"
SHARED = "/srv/shared"
LIBVIRT_FAILURE = "operation failed: migration out job: unexpectedly failed"
LIBVIRT_ABORTED = "operation aborted: migration out job: canceled by client"


@dataclass
class Script:
    """What a source agent does after migration.start."""

    steps: int = 3
    interval_s: float = 0.1
    outcome: str = "success"  # success | fail | hang (until aborted)
    silence_s: float = 0.0  # a pause without any report after the first figure
    resume_lead_s: float = 0.2  # destination resumes this long before the source returns


@dataclass
class FakeStorage:
    shared_dirs: set[str] = field(default_factory=lambda: {SHARED})
    files: dict[str, set[str]] = field(default_factory=dict)  # scope (host or "shared") -> paths
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def scope(self, host: str, path: str) -> str:
        return "shared" if os.path.dirname(path) in self.shared_dirs else host

    def exists(self, host: str, path: str) -> bool:
        return path in self.files.get(self.scope(host, path), set())

    def add(self, host: str, path: str) -> None:
        self.files.setdefault(self.scope(host, path), set()).add(path)

    def remove(self, host: str, path: str) -> None:
        self.files.get(self.scope(host, path), set()).discard(path)


def host_caps(host: str, *, bridges: tuple[str, ...] = ("br0",), memory_gib: float = 8,
              pool_free_gib: float = 100) -> HostCaps:
    return HostCaps(
        host_id=host, hostname=host, migration_uri=f"qemu+tcp://10.77.0.{host[-1]}/system",
        cpu=CpuInfo(arch="x86_64", vendor="AMD", model="EPYC"),
        versions=Versions(libvirt="10.0.0", hypervisor="8.2.2", hypervisor_type="QEMU",
                          agent="0.1.0"),
        memory=Memory(total_bytes=16 * GIB, free_bytes=int(memory_gib * GIB),
                      available_bytes=int(memory_gib * GIB)),
        bridges=[Bridge(name=b, up=True, mtu=1500) for b in bridges],
        networks=[Network(name="default", active=True, bridge="virbr0")],
        pools=[StoragePool(name="default", type="dir", target_path=IMAGES, active=True,
                           available_bytes=int(pool_free_gib * GIB)),
               StoragePool(name="fast", type="dir", target_path=FAST, active=True,
                           available_bytes=int(pool_free_gib * GIB))],
        collected_at=utc_now())


def domain(name: str, *, directory: str = IMAGES, state: DomainState = DomainState.RUNNING,
           memory_gib: float = 1, bridge: str = "br0", blockers: tuple[str, ...] = (),
           persistent: bool = True) -> DomainInfo:
    return DomainInfo(
        name=name, uuid=f"uuid-{name}", state=state, active=state != DomainState.SHUTOFF,
        persistent=persistent, memory_kib=int(memory_gib * 1024 * 1024),
        max_memory_kib=int(memory_gib * 1024 * 1024), vcpus=1, virt_type="kvm",
        disks=[DiskInfo(target="vda", device="disk", source_type="file",
                        source_path=f"{directory}/{name}.qcow2", format="qcow2",
                        capacity_bytes=10 * GIB)],
        interfaces=[InterfaceInfo(type="bridge", source=bridge)],
        cpu_xml="<cpu mode='custom'><model>EPYC</model></cpu>",
        migration_blockers=list(blockers))


class FakeAgent:
    def __init__(self, host: str, mesh: Mesh, caps: HostCaps) -> None:
        self.host = host
        self.mesh = mesh
        self.caps_reply = caps
        self.domains: dict[str, DomainInfo] = {}
        self.requests: list[tuple[AgentEndpoint, Any]] = []
        self.cpu_reply = CpuCompareReply(host_id=host, result=CpuCompatibility.SUPERSET,
                                         runnable=True, reason="host CPU offers every feature")
        self.cpu_error: BatonError | None = None
        self.script = Script()
        self.abort_requested = asyncio.Event()
        self.nc: Any = None

    def asked(self, endpoint: AgentEndpoint) -> list[Any]:
        return [r for e, r in self.requests if e == endpoint]

    def add_domain(self, info: DomainInfo) -> None:
        self.domains[info.name] = info
        for disk in info.disks:
            self.mesh.storage.add(self.host, disk.source_path or "")

    async def serve(self, url: str, tasks: asyncio.TaskGroup) -> None:
        self.nc = await nats.connect(url, name=f"fake-agent-{self.host}")
        service = await add_service(self.nc, ServiceConfig(
            name=AGENT_SERVICE, version="0.1.0", metadata={"host_id": self.host}))
        routes = (
            (AgentEndpoint.CAPS, CapsRequest, self.caps),
            (AgentEndpoint.DOMAINS, DomainsRequest, self.list_domains),
            (AgentEndpoint.STATUS, StatusRequest, self.status),
            (AgentEndpoint.STORAGE_PROBE, StorageProbeRequest, self.storage_probe),
            (AgentEndpoint.CPU_COMPARE, CpuCompareRequest, self.cpu_compare),
            (AgentEndpoint.MIGRATION_PREPARE, PrepareRequest, self.prepare),
            (AgentEndpoint.MIGRATION_START, StartRequest, self.start),
            (AgentEndpoint.MIGRATION_SPEED, SpeedRequest, self.speed),
            (AgentEndpoint.MIGRATION_ABORT, AgentAbortRequest, self.abort),
            (AgentEndpoint.MIGRATION_CLEANUP, CleanupRequest, self.cleanup),
            (AgentEndpoint.STORAGE_MOVE, AgentStorageMoveRequest, self.storage_move),
            (AgentEndpoint.STORAGE_ABORT, AgentStorageAbortRequest, self.storage_abort),
        )
        self._tasks = tasks
        for endpoint, request_type, handle in routes:
            await service.add_endpoint(EndpointConfig(
                name=endpoint.value.replace(".", "-"),
                subject=self.mesh.subjects.agent(self.host, endpoint),
                handler=typed_handler(request_type, self._recorded(endpoint, handle), tasks)))

    def _recorded(self, endpoint: AgentEndpoint, handle: Any) -> Any:
        async def recorded(request: Any) -> Any:
            self.requests.append((endpoint, request))
            return await handle(request)
        return recorded

    # --- read-only endpoints -------------------------------------------------------------------

    async def caps(self, _request: CapsRequest) -> HostCaps:
        return self.caps_reply

    async def status(self, _request: StatusRequest) -> AgentStatus:
        return AgentStatus(host_id=self.host, agent_version="0.1.0", started_at=utc_now(),
                           libvirt_connected=True, libvirt_uri="fake:///",
                           heartbeat_interval_s=5.0)

    async def list_domains(self, request: DomainsRequest) -> DomainsReply:
        names = request.names if request.names is not None else list(self.domains)
        missing = [n for n in names if n not in self.domains]
        if missing:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {missing[0]!r}")
        return DomainsReply(host_id=self.host, domains=[self.domains[n] for n in names])

    async def storage_probe(self, request: StorageProbeRequest) -> StorageProbeReply:
        storage = self.mesh.storage
        token = None
        if request.token is not None:
            op = request.token
            key = (storage.scope(self.host, op.beside), os.path.dirname(op.beside))
            if op.action == TokenAction.WRITE:
                storage.tokens[key] = op.token
            elif op.action == TokenAction.REMOVE:
                storage.tokens.pop(key, None)
            ok = op.action != TokenAction.READ or storage.tokens.get(key) == op.token
            token = TokenResult(action=op.action, token_path=f"{key[1]}/.baton-probe", ok=ok)
        paths = [PathProbe(path=p, exists=storage.exists(self.host, p), fs_free_bytes=50 * GIB)
                 for p in request.paths]
        return StorageProbeReply(host_id=self.host, paths=paths, token=token)

    async def cpu_compare(self, _request: CpuCompareRequest) -> CpuCompareReply:
        if self.cpu_error is not None:
            raise self.cpu_error
        return self.cpu_reply

    # --- migration endpoints -------------------------------------------------------------------

    async def prepare(self, request: PrepareRequest) -> PrepareReply:
        storage = self.mesh.storage
        for disk in request.disks:
            if storage.exists(self.host, disk.path):
                raise BatonError(ErrorCode.CONFLICT, f"{disk.path} already exists")
        for disk in request.disks:
            storage.add(self.host, disk.path)
        return PrepareReply(created_paths=[d.path for d in request.disks])

    async def start(self, request: StartRequest) -> StartReply:
        if request.vm not in self.domains:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {request.vm!r}")
        self.abort_requested.clear()
        self._tasks.create_task(self._run_script(request))
        return StartReply(migration_id=request.migration_id)

    async def speed(self, _request: SpeedRequest) -> Ack:
        return Ack()

    async def abort(self, _request: AgentAbortRequest) -> Ack:
        self.abort_requested.set()
        return Ack(detail="abort requested")

    async def cleanup(self, request: CleanupRequest) -> CleanupReply:
        removed = bool(request.remove_domain and self.domains.pop(request.vm, None))
        for path in request.delete_paths:
            self.mesh.storage.remove(self.host, path)
        return CleanupReply(domain_removed=removed, deleted_paths=list(request.delete_paths))

    # --- the scripted migration ----------------------------------------------------------------

    async def _run_script(self, request: StartRequest) -> None:
        script = self.script
        for step in range(script.steps):
            if self.abort_requested.is_set():
                return await self._finish(request, aborted=True)
            await self._progress(request, step, script.steps)
            await asyncio.sleep(script.silence_s if step == 0 and script.silence_s
                                else script.interval_s)
        if script.outcome == "hang":
            await self.abort_requested.wait()
            return await self._finish(request, aborted=True)
        if script.outcome == "fail":
            return await self._finish(request, error=ErrorReply(
                code=ErrorCode.HYPERVISOR, message=LIBVIRT_FAILURE))
        await self._switch_over(request)
        await asyncio.sleep(script.resume_lead_s)
        await self._finish(request)

    async def _progress(self, request: Any, step: int, steps: int) -> None:
        total = 2 * GIB
        done = total * (step + 1) // (steps + 1)
        stats = JobStats(operation="migration_out", time_elapsed_ms=100 * (step + 1),
                         data_total_bytes=total, data_processed_bytes=done,
                         data_remaining_bytes=total - done, memory_bps=100 * 1024**2,
                         memory_iteration=step + 1)
        await self._publish_migration(request, MigrationEvent.SOURCE_PROGRESS, SourceProgress(
            migration_id=request.migration_id, host_id=self.host, at=utc_now(), stats=stats))

    async def _switch_over(self, request: StartRequest) -> None:
        destination = self.mesh.by_uri(request.destination_uri)
        moved = self.domains[request.vm]
        state = DomainState.RUNNING if request.live else DomainState.SHUTOFF
        destination.domains[request.vm] = msgspec.structs.replace(
            moved, state=state, active=request.live, persistent=request.persistent)
        if request.live:
            await destination.lifecycle(request.vm, LifecycleKind.RESUMED, "migrated")
        if request.undefine_source or not moved.persistent:
            del self.domains[request.vm]
        else:
            self.domains[request.vm] = msgspec.structs.replace(
                moved, state=DomainState.SHUTOFF, active=False)

    async def _finish(self, request: StartRequest, aborted: bool = False,
                      error: ErrorReply | None = None) -> None:
        if aborted:
            error = ErrorReply(code=ErrorCode.HYPERVISOR, message=LIBVIRT_ABORTED)
        stats = None if error else JobStats(operation="migration_out", time_elapsed_ms=1234,
                                            downtime_ms=42, data_processed_bytes=2 * GIB)
        await self._publish_migration(request, MigrationEvent.SOURCE_FINISHED, SourceFinished(
            migration_id=request.migration_id, host_id=self.host, at=utc_now(), stats=stats,
            error=error, aborted=aborted))

    async def _publish_migration(self, request: Any, event: MigrationEvent,
                                 message: Any) -> None:
        await self.nc.publish(self.mesh.subjects.migration(request.migration_id, event),
                              encode(message))

    # --- the scripted storage move ------------------------------------------------------------

    async def storage_move(self, request: AgentStorageMoveRequest) -> AgentStorageMoveReply:
        if request.vm not in self.domains:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {request.vm!r}")
        self.abort_requested.clear()
        self._tasks.create_task(self._run_storage_script(request))
        return AgentStorageMoveReply(migration_id=request.migration_id)

    async def storage_abort(self, _request: AgentStorageAbortRequest) -> Ack:
        self.abort_requested.set()
        return Ack(detail="abort requested")

    async def _run_storage_script(self, request: AgentStorageMoveRequest) -> None:
        script = self.script
        await self._stage(request, StorageStage.COPYING)
        for step in range(script.steps):
            if self.abort_requested.is_set():
                return await self._storage_finished(request, aborted=True)
            await self._progress(request, step, script.steps)
            await asyncio.sleep(script.interval_s)
        if script.outcome == "hang":
            await self.abort_requested.wait()
            return await self._storage_finished(request, aborted=True)
        if script.outcome == "fail":
            return await self._storage_finished(request, error=ErrorReply(
                code=ErrorCode.HYPERVISOR, message=LIBVIRT_FAILURE))
        await self._stage(request, StorageStage.READY)
        self._repoint(request)
        await self._stage(request, StorageStage.PIVOTED)
        await self._storage_finished(request)

    def _repoint(self, request: AgentStorageMoveRequest) -> None:
        new = {d.target: d.destination_path for d in request.disks}
        vm = self.domains[request.vm]
        self.domains[request.vm] = msgspec.structs.replace(vm, disks=[
            msgspec.structs.replace(d, source_path=new.get(d.target, d.source_path))
            for d in vm.disks])

    async def _stage(self, request: AgentStorageMoveRequest, stage: StorageStage) -> None:
        await self._publish_migration(request, MigrationEvent.STORAGE_STAGE, StorageStageEvent(
            migration_id=request.migration_id, host_id=self.host, at=utc_now(), stage=stage))

    async def _storage_finished(self, request: AgentStorageMoveRequest, aborted: bool = False,
                                error: ErrorReply | None = None) -> None:
        ok = not aborted and error is None
        disks = [DiskOutcome(target=d.target, pivoted=ok, source_deleted=ok,
                             copy_removed=not ok,
                             path=d.destination_path if ok else d.source_path)
                 for d in request.disks]
        await self._publish_migration(request, MigrationEvent.STORAGE_FINISHED, StorageMoveFinished(
            migration_id=request.migration_id, host_id=self.host, at=utc_now(), disks=disks,
            error=error, aborted=aborted))

    async def lifecycle(self, vm: str, kind: LifecycleKind, detail: str) -> None:
        event = LifecycleEvent(host_id=self.host, vm=vm, uuid=f"uuid-{vm}", event=kind,
                               detail=detail, at=utc_now())
        await self.nc.publish(self.mesh.subjects.events(self.host, vm, EventName.LIFECYCLE),
                              encode(event))


class Mesh:
    """The fake hosts of one test and the storage they share."""

    def __init__(self, subjects: Subjects | None = None) -> None:
        self.subjects = subjects or Subjects()
        self.storage = FakeStorage()
        self.agents: dict[str, FakeAgent] = {}

    def add(self, host: str, **caps: Any) -> FakeAgent:
        agent = FakeAgent(host, self, host_caps(host, **caps))
        self.agents[host] = agent
        return agent

    def __getitem__(self, host: str) -> FakeAgent:
        return self.agents[host]

    def by_uri(self, uri: str) -> FakeAgent:
        return next(a for a in self.agents.values() if a.caps_reply.migration_uri == uri)

    async def serve(self, url: str, ready: asyncio.Event, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                for agent in self.agents.values():
                    await agent.serve(url, tasks)
                    await announce_ready(agent.nc)
                ready.set()
                await stop.wait()
                for agent in self.agents.values():
                    await agent.nc.drain()
                raise _Stopped  # cancels the scripted migrations still running
        except* _Stopped:
            pass


class _Stopped(Exception):
    pass
