"""One coordinator leads, a standby waits and takes over (coordinator/lease.py), on a real
nats-server with JetStream and the coordinator role's own permissions."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import nats
import nats.js.errors
import pytest

from baton.coordinator import lease as leasing
from baton.coordinator.core import Coordinator
from baton.coordinator.lease import Lease
from baton.coordinator.main import EXIT_LEASE_LOST, CoordinatorConfig, main, run_coordinator
from baton.mesh import client, logsetup
from baton.schemas.subjects import Subjects
from tests.support.natsserver import NatsServer
from tests.support.secured import start_secured_nats

pytestmark = pytest.mark.integration
BUCKET = Subjects().leader_bucket


@pytest.fixture
def js_server() -> AsyncIterator[NatsServer]:
    with NatsServer(jetstream=True) as server:
        yield server


async def test_one_coordinator_holds_the_lease_and_the_next_gets_it_once_released(tmp_path):
    secured = start_secured_nats(tmp_path, ["h1"], jetstream=True)  # the role may use its bucket
    try:
        first_nc = await client.connect(secured.access("coordinator"))
        second_nc = await client.connect(secured.access("coordinator"))
        first = await Lease.open(first_nc, BUCKET, holder="first")
        second = await Lease.open(second_nc, BUCKET, holder="second")
        took = [await first.try_acquire(), await second.try_acquire()]
        leader = await second.leader()
        await first.release()
        took.append(await second.try_acquire())
        await first_nc.drain()
        await second_nc.drain()
    finally:
        secured.stop()
    assert ([True, False, True], "first") == (took, leader)


async def test_a_lease_nobody_renews_expires_and_a_standby_takes_it(js_server):
    nc = await nats.connect(js_server.url)
    try:
        first = await Lease.open(nc, BUCKET, holder="first", ttl_s=1.0)
        second = await Lease.open(nc, BUCKET, holder="second", ttl_s=1.0)
        assert await first.try_acquire()
        async with asyncio.timeout(10):  # the leader is gone: it renews no more
            await second.acquire()
        assert "second" == await second.leader()
        assert not await first.renew()  # the old leader learns it lost the lease
    finally:
        await nc.drain()


async def test_renewing_keeps_the_lease_past_its_ttl(js_server, monkeypatch):
    monkeypatch.setattr(leasing, "RENEW_S", 0.2)
    nc = await nats.connect(js_server.url)
    try:
        first = await Lease.open(nc, BUCKET, holder="first", ttl_s=1.0)
        second = await Lease.open(nc, BUCKET, holder="second", ttl_s=1.0)
        assert await first.try_acquire()
        keeping = asyncio.ensure_future(first.keep())
        await asyncio.sleep(2.5)
        assert (False, "first") == (await second.try_acquire(), await second.leader())
        keeping.cancel()
    finally:
        await nc.drain()


async def test_keep_returns_once_another_holder_wrote_the_lease(js_server, monkeypatch):
    monkeypatch.setattr(leasing, "RENEW_S", 0.05)
    nc = await nats.connect(js_server.url)
    try:
        first = await Lease.open(nc, BUCKET, holder="first")
        assert await first.try_acquire()
        await (await nc.jetstream().key_value(BUCKET)).put(leasing.KEY, b"usurper")
        async with asyncio.timeout(5):
            await first.keep()
    finally:
        await nc.drain()


async def test_a_lease_that_expired_untouched_is_reclaimed_by_its_holder(js_server):
    """NATS took no renewal for longer than the TTL (a cluster electing), and nobody else wrote
    the key meanwhile: the holder proves it from the stream and keeps leading."""
    nc = await nats.connect(js_server.url)
    try:
        first = await Lease.open(nc, BUCKET, holder="first", ttl_s=1.0)
        assert await first.try_acquire()
        await until_expired(nc)
        renewed = await first.renew()
        assert (True, "first") == (renewed, await first.leader())
    finally:
        await nc.drain()


async def test_a_lease_that_expired_and_was_taken_is_not_reclaimed(js_server):
    nc = await nats.connect(js_server.url)
    try:
        first = await Lease.open(nc, BUCKET, holder="first", ttl_s=1.0)
        second = await Lease.open(nc, BUCKET, holder="second", ttl_s=1.0)
        assert await first.try_acquire()
        await until_expired(nc)
        assert await second.try_acquire()
        await until_expired(nc)  # and the second's expired too: still, someone else wrote
        renewed = await first.renew()
        assert (False, None) == (renewed, await first.leader())
    finally:
        await nc.drain()


async def until_expired(nc, within_s: float = 10) -> None:
    kv = await nc.jetstream().key_value(BUCKET)
    async with asyncio.timeout(within_s):
        while True:
            try:
                await kv.get(leasing.KEY)
            except nats.js.errors.KeyNotFoundError:
                return
            await asyncio.sleep(0.1)


async def start(url: str) -> tuple[asyncio.Event, asyncio.Future[Coordinator], asyncio.Task[None]]:
    config = CoordinatorConfig(nats_url=url, grace_s=0.2, rollback_s=1, store="jetstream")
    stop = asyncio.Event()
    started: asyncio.Future[Coordinator] = asyncio.get_running_loop().create_future()
    return stop, started, asyncio.create_task(run_coordinator(config, stop, started))


async def test_a_standby_coordinator_serves_only_once_the_leader_stops(js_server):
    stop_1, started_1, task_1 = await start(js_server.url)
    await asyncio.wait_for(started_1, 10)
    stop_2, started_2, task_2 = await start(js_server.url)
    await asyncio.sleep(1.5)
    standing_by = not started_2.done()
    stop_1.set()
    await asyncio.wait_for(task_1, 15)
    await asyncio.wait_for(started_2, 5)  # a clean stop releases the lease: no TTL to wait for
    stop_2.set()
    await asyncio.wait_for(task_2, 15)
    assert standing_by


async def test_a_standby_told_to_stop_never_serves(js_server):
    stop_1, started_1, task_1 = await start(js_server.url)
    await asyncio.wait_for(started_1, 10)
    stop_2, started_2, task_2 = await start(js_server.url)
    await asyncio.sleep(0.5)
    stop_2.set()
    await asyncio.wait_for(task_2, 5)
    stop_1.set()
    await asyncio.wait_for(task_1, 15)
    assert not started_2.done()


def test_a_leader_whose_lease_is_taken_stops_with_exit_code_4(js_server, monkeypatch):
    """Split brain is not an option: once another holder wrote the lease, the old leader stops
    (exit 4, so systemd restarts it as a standby) instead of acting beside the new one."""
    monkeypatch.setattr(leasing, "RENEW_S", 0.1)

    async def usurp() -> None:
        nc = await nats.connect(js_server.url)
        try:
            async with asyncio.timeout(10):
                while True:  # wait until the coordinator holds it, then take it
                    with contextlib.suppress(Exception):
                        kv = await nc.jetstream().key_value(BUCKET)
                        if (await kv.get(leasing.KEY)).value:
                            break
                    await asyncio.sleep(0.05)
            await kv.put(leasing.KEY, b"usurper")
        finally:
            await nc.drain()

    thread = threading.Thread(target=asyncio.run, args=(usurp(),))
    thread.start()
    # main() configures structlog for the whole process (loggers cached at "critical" would
    # hide later tests' log lines): keep the suite's configuration.
    monkeypatch.setattr(logsetup, "configure", lambda *args, **kwargs: None)
    code = main(["--nats", js_server.url, "--store", "jetstream", "--grace", "0",
                 "--log-level", "critical"])
    thread.join()
    assert EXIT_LEASE_LOST == code
