"""Talking to agents: every request the coordinator sends goes through :meth:`AgentClient.ask`.

Each request carries an explicit deadline from :mod:`schemas.timeouts`. Failures come back as
:class:`BatonError`: the agent's own typed error as it sent it; ``timeout`` when it did not answer
in time; ``unavailable`` with ``details["cause"] == "no_responders"`` when no agent serves that host
(an unknown host id or a stopped agent — NATS cannot tell them apart).
"""

from __future__ import annotations

from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client as NATS

from baton.mesh.client import discover_agents
from baton.schemas import timeouts
from baton.schemas.agent import (
    CapsRequest,
    CpuCompareReply,
    CpuCompareRequest,
    DomainInfo,
    DomainsReply,
    DomainsRequest,
    HostCaps,
    StorageProbeReply,
    StorageProbeRequest,
)
from baton.schemas.codec import decode_reply, encode
from baton.schemas.errors import BatonError, ErrorCode
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
from baton.schemas.subjects import AgentEndpoint, Subjects

R = TypeVar("R")
NO_RESPONDERS = "no_responders"


def is_no_responders(exc: BatonError) -> bool:
    return exc.code == ErrorCode.UNAVAILABLE and exc.details.get("cause") == NO_RESPONDERS


class AgentClient:
    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects

    async def ask(self, host: str, endpoint: AgentEndpoint, request: Any,
                  reply_type: type[R], deadline_s: float) -> R:
        subject = self._subjects.agent(host, endpoint)
        try:
            msg = await self._nc.request(subject, encode(request), timeout=deadline_s)
        except nats.errors.NoRespondersError:
            raise BatonError(ErrorCode.UNAVAILABLE, f"no agent answers for host {host!r}",
                             cause=NO_RESPONDERS, host=host) from None
        except TimeoutError:
            raise BatonError(ErrorCode.TIMEOUT, f"the agent of host {host!r} did not answer "
                             f"{endpoint.value} within {deadline_s:g} s", host=host) from None
        return decode_reply(msg.data, reply_type)

    async def caps(self, host: str) -> HostCaps:
        return await self.ask(host, AgentEndpoint.CAPS, CapsRequest(), HostCaps,
                              timeouts.AGENT_CAPS)

    async def domain(self, host: str, vm: str, include_cpu_xml: bool = False) -> DomainInfo:
        """The VM as ``host`` sees it; ``not_found`` when it is not defined there."""
        reply = await self.ask(host, AgentEndpoint.DOMAINS,
                               DomainsRequest(names=[vm], include_cpu_xml=include_cpu_xml),
                               DomainsReply, timeouts.AGENT_DOMAINS)
        if not reply.domains:
            raise BatonError(ErrorCode.NOT_FOUND, f"VM {vm!r} is not defined on {host!r}")
        return reply.domains[0]

    async def domain_or_none(self, host: str, vm: str) -> DomainInfo | None:
        try:
            return await self.domain(host, vm)
        except BatonError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                return None
            raise

    async def storage_probe(self, host: str, request: StorageProbeRequest) -> StorageProbeReply:
        return await self.ask(host, AgentEndpoint.STORAGE_PROBE, request, StorageProbeReply,
                              timeouts.AGENT_STORAGE_PROBE)

    async def cpu_compare(self, host: str, vm: str, vm_host: str) -> CpuCompareReply:
        return await self.ask(host, AgentEndpoint.CPU_COMPARE,
                               CpuCompareRequest(domain=vm, domain_host=vm_host),
                               CpuCompareReply, timeouts.AGENT_CPU_COMPARE)

    async def prepare(self, host: str, request: PrepareRequest) -> PrepareReply:
        return await self.ask(host, AgentEndpoint.MIGRATION_PREPARE, request, PrepareReply,
                              timeouts.AGENT_MIGRATION_PREPARE)

    async def start(self, host: str, request: StartRequest) -> StartReply:
        return await self.ask(host, AgentEndpoint.MIGRATION_START, request, StartReply,
                              timeouts.AGENT_MIGRATION_START)

    async def speed(self, host: str, request: SpeedRequest) -> Ack:
        return await self.ask(host, AgentEndpoint.MIGRATION_SPEED, request, Ack,
                              timeouts.AGENT_MIGRATION_SPEED)

    async def abort(self, host: str, request: AgentAbortRequest) -> Ack:
        return await self.ask(host, AgentEndpoint.MIGRATION_ABORT, request, Ack,
                              timeouts.AGENT_MIGRATION_ABORT)

    async def cleanup(self, host: str, request: CleanupRequest) -> CleanupReply:
        return await self.ask(host, AgentEndpoint.MIGRATION_CLEANUP, request, CleanupReply,
                              timeouts.AGENT_MIGRATION_CLEANUP)

    async def migration_status(self, host: str, request: MigrationStatusRequest) -> MigrationStatus:
        return await self.ask(host, AgentEndpoint.MIGRATION_STATUS, request, MigrationStatus,
                              timeouts.AGENT_MIGRATION_STATUS)

    async def predict(self, host: str, request: PredictRequest) -> Prediction:
        return await self.ask(host, AgentEndpoint.MIGRATION_PREDICT, request, Prediction,
                              timeouts.AGENT_MIGRATION_PREDICT)

    async def all_domains(self, host: str) -> list[DomainInfo]:
        """Every domain defined on ``host`` (running or not)."""
        reply = await self.ask(host, AgentEndpoint.DOMAINS, DomainsRequest(), DomainsReply,
                               timeouts.AGENT_DOMAINS)
        return reply.domains

    async def storage_move(self, host: str,
                           request: AgentStorageMoveRequest) -> AgentStorageMoveReply:
        return await self.ask(host, AgentEndpoint.STORAGE_MOVE, request, AgentStorageMoveReply,
                              timeouts.AGENT_STORAGE_MOVE)

    async def storage_abort(self, host: str, request: AgentStorageAbortRequest) -> Ack:
        return await self.ask(host, AgentEndpoint.STORAGE_ABORT, request, Ack,
                              timeouts.AGENT_STORAGE_ABORT)

    async def discover_hosts(self) -> list[str]:
        """Host ids of every agent answering ``$SRV.INFO.baton-agent`` under our prefix."""
        agents = await discover_agents(self._nc, prefix=self._subjects.prefix)
        return sorted({agent.host_id for agent in agents})
