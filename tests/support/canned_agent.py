"""A stand-in ``baton-agent`` answering canned replies, for coordinator and CLI tests.

A real ``nats.micro`` service named ``baton-agent`` with the agent's INFO metadata and its endpoint
subjects from ``schemas.subjects``; each endpoint answers one fixed message (a reply or an
``ErrorReply``), or never answers when given ``SILENT``. Like the real agent it decodes every
request with its endpoint's request type first and refuses a malformed one with ``bad_request``,
and it sends an error with the NATS micro error headers (``tests/contract`` checks both against
the real agent). It is a stand-in for the agent's contract, not for the agent: the agent's own
integration tests cover the real thing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from nats.aio.client import Client
from nats.micro import ServiceConfig, add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service

from baton.mesh.daemon import announce_ready
from baton.mesh.rpc import respond_error
from baton.schemas import PROTOCOL_VERSION, codec
from baton.schemas.agent import (
    AgentStatus,
    BaselineApi,
    BaselineCpu,
    Bridge,
    CapsRequest,
    CpuBaselineReply,
    CpuBaselineRequest,
    CpuCompareReply,
    CpuCompareRequest,
    CpuCompatibility,
    CpuInfo,
    DomainsReply,
    DomainsRequest,
    HostCaps,
    Memory,
    Network,
    StatusRequest,
    StoragePool,
    StorageProbeReply,
    StorageProbeRequest,
    Versions,
)
from baton.schemas.errors import BatonError, ErrorReply
from baton.schemas.migration import (
    Ack,
    AgentAbortRequest,
    CleanupReply,
    CleanupRequest,
    MigrationStatus,
    MigrationStatusRequest,
    Prediction,
    PredictRequest,
    PrepareReply,
    PrepareRequest,
    SpeedRequest,
    StartReply,
    StartRequest,
)
from baton.schemas.storage import AgentStorageAbortRequest, AgentStorageMoveReply, AgentStorageMoveRequest
from baton.schemas.subjects import AGENT_SERVICE, DEFAULT_PREFIX, AgentEndpoint, Subjects
from tests.support.samples import SAMPLE_TIME

SILENT = object()  # an endpoint that receives requests and never answers
GIB = 1024**3
CANNED_MIGRATION_ID = "mig-0001"

# What each endpoint decodes its request as (the real agent's routes in agent/service.py).
REQUEST_TYPES: dict[AgentEndpoint, type[Any]] = {
    AgentEndpoint.CAPS: CapsRequest,
    AgentEndpoint.CPU_COMPARE: CpuCompareRequest,
    AgentEndpoint.CPU_BASELINE: CpuBaselineRequest,
    AgentEndpoint.STORAGE_PROBE: StorageProbeRequest,
    AgentEndpoint.DOMAINS: DomainsRequest,
    AgentEndpoint.STATUS: StatusRequest,
    AgentEndpoint.MIGRATION_PREPARE: PrepareRequest,
    AgentEndpoint.MIGRATION_START: StartRequest,
    AgentEndpoint.MIGRATION_SPEED: SpeedRequest,
    AgentEndpoint.MIGRATION_ABORT: AgentAbortRequest,
    AgentEndpoint.MIGRATION_CLEANUP: CleanupRequest,
    AgentEndpoint.MIGRATION_STATUS: MigrationStatusRequest,
    AgentEndpoint.MIGRATION_PREDICT: PredictRequest,
    AgentEndpoint.STORAGE_MOVE: AgentStorageMoveRequest,
    AgentEndpoint.STORAGE_ABORT: AgentStorageAbortRequest,
}


def canned_caps(host_id: str, cpu_model: str = "Skylake-Client-IBRS") -> HostCaps:
    return HostCaps(
        host_id=host_id,
        hostname=f"{host_id}.lab.example",
        migration_uri=f"qemu+tcp://{host_id}/system",
        cpu=CpuInfo(arch="x86_64", vendor="Intel", model=cpu_model, features=["vmx", "aes", "avx2"],
                    host_model=cpu_model, usable_models=["qemu64", cpu_model],
                    xml=f"<cpu><arch>x86_64</arch><model>{cpu_model}</model></cpu>"),
        versions=Versions(libvirt="10.0.0", hypervisor="8.2.2", hypervisor_type="QEMU", agent="0.1.0"),
        memory=Memory(total_bytes=16 * GIB, free_bytes=6 * GIB),
        bridges=[Bridge(name="br0", up=True, mtu=1500), Bridge(name="br-lab", up=False, mtu=9000)],
        networks=[Network(name="default", active=True, bridge="virbr0", forward_mode="nat")],
        pools=[StoragePool(name="images", type="dir", target_path="/var/lib/libvirt/images", active=True,
                           capacity_bytes=100 * GIB, allocation_bytes=40 * GIB, available_bytes=60 * GIB)],
        collected_at=SAMPLE_TIME,
    )  # fmt: skip


def canned_status(host_id: str, heartbeat_age_s: float = 1.0, connected: bool = True) -> AgentStatus:
    """Status whose last heartbeat is ``heartbeat_age_s`` before :data:`SAMPLE_TIME`."""
    return AgentStatus(
        host_id=host_id, agent_version="0.1.0-test", started_at=SAMPLE_TIME - timedelta(hours=1),
        libvirt_connected=connected, libvirt_uri="test:///default",
        last_heartbeat_at=SAMPLE_TIME - timedelta(seconds=heartbeat_age_s), heartbeat_interval_s=5.0,
    )  # fmt: skip


def agent_metadata(host_id: str, cpu_model: str = "Skylake-Client-IBRS") -> dict[str, str]:
    return {"host_id": host_id, "libvirt_version": "10.0.0", "hypervisor_version": "8.2.2",
            "cpu_model": cpu_model}  # fmt: skip


def every_endpoint(host_id: str) -> dict[AgentEndpoint, Any]:
    """A canned success reply for every agent endpoint (ids are fixed, not echoed)."""
    return {
        AgentEndpoint.CAPS: canned_caps(host_id),
        AgentEndpoint.CPU_COMPARE: CpuCompareReply(host_id=host_id, result=CpuCompatibility.SUPERSET,
                                                   runnable=True, reason="canned"),
        AgentEndpoint.CPU_BASELINE: CpuBaselineReply(
            host_id=host_id, computed_by=BaselineApi.HYPERVISOR,
            baseline=BaselineCpu(model="Westmere", vendor="Intel", features=["aes", "sse2"],
                                 xml="<cpu mode='custom'><model>Westmere</model></cpu>")),
        AgentEndpoint.STORAGE_PROBE: StorageProbeReply(host_id=host_id),
        AgentEndpoint.DOMAINS: DomainsReply(host_id=host_id),
        AgentEndpoint.STATUS: canned_status(host_id),
        AgentEndpoint.MIGRATION_PREPARE: PrepareReply(),
        AgentEndpoint.MIGRATION_START: StartReply(migration_id=CANNED_MIGRATION_ID),
        AgentEndpoint.MIGRATION_SPEED: Ack(),
        AgentEndpoint.MIGRATION_ABORT: Ack(),
        AgentEndpoint.MIGRATION_CLEANUP: CleanupReply(),
        AgentEndpoint.MIGRATION_STATUS: MigrationStatus(host_id=host_id,
                                                        migration_id=CANNED_MIGRATION_ID, vm="vm1"),
        AgentEndpoint.MIGRATION_PREDICT: Prediction(dirty_rate_mib_s=2.0, dirty_rate_mode="canned",
                                                    memory_mib=1024),
        AgentEndpoint.STORAGE_MOVE: AgentStorageMoveReply(migration_id=CANNED_MIGRATION_ID),
        AgentEndpoint.STORAGE_ABORT: Ack(),
    }  # fmt: skip


async def start_canned_agent(
    nc: Client,
    host_id: str,
    replies: dict[AgentEndpoint, Any] | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    metadata: dict[str, str] | None = None,
) -> Service:
    """Serve ``replies`` (default: caps and status) as ``host_id``; stop the returned service."""
    if replies is None:
        replies = {AgentEndpoint.CAPS: canned_caps(host_id), AgentEndpoint.STATUS: canned_status(host_id)}
    if metadata is None:
        metadata = agent_metadata(host_id)
    config = ServiceConfig(name=AGENT_SERVICE, version=PROTOCOL_VERSION, metadata=metadata)
    service = await add_service(nc, config)
    subjects = Subjects(prefix)
    for endpoint, reply in replies.items():
        await service.add_endpoint(EndpointConfig(
            name=endpoint.value.replace(".", "-"),
            subject=subjects.agent(host_id, endpoint),
            handler=_answer(REQUEST_TYPES[endpoint], reply),
        ))  # fmt: skip
    await announce_ready(nc)
    return service


def _answer(request_type: type[Any], reply: Any) -> Callable[[Request], Awaitable[None]]:
    async def handler(request: Request) -> None:
        if reply is SILENT:
            return
        try:
            codec.decode_request(request.data, request_type)
        except BatonError as exc:
            await respond_error(request, exc.to_reply())
            return
        if isinstance(reply, ErrorReply):
            await respond_error(request, reply)
        else:
            await request.respond(codec.encode(reply))

    return handler
