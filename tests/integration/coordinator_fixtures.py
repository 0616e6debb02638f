"""Fixtures for the coordinator's integration tests: scripted fake agents, the real coordinator
in-process, and a watcher of every migration event.

Hosts: h1 holds ``vm1`` (disk on host-local ``/var/lib/libvirt/images``), ``vmshared`` (disk on
``/srv/shared``, which h1 and h2 both see) and the shut-off ``vmoff``; h2 is a good destination;
h3 lacks the bridge ``br0``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from baton.coordinator.core import Coordinator
from baton.coordinator.main import CoordinatorConfig, run_coordinator
from baton.schemas.agent import DomainState
from baton.schemas.codec import decode_any, encode
from baton.schemas.errors import ErrorReply
from baton.schemas.migration import TERMINAL_PHASES, MigrationRecord, Phase, PhaseEvent, ProgressEvent
from baton.schemas.storage import StorageMoveRecord, StoragePhaseEvent
from baton.schemas.subjects import AgentEndpoint as A
from baton.schemas.subjects import CoordinatorEndpoint as C
from baton.schemas.subjects import MigrationEvent, Subjects
from tests.integration.fake_agents import SHARED, Mesh, domain

S = Subjects()
# The agent endpoints that change a host: a test that expects "nothing touched" looks for these.
TOUCHING = (A.MIGRATION_PREPARE, A.MIGRATION_START, A.MIGRATION_CLEANUP)


async def ask(nc, endpoint: C, request: Any, reply_type: Any, deadline_s: float = 15) -> Any:
    """The coordinator's reply, decoded as ``reply_type`` or an ErrorReply (never raised)."""
    body = request if isinstance(request, bytes) else encode(request)
    msg = await nc.request(S.coordinator(endpoint), body, timeout=deadline_s)
    return decode_any(msg.data, reply_type | ErrorReply)


def touched(mesh: Mesh) -> list[tuple[str, A]]:
    """Every request that changes a host, by host."""
    return [(host, endpoint) for host, agent in mesh.agents.items()
            for endpoint, _ in agent.requests if endpoint in TOUCHING]


@pytest.fixture
async def mesh(nats_server) -> AsyncIterator[Mesh]:
    mesh = Mesh()
    h1 = mesh.add("h1")
    mesh.add("h2")
    mesh.add("h3", bridges=("br9",))
    h1.add_domain(domain("vm1"))
    h1.add_domain(domain("vmshared", directory=SHARED))
    h1.add_domain(domain("vmoff", state=DomainState.SHUTOFF))
    async with mesh.serving(nats_server.url):
        yield mesh


@pytest.fixture
async def coordinator(nats_server, mesh) -> AsyncIterator[Coordinator]:
    config = CoordinatorConfig(nats_url=nats_server.url, grace_s=0.2, rollback_s=5)
    stop = asyncio.Event()
    started: asyncio.Future[Coordinator] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_coordinator(config, stop, started))
    await asyncio.wait_for(started, 10)
    yield started.result()
    stop.set()
    await asyncio.wait_for(task, 15)


class Watcher:
    """Every phase and progress event on ``baton.migrations.>``, in arrival order."""

    def __init__(self) -> None:
        self.phases: list[PhaseEvent | StoragePhaseEvent] = []
        self.progress: list[ProgressEvent] = []
        self.changed = asyncio.Event()

    async def on_message(self, msg: Any) -> None:
        event = msg.subject.split(".", 3)[3]  # baton.migrations.<id>.<event>
        if event == MigrationEvent.PHASE:
            self.phases.append(decode_any(msg.data, PhaseEvent | StoragePhaseEvent))
        elif event == MigrationEvent.PROGRESS:
            self.progress.append(decode_any(msg.data, ProgressEvent))
        self.changed.set()

    def phases_of(self, migration_id: str) -> list[Phase]:
        return [e.phase for e in self.phases if e.migration_id == migration_id]

    async def until(self, migration_id: str, phases: set[Phase],
                    within_s: float = 10) -> PhaseEvent | StoragePhaseEvent:
        async with asyncio.timeout(within_s):
            while True:
                for event in self.phases:
                    if event.migration_id == migration_id and event.phase in phases:
                        return event
                self.changed.clear()
                await self.changed.wait()

    async def final(self, migration_id: str,
                    within_s: float = 10) -> MigrationRecord | StorageMoveRecord:
        return (await self.until(migration_id, TERMINAL_PHASES, within_s)).record


@pytest.fixture
async def watcher(nats_client) -> Watcher:
    watcher = Watcher()
    await nats_client.subscribe(S.migrations_filter(), cb=watcher.on_message)
    return watcher


