"""Baton on a 3-node NATS cluster (issue #11, part 6), on real QEMU: the node that leads the
records' stream dies mid-copy, and the migration still ends recorded, with the VM on one host.

A stack of its own (nats-server x3 with routes over TLS, agents on h1 and h2, a coordinator with
``--kv-replicas 3``), beside the session's: each agent keeps its own ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from baton.mesh import client
from baton.schemas.subjects import Subjects
from tests.lab.labctl import Lab
from tests.lab.migrations import final, start, wait_phase
from tests.lab.stack import BatonStack

pytestmark = pytest.mark.lab
S = Subjects()


@pytest.fixture(scope="module")
def cluster_stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatonStack]:
    stack = BatonStack(lab, tmp_path_factory.mktemp("baton-cluster"), hosts=("h1", "h2"),
                       nats_nodes=3)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


async def stream_leader(stack: BatonStack, bucket: str) -> str:
    """The server name (n1, n2, n3) of the node that leads the bucket's stream now."""
    nc = await client.connect(stack.access("coordinator"))
    try:
        info = await nc.jetstream().stream_info(f"KV_{bucket}")
    finally:
        await nc.drain()
    assert info.cluster is not None and info.cluster.leader
    return info.cluster.leader


async def test_the_records_node_dies_mid_copy_and_the_migration_ends_recorded(
        cluster_stack, lab, guest):
    stack = cluster_stack
    vm = guest("h1", storage="local")
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "16")
    wait_phase(stack, migration_id, {"migrating"})
    leader = await stream_leader(stack, S.jobs_bucket)
    assert stack.nats is not None
    stack.nats.nodes[int(leader.removeprefix("n")) - 1].kill()
    rec = final(stack, migration_id)
    new_leader = await stream_leader(stack, S.jobs_bucket)
    coordinator_kept_lease = stack.coordinator_alive()
    stack.restart_coordinator()  # reads the records back from the two nodes left
    listed = json.loads(stack.baton("jobs", "-o", "json").stdout)
    rows = listed["migrations"] if isinstance(listed, dict) else listed
    assert "succeeded" == rec["phase"]
    assert leader != new_leader
    assert coordinator_kept_lease  # a lost lease would have stopped it (exit 4)
    assert ("running", None) == (lab.domstate("h2", vm), lab.domstate("h1", vm))
    lab.wait_alive_past(vm, seq_before)
    assert not lab.disk_path(vm, "local", "h1").exists()
    assert "succeeded" == next(r for r in rows if r["migration_id"] == migration_id)["phase"]
