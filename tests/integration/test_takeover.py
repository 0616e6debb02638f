"""A coordinator that starts with records an earlier one left running settles each from both
hosts' facts (coordinator/takeover.py), over real NATS with the fake agents: roll forward, roll
back, nothing touched, facts that contradict, and an agent that answers only later."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest

from baton.agent.ledger import Entry
from baton.coordinator import takeover
from baton.coordinator.agents import AgentClient
from baton.coordinator.core import Coordinator
from baton.coordinator.job_runner import RunnerDeps
from baton.coordinator.storage_takeover import StorageTakeover
from baton.coordinator.store import MemoryStore
from baton.coordinator.takeover import Takeover
from baton.schemas.agent import DomainState
from baton.schemas.base import utc_now
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import MigrateRequest, MigrationRecord, Phase, StorageMode
from baton.schemas.storage import DiskMove, StorageMoveRecord, StorageMoveRequest
from baton.schemas.subjects import AgentEndpoint as A
from baton.schemas.subjects import Subjects
from tests.integration.fake_agents import FAST, IMAGES, Job, Mesh, domain, fake_uuid

pytestmark = pytest.mark.integration
DISK = f"{IMAGES}/vm1.qcow2"


def left_running(phase: Phase = Phase.MIGRATING, live: bool = True) -> MigrationRecord:
    now = utc_now()
    return MigrationRecord(migration_id="m1", vm="vm1", source="h1", destination="h2",
                           phase=phase, storage=StorageMode.COPY, created_at=now, updated_at=now,
                           request=MigrateRequest(vm="vm1", destination="h2", live=live))


@pytest.fixture
async def mesh(nats_server) -> AsyncIterator[Mesh]:
    mesh = Mesh()
    mesh.add("h1")
    mesh.add("h2")
    async with mesh.serving(nats_server.url):
        yield mesh


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(takeover, "POLL_S", 0.05)


async def settle(nats_server, record: MigrationRecord | StorageMoveRecord,
                 reasons: list[tuple[Phase, str]] | None = None,
                 ) -> MigrationRecord | StorageMoveRecord:
    """Start a coordinator on a store holding ``record`` and wait until it is settled;
    ``reasons`` gets each phase event's (phase, reason) as monitors hear them."""
    store = MemoryStore()
    await store.put(record)
    nc = await nats.connect(nats_server.url)

    async def heard(msg) -> None:
        event = msgspec.json.decode(msg.data)
        if reasons is not None:
            reasons.append((Phase(event["phase"]), event["reason"]))

    await nc.subscribe(Subjects().migrations_filter("m1", "phase"), cb=heard)
    try:
        async with asyncio.TaskGroup() as tasks:
            coordinator = Coordinator(RunnerDeps(nc=nc, agents=AgentClient(nc, Subjects()),
                                                 subjects=Subjects(), store=store),
                                      tasks.create_task)
            assert 1 == await coordinator.restore()
            job = coordinator.registry.get("m1")
            assert isinstance(job, Takeover | StorageTakeover)
            async with asyncio.timeout(10):
                await job.done.wait()
        await nc.flush()
    finally:
        await nc.drain()
    assert store.records["m1"] == job.record  # every phase written to the store
    return job.record


def landed(mesh: Mesh) -> None:
    """The copy finished while no coordinator ran: vm1 runs on h2, h1 sent its disk away."""
    h1, h2 = mesh.agents["h1"], mesh.agents["h2"]
    mesh.storage.add("h1", DISK)
    mesh.storage.add("h2", DISK)
    h1.ledger["m1"] = Entry(migration_id="m1", vm="vm1", sent_paths=[DISK], sent_completed=True)
    h2.ledger["m1"] = Entry(migration_id="m1", vm="vm1", incoming_uuid=fake_uuid("vm1"),
                            created_paths=[DISK])
    h2.add_domain(domain("vm1"))


def failed(mesh: Mesh) -> None:
    """The migration failed while no coordinator ran: vm1 runs on h1, h2 keeps its prepared copy."""
    h1, h2 = mesh.agents["h1"], mesh.agents["h2"]
    h1.add_domain(domain("vm1"))
    mesh.storage.add("h2", DISK)
    h1.ledger["m1"] = Entry(migration_id="m1", vm="vm1", sent_paths=[DISK])
    h2.ledger["m1"] = Entry(migration_id="m1", vm="vm1", incoming_uuid=fake_uuid("vm1"),
                            created_paths=[DISK])


LANDED = "vm1 runs on h2 only: the move happened"


async def test_a_migration_that_landed_is_completed_and_the_sent_disk_deleted(nats_server, mesh):
    landed(mesh)
    reasons: list[tuple[Phase, str]] = []
    settled = await settle(nats_server, left_running(), reasons)
    assert Phase.SUCCEEDED == settled.phase
    assert (False, True) == (mesh.storage.exists("h1", DISK), mesh.storage.exists("h2", DISK))
    assert [(Phase.COMPLETING, f"after a coordinator restart: {LANDED}"),
            (Phase.SUCCEEDED, f"settled after a coordinator restart: {LANDED}")] == reasons


async def test_a_landed_migration_whose_source_keeps_its_disk_says_so(nats_server, mesh):
    landed(mesh)
    mesh.agents["h1"].ledger["m1"].sent_completed = False  # the source cannot tell: it keeps it
    reasons: list[tuple[Phase, str]] = []
    assert Phase.SUCCEEDED == (await settle(nats_server, left_running(), reasons)).phase
    assert mesh.storage.exists("h1", DISK)
    assert (Phase.SUCCEEDED, f"settled after a coordinator restart: {LANDED}; h1 kept {DISK}: "
            f"{DISK} was sent away by migration m1, which has not completed on this host: "
            "kept") == reasons[-1]


async def test_a_migration_that_landed_keeps_the_source_disk_when_asked(nats_server, mesh):
    landed(mesh)
    record = msgspec.structs.replace(left_running(), request=MigrateRequest(
        vm="vm1", destination="h2", undefine_source=False))
    reasons: list[tuple[Phase, str]] = []
    assert Phase.SUCCEEDED == (await settle(nats_server, record, reasons)).phase
    assert mesh.storage.exists("h1", DISK)
    assert (Phase.SUCCEEDED, f"settled after a coordinator restart: {LANDED}") == reasons[-1]


async def test_a_landed_migration_whose_source_keeps_two_disks_names_both(nats_server, mesh):
    landed(mesh)
    other = f"{IMAGES}/vm1-data.qcow2"
    mesh.storage.add("h1", other)
    mesh.agents["h1"].ledger["m1"] = Entry(migration_id="m1", vm="vm1", sent_paths=[DISK, other])
    reasons: list[tuple[Phase, str]] = []
    await settle(nats_server, left_running(), reasons)
    assert reasons[-1][1].startswith(f"settled after a coordinator restart: {LANDED}; h1 kept "
                                     f"{DISK}, {other}: ")


async def test_a_migration_whose_libvirt_job_still_runs_is_waited_for(nats_server, mesh):
    landed(mesh)
    h1 = mesh.agents["h1"]
    h1.migrations["m1"] = Job(vm="vm1")  # the source still migrates

    async def finish() -> None:
        await asyncio.sleep(0.3)
        del h1.migrations["m1"]

    finishing = asyncio.ensure_future(finish())
    settled = await settle(nats_server, left_running())
    await finishing
    assert Phase.SUCCEEDED == settled.phase


async def test_a_landed_migration_left_in_preparing_passes_through_migrating(nats_server, mesh):
    landed(mesh)
    reasons: list[tuple[Phase, str]] = []
    assert Phase.SUCCEEDED == (await settle(nats_server, left_running(Phase.PREPARING),
                                            reasons)).phase
    assert [(Phase.MIGRATING, "after a coordinator restart"), Phase.COMPLETING,
            Phase.SUCCEEDED] == [reasons[0], reasons[1][0], reasons[2][0]]


ROLLED_BACK = ("the coordinator stopped during the migration; vm1 runs on h1; h2 holds at most "
               "the copy it prepared; rolled back")


async def test_a_migration_that_failed_is_rolled_back_on_the_destination_only(nats_server, mesh):
    failed(mesh)
    mesh.agents["h2"].domains["vm1"] = domain("vm1", state=DomainState.PAUSED)  # the incoming one
    reasons: list[tuple[Phase, str]] = []
    settled = await settle(nats_server, left_running(), reasons)
    assert settled.error is not None
    assert (Phase.FAILED, ErrorCode.UNAVAILABLE, ROLLED_BACK) == (
        settled.phase, settled.error.code, settled.error.message)
    assert [(Phase.FAILED, ROLLED_BACK)] == reasons
    assert (True, False) == (mesh.storage.exists("h1", DISK), mesh.storage.exists("h2", DISK))
    assert DomainState.RUNNING == mesh.agents["h1"].domains["vm1"].state
    assert "vm1" not in mesh.agents["h2"].domains  # the paused incoming domain is gone


async def test_a_roll_back_says_what_the_destination_kept(nats_server, mesh):
    failed(mesh)
    mesh.agents["h2"].domains["vm9"] = domain("vm9", directory=IMAGES)  # uses h2's vm9 disk ...
    mesh.agents["h2"].domains["vm9"] = msgspec.structs.replace(  # ... and the copy of vm1's
        mesh.agents["h2"].domains["vm9"], disks=domain("vm1").disks)
    settled = await settle(nats_server, left_running())
    assert settled.error is not None
    assert settled.error.message.startswith(f"{ROLLED_BACK}: h2 kept {DISK}: ")
    assert mesh.storage.exists("h2", DISK)


async def test_a_migration_nobody_acted_on_fails_and_touches_nothing(nats_server, mesh):
    mesh.agents["h1"].add_domain(domain("vm1"))
    settled = await settle(nats_server, left_running(Phase.CHECKING))
    assert Phase.FAILED == settled.phase
    assert settled.error is not None
    assert ("the coordinator stopped before the migration began; neither h1 nor h2 had been "
            "asked to act: nothing was touched") == settled.error.message
    assert "vm1" in mesh.agents["h1"].domains


async def test_a_vm_running_on_both_hosts_needs_attention_and_nothing_is_removed(
        nats_server, mesh):
    failed(mesh)
    mesh.agents["h2"].add_domain(domain("vm1"))  # contradicting facts: it runs twice
    settled = await settle(nats_server, left_running())
    assert Phase.FAILED == settled.phase
    assert settled.error is not None
    assert ("needs attention: vm1 runs on both h1 and h2; nothing was touched, check both "
            "hosts") == settled.error.message
    uuid = fake_uuid("vm1")
    assert {"needs_attention": "true", "on_h1": f"running (UUID {uuid}); no job; ledger knows it",
            "on_h2": f"running (UUID {uuid}); no job; ledger knows it"} == settled.error.details
    assert (True, True) == ("vm1" in mesh.agents["h1"].domains, "vm1" in mesh.agents["h2"].domains)
    assert mesh.storage.exists("h2", DISK)


async def test_an_offline_move_found_done_is_completed(nats_server, mesh):
    mesh.agents["h2"].ledger["m1"] = Entry(migration_id="m1", vm="vm1",
                                           incoming_uuid=fake_uuid("vm1"))
    mesh.agents["h2"].add_domain(domain("vm1", state=DomainState.SHUTOFF))
    assert Phase.SUCCEEDED == (await settle(nats_server, left_running(live=False))).phase


async def test_a_record_being_settled_refuses_an_abort_and_a_bandwidth_change(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        takeover = Takeover(left_running(), RunnerDeps(nc=nc, agents=AgentClient(nc, Subjects()),
                                                       subjects=Subjects()))
        with pytest.raises(BatonError) as abort:
            takeover.request_abort("operator")
        with pytest.raises(BatonError) as bandwidth:
            await takeover.set_bandwidth(10)
    finally:
        await nc.drain()
    assert (ErrorCode.CONFLICT, ErrorCode.CONFLICT) == (abort.value.code, bandwidth.value.code)
    assert ("m1 is being settled from libvirt's facts after a coordinator restart; wait for its "
            "outcome (baton watch)") == abort.value.message == bandwidth.value.message


async def test_an_agent_that_answers_only_later_is_waited_for(nats_server):
    """No agent at all at first: the record stays in its phase until both hosts answer."""
    mesh = Mesh()
    mesh.add("h1")
    mesh.add("h2")
    landed(mesh)
    store = MemoryStore()
    await store.put(left_running())
    nc = await nats.connect(nats_server.url)
    try:
        async with asyncio.TaskGroup() as tasks:
            coordinator = Coordinator(RunnerDeps(nc=nc, agents=AgentClient(nc, Subjects()),
                                                 subjects=Subjects(), store=store),
                                      tasks.create_task)
            await coordinator.restore()
            job = coordinator.registry.get("m1")
            await asyncio.sleep(0.5)
            assert (Phase.MIGRATING, False) == (job.record.phase, job.done.is_set())
            async with mesh.serving(nats_server.url), asyncio.timeout(10):
                await job.done.wait()
    finally:
        await nc.drain()
    assert Phase.SUCCEEDED == job.record.phase


# --- disk moves -----------------------------------------------------------------------------

COPY = f"{FAST}/vm1.qcow2"


def left_moving() -> StorageMoveRecord:
    now = utc_now()
    return StorageMoveRecord(
        migration_id="m1", vm="vm1", host="h1", destination_pool="fast", phase=Phase.MIGRATING,
        request=StorageMoveRequest(vm="vm1", destination_pool="fast"), created_at=now,
        updated_at=now, disks=[DiskMove(target="vda", source_path=DISK, destination_path=COPY,
                                        format="qcow2")])


def copied(mesh: Mesh, on_copy: bool) -> None:
    """h1's agent started the move (its ledger has the copy); vm1 uses the copy or the old file."""
    h1 = mesh.agents["h1"]
    mesh.storage.add("h1", COPY)
    h1.ledger["m1"] = Entry(migration_id="m1", vm="vm1", created_paths=[COPY])
    vm1 = domain("vm1", directory=FAST if on_copy else IMAGES)
    h1.add_domain(vm1)


async def test_a_disk_move_found_on_its_copies_is_completed(nats_server, mesh):
    copied(mesh, on_copy=True)
    reasons: list[tuple[Phase, str]] = []
    settled = await settle(nats_server, left_moving(), reasons)
    assert (Phase.SUCCEEDED, None) == (settled.phase, settled.error)
    assert mesh.storage.exists("h1", COPY)
    assert [] == mesh.agents["h1"].asked(A.STORAGE_ABORT)
    assert [(Phase.COMPLETING, "after a coordinator restart: vm1 uses the copies of vda"),
            (Phase.SUCCEEDED, "settled after a coordinator restart: vm1 uses the copies of vda")
            ] == reasons


async def test_a_disk_move_left_in_preparing_passes_through_migrating(nats_server, mesh):
    copied(mesh, on_copy=True)
    reasons: list[tuple[Phase, str]] = []
    record = msgspec.structs.replace(left_moving(), phase=Phase.PREPARING)
    assert Phase.SUCCEEDED == (await settle(nats_server, record, reasons)).phase
    assert [(Phase.MIGRATING, "after a coordinator restart"), Phase.COMPLETING,
            Phase.SUCCEEDED] == [reasons[0], reasons[1][0], reasons[2][0]]


async def test_a_disk_move_still_running_is_waited_for(nats_server, mesh):
    copied(mesh, on_copy=False)
    h1 = mesh.agents["h1"]
    h1.moves["m1"] = Job(vm="vm1")  # the agent still copies

    async def finish() -> None:
        await asyncio.sleep(0.3)
        h1.domains["vm1"] = domain("vm1", directory=FAST)
        del h1.moves["m1"]

    finishing = asyncio.ensure_future(finish())
    settled = await settle(nats_server, left_moving())
    await finishing
    assert Phase.SUCCEEDED == settled.phase


async def test_a_disk_move_whose_agent_answers_only_later_is_waited_for(nats_server):
    mesh = Mesh()
    mesh.add("h1")
    copied(mesh, on_copy=True)

    settled_event = asyncio.Event()

    async def serve_later() -> None:
        await asyncio.sleep(0.3)
        async with mesh.serving(nats_server.url):
            await settled_event.wait()

    serving = asyncio.ensure_future(serve_later())
    settled = await settle(nats_server, left_moving())
    settled_event.set()
    await serving  # the agent's connections close before the test ends
    assert Phase.SUCCEEDED == settled.phase


async def test_a_disk_move_whose_clean_up_is_refused_says_so(nats_server, mesh):
    copied(mesh, on_copy=False)
    mesh.agents["h1"].ledger["m1"] = Entry(migration_id="m1", vm="vm1",
                                           created_paths=[f"{FAST}/another.qcow2"])
    settled = await settle(nats_server, left_moving())
    assert settled.error is not None
    assert settled.error.message.startswith(
        "the coordinator stopped during the disk move; vm1 still uses the old files of vda; "
        "rolled back: clean-up on h1 failed: ")
    assert mesh.storage.exists("h1", COPY)  # not this agent's copy by its ledger: kept


async def test_a_disk_move_never_started_fails_and_touches_nothing(nats_server, mesh):
    mesh.agents["h1"].add_domain(domain("vm1"))
    settled = await settle(nats_server, left_moving())
    assert settled.error is not None
    assert (Phase.FAILED, ErrorCode.UNAVAILABLE, "the coordinator stopped before the disk move "
            "began; the agent of h1 never started the move: nothing was touched") == (
        settled.phase, settled.error.code, settled.error.message)
    assert [] == mesh.agents["h1"].asked(A.STORAGE_ABORT)


async def test_a_disk_move_whose_vm_is_gone_needs_attention(nats_server, mesh):
    mesh.agents["h1"].ledger["m1"] = Entry(migration_id="m1", vm="vm1", created_paths=[COPY])
    mesh.storage.add("h1", COPY)
    settled = await settle(nats_server, left_moving())
    assert settled.error is not None
    assert (Phase.FAILED, "needs attention: vm1 is not on h1 any more; nothing was touched, "
            "check h1") == (settled.phase, settled.error.message)
    assert {"needs_attention": "true", "on_h1": "no domain; no job; ledger knows it"} == \
        settled.error.details
    assert ([], True) == (mesh.agents["h1"].asked(A.STORAGE_ABORT), mesh.storage.exists("h1", COPY))


async def test_a_disk_move_found_on_its_old_files_is_rolled_back_by_the_agent(nats_server, mesh):
    copied(mesh, on_copy=False)
    settled = await settle(nats_server, left_moving())
    assert Phase.FAILED == settled.phase
    assert settled.error is not None
    assert ("the coordinator stopped during the disk move; vm1 still uses the old files of vda; "
            "rolled back: cancelled the copies it names") == settled.error.message
    assert (True, False) == (mesh.storage.exists("h1", DISK), mesh.storage.exists("h1", COPY))
