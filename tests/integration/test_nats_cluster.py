"""Baton on a 3-node NATS cluster (issue #11, part 6): every client takes all three URLs, the
coordinator's buckets keep three copies, and losing any one node loses no record and no client.
Real nats-servers, with Baton's roles and TLS on the clients and on the routes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.js.api import KeyValueConfig

from baton.coordinator.buckets import open_bucket
from baton.coordinator.lease import CLUSTER_TTL_S, Lease
from baton.coordinator.store import KvStore
from baton.mesh import client
from baton.mesh.access import NatsAccess
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import Phase
from baton.schemas.subjects import Subjects
from tests.integration.test_job_store import record
from tests.support.secured import SecuredNats, start_secured_nats

pytestmark = pytest.mark.integration
S = Subjects()


@pytest.fixture
def cluster(tmp_path: Path):
    secured = start_secured_nats(tmp_path, ["h1"], nodes=3)
    try:
        yield secured
    finally:
        secured.stop()


async def replicas(nc, bucket: str) -> int:
    return (await nc.jetstream().stream_info(f"KV_{bucket}")).config.num_replicas


async def test_records_and_the_lease_survive_the_loss_of_the_node_the_coordinator_uses(cluster):
    nc = await client.connect(cluster.access("coordinator"))
    store = await KvStore.open(nc, S.jobs_bucket, replicas=3)
    lease = await Lease.open(nc, S.leader_bucket, replicas=3, ttl_s=CLUSTER_TTL_S)
    await lease.acquire()
    keeping = asyncio.ensure_future(lease.keep())  # returns only if the lease is lost
    await store.put(record())
    copies = (await replicas(nc, S.jobs_bucket), await replicas(nc, S.leader_bucket))
    connected_to = nc.connected_url.netloc
    victim = next(n for n in cluster.nodes if n.url.endswith(connected_to))
    victim.kill()  # the node this client talks to: it has to move to another one
    async with asyncio.timeout(30):  # polled: client.connect set nats-py's callbacks already
        while not nc.is_connected or nc.connected_url.netloc == connected_to:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await store.put(record(phase=Phase.CHECKING))  # waits out the stream's new election
    loaded = await (await KvStore.open(nc, S.jobs_bucket, replicas=3)).load()
    await asyncio.sleep(CLUSTER_TTL_S)  # long enough for an unrenewed lease to expire
    leader, lost = await lease.leader(), keeping.done()
    keeping.cancel()
    await nc.drain()
    assert (3, 3) == copies
    assert [("m1", Phase.CHECKING)] == [(r.migration_id, r.phase) for r in loaded]
    assert (lease.holder, False) == (leader, lost)


async def test_a_bucket_made_with_one_copy_is_scaled_up_to_the_replicas_asked(cluster):
    nc = await client.connect(cluster.access("coordinator"))
    await open_bucket(nc, KeyValueConfig(bucket=S.jobs_bucket, history=1, replicas=1))
    before = await replicas(nc, S.jobs_bucket)
    await KvStore.open(nc, S.jobs_bucket, replicas=3)
    after = await replicas(nc, S.jobs_bucket)
    await nc.drain()
    assert (1, 3) == (before, after)


async def test_a_client_given_every_url_connects_while_one_node_is_down(cluster):
    cluster.nodes[0].kill()
    connected = []
    for _ in range(6):  # nats-py picks a server at random: try enough times to pick the dead one
        nc = await client.connect(cluster.access("operator"), timeout_s=2)
        connected.append(nc.connected_url.netloc)
        await nc.close()
    dead = cluster.nodes[0].url.split("://", 1)[1]
    assert dead not in connected


async def test_a_client_given_only_dead_urls_says_it_cannot_reach_nats(cluster: SecuredNats):
    for node in cluster.nodes:
        node.kill()
    with pytest.raises(BatonError) as caught:
        await client.connect(cluster.access("operator"), timeout_s=1)
    assert ErrorCode.UNAVAILABLE == caught.value.code


def test_servers_are_the_comma_separated_urls_and_none_is_a_bad_request():
    assert ["tls://a:1", "tls://b:2"] == NatsAccess(url=" tls://a:1 ,tls://b:2,").servers
    with pytest.raises(BatonError) as caught:
        _ = NatsAccess(url=" , ").servers
    assert ErrorCode.BAD_REQUEST == caught.value.code
