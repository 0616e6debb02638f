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
        # The destination is asked again and again from the moment the migration is accepted
        # until the guest runs there, and must answer every time within 5 s: through the
        # prepare, while its QEMU starts (paused "starting up") and while it receives (paused
        # "migration"). In both, a job holds the domain and admits no query: CI saw status
        # reads hang there, once in each.
        destination, source, seen = await follow_the_destination(stack, nc, asked, migration_id)
    finally:
        await nc.drain()
    rec = final(stack, migration_id)
    uuid = lab.virsh("h2", "domuuid", vm).strip()
    disk = f"/var/lib/libvirt/images/{vm}.qcow2"
    assert "succeeded" == rec["phase"]
    assert {"paused", "running"} <= seen
    assert (True, True, "running", "migration_out") == (
        source.running_here, source.known, source.domain.state, source.job.operation)
    assert [(disk, True)] == [(f.path, f.exists) for f in source.sent]
    assert (True, "paused", uuid, [(disk, True)]) == (
        destination.known, destination.domain.state, destination.incoming_uuid,
        [(f.path, f.exists) for f in destination.created])


async def follow_the_destination(stack, nc, asked: MigrationStatusRequest, migration_id: str,
                                 within_s: float = 240,
                                 ) -> tuple[MigrationStatus, MigrationStatus, set[str]]:
    """The destination's first answer that shows it paused and receiving, the source's answer
    right after it, and every domain state the destination reported until its guest ran."""
    ask = {host: S.agent(host, AgentEndpoint.MIGRATION_STATUS) for host in ("h1", "h2")}
    first: MigrationStatus | None = None
    source: MigrationStatus | None = None
    seen: set[str] = set()
    async with asyncio.timeout(within_s):
        while True:
            found = await client.request(nc, ask["h2"], asked, MigrationStatus, 5)
            state = found.domain.state if found.domain is not None else None
            seen.add(str(state))
            if first is None and state == "paused" and found.created:
                first = found
                source = await client.request(nc, ask["h1"], asked, MigrationStatus, 10)
                # 32 MiB/s: memory still takes a few seconds to send (the destination paused
                # "migration" all along), then converges.
                await asyncio.to_thread(stack.baton, "bandwidth", migration_id, "32")
            if state == "running":
                assert first is not None and source is not None
                return first, source, seen
            await asyncio.sleep(0.2)
