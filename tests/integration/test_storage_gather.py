"""What a storage move's pre-flight reads from the host (coordinator/storage_checks.gather), over
real NATS from the fake agent: the destination files that exist and the free space measured now."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import nats
import pytest

from baton.coordinator.agents import AgentClient
from baton.coordinator.storage_checks import gather
from baton.schemas.agent import StoragePool
from baton.schemas.storage import StorageMoveRequest
from baton.schemas.subjects import Subjects
from tests.integration.fake_agents import FAST, IMAGES, Mesh, domain
from tests.integration.fake_storage import FS_FREE_BYTES

pytestmark = pytest.mark.integration


@pytest.fixture
async def mesh(nats_server) -> AsyncIterator[Mesh]:
    mesh = Mesh()
    h1 = mesh.add("h1")
    h1.add_domain(domain("vm1"))
    h1.add_domain(msgspec.structs.replace(domain("vm2"), disks=[
        *domain("vm2").disks, *(msgspec.structs.replace(d, target="vdb", source_path=f"{IMAGES}/"
                                                       "vm2b.qcow2") for d in domain("vm2").disks)]))
    async with mesh.serving(nats_server.url):
        yield mesh


async def facts_for(nats_server, vm: str, pool: str = "fast"):
    nc = await nats.connect(nats_server.url)
    try:
        return await gather(AgentClient(nc, Subjects()),
                            StorageMoveRequest(vm=vm, destination_pool=pool), "h1")
    finally:
        await nc.drain()


async def test_the_free_space_now_and_every_destination_file_that_exists_are_read(nats_server,
                                                                                   mesh):
    mesh.storage.add("h1", f"{FAST}/vm2.qcow2")
    mesh.storage.add("h1", f"{FAST}/vm2b.qcow2")
    facts = await facts_for(nats_server, "vm2")
    assert (FS_FREE_BYTES, frozenset({f"{FAST}/vm2.qcow2", f"{FAST}/vm2b.qcow2"})) == (
        facts.free_bytes, facts.existing)
    assert ["vm1"] == [d.name for d in facts.others]


async def test_a_pool_without_a_directory_is_not_probed(nats_server, mesh):
    h1 = mesh.agents["h1"]
    h1.caps_reply = msgspec.structs.replace(h1.caps_reply, pools=[
        *h1.caps_reply.pools, StoragePool(name="ceph", type="rbd", target_path=None, active=True)])
    facts = await facts_for(nats_server, "vm1", pool="ceph")
    assert (None, frozenset()) == (facts.free_bytes, facts.existing)
