"""Durable job records (coordinator/store.py) in a real nats-server's JetStream KV bucket.

A record is written before its phase event goes out, with a compare-and-set on the revision, and
a restarted coordinator lists what ran before (issue #11, first part: durable records).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
from nats.js.errors import NoKeysError

from baton.coordinator import store as store_module
from baton.coordinator.core import Coordinator
from baton.coordinator.main import EXIT_NO_STORE, CoordinatorConfig, main, run_coordinator
from baton.coordinator.store import KvStore
from baton.mesh import client, logsetup
from baton.schemas.base import utc_now
from baton.schemas.codec import decode_any, encode
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    JobsReply,
    JobsRequest,
    MigrateAccepted,
    MigrateRequest,
    MigrationRecord,
    Phase,
    PhaseEvent,
    StorageMode,
)
from baton.schemas.subjects import JOBS_BUCKET, CoordinatorEndpoint, Subjects
from tests.integration.fake_agents import Mesh, domain
from tests.support.natsserver import NatsServer
from tests.support.secured import start_secured_nats

pytestmark = pytest.mark.integration
S = Subjects()


def record(migration_id: str = "m1", phase: Phase = Phase.PENDING) -> MigrationRecord:
    now = utc_now()
    return MigrationRecord(migration_id=migration_id, vm="vm1", source="h1", destination="h2",
                           phase=phase, storage=StorageMode.AUTO,
                           request=MigrateRequest(vm="vm1", destination="h2"),
                           created_at=now, updated_at=now)


async def test_the_coordinator_role_keeps_records_in_its_bucket_with_compare_and_set(tmp_path):
    secured = start_secured_nats(tmp_path, ["h1"], jetstream=True)
    try:
        first = await client.connect(secured.access("coordinator"))
        second = await client.connect(secured.access("coordinator"))
        writer, other = await KvStore.open(first), await KvStore.open(second)
        await writer.put(record())
        await writer.put(record(phase=Phase.CHECKING))
        with pytest.raises(BatonError) as stale:  # it never read the revision: not its record
            await other.put(record(phase=Phase.FAILED))
        reader = await KvStore.open(second)
        loaded = await reader.load()
        await reader.put(record(phase=Phase.PREPARING))  # a reader continues from what it read
        with pytest.raises(BatonError) as overtaken:
            await writer.put(record(phase=Phase.FAILED))
        for nc in (first, second):
            await nc.drain()
    finally:
        secured.stop()
    assert (ErrorCode.CONFLICT, ErrorCode.CONFLICT) == (stale.value.code, overtaken.value.code)
    assert [("m1", Phase.CHECKING)] == [(r.migration_id, r.phase) for r in loaded]


async def test_an_operator_cannot_touch_the_bucket(tmp_path):
    secured = start_secured_nats(tmp_path, ["h1"], jetstream=True)
    try:
        nc = await client.connect(secured.access("coordinator"))
        await (await KvStore.open(nc)).put(record())
        await nc.drain()
        operator = await client.connect(secured.access("operator"))
        with pytest.raises(BatonError) as caught:
            await client.request(operator, f"$KV.{JOBS_BUCKET}.m1", encode(record(
                phase=Phase.FAILED)), MigrationRecord, 2)
        await operator.drain()
    finally:
        secured.stop()
    assert ErrorCode.FORBIDDEN == caught.value.code


@pytest.fixture
async def js_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    with NatsServer(jetstream=True) as server:
        yield server


async def start_coordinator(url: str) -> tuple[asyncio.Event, asyncio.Task[None], Coordinator]:
    config = CoordinatorConfig(nats_url=url, grace_s=0.2, rollback_s=5, store="jetstream")
    stop = asyncio.Event()
    started: asyncio.Future[Coordinator] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_coordinator(config, stop, started))
    await asyncio.wait_for(started, 10)
    return stop, task, started.result()


async def test_each_phase_is_stored_before_its_event_and_a_restart_lists_the_record(js_server):
    mesh = Mesh()
    mesh.add("h1").add_domain(domain("vm1"))
    mesh.add("h2")
    nc = await nats.connect(js_server.url)
    kv = None  # the bucket exists once the coordinator started
    stored_at_event: list[tuple[Phase, Phase]] = []
    done = asyncio.Event()

    async def on_phase(msg) -> None:
        event = decode_any(msg.data, PhaseEvent)
        assert kv is not None
        entry = await kv.get(event.migration_id)
        stored = msgspec.json.decode(entry.value, type=MigrationRecord)
        stored_at_event.append((event.phase, stored.phase))
        if event.phase in (Phase.SUCCEEDED, Phase.FAILED):
            done.set()

    async with mesh.serving(js_server.url):
        stop, task, _ = await start_coordinator(js_server.url)
        kv = await nc.jetstream().key_value(JOBS_BUCKET)
        await nc.subscribe(S.migrations_filter(event="phase"), cb=on_phase)
        reply = await nc.request(S.coordinator(CoordinatorEndpoint.MIGRATE),
                                 encode(MigrateRequest(vm="vm1", destination="h2")), timeout=15)
        accepted = decode_any(reply.data, MigrateAccepted)
        await asyncio.wait_for(done.wait(), 30)
        stop.set()
        await asyncio.wait_for(task, 15)
        stop, task, _ = await start_coordinator(js_server.url)  # a new process, same bucket
        listed = decode_any((await nc.request(S.coordinator(CoordinatorEndpoint.JOBS),
                                              encode(JobsRequest()), timeout=5)).data, JobsReply)
        stop.set()
        await asyncio.wait_for(task, 15)
    await nc.drain()
    order = [event for event, _ in stored_at_event]
    assert [Phase.PENDING, Phase.CHECKING, Phase.PREPARING, Phase.MIGRATING, Phase.COMPLETING,
            Phase.SUCCEEDED] == order
    # when an event arrives, the bucket already holds that phase (or a later one), never older
    assert all(order.index(stored) >= order.index(event) for event, stored in stored_at_event)
    assert [(accepted.migration_id, Phase.SUCCEEDED)] == [
        (r.migration_id, r.phase) for r in listed.migrations]


def test_a_coordinator_asked_for_jetstream_on_a_server_without_it_exits_3_and_says_why(
        nats_server, capsys, monkeypatch):
    # main() configures structlog for the whole process (loggers cached at "critical" would
    # hide later tests' log lines): keep the suite's configuration.
    monkeypatch.setattr(logsetup, "configure", lambda *args, **kwargs: None)
    code = main(["--nats", nats_server.url, "--store", "jetstream", "--log-level", "critical"])
    assert (EXIT_NO_STORE, True) == (code, "run nats-server with JetStream (-js)"
                                     in capsys.readouterr().err)


async def test_the_bucket_keeps_only_the_latest_record_and_says_what_it_holds(js_server):
    nc = await nats.connect(js_server.url)
    try:
        store = await KvStore.open(nc)
        await store.put(record())
        await store.put(record(phase=Phase.CHECKING))
        status = await (await nc.jetstream().key_value(JOBS_BUCKET)).status()
        config = status.stream_info.config
    finally:
        await nc.drain()
    assert (1, 1, "Baton's migration and disk-move records") == (
        status.history, config.num_replicas, config.description)


async def test_load_skips_an_unreadable_or_deleted_value_and_reads_the_rest(js_server):
    nc = await nats.connect(js_server.url)
    try:
        store = await KvStore.open(nc)
        kv = await nc.jetstream().key_value(JOBS_BUCKET)
        await kv.put("a-broken", b'{"not": "a record"}')
        await store.put(record("m1"))
        await kv.put("b-deleted", encode(record("b-deleted")))
        await kv.delete("b-deleted")
        await store.put(record("m2"))
        loaded = await KvStore.open(nc)
        records = await loaded.load()
        await loaded.put(record("m2", Phase.CHECKING))  # it continues from the revision it read
    finally:
        await nc.drain()
    assert ["m1", "m2"] == sorted(r.migration_id for r in records)


async def test_a_conflicting_write_says_whose_record_it_is(js_server):
    nc = await nats.connect(js_server.url)
    try:
        first, second = await KvStore.open(nc), await KvStore.open(nc)
        await first.put(record())
        with pytest.raises(BatonError) as caught:
            await second.put(record())
    finally:
        await nc.drain()
    assert ("the stored record of m1 was changed by another writer; this coordinator no "
            "longer owns it") == caught.value.message


async def test_an_empty_key_listing_of_a_bucket_holding_records_is_read_again(js_server, monkeypatch):
    """As seen in a rehearsal: nats-py's key listing once came back empty from a bucket that held
    the records, and the restarted coordinator settled none of them. The store that ``open``
    gives counts the bucket's stream and reads again."""
    monkeypatch.setattr(store_module, "WRITE_RETRY_S", 0.01)
    nc = await nats.connect(js_server.url)
    try:
        await (await KvStore.open(nc)).put(record("m1"))
        restarted = await KvStore.open(nc)
        listing, misses = restarted._kv.keys, [NoKeysError()]

        async def keys_once_missed(*args, **kwargs):
            if misses:
                raise misses.pop()
            return await listing(*args, **kwargs)

        monkeypatch.setattr(restarted._kv, "keys", keys_once_missed)
        loaded = await restarted.load()
    finally:
        await nc.drain()
    assert ([], ["m1"]) == (misses, [r.migration_id for r in loaded])
