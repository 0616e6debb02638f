"""Scripted fake agents for the coordinator's integration tests.

Each :class:`FakeAgent` is a real ``nats.micro`` service answering the agent subjects from
``schemas.subjects`` with canned facts, and records every request it gets. A source agent runs a
:class:`Script` when asked to start: SourceProgress figures, then the destination's resumed/migrated
lifecycle event and a SourceFinished — or a failure, or a hang until aborted. Disk files and
shared-storage tokens live in one :class:`FakeStorage` the hosts share, so the token probe proves
exactly the directories marked shared. These are stand-ins for the agent contract, never for the
lab tests against real QEMU. cpu.baseline runs the agent's own code over the fake hypervisor's
small CPU map (``tests.fakes.CPU_MODELS``).

The scripts are fake; the refusals are not: a fake agent refuses what the real agent refuses, with
the same error code, in the same order (``tests/contract`` sends the same requests to both). It
reuses the agent's pure rules (:func:`plan_migration`, :func:`start_problems`) and plays the
filesystem with :class:`tests.integration.fake_storage.HostFiles`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
from nats.micro import ServiceConfig, add_service
from nats.micro.service import EndpointConfig, Service

from baton.agent import ownership
from baton.agent.cpu_baseline import baseline_reply
from baton.agent.ledger import Entry
from baton.agent.migration_plan import plan_migration
from baton.agent.prediction import modelled
from baton.agent.relocation import check_paths, relocate_disks
from baton.agent.start_cost import StartCost
from baton.agent.storage_move import start_problems
from baton.mesh.daemon import announce_ready
from baton.mesh.rpc import typed_handler
from baton.schemas.agent import (
    AgentStatus,
    Bridge,
    CapsRequest,
    CpuBaselineRequest,
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
    StatusRequest,
    StoragePool,
    StorageProbeReply,
    StorageProbeRequest,
    TokenAction,
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
    MigrationStatus,
    MigrationStatusRequest,
    PathFact,
    Prediction,
    PredictRequest,
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
from tests.fakes import FakeHypervisor, definition_xml
from tests.integration.fake_storage import GIB as GIB
from tests.integration.fake_storage import SHARED as SHARED
from tests.integration.fake_storage import FakeStorage, HostFiles

IMAGES = "/var/lib/libvirt/images"
FAST = "/var/lib/libvirt/pools/fast"
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
    final_escalations: list[str] = field(default_factory=list)  # said only in the outcome
    final_postcopy: bool = False  # the outcome says the move switched to post-copy
    postcopy_from_step: int | None = None  # progress says "switched to post-copy" from here
    abort_takes_s: float = 0.0  # a hanging job ends this long after its abort (libvirt's)
    abort_too_late: bool = False  # ... and then completes the move all the same (a lost race)


@dataclass
class Job:
    """A scripted job running on a fake host: a migration's source side or a storage move."""

    vm: str
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    pivoting: bool = False  # a storage move past its point of no return refuses an abort


def host_caps(host: str, *, bridges: tuple[str, ...] = ("br0",), memory_gib: float = 8,
              pool_free_gib: float = 100, migration_tls: bool = True,
              cpu_model: str = "EPYC", cpu_vendor: str = "AMD") -> HostCaps:
    cpu_xml = (f"<cpu><arch>x86_64</arch><model>{cpu_model}</model><vendor>{cpu_vendor}</vendor>"
               "</cpu>")
    return HostCaps(
        host_id=host, hostname=host, migration_uri=f"qemu+tcp://10.77.0.{host[-1]}/system",
        migration_tls=migration_tls,
        cpu=CpuInfo(arch="x86_64", vendor=cpu_vendor, model=cpu_model, xml=cpu_xml),
        versions=Versions(libvirt="10.0.0", hypervisor="8.2.2", hypervisor_type="QEMU",
                          agent="0.1.0"),
        memory=Memory(total_bytes=16 * GIB, free_bytes=int(memory_gib * GIB),
                      available_bytes=int(memory_gib * GIB)),
        bridges=[Bridge(name=b, up=True, mtu=1500) for b in bridges],
        networks=[Network(name="default", active=True, bridge="virbr0")],
        pools=[StoragePool(name="default", type="dir", target_path=IMAGES, active=True,
                           available_bytes=int(pool_free_gib * GIB)),
               StoragePool(name="fast", type="dir", target_path=FAST, active=True,
                           available_bytes=int(pool_free_gib * GIB)),
               # as in the lab: the shared mount is a pool on every host
               StoragePool(name="shared", type="dir", target_path=SHARED, active=True,
                           available_bytes=int(pool_free_gib * GIB))],
        collected_at=utc_now())


def fake_uuid(vm: str) -> str:
    """A libvirt-shaped UUID, the same for a VM name on every fake host."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"baton-fake:{vm}"))


def domain(name: str, *, directory: str = IMAGES, state: DomainState = DomainState.RUNNING,
           memory_gib: float = 1, bridge: str = "br0", blockers: tuple[str, ...] = (),
           persistent: bool = True) -> DomainInfo:
    return DomainInfo(
        name=name, uuid=fake_uuid(name), state=state, active=state != DomainState.SHUTOFF,
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
        self.cpus = FakeHypervisor()  # cpu.baseline's libvirt: the fakes' small CPU map
        self.caps_error: BatonError | None = None  # e.g. libvirt down on this host
        self.domains_error: BatonError | None = None
        self.script = Script()
        self.migrations: dict[str, Job] = {}  # running, by migration id (as the real agent's)
        self.moves: dict[str, Job] = {}  # storage moves running, by migration id
        self.ledger: dict[str, Entry] = {}  # what this host made, received, sent (agent/ledger.py)
        self.files = HostFiles(mesh.storage, host, lambda: {
            p.target_path for p in self.caps_reply.pools if p.target_path})
        self.nc: Any = None
        self.service: Service | None = None
        self.dirty_rate_mib_s = 2.0  # what a dirty-rate measurement of any running guest reads
        self.whole_share = 0.75  # the share of a guest's memory its sampled pages find not zero
        self.measuring: asyncio.Event | None = None  # when set: a prediction lasts until it is set
        self.predict_error: BatonError | None = None  # e.g. libvirt cannot measure this guest

    def asked(self, endpoint: AgentEndpoint) -> list[Any]:
        return [r for e, r in self.requests if e == endpoint]

    def add_domain(self, info: DomainInfo) -> None:
        self.domains[info.name] = info
        for disk in info.disks:
            self.mesh.storage.add(self.host, disk.source_path or "")

    async def serve(self, url: str, tasks: asyncio.TaskGroup) -> None:
        self.nc = await nats.connect(url, name=f"fake-agent-{self.host}")
        self.service = service = await add_service(self.nc, ServiceConfig(
            name=AGENT_SERVICE, version="0.1.0", metadata={"host_id": self.host}))
        routes = (
            (AgentEndpoint.CAPS, CapsRequest, self.caps),
            (AgentEndpoint.DOMAINS, DomainsRequest, self.list_domains),
            (AgentEndpoint.STATUS, StatusRequest, self.status),
            (AgentEndpoint.STORAGE_PROBE, StorageProbeRequest, self.storage_probe),
            (AgentEndpoint.CPU_COMPARE, CpuCompareRequest, self.cpu_compare),
            (AgentEndpoint.CPU_BASELINE, CpuBaselineRequest,
             lambda request: baseline_reply(self.cpus, self.host, request)),
            (AgentEndpoint.MIGRATION_PREPARE, PrepareRequest, self.prepare),
            (AgentEndpoint.MIGRATION_START, StartRequest, self.start),
            (AgentEndpoint.MIGRATION_SPEED, SpeedRequest, self.speed),
            (AgentEndpoint.MIGRATION_ABORT, AgentAbortRequest, self.abort),
            (AgentEndpoint.MIGRATION_CLEANUP, CleanupRequest, self.cleanup),
            (AgentEndpoint.MIGRATION_STATUS, MigrationStatusRequest, self.migration_status),
            (AgentEndpoint.MIGRATION_PREDICT, PredictRequest, self.predict),
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
        if self.caps_error is not None:
            raise self.caps_error
        return self.caps_reply

    async def status(self, _request: StatusRequest) -> AgentStatus:
        return AgentStatus(host_id=self.host, agent_version="0.1.0", started_at=utc_now(),
                           libvirt_connected=True, libvirt_uri="fake:///",
                           heartbeat_interval_s=5.0)

    async def list_domains(self, request: DomainsRequest) -> DomainsReply:
        if self.domains_error is not None:
            raise self.domains_error
        names = sorted(self.domains) if request.names is None else request.names
        found = [self._domain(n) for n in names]
        if not request.include_cpu_xml:
            found = [msgspec.structs.replace(d, cpu_xml=None) for d in found]
        return DomainsReply(host_id=self.host, domains=found)

    def _in_use(self) -> set[str]:
        return {d.source_path or "" for dom in self.domains.values() for d in dom.disks}

    def _domain(self, name: str) -> DomainInfo:
        if name not in self.domains:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {name!r} on this host")
        return self.domains[name]

    async def storage_probe(self, request: StorageProbeRequest) -> StorageProbeReply:
        if request.token is not None and request.token.action != TokenAction.READ:
            dirs = {p.target_path for p in self.caps_reply.pools if p.active and p.target_path}
            dirs |= {os.path.dirname(path) for path in self._in_use()}
            if os.path.dirname(request.token.beside) not in dirs:  # as agent/core.py
                raise BatonError(ErrorCode.FORBIDDEN, f"{request.token.beside}: a probe token "
                                 "is written or removed only beside this host's disks or in "
                                 "its pools' directories")
        pools = {p.target_path for p in self.caps_reply.pools if p.active and p.target_path}
        if outside := [path for path in request.paths if not (
                path in pools or os.path.dirname(path) in pools or path in self._in_use())]:
            raise BatonError(ErrorCode.FORBIDDEN, f"{', '.join(outside[:3])}: a probe looks "
                             "only at this host's pools, the files in them and its domains' disks")
        token = None if request.token is None else self.files.token_op(request.token)
        return StorageProbeReply(host_id=self.host, token=token,
                                 paths=[self.files.probe(p) for p in request.paths])

    async def cpu_compare(self, request: CpuCompareRequest) -> CpuCompareReply:
        if request.cpu_xml is not None and request.domain is not None:
            raise BatonError(ErrorCode.BAD_REQUEST, "give either cpu_xml or domain, not both")
        if request.cpu_xml is None and request.domain is None:
            raise BatonError(ErrorCode.BAD_REQUEST, "give cpu_xml or domain")
        if request.domain is not None:
            self._holder(request.domain_host)._domain(request.domain)
        if self.cpu_error is not None:
            raise self.cpu_error
        return self.cpu_reply

    def _holder(self, host: str | None) -> FakeAgent:
        """The agent of the host a cpu.compare names (this one when none is named)."""
        if host in (None, self.host):
            return self
        if host not in self.mesh.agents:
            raise BatonError(ErrorCode.UNAVAILABLE, f"no agent answers for host {host!r}")
        return self.mesh.agents[host]

    # --- migration endpoints -------------------------------------------------------------------

    async def prepare(self, request: PrepareRequest) -> PrepareReply:
        self._refuse_known_id(request.migration_id)
        if clash := [d for d in self.domains.values()
                     if d.name == request.vm or d.uuid == request.domain_uuid]:
            raise BatonError(ErrorCode.CONFLICT, f"{clash[0].name} (UUID {clash[0].uuid}) is "
                             "already defined on this host: a migration cannot bring it here")
        paths = [plan.path for plan in request.disks]
        if relative := [path for path in paths if not os.path.isabs(path)]:
            raise BatonError(ErrorCode.BAD_REQUEST, f"disk path must be absolute: {relative[0]}")
        pool_dirs = {p.target_path for p in self.caps_reply.pools if p.active and p.target_path}
        if outside := [path for path in paths if os.path.dirname(path) not in pool_dirs]:
            raise BatonError(ErrorCode.FORBIDDEN, f"{', '.join(outside)}: not in the directory "
                             "of an active storage pool of this host; an agent creates disks "
                             "only there")
        entry = self.ledger[request.migration_id] = Entry(
            migration_id=request.migration_id, vm=request.vm, incoming_uuid=request.domain_uuid)
        entry.created_paths = self.files.create_disks(request.disks)
        return PrepareReply(created_paths=entry.created_paths)

    def _refuse_known_id(self, migration_id: str) -> None:
        if migration_id in self.ledger:
            raise BatonError(ErrorCode.CONFLICT, f"migration {migration_id} was already "
                             "prepared or ran on this host; a new migration needs a new id")

    async def start(self, request: StartRequest) -> StartReply:
        _refuse_if_busy(self.migrations, request.migration_id, request.vm, "is already migrating")
        domain = self._domain(request.vm)
        if request.destination_paths:  # as the real agent: its checks, on the definition
            check_paths(request.copy_disks, request.destination_paths)
            relocate_disks(definition_xml(domain), request.destination_paths)
        plan_migration(request, domain_active=domain.active)
        self._check_peer(request.destination_host, request.destination_uri)
        self._refuse_known_id(request.migration_id)
        self.ledger[request.migration_id] = Entry(
            migration_id=request.migration_id, vm=request.vm,
            sent_paths=[d.source_path for d in domain.disks
                        if d.target in request.copy_disks and d.source_path])
        self._launch(self.migrations, request, self._run_script)
        return StartReply(migration_id=request.migration_id)

    def _check_peer(self, host: str | None, uri: str) -> None:
        """As agent/peers.py: only to the URI the named peer's agent announces."""
        if host is None or host == self.host:
            raise BatonError(ErrorCode.FORBIDDEN, "migration.start must name another host")
        if host not in self.mesh.agents:
            raise BatonError(ErrorCode.UNAVAILABLE, f"cannot confirm {host}'s migration URI")
        if self.mesh.agents[host].caps_reply.migration_uri != uri:
            raise BatonError(ErrorCode.FORBIDDEN, f"{uri} is not the migration URI the agent "
                             f"of {host} announces")

    def _launch(self, jobs: dict[str, Job], request: Any,
                script: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
        """Run ``script`` for the job ``request`` starts; forget the job when it ends."""
        jobs[request.migration_id] = Job(request.vm)

        async def forget_after() -> None:
            try:
                await script(request)
            finally:
                del jobs[request.migration_id]

        self._tasks.create_task(forget_after())

    async def speed(self, request: SpeedRequest) -> Ack:
        _find(self.migrations, request.migration_id, request.vm)
        return Ack(detail=f"bandwidth set to {request.bandwidth_mib_s} MiB/s")

    async def abort(self, request: AgentAbortRequest) -> Ack:
        _find(self.migrations, request.migration_id, request.vm).abort.set()
        return Ack(detail="abort requested")

    async def cleanup(self, request: CleanupRequest) -> CleanupReply:
        """As the real agent: only what the ledger says this host made, received or sent."""
        entry = self.ledger.get(request.migration_id)
        removed, reasons = False, []
        if request.remove_domain:
            uuid, why_not = ownership.incoming_domain(entry, request.migration_id, request.vm)
            here = self.domains.get(request.vm)
            if here is not None and uuid is not None and here.uuid == uuid:
                if here.state == DomainState.RUNNING:  # as agent/libvirt/domains.py
                    raise BatonError(ErrorCode.CONFLICT, f"{request.vm} is running on this "
                                     "host: a clean-up never destroys a running guest")
                removed = self.domains.pop(request.vm) is not None
            elif here is not None:
                reasons.append(why_not or f"{request.vm} here is not the domain (UUID {uuid}) "
                               f"that migration {request.migration_id} brought: not removed")
        allowed, refused, refusals = ownership.deletable(entry, request.migration_id,
                                                         request.delete_paths)
        deleted, kept, unused = self.files.delete_unused(allowed, self._in_use())
        return CleanupReply(domain_removed=removed, deleted_paths=deleted,
                            kept_paths=refused + kept, detail="; ".join(reasons + refusals + unused))

    async def migration_status(self, request: MigrationStatusRequest) -> MigrationStatus:
        """As the real agent: the domain here (no libvirt job in a fake) and the ledger."""
        job = self.migrations.get(request.migration_id) or self.moves.get(request.migration_id)
        status = MigrationStatus(  # a storage move's too (agent/service.py job_status)
            host_id=self.host, migration_id=request.migration_id, vm=request.vm,
            domain=self.domains.get(request.vm),
            running_here=job is not None and job.vm == request.vm)
        entry = self.ledger.get(request.migration_id)
        if entry is None or entry.vm != request.vm:
            return status
        def facts(paths: list[str]) -> list[PathFact]:
            return [PathFact(path=p, exists=self.mesh.storage.exists(self.host, p)) for p in paths]
        return msgspec.structs.replace(status, known=True, incoming_uuid=entry.incoming_uuid,
                                       sent_completed=entry.sent_completed,
                                       created=facts(entry.created_paths),
                                       sent=facts(entry.sent_paths))

    async def predict(self, request: PredictRequest) -> Prediction:
        """As the real agent (agent/prediction.py), with :attr:`dirty_rate_mib_s` measured."""
        domain = self._domain(request.vm)
        if domain.state != DomainState.RUNNING:
            raise BatonError(ErrorCode.PRECONDITION_FAILED, f"{request.vm} is {domain.state}: "
                             "only a running guest dirties memory; nothing to predict")
        memory = domain.memory_kib * 1024
        if self.measuring is not None:
            await self.measuring.wait()
        if self.predict_error is not None:
            raise self.predict_error
        return modelled(request, memory, self.dirty_rate_mib_s, "fake",
                        whole_bytes=int(memory * self.whole_share),
                        start_s=StartCost().seconds(copy=request.disk_bytes > 0))  # none learned

    # --- the scripted migration ----------------------------------------------------------------

    async def _run_script(self, request: StartRequest) -> None:
        script, job = self.script, self.migrations[request.migration_id]
        for step in range(script.steps):
            if job.abort.is_set() and not script.abort_too_late:
                return await self._finish(request, aborted=True)
            await self._progress(request, step, script.steps)
            await asyncio.sleep(script.silence_s if step == 0 and script.silence_s
                                else script.interval_s)
        if script.outcome == "hang":
            await job.abort.wait()
            await asyncio.sleep(script.abort_takes_s)
            if not script.abort_too_late:
                return await self._finish(request, aborted=True)
        if script.outcome == "fail":
            return await self._finish(request, error=ErrorReply(
                code=ErrorCode.HYPERVISOR, message=LIBVIRT_FAILURE))
        await self._switch_over(request)
        await asyncio.sleep(script.resume_lead_s)
        self.ledger[request.migration_id].sent_completed = True  # libvirt said done
        await self._finish(request)

    async def _progress(self, request: Any, step: int, steps: int) -> None:
        total = 2 * GIB
        done = total * (step + 1) // (steps + 1)
        stats = JobStats(operation="migration_out", time_elapsed_ms=100 * (step + 1),
                         data_total_bytes=total, data_processed_bytes=done,
                         data_remaining_bytes=total - done, memory_bps=100 * 1024**2,
                         memory_iteration=step + 1)
        switched = self.script.postcopy_from_step is not None \
            and step >= self.script.postcopy_from_step
        await self._publish_migration(request, MigrationEvent.SOURCE_PROGRESS, SourceProgress(
            migration_id=request.migration_id, host_id=self.host, at=utc_now(), stats=stats,
            postcopy=switched))

    async def _switch_over(self, request: StartRequest) -> None:
        destination = self.mesh.by_uri(request.destination_uri)
        moved = self.domains[request.vm]
        state = DomainState.RUNNING if request.live else DomainState.SHUTOFF
        disks = [msgspec.structs.replace(d, source_path=request.destination_paths.get(
            d.target, d.source_path)) for d in moved.disks]
        destination.domains[request.vm] = msgspec.structs.replace(
            moved, state=state, active=request.live, persistent=request.persistent, disks=disks)
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
            error=error, aborted=aborted, escalations=self.script.final_escalations,
            postcopy=self.script.final_postcopy))

    async def _publish_migration(self, request: Any, event: MigrationEvent,
                                 message: Any) -> None:
        await self.nc.publish(self.mesh.subjects.agent_report(self.host, request.migration_id, event),
                              encode(message))

    # --- the scripted storage move ------------------------------------------------------------

    async def storage_move(self, request: AgentStorageMoveRequest) -> AgentStorageMoveReply:
        _refuse_if_busy(self.moves, request.migration_id, request.vm,
                        "is already moving its disks")
        if not request.disks:
            raise BatonError(ErrorCode.BAD_REQUEST, "no disks to move")
        problems = start_problems(request, self._domain(request.vm))
        problems += self.files.destination_problems(request.disks)
        if problems:
            raise BatonError(ErrorCode.PRECONDITION_FAILED, "; ".join(problems))
        pool_dirs = {p.target_path for p in self.caps_reply.pools if p.active and p.target_path}
        if outside := [d.destination_path for d in request.disks
                       if os.path.dirname(d.destination_path) not in pool_dirs]:
            raise BatonError(ErrorCode.FORBIDDEN, f"{', '.join(outside)}: not in the directory "
                             "of an active storage pool of this host; an agent copies disks "
                             "only there")
        if request.migration_id in self.ledger:
            raise BatonError(ErrorCode.CONFLICT, f"job {request.migration_id} already ran on "
                             "this host; a new storage move needs a new id")
        self.ledger[request.migration_id] = Entry(
            migration_id=request.migration_id, vm=request.vm,
            created_paths=[d.destination_path for d in request.disks])
        self._launch(self.moves, request, self._run_storage_script)
        return AgentStorageMoveReply(migration_id=request.migration_id)

    async def storage_abort(self, request: AgentStorageAbortRequest) -> Ack:
        job = self.moves.get(request.migration_id)
        if job is None:  # a move this agent does not run: the real one cleans up what it names
            if not request.disks:
                raise BatonError(ErrorCode.NOT_FOUND, f"no storage move {request.migration_id} "
                                 "runs on this host")
            entry = self.ledger.get(request.migration_id)
            _mine, _refused, reasons = ownership.deletable(
                entry if entry is not None and entry.vm == request.vm else None,
                request.migration_id, [d.destination_path for d in request.disks])
            if reasons:
                raise BatonError(ErrorCode.FORBIDDEN, "; ".join(reasons))
            live = {d.target: d.source_path for d in self._domain(request.vm).disks}
            copies = [m.destination_path for m in request.disks
                      if live.get(m.target) != m.destination_path]  # a switched disk stays
            self.files.delete_unused(copies, self._in_use())
            return Ack(detail="cancelled the copies it names")
        job = _find(self.moves, request.migration_id, request.vm)
        if job.pivoting:
            raise BatonError(ErrorCode.CONFLICT, "the copies are in sync and the VM is being "
                             "switched to them; the move can no longer be aborted")
        job.abort.set()
        return Ack(detail="abort requested")

    async def _run_storage_script(self, request: AgentStorageMoveRequest) -> None:
        script, job = self.script, self.moves[request.migration_id]
        await self._stage(request, StorageStage.COPYING)
        for step in range(script.steps):
            if job.abort.is_set():
                return await self._storage_finished(request, aborted=True)
            await self._progress(request, step, script.steps)
            await asyncio.sleep(script.interval_s)
        if script.outcome == "hang":
            await job.abort.wait()
            return await self._storage_finished(request, aborted=True)
        if script.outcome == "fail":
            return await self._storage_finished(request, error=ErrorReply(
                code=ErrorCode.HYPERVISOR, message=LIBVIRT_FAILURE))
        job.pivoting = True
        await self._stage(request, StorageStage.READY)
        self._repoint(request)
        await self._stage(request, StorageStage.PIVOTED)
        await self._storage_finished(request)

    def _repoint(self, request: AgentStorageMoveRequest) -> None:
        """The pivot: the VM uses the copies; the old files go unless ``keep_source``."""
        new = {d.target: d.destination_path for d in request.disks}
        vm = self.domains[request.vm]
        self.domains[request.vm] = msgspec.structs.replace(vm, disks=[
            msgspec.structs.replace(d, source_path=new.get(d.target, d.source_path))
            for d in vm.disks])
        for disk in request.disks:
            self.mesh.storage.add(self.host, disk.destination_path)
            if not request.keep_source:
                self.mesh.storage.remove(self.host, disk.source_path)

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
        event = LifecycleEvent(host_id=self.host, vm=vm, uuid=fake_uuid(vm), event=kind,
                               detail=detail, at=utc_now())
        await self.nc.publish(self.mesh.subjects.events(self.host, vm, EventName.LIFECYCLE),
                              encode(event))


def _refuse_if_busy(jobs: dict[str, Job], migration_id: str, vm: str, vm_busy: str) -> None:
    """The real agent's rule: one job per id and one per VM of each kind."""
    if migration_id in jobs:
        raise BatonError(ErrorCode.CONFLICT, f"{migration_id} already runs")
    if any(job.vm == vm for job in jobs.values()):
        raise BatonError(ErrorCode.CONFLICT, f"{vm} {vm_busy}")


def _find(jobs: dict[str, Job], migration_id: str, vm: str) -> Job:
    job = jobs.get(migration_id)
    if job is None or job.vm != vm:
        raise BatonError(ErrorCode.NOT_FOUND, f"no job {migration_id} of {vm} runs on this host")
    return job


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

    @contextlib.asynccontextmanager
    async def serving(self, url: str) -> AsyncIterator[Mesh]:
        """Serve on ``url`` for the body of the ``async with``, then stop as :meth:`serve` does."""
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(self.serve(url, ready, stop))
        await asyncio.wait_for(ready.wait(), 10)
        try:
            yield self
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    async def serve(self, url: str, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """Serve until ``stop``; then take no new request, cancel what runs, and disconnect (in
        that order: a script still running must not publish on a closed connection)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                for agent in self.agents.values():
                    await agent.serve(url, tasks)
                    await announce_ready(agent.nc)
                ready.set()
                await stop.wait()
                for agent in self.agents.values():
                    if agent.service is not None:
                        await agent.service.stop()
                raise _Stopped  # cancels the scripted jobs and the requests still running
        except* _Stopped:
            pass
        finally:
            for agent in self.agents.values():
                if agent.nc is not None and not agent.nc.is_closed:
                    await agent.nc.drain()


class _Stopped(Exception):
    pass
