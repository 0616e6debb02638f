"""Publishes VM events and the host heartbeat on NATS.

Events arrive from the hypervisor on the asyncio loop (``emit`` is synchronous and never blocks);
a bounded queue decouples them from publishing, and if a stalled NATS connection lets it fill up,
new events are dropped and counted rather than growing memory without bound.
"""

from __future__ import annotations

import asyncio
import functools

import structlog
from nats.aio.client import Client as NATS

from baton.agent.core import AgentCore
from baton.agent.hypervisor import Hypervisor
from baton.schemas.base import utc_now
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError
from baton.schemas.events import (
    BlockJobEvent,
    Heartbeat,
    JobCompletedEvent,
    LifecycleEvent,
    MigrationIterationEvent,
    VmEvent,
)
from baton.schemas.subjects import EventName, Subjects

log = structlog.get_logger(__name__)
QUEUE_LIMIT = 10_000
SUBJECT_CACHE = 4096  # (vm, event name) pairs

_EVENT_NAMES: dict[type, EventName] = {
    LifecycleEvent: EventName.LIFECYCLE,
    JobCompletedEvent: EventName.JOB_COMPLETED,
    MigrationIterationEvent: EventName.MIGRATION_ITERATION,
    BlockJobEvent: EventName.BLOCK_JOB,
}


class EventPublisher:
    def __init__(self, nc: NATS, subjects: Subjects, host_id: str) -> None:
        self._nc = nc
        self._subjects = subjects
        self._host_id = host_id
        self._queue: asyncio.Queue[VmEvent] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0
        # Building a subject percent-encodes the VM name (~15 us); a host has few VMs.
        self._subject = functools.lru_cache(maxsize=SUBJECT_CACHE)(self._build_subject)

    def emit(self, event: VmEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("event_dropped", vm=event.vm, dropped_total=self.dropped)

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            await self._nc.publish(self._subject(event.vm, _EVENT_NAMES[type(event)]), encode(event))

    def _build_subject(self, vm: str, name: EventName) -> str:
        return self._subjects.events(self._host_id, vm, name)


async def heartbeat_loop(nc: NATS, subjects: Subjects, core: AgentCore, hv: Hypervisor) -> None:
    """Publish a heartbeat every interval, the first one at once."""
    seq = 0
    while True:
        running = 0
        if hv.connected:
            try:
                running = await hv.running_domain_count()
            except BatonError:
                pass  # the connection dropped between the check and the call
        beat = Heartbeat(host_id=core.host_id, seq=seq, at=utc_now(),
                         interval_s=core.heartbeat_interval_s,
                         libvirt_connected=hv.connected, domains_running=running)
        await nc.publish(subjects.heartbeat(core.host_id), encode(beat))
        core.last_heartbeat_at = beat.at
        seq += 1
        await asyncio.sleep(core.heartbeat_interval_s)
