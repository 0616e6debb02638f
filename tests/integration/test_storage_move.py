"""The real coordinator serving ``baton.coordinator.storage.move`` against scripted fake agents.

h1 holds ``vm1`` with its 10 GiB qcow2 ``vda`` in pool ``default`` (see ``coordinator_fixtures``);
every host also has a pool ``fast``. The fake agent plays the agent's half: copying, ready,
pivoted, then the outcome — or a failure, or a copy that runs until aborted.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from baton.schemas.errors import ErrorCode
from baton.schemas.migration import AbortRequest, JobsReply, JobsRequest, Phase
from baton.schemas.storage import (
    StorageCheckReport,
    StorageMoveAccepted,
    StorageMoveRecord,
    StorageMoveRequest,
)
from baton.schemas.subjects import AgentEndpoint as A
from baton.schemas.subjects import CoordinatorEndpoint as C
from tests.integration.fake_agents import FAST, IMAGES, LIBVIRT_FAILURE, Mesh, Script, domain
from tests.integration.test_coordinator import ask

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)
COPYING = (A.STORAGE_MOVE, A.STORAGE_ABORT)


async def move_disk(nc, **options: Any) -> Any:
    request = StorageMoveRequest(**({"vm": "vm1", "destination_pool": "fast"} | options))
    return await ask(nc, C.STORAGE_MOVE, request, StorageMoveAccepted | StorageCheckReport)


def copies_asked(mesh: Mesh) -> list[A]:
    return [e for agent in mesh.agents.values() for e, _ in agent.requests if e in COPYING]


async def test_a_move_is_accepted_at_once_and_publishes_every_phase_in_order(
        coordinator, mesh, watcher, nats_client):
    t0 = time.monotonic()
    accepted = await move_disk(nats_client, bandwidth_mib_s=20, keep_source=True)
    assert time.monotonic() - t0 < 2
    assert ("h1", [f"{FAST}/vm1.qcow2"]) == (
        accepted.host, [d.destination_path for d in accepted.disks])
    record = await watcher.final(accepted.migration_id)
    assert isinstance(record, StorageMoveRecord)
    assert [Phase.PENDING, Phase.CHECKING, Phase.PREPARING, Phase.MIGRATING, Phase.COMPLETING,
            Phase.SUCCEEDED] == watcher.phases_of(accepted.migration_id)
    [asked] = mesh["h1"].asked(A.STORAGE_MOVE)
    assert (20, True, "qcow2", f"{IMAGES}/vm1.qcow2") == (
        asked.bandwidth_mib_s, asked.keep_source, asked.disks[0].format,
        asked.disks[0].source_path)
    assert [True] == [d.pivoted for d in record.outcome]
    assert {accepted.migration_id} == {p.migration_id for p in watcher.progress}


async def test_jobs_lists_storage_moves_beside_migrations(coordinator, mesh, watcher, nats_client):
    accepted = await move_disk(nats_client)
    await watcher.final(accepted.migration_id)
    reply = await ask(nats_client, C.JOBS, JobsRequest(), JobsReply)
    assert ([], [accepted.migration_id]) == (
        reply.migrations, [r.migration_id for r in reply.storage_moves])


@pytest.mark.parametrize(("options", "code", "words"), [
    ({"destination_pool": "nosuch"}, ErrorCode.PRECONDITION_FAILED, "no storage pool 'nosuch'"),
    ({"destination_pool": "default"}, ErrorCode.PRECONDITION_FAILED, "already in pool default"),
    ({"disk": "vdz"}, ErrorCode.PRECONDITION_FAILED, "no disk vdz"),
    ({"vm": "vmoff"}, ErrorCode.PRECONDITION_FAILED, "needs it running"),
    ({"vm": "ghost"}, ErrorCode.NOT_FOUND, "no host has a VM named 'ghost'"),
    ({"host": "h9"}, ErrorCode.NOT_FOUND, "unknown host 'h9'"),
])
async def test_bad_requests_are_refused_before_any_copy(coordinator, mesh, nats_client, options,
                                                        code, words):
    reply = await move_disk(nats_client, **options)
    assert (code, True) == (reply.code, words in reply.message), reply.message
    assert [] == copies_asked(mesh)


async def test_a_pool_without_room_for_the_virtual_size_is_refused(coordinator, mesh, nats_client):
    pools = mesh["h1"].caps_reply.pools
    pools[1] = type(pools[1])(name="fast", type="dir", target_path=FAST, active=True,
                              available_bytes=5 * 1024**3)  # the disk is 10 GiB
    reply = await move_disk(nats_client)
    assert (ErrorCode.PRECONDITION_FAILED, True) == (
        reply.code, "5.00 GiB available, the disks need 10.00 GiB" in reply.message)
    assert [] == copies_asked(mesh)


async def test_a_disk_another_vm_uses_is_refused(coordinator, mesh, nats_client):
    other = domain("vm2")
    mesh["h1"].add_domain(type(other)(**{f: getattr(other, f) for f in other.__struct_fields__
                                         if f != "disks"}, disks=mesh["h1"].domains["vm1"].disks))
    reply = await move_disk(nats_client)
    assert "also used by vm2" in reply.message
    assert [] == copies_asked(mesh)


async def test_a_dry_run_answers_with_the_checks_and_copies_nothing(coordinator, mesh, nats_client):
    report = await move_disk(nats_client, dry_run=True)
    assert isinstance(report, StorageCheckReport)
    assert (True, ["vm", "disk", "pool"]) == (report.ok, [c.name for c in report.checks])
    assert [] == copies_asked(mesh)


async def test_an_abort_mid_copy_ends_aborted_and_reaches_the_agent(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].script = Script(outcome="hang")
    accepted = await move_disk(nats_client)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    record = await ask(nats_client, C.ABORT, AbortRequest(migration_id=accepted.migration_id),
                       StorageMoveRecord)
    assert (Phase.ABORTED, [f"{IMAGES}/vm1.qcow2"]) == (
        record.phase, [d.path for d in record.outcome])
    [abort] = mesh["h1"].asked(A.STORAGE_ABORT)
    assert [f"{FAST}/vm1.qcow2"] == [d.destination_path for d in abort.disks]


async def test_a_copy_failure_reports_libvirts_reason(coordinator, mesh, watcher, nats_client):
    mesh["h1"].script = Script(outcome="fail")
    accepted = await move_disk(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.HYPERVISOR, LIBVIRT_FAILURE) == (
        record.phase, record.error.code, record.error.message)


async def test_a_second_move_of_a_busy_vm_is_a_conflict(coordinator, mesh, watcher, nats_client):
    mesh["h1"].script = Script(outcome="hang")
    first = await move_disk(nats_client)
    await watcher.until(first.migration_id, {Phase.MIGRATING})
    reply = await move_disk(nats_client)
    assert ErrorCode.CONFLICT == reply.code
    await ask(nats_client, C.ABORT, AbortRequest(migration_id=first.migration_id),
              StorageMoveRecord)
