"""The agent's migration endpoints move a real QEMU guest (independently of the coordinator)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from baton.mesh import client
from baton.schemas.codec import decode_any, decode_reply, encode
from baton.schemas.events import LifecycleEvent, LifecycleKind
from baton.schemas.migration import SourceFinished, SourceProgress, StartReply, StartRequest
from baton.schemas.subjects import AgentEndpoint, EventName, MigrationEvent, Subjects

pytestmark = pytest.mark.lab
S = Subjects()


async def test_source_agent_migrates_live_reports_progress_and_the_completed_job(stack, lab, guest):
    vm = guest("h1", dirty_mb=16, dirty_rate_mib_s=8)
    seq_before = lab.alive_seq(vm)
    migration_id = uuid.uuid4().hex[:12]
    nc = await client.connect(stack.access("coordinator"))  # it plays the coordinator
    progress: list[SourceProgress] = []
    finished: asyncio.Future[SourceFinished] = asyncio.get_running_loop().create_future()
    resumed: asyncio.Future[LifecycleEvent] = asyncio.get_running_loop().create_future()

    async def on_progress(msg) -> None:
        progress.append(decode_any(msg.data, SourceProgress))

    async def on_finished(msg) -> None:
        finished.set_result(decode_any(msg.data, SourceFinished))

    async def on_lifecycle(msg) -> None:
        event = decode_any(msg.data, LifecycleEvent)
        if (event.event, event.detail) == (LifecycleKind.RESUMED, "migrated") and not resumed.done():
            resumed.set_result(event)

    await nc.subscribe(S.agent_report("h1", migration_id, MigrationEvent.SOURCE_PROGRESS),
                       cb=on_progress)
    await nc.subscribe(S.agent_report("h1", migration_id, MigrationEvent.SOURCE_FINISHED),
                       cb=on_finished)
    await nc.subscribe(S.events("h2", vm, EventName.LIFECYCLE), cb=on_lifecycle)
    request = StartRequest(migration_id=migration_id, vm=vm, destination_uri=lab.uri("h2"),
                           destination_host="h2", destination_address=lab.ip("h2"),
                           bandwidth_mib_s=20,
                           progress_interval_ms=200)
    reply = await nc.request(S.agent("h1", AgentEndpoint.MIGRATION_START), encode(request), timeout=10)
    assert migration_id == decode_reply(reply.data, StartReply).migration_id

    done = await asyncio.wait_for(finished, 180)
    switchover = await asyncio.wait_for(resumed, 5)
    await nc.drain()
    assert (None, False) == (done.error, done.aborted)
    assert done.stats is not None and done.stats.time_elapsed_ms and done.stats.downtime_ms is not None
    assert progress and progress[-1].stats.memory_total_bytes
    assert switchover.at <= done.at
    assert ("running", None) == (lab.domstate("h2", vm), lab.domstate("h1", vm))
    assert lab.wait_alive_past(vm, seq_before) > seq_before
    assert not any(bad in lab.console(vm) for bad in ("BUG", "Oops", "panic"))
