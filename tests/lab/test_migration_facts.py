"""``migration.status``: each agent reports libvirt's own facts about a migration, read when
asked (issue #11, part 2: the facts a reconcile decides from), on real libvirt and QEMU."""

from __future__ import annotations

import pytest

from baton.mesh import client
from baton.schemas.migration import MigrationStatus, MigrationStatusRequest
from baton.schemas.subjects import AgentEndpoint, Subjects
from tests.lab.migrations import final, start, wait_phase

pytestmark = pytest.mark.lab
S = Subjects()


async def test_both_agents_report_the_running_copy_migration_from_libvirt(stack, lab, guest):
    vm = guest("h1", storage="local")
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "4")
    wait_phase(stack, migration_id, {"migrating"})
    asked = MigrationStatusRequest(migration_id=migration_id, vm=vm)
    nc = await client.connect(stack.access("coordinator"))
    try:
        source, destination = [await client.request(
            nc, S.agent(host, AgentEndpoint.MIGRATION_STATUS), asked, MigrationStatus, 10)
            for host in ("h1", "h2")]
    finally:
        await nc.drain()
    stack.baton("bandwidth", migration_id, "256")  # 4 MiB/s cannot carry the guest's dirtying
    rec = final(stack, migration_id)
    uuid = lab.virsh("h2", "domuuid", vm).strip()
    disk = f"/var/lib/libvirt/images/{vm}.qcow2"
    assert "succeeded" == rec["phase"]
    assert (True, True, "running", "migration_out") == (
        source.running_here, source.known, source.domain.state, source.job.operation)
    assert [(disk, True)] == [(f.path, f.exists) for f in source.sent]
    assert (True, "paused", uuid, [(disk, True)]) == (
        destination.known, destination.domain.state, destination.incoming_uuid,
        [(f.path, f.exists) for f in destination.created])
