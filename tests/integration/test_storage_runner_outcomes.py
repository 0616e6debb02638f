"""The storage move runner's record, reasons and errors, against scripted fake agents.

Beside ``test_storage_move.py``: what each phase event says, what an abort, a refusal or a failed
confirmation records, and what the runner does when the host changed after the move was accepted
(those tests run a :class:`StorageMoveRunner` directly, so the change lands between acceptance and
the runner's own check). Where a test plays the agent's reports itself, the fake agent's script
hangs and the test publishes on the agent's report subjects.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import pytest

from baton.coordinator import storage_checks
from baton.coordinator.agents import AgentClient
from baton.coordinator.job_runner import RunnerDeps
from baton.coordinator.storage_runner import StorageMoveRunner, new_record
from baton.schemas.base import utc_now
from baton.schemas.codec import encode
from baton.schemas.errors import ErrorCode, ErrorReply
from baton.schemas.events import JobStats
from baton.schemas.migration import AbortRequest, BandwidthRequest, Phase
from baton.schemas.storage import (
    DiskOutcome,
    StorageMoveFinished,
    StorageMoveRecord,
    StorageMoveRequest,
    StorageStage,
    StorageStageEvent,
)
from baton.schemas.subjects import AgentEndpoint as A
from baton.schemas.subjects import CoordinatorEndpoint as C
from baton.schemas.subjects import MigrationEvent
from tests.integration.fake_agents import FAST, IMAGES, Job, Mesh, Script
from tests.integration.test_coordinator import ask
from tests.integration.test_storage_move import move_disk

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)
KEEPS_OLD_FILES = "; the VM keeps its old files"
DATA_DISK = f"{IMAGES}/vm1-data.qcow2"


def give_vm1_a_second_disk(mesh: Mesh) -> None:
    """vm1 gets ``vdb`` (DATA_DISK) beside ``vda``, both in pool default."""
    vm = mesh["h1"].domains["vm1"]
    vdb = msgspec.structs.replace(vm.disks[0], target="vdb", source_path=DATA_DISK)
    mesh["h1"].add_domain(msgspec.structs.replace(vm, disks=[*vm.disks, vdb]))


def repoint_vm1(mesh: Mesh) -> None:
    """What the agent's pivot leaves: vm1's disks on their copies in pool fast."""
    vm = mesh["h1"].domains["vm1"]
    mesh["h1"].domains["vm1"] = msgspec.structs.replace(vm, disks=[
        msgspec.structs.replace(d, source_path=d.source_path.replace(IMAGES, FAST))
        for d in vm.disks])


async def publish_report(nc, mesh: Mesh, migration_id: str, event: MigrationEvent,
                         message: Any) -> None:
    """Publish as h1's agent does on its report subject for ``migration_id``."""
    await nc.publish(mesh.subjects.agent_report("h1", migration_id, event), encode(message))
    await nc.flush()


def finished(migration_id: str, *, stats: JobStats | None = None) -> StorageMoveFinished:
    """The agent's successful outcome for vm1's ``vda``."""
    return StorageMoveFinished(
        migration_id=migration_id, host_id="h1", at=utc_now(), stats=stats,
        disks=[DiskOutcome(target="vda", path=f"{FAST}/vm1.qcow2", pivoted=True,
                           source_deleted=True)])


async def hanging_move(mesh: Mesh, watcher, nats_client) -> str:
    """A move the fake agent copies until aborted; returns its id once it is migrating."""
    mesh["h1"].script = Script(outcome="hang")
    accepted = await move_disk(nats_client)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    return accepted.migration_id


def reasons(watcher, migration_id: str) -> dict[Phase, str]:
    return {e.phase: e.reason for e in watcher.phases if e.migration_id == migration_id}


# --- through the coordinator -------------------------------------------------------------------


async def test_a_storage_moves_bandwidth_cannot_be_changed_and_the_reply_says_how_to(
        coordinator, mesh, watcher, nats_client):
    migration_id = await hanging_move(mesh, watcher, nats_client)
    reply = await ask(nats_client, C.BANDWIDTH, BandwidthRequest(
        migration_id=migration_id, bandwidth_mib_s=50), StorageMoveRecord)
    assert ErrorReply(code=ErrorCode.UNSUPPORTED, message=(
        "a storage move's bandwidth is set when it starts: abort it and move again with "
        "--bandwidth")) == reply
    await ask(nats_client, C.ABORT, AbortRequest(migration_id=migration_id), StorageMoveRecord)


async def test_an_operators_abort_is_recorded_with_its_reason_and_the_vm_keeps_its_old_files(
        coordinator, mesh, watcher, nats_client):
    migration_id = await hanging_move(mesh, watcher, nats_client)
    record = await ask(nats_client, C.ABORT, AbortRequest(migration_id=migration_id),
                       StorageMoveRecord)
    assert (Phase.ABORTED, ErrorCode.CONFLICT,
            "aborted: requested by an operator" + KEEPS_OLD_FILES) == (
        record.phase, record.error.code, record.error.message)


async def test_a_move_the_agent_aborts_on_its_own_is_recorded_as_aborted_by_the_agent(
        coordinator, mesh, watcher, nats_client):
    migration_id = await hanging_move(mesh, watcher, nats_client)
    mesh["h1"].moves[migration_id].abort.set()
    record = await watcher.final(migration_id)
    assert (Phase.ABORTED, ErrorCode.CONFLICT, "aborted: by the agent" + KEEPS_OLD_FILES) == (
        record.phase, record.error.code, record.error.message)


async def test_a_move_the_agent_refuses_to_start_fails_with_the_agents_error(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].moves["leftover"] = Job("vm1")  # a move the coordinator does not know runs
    accepted = await move_disk(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.CONFLICT, "vm1 is already moving its disks", []) == (
        record.phase, record.error.code, record.error.message, record.outcome)
    assert [Phase.PENDING, Phase.CHECKING, Phase.PREPARING, Phase.FAILED] == watcher.phases_of(
        accepted.migration_id)


async def test_the_pending_record_holds_the_checks_and_disks_the_move_was_accepted_with(
        coordinator, mesh, watcher, nats_client):
    accepted = await move_disk(nats_client)
    pending = await watcher.until(accepted.migration_id, {Phase.PENDING})
    assert (["vm", "disk", "pool"], [f"{FAST}/vm1.qcow2"]) == (
        [c.name for c in pending.record.checks],
        [d.destination_path for d in pending.record.disks])
    await watcher.final(accepted.migration_id)


@pytest.mark.parametrize(("keep_source", "old_files"), [(True, "kept"), (False, "deleted")])
async def test_every_phase_event_of_a_move_says_why(coordinator, mesh, watcher, nats_client,
                                                    keep_source, old_files):
    give_vm1_a_second_disk(mesh)
    accepted = await move_disk(nats_client, keep_source=keep_source)
    await watcher.final(accepted.migration_id)
    assert {
        Phase.PENDING: "accepted",
        Phase.CHECKING: "",
        Phase.PREPARING: "asking h1 to copy",
        Phase.MIGRATING: "copying vda, vdb into pool fast",
        Phase.COMPLETING: "copies in sync: switching the VM to them",
        Phase.SUCCEEDED: f"the VM uses the new files; old files {old_files}",
    } == reasons(watcher, accepted.migration_id)


async def test_an_outcome_without_stage_reports_completes_and_keeps_the_agents_figures(
        coordinator, mesh, watcher, nats_client):
    migration_id = await hanging_move(mesh, watcher, nats_client)
    repoint_vm1(mesh)
    stats = JobStats(operation="block_copy", time_elapsed_ms=2500, disk_total_bytes=10 * 1024**3)
    outcome = finished(migration_id, stats=stats)
    await publish_report(nats_client, mesh, migration_id, MigrationEvent.STORAGE_FINISHED,
                         outcome)
    record = await watcher.final(migration_id)
    assert (Phase.SUCCEEDED, stats, outcome.at, outcome.disks) == (
        record.phase, record.result, record.pivoted_at, record.outcome)
    assert "the agent finished the move" == reasons(watcher, migration_id)[Phase.COMPLETING]


async def test_a_stage_report_naming_another_move_is_ignored(coordinator, mesh, watcher,
                                                             nats_client):
    migration_id = await hanging_move(mesh, watcher, nats_client)
    repoint_vm1(mesh)
    await publish_report(nats_client, mesh, migration_id, MigrationEvent.STORAGE_STAGE,
                         StorageStageEvent(migration_id="another-move", host_id="h1",
                                           at=utc_now(), stage=StorageStage.READY))
    await publish_report(nats_client, mesh, migration_id, MigrationEvent.STORAGE_FINISHED,
                         finished(migration_id))
    await watcher.final(migration_id)
    assert "the agent finished the move" == reasons(watcher, migration_id)[Phase.COMPLETING]


async def test_a_move_the_domain_does_not_show_fails_naming_every_disk_on_its_old_file(
        coordinator, mesh, watcher, nats_client):
    give_vm1_a_second_disk(mesh)
    migration_id = await hanging_move(mesh, watcher, nats_client)
    await publish_report(nats_client, mesh, migration_id, MigrationEvent.STORAGE_FINISHED,
                         finished(migration_id))
    record = await watcher.final(migration_id)
    assert (Phase.FAILED, ErrorCode.HYPERVISOR,
            f"the agent reported the move done, but vda uses {IMAGES}/vm1.qcow2; "
            f"vdb uses {DATA_DISK}") == (record.phase, record.error.code, record.error.message)


# --- a runner started directly: the host changes after acceptance ------------------------------


async def accepted_runner(mesh: Mesh, nats_client) -> StorageMoveRunner:
    """The runner the coordinator would launch for moving vm1 to pool fast, checked now."""
    agents = AgentClient(nats_client, mesh.subjects)
    request = StorageMoveRequest(vm="vm1", destination_pool="fast")
    report = storage_checks.report(await storage_checks.gather(agents, request, "h1"))
    assert report.ok, report
    return StorageMoveRunner(new_record(uuid.uuid4().hex[:12], request, "h1", report),
                             RunnerDeps(nats_client, agents, mesh.subjects))


async def test_a_pool_that_filled_up_after_acceptance_fails_the_runners_own_check(
        mesh, nats_client):
    runner = await accepted_runner(mesh, nats_client)
    pools = mesh["h1"].caps_reply.pools
    pools[1] = msgspec.structs.replace(pools[1], available_bytes=5 * 1024**3)
    await asyncio.wait_for(runner.run(), 30)
    record = runner.record
    assert (Phase.FAILED, ErrorCode.PRECONDITION_FAILED,
            "storage move refused — pool: pool fast has 5.00 GiB available, the disks need "
            "10.00 GiB (their virtual size): free space or pick another pool") == (
        record.phase, record.error.code, record.error.message)
    assert ["pass", "pass", "fail"] == [c.status for c in record.checks]
    assert [] == mesh["h1"].asked(A.STORAGE_MOVE)


async def test_a_disk_added_after_acceptance_is_moved_too(mesh, nats_client):
    runner = await accepted_runner(mesh, nats_client)
    give_vm1_a_second_disk(mesh)
    await asyncio.wait_for(runner.run(), 30)
    [asked] = mesh["h1"].asked(A.STORAGE_MOVE)
    assert (Phase.SUCCEEDED, ["vda", "vdb"], ["vda", "vdb"]) == (
        runner.record.phase, [d.target for d in asked.disks],
        [d.target for d in runner.record.disks])
