"""Admission control through the real coordinator over NATS: a migration beyond the limits waits
in phase ``queued``, touching no host, can be aborted there, starts when a slot frees, and
waits again after a coordinator restart (scripted fake agents; JetStream for the restart)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from baton.coordinator.admission import Limits
from baton.coordinator.core import Coordinator
from baton.coordinator.main import CoordinatorConfig, run_coordinator
from baton.schemas.codec import decode_any, encode
from baton.schemas.errors import ErrorReply
from baton.schemas.migration import (
    AbortRequest,
    BandwidthRequest,
    MigrateAccepted,
    MigrateRequest,
    MigrationRecord,
    Phase,
    PhaseEvent,
)
from baton.schemas.subjects import AgentEndpoint as A
from baton.schemas.subjects import CoordinatorEndpoint as C
from baton.schemas.subjects import Subjects
from tests.integration.fake_agents import SHARED, Mesh, Script, domain
from tests.support.natsserver import NatsServer

pytestmark = pytest.mark.integration
S = Subjects()
ONE_AT_A_TIME = Limits(outbound=1, inbound=1, total=1)


class Phases:
    def __init__(self) -> None:
        self.seen: list[PhaseEvent] = []
        self.changed = asyncio.Event()

    async def on_message(self, msg) -> None:
        self.seen.append(decode_any(msg.data, PhaseEvent))
        self.changed.set()

    def of(self, migration_id: str) -> list[Phase]:
        return [e.phase for e in self.seen if e.migration_id == migration_id]

    async def until(self, migration_id: str, phase: Phase, within_s: float = 15) -> MigrationRecord:
        async with asyncio.timeout(within_s):
            while True:
                for event in self.seen:
                    if event.migration_id == migration_id and event.phase == phase:
                        return event.record
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def js_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    with NatsServer(jetstream=True) as server:
        yield server


async def start_coordinator(url: str, store: str = "memory", limits: Limits = ONE_AT_A_TIME,
                            ) -> tuple[asyncio.Event, asyncio.Task[None], Coordinator]:
    config = CoordinatorConfig(nats_url=url, grace_s=0.2, rollback_s=5, store=store,
                               limits=limits)
    stop = asyncio.Event()
    started: asyncio.Future[Coordinator] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_coordinator(config, stop, started))
    await asyncio.wait_for(started, 10)
    return stop, task, started.result()


async def watching(url: str) -> tuple[nats.aio.client.Client, Phases]:
    """A connection and every phase event it hears from now on."""
    nc = await nats.connect(url)
    phases = Phases()
    await nc.subscribe(S.migrations_filter(event="phase"), cb=phases.on_message)
    return nc, phases


def three_vms_on_h1() -> Mesh:
    mesh = Mesh()
    h1 = mesh.add("h1")
    mesh.add("h2")
    for vm in ("vma", "vmb", "vmc"):
        h1.add_domain(domain(vm, directory=SHARED))
    return mesh


@contextlib.asynccontextmanager
async def coordinating(url: str, mesh: Mesh, limits: Limits = ONE_AT_A_TIME,
                       ) -> AsyncIterator[tuple[nats.aio.client.Client, Phases]]:
    """``mesh``'s agents and a coordinator with ``limits`` serving on ``url``; a connection and
    the phase events it hears. The coordinator is stopped and waited for on leaving."""
    async with mesh.serving(url):
        nc, phases = await watching(url)
        stop, task, _ = await start_coordinator(url, limits=limits)
        try:
            yield nc, phases
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
            await nc.drain()


async def migrate(nc, vm: str, **options: Any) -> str:
    reply = await nc.request(S.coordinator(C.MIGRATE),
                             encode(MigrateRequest(vm=vm, destination="h2", **options)),
                             timeout=15)
    return decode_any(reply.data, MigrateAccepted).migration_id


async def abort(nc, migration_id: str) -> MigrationRecord | ErrorReply:
    reply = await nc.request(S.coordinator(C.ABORT),
                             encode(AbortRequest(migration_id=migration_id)), timeout=40)
    return decode_any(reply.data, MigrationRecord | ErrorReply)


def started_vms(mesh: Mesh) -> list[str]:
    return [request.vm for request in mesh["h1"].asked(A.MIGRATION_START)]


def prepared_vms(mesh: Mesh) -> list[str]:
    return [request.vm for request in mesh["h2"].asked(A.MIGRATION_PREPARE)]


async def test_with_a_limit_of_one_the_others_queue_one_is_aborted_there_and_the_next_runs_after(
        nats_server):
    mesh = three_vms_on_h1()
    async with coordinating(nats_server.url, mesh) as (nc, phases):
        mesh["h1"].script = Script(outcome="hang")
        first = await migrate(nc, "vma")
        await phases.until(first, Phase.MIGRATING)
        mesh["h1"].script = Script()  # what starts later succeeds
        second, third = await migrate(nc, "vmb"), await migrate(nc, "vmc")
        await phases.until(third, Phase.QUEUED)
        await phases.until(second, Phase.QUEUED)
        [why] = [e.reason for e in phases.seen if e.migration_id == third
                 and e.phase == Phase.QUEUED]
        assert "waiting for a slot: 1 migrations run in the cluster (limit 1)" == why
        dropped = await abort(nc, third)
        assert isinstance(dropped, MigrationRecord) and Phase.ABORTED == dropped.phase
        await asyncio.sleep(0.5)
        assert (["vma"], ["vma"]) == (started_vms(mesh), prepared_vms(mesh))
        assert Phase.QUEUED == phases.of(second)[-1]
        await abort(nc, first)  # frees the slot
        done = await phases.until(second, Phase.SUCCEEDED)
    assert [Phase.PENDING, Phase.QUEUED, Phase.ABORTED] == phases.of(third)
    assert [Phase.PENDING, Phase.QUEUED, Phase.CHECKING, Phase.PREPARING, Phase.MIGRATING,
            Phase.COMPLETING, Phase.SUCCEEDED] == phases.of(second)
    assert ["vma", "vmb"] == started_vms(mesh) and "vmc" not in prepared_vms(mesh)
    assert "vmb" in mesh["h2"].domains and "vmc" in mesh["h1"].domains
    first_ended = next(e.at for e in phases.seen if e.migration_id == first
                       and e.phase == Phase.ABORTED)
    second_checked = next(e.at for e in phases.seen if e.migration_id == second
                          and e.phase == Phase.CHECKING)
    assert first_ended <= second_checked and done.destination == "h2"


async def test_a_cap_changed_while_queued_is_the_one_the_migration_starts_with(nats_server):
    mesh = three_vms_on_h1()
    async with coordinating(nats_server.url, mesh) as (nc, phases):
        mesh["h1"].script = Script(outcome="hang")
        first = await migrate(nc, "vma")
        await phases.until(first, Phase.MIGRATING)
        second = await migrate(nc, "vmb", bandwidth_mib_s=50)
        await phases.until(second, Phase.QUEUED)
        changed = await set_bandwidth(nc, second, 20)
        assert (Phase.QUEUED, 20) == (changed.phase, changed.bandwidth_mib_s)
        await abort(nc, first)
        await phases.until(second, Phase.MIGRATING)
        await abort(nc, second)
    assert {"vma": None, "vmb": 20} == {r.vm: r.bandwidth_mib_s
                                        for r in mesh["h1"].asked(A.MIGRATION_START)}


async def test_host_limits_count_each_migration_at_its_own_source_and_destination(nats_server):
    """One leaving and one arriving per host: h1 -> h2 and h3 -> h1 share no such slot."""
    mesh = Mesh()
    for host in ("h1", "h2", "h3"):
        mesh.add(host)
    mesh["h1"].add_domain(domain("vma", directory=SHARED))
    mesh["h3"].add_domain(domain("vmc", directory=SHARED))
    async with coordinating(nats_server.url, mesh, Limits(outbound=1, inbound=1)) as (nc, phases):
        for agent in mesh.agents.values():
            agent.script = Script(outcome="hang")
        first = await migrate(nc, "vma")
        await phases.until(first, Phase.MIGRATING)
        reply = await nc.request(S.coordinator(C.MIGRATE), encode(MigrateRequest(
            vm="vmc", source="h3", destination="h1")), timeout=15)
        second = decode_any(reply.data, MigrateAccepted).migration_id
        await phases.until(second, Phase.MIGRATING)
        await abort(nc, second)
        await abort(nc, first)
    assert Phase.QUEUED not in phases.of(second)


async def test_a_queued_migration_waits_again_after_a_coordinator_restart_and_then_runs(js_server):
    mesh = three_vms_on_h1()
    async with mesh.serving(js_server.url):
        nc, phases = await watching(js_server.url)
        stop, task, _ = await start_coordinator(js_server.url, store="jetstream")
        mesh["h1"].script = Script(outcome="hang")
        first = await migrate(nc, "vma")
        await phases.until(first, Phase.MIGRATING)
        mesh["h1"].script = Script()
        second = await migrate(nc, "vmb")
        await phases.until(second, Phase.QUEUED)
        stop.set()  # the running one is rolled back; the queued one stays queued, untouched
        await asyncio.wait_for(task, 15)
        assert (Phase.ABORTED, Phase.QUEUED) == (phases.of(first)[-1], phases.of(second)[-1])
        assert ["vma"] == prepared_vms(mesh)
        stop, task, _ = await start_coordinator(js_server.url, store="jetstream")
        try:
            await phases.until(second, Phase.SUCCEEDED, within_s=30)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
            await nc.drain()
    assert [Phase.PENDING, Phase.QUEUED, Phase.CHECKING, Phase.PREPARING, Phase.MIGRATING,
            Phase.COMPLETING, Phase.SUCCEEDED] == phases.of(second)
    assert "vmb" in mesh["h2"].domains and "vma" in mesh["h1"].domains


@dataclass
class Sharing:
    """Two hanging migrations from h1, vma (``first``) then vmb (``second``), sharing its 60 MiB/s
    budget."""

    mesh: Mesh
    nc: nats.aio.client.Client
    phases: Phases
    first: str
    second: str


@contextlib.asynccontextmanager
async def two_sharing_a_budget(url: str) -> AsyncIterator[Sharing]:
    mesh = three_vms_on_h1()
    async with coordinating(url, mesh, Limits(host_bandwidth_mib_s=60)) as (nc, phases):
        mesh["h1"].script = Script(outcome="hang")
        first = await migrate(nc, "vma")
        await phases.until(first, Phase.MIGRATING)
        second = await migrate(nc, "vmb")
        await phases.until(second, Phase.MIGRATING)
        yield Sharing(mesh, nc, phases, first, second)


async def set_bandwidth(nc, migration_id: str, mib_s: int) -> MigrationRecord:
    reply = await nc.request(S.coordinator(C.BANDWIDTH), encode(BandwidthRequest(
        migration_id=migration_id, bandwidth_mib_s=mib_s)), timeout=15)
    return decode_any(reply.data, MigrationRecord)


# (the first's own cap, what it runs at alone again, and what then holds it below its own cap:
# the budget, or nothing once its own cap is within the budget)
@pytest.mark.parametrize(("asked", "alone", "held_alone"), [(100, 60, 60), (45, 45, None)])
async def test_migrations_sharing_a_host_share_its_bandwidth_budget_and_get_it_back(
        nats_server, asked, alone, held_alone):
    async with two_sharing_a_budget(nats_server.url) as sharing:
        mesh, nc, first, second = sharing.mesh, sharing.nc, sharing.first, sharing.second
        starts = {r.vm: r.bandwidth_mib_s for r in mesh["h1"].asked(A.MIGRATION_START)}
        assert {"vma": 60, "vmb": 30} == starts  # alone, then beside the first
        await until_speed(mesh, "vma", 30)  # the first's cap came down to its share
        record = await set_bandwidth(nc, first, asked)
        assert (asked, 30) == (record.bandwidth_mib_s, record.budget_mib_s)  # asked, held
        await until_speed(mesh, "vma", 30)
        stopped = await abort(nc, second)
        assert isinstance(stopped, MigrationRecord) and 30 == stopped.budget_mib_s
        await until_speed(mesh, "vma", alone)  # and went back up once it was alone again
        stopped = await abort(nc, first)
        assert isinstance(stopped, MigrationRecord)
        assert (asked, held_alone) == (stopped.bandwidth_mib_s, stopped.budget_mib_s)


async def test_a_cap_lowered_below_its_share_holds_when_the_budget_is_shared_anew(nats_server):
    async with two_sharing_a_budget(nats_server.url) as sharing:
        mesh, nc, phases = sharing.mesh, sharing.nc, sharing.phases
        await until_speed(mesh, "vma", 30)
        lowered = await set_bandwidth(nc, sharing.first, 20)
        # its own cap holds it now, not the budget
        assert (20, None) == (lowered.bandwidth_mib_s, lowered.budget_mib_s)
        await until_speed(mesh, "vma", 20)
        await abort(nc, sharing.second)
        await phases.until(sharing.second, Phase.ABORTED)
        third = await migrate(nc, "vmc")  # shared anew twice: alone, then beside the third
        await phases.until(third, Phase.MIGRATING)
        speeds = [r.bandwidth_mib_s for r in mesh["h1"].asked(A.MIGRATION_SPEED)
                  if r.vm == "vma"]
        assert [30, 20] == speeds  # never raised above the operator's 20 (60, then 30)
        await abort(nc, third)
        await abort(nc, sharing.first)


async def test_a_migration_capped_within_the_budget_starts_at_its_cap_not_held_by_it(
        nats_server):
    mesh = three_vms_on_h1()
    async with coordinating(nats_server.url, mesh, Limits(host_bandwidth_mib_s=60)) as (nc, phases):
        mesh["h1"].script = Script(outcome="hang")
        first = await migrate(nc, "vma", bandwidth_mib_s=40)
        await phases.until(first, Phase.MIGRATING)
        stopped = await abort(nc, first)
    assert [40] == [r.bandwidth_mib_s for r in mesh["h1"].asked(A.MIGRATION_START)]
    assert isinstance(stopped, MigrationRecord)
    assert (40, None) == (stopped.bandwidth_mib_s, stopped.budget_mib_s)


async def until_speed(mesh: Mesh, vm: str, mib_s: int, within_s: float = 10) -> None:
    """The source agent was last asked to run ``vm``'s migration at ``mib_s``."""
    async with asyncio.timeout(within_s):
        while True:  # polling the fact, with a deadline
            asked = [r.bandwidth_mib_s for r in mesh["h1"].asked(A.MIGRATION_SPEED) if r.vm == vm]
            if asked[-1:] == [mib_s]:
                return
            await asyncio.sleep(0.05)
