"""``migration.status``: each agent reports libvirt's own facts about a migration, read when
asked (issue #11, part 2: the facts a reconcile decides from), on real libvirt and QEMU."""

from __future__ import annotations

import asyncio

import pytest

from baton.mesh import client
from baton.schemas.migration import MigrationStatus, MigrationStatusRequest
from baton.schemas.subjects import AgentEndpoint, Subjects
from tests.lab.migrations import final, start

pytestmark = pytest.mark.lab
S = Subjects()


async def test_both_agents_report_the_running_copy_migration_from_libvirt(stack, lab, guest):
    vm = guest("h1", storage="local")
    # The disks copy at the starting bandwidth whatever is set later (libvirt changes only the
    # memory stream's speed), so 16 MiB/s keeps the copy running a few seconds, no longer.
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "16")
    asked = MigrationStatusRequest(migration_id=migration_id, vm=vm)
    nc = await client.connect(stack.access("coordinator"))
    try:
        # Asked again and again from the moment the migration is accepted, the destination answers
        # every time, quickly: through the prepare, while its QEMU starts for the incoming guest
        # (a job then holds the domain and admits no query: CI once saw this read hang), and
        # while it receives. It stops once the destination is paused, receiving.
        destination = await destination_receiving(nc, asked)
        source = await client.request(
            nc, S.agent("h1", AgentEndpoint.MIGRATION_STATUS), asked, MigrationStatus, 10)
    finally:
        await nc.drain()
    stack.baton("bandwidth", migration_id, "256")  # 16 MiB/s might not carry the guest's dirtying
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


async def destination_receiving(nc, asked: MigrationStatusRequest,
                                within_s: float = 120) -> MigrationStatus:
    """The destination's first answer that shows it paused and receiving; each answer must come
    within 5 s (a NoReply fails the test)."""
    subject = S.agent("h2", AgentEndpoint.MIGRATION_STATUS)
    async with asyncio.timeout(within_s):
        while True:
            found = await client.request(nc, subject, asked, MigrationStatus, 5)
            if found.domain is not None and found.domain.state == "paused" and found.created:
                return found
            await asyncio.sleep(0.05)
