"""The agent's NATS micro service: endpoint subjects wired to :class:`AgentCore`.

Discoverable as ``baton-agent`` through ``$SRV.PING|INFO|STATS``; INFO metadata carries the host
id, libvirt and QEMU versions and the CPU model so ``baton hosts`` needs a single round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.micro import ServiceConfig, add_service
from nats.micro.service import EndpointConfig, Service

from baton.agent.core import AgentCore
from baton.agent.hypervisor import Hypervisor
from baton.agent.migration import MigrationManager
from baton.agent.prediction import Predictor
from baton.agent.storage_move import StorageMoveManager
from baton.mesh.rpc import typed_handler
from baton.schemas import PROTOCOL_VERSION
from baton.schemas.agent import (
    CapsRequest,
    CpuBaselineRequest,
    CpuCompareRequest,
    DomainInfo,
    DomainsReply,
    DomainsRequest,
    StatusRequest,
    StorageProbeRequest,
)
from baton.schemas.codec import decode_reply, encode
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    AgentAbortRequest,
    CleanupRequest,
    MigrationStatus,
    MigrationStatusRequest,
    PredictRequest,
    PrepareRequest,
    SpeedRequest,
    StartRequest,
)
from baton.schemas.storage import AgentStorageAbortRequest, AgentStorageMoveRequest
from baton.schemas.subjects import AGENT_SERVICE, AgentEndpoint, Subjects
from baton.schemas.timeouts import AGENT_DOMAINS

# Answered from memory (caps from the cache; a refresh is shared by every asker under its lock):
# served in the subscription callback, without a task per request. Pre-flight fans these out.
_FROM_MEMORY = frozenset({AgentEndpoint.CAPS, AgentEndpoint.STATUS})


async def service_metadata(core: AgentCore, hv: Hypervisor) -> dict[str, str]:
    meta = {"host_id": core.host_id, "libvirt_uri": hv.uri}
    try:
        facts = await hv.host_facts()
    except BatonError:
        return meta | {"libvirt_version": "unknown", "hypervisor_version": "unknown",
                       "cpu_model": "unknown", "libvirt_host_uuid": "unknown"}
    return meta | {"libvirt_version": facts.versions.libvirt,
                   "hypervisor_version": facts.versions.hypervisor,
                   "cpu_model": facts.cpu.host_model or facts.cpu.model,
                   "libvirt_host_uuid": facts.host_uuid or "unknown"}


def job_status(migrations: MigrationManager, storage: StorageMoveManager | None,
               ) -> Callable[[MigrationStatusRequest], Awaitable[MigrationStatus]]:
    """``migration.status`` answers for a storage move too (same ledger): ``running_here`` when
    either manager runs the job."""
    async def status(request: MigrationStatusRequest) -> MigrationStatus:
        found = await migrations.status(request)
        if storage is not None and storage.runs(request.migration_id, request.vm):
            return msgspec.structs.replace(found, running_here=True)
        return found
    return status


async def start_service(nc: NATS, subjects: Subjects, core: AgentCore, hv: Hypervisor,
                        migrations: MigrationManager, tasks: asyncio.TaskGroup,
                        storage: StorageMoveManager | None = None) -> Service:
    service = await add_service(nc, ServiceConfig(
        name=AGENT_SERVICE, version=PROTOCOL_VERSION,
        description=f"Baton agent for host {core.host_id}",
        metadata=await service_metadata(core, hv)))
    # Each route pairs a request type with its handler; the pairing is checked by tests, not mypy.
    routes: list[tuple[AgentEndpoint, type[Any], Callable[[Any], Awaitable[Any]]]] = [
        (AgentEndpoint.CAPS, CapsRequest, core.caps),
        (AgentEndpoint.CPU_COMPARE, CpuCompareRequest, core.cpu_compare),
        (AgentEndpoint.CPU_BASELINE, CpuBaselineRequest, core.cpu_baseline),
        (AgentEndpoint.STORAGE_PROBE, StorageProbeRequest, core.storage_probe),
        (AgentEndpoint.DOMAINS, DomainsRequest, core.domains),
        (AgentEndpoint.STATUS, StatusRequest, core.status),
        (AgentEndpoint.MIGRATION_PREPARE, PrepareRequest, migrations.prepare),
        (AgentEndpoint.MIGRATION_START, StartRequest, migrations.start),
        (AgentEndpoint.MIGRATION_SPEED, SpeedRequest, migrations.speed),
        (AgentEndpoint.MIGRATION_ABORT, AgentAbortRequest, migrations.abort),
        (AgentEndpoint.MIGRATION_CLEANUP, CleanupRequest, migrations.cleanup),
        (AgentEndpoint.MIGRATION_STATUS, MigrationStatusRequest, job_status(migrations, storage)),
        (AgentEndpoint.MIGRATION_PREDICT, PredictRequest, Predictor(hv, start=migrations.start_cost).predict),
    ]
    if storage is not None:
        routes += [
            (AgentEndpoint.STORAGE_MOVE, AgentStorageMoveRequest, storage.start),
            (AgentEndpoint.STORAGE_ABORT, AgentStorageAbortRequest, storage.abort),
        ]
    for endpoint, request_type, handle in routes:
        await service.add_endpoint(EndpointConfig(
            name=endpoint.value.replace(".", "-"),
            subject=subjects.agent(core.host_id, endpoint),
            handler=typed_handler(request_type, handle, tasks,
                                  inline=endpoint in _FROM_MEMORY, endpoint=endpoint.value)))
    return service


def remote_domain_fetcher(nc: NATS, subjects: Subjects) -> Callable[[str, str], Awaitable[DomainInfo]]:
    """How this agent reads a domain's migratable CPU from the agent of the host that runs it."""

    async def fetch(host: str, domain: str) -> DomainInfo:
        body = encode(DomainsRequest(names=[domain], include_cpu_xml=True))
        try:
            msg = await nc.request(subjects.agent(host, AgentEndpoint.DOMAINS), body,
                                   timeout=AGENT_DOMAINS)
        except TimeoutError:
            raise BatonError(ErrorCode.TIMEOUT, f"agent of host {host!r} did not answer") from None
        except Exception as exc:  # nats.errors.NoRespondersError and friends
            raise BatonError(ErrorCode.UNAVAILABLE,
                             f"no agent answers for host {host!r}: {type(exc).__name__}") from None
        return decode_reply(msg.data, DomainsReply).domains[0]

    return fetch
