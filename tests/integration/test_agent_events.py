"""libvirt lifecycle changes arrive as events on baton.events.<host>.<vm>.<event>."""

from __future__ import annotations

import asyncio

import pytest

from baton.mesh.daemon import announce_ready
from baton.schemas.codec import decode_any
from baton.schemas.events import LifecycleEvent, LifecycleKind, VmEvent
from baton.schemas.subjects import EventName, Subjects

pytestmark = pytest.mark.integration
S = Subjects()


async def subscribe_events(nc, subject: str) -> tuple[asyncio.Queue, object]:
    received: asyncio.Queue[tuple[str, VmEvent]] = asyncio.Queue()

    async def collect(msg) -> None:
        received.put_nowait((msg.subject, decode_any(msg.data, VmEvent)))

    sub = await nc.subscribe(subject, cb=collect)
    await announce_ready(nc)  # the server has the subscription before the test makes events happen
    return received, sub


async def on_domain(agent, vm: str, action: str) -> None:
    """Change a domain through the agent's own test-driver connection (its state is private)."""
    conn = agent.hypervisor.raw_connection
    await asyncio.to_thread(lambda: getattr(conn.lookupByName(vm), action)())


async def test_suspend_resume_destroy_arrive_on_the_vms_lifecycle_subject(two_agents, nats_client):
    received, _ = await subscribe_events(nats_client, S.events_filter(host="h1", vm="vm1"))
    for action in ("suspend", "resume", "destroy", "create"):
        await on_domain(two_agents["h1"], "vm1", action)
    seen = [await asyncio.wait_for(received.get(), 5) for _ in range(4)]
    assert [S.events("h1", "vm1", EventName.LIFECYCLE)] * 4 == [subject for subject, _ in seen]
    assert [
        (LifecycleKind.SUSPENDED, "paused"),
        (LifecycleKind.RESUMED, "unpaused"),
        (LifecycleKind.STOPPED, "destroyed"),
        (LifecycleKind.STARTED, "booted"),
    ] == [(e.event, e.detail) for _, e in seen]
    assert all(isinstance(e, LifecycleEvent) and e.host_id == "h1" for _, e in seen)


async def test_an_event_of_one_host_does_not_appear_under_another(two_agents, nats_client):
    other_host, _ = await subscribe_events(nats_client, S.events_filter(host="h2"))
    other_vm, _ = await subscribe_events(nats_client, S.events_filter(host="h1", vm="vm2"))
    mine, _ = await subscribe_events(nats_client, S.events_filter(host="h1", vm="vm1"))
    await on_domain(two_agents["h1"], "vm1", "suspend")
    await asyncio.wait_for(mine.get(), 5)
    await nats_client.flush()
    assert (0, 0) == (other_host.qsize(), other_vm.qsize())
