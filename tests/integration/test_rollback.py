"""What the real coordinator destroys or deletes when a job goes wrong — and, above all, what it
leaves alone when the facts do not prove the other copy is the live one.

The coordinator runs in this process against scripted fake agents on a real nats-server (see
``coordinator_fixtures``). The agents here extend :class:`FakeAgent` with the failures these
tests need: a guest that resumes on the destination while the source reports an error, a source
that cannot be read during the roll-back, a destination that never confirms, a start request
answered too late, an abort the source ignores, a disk move that fails after its pivot.
Scripts that must wait for the coordinator wait on ``release``, set by the test once the
coordinator has reached the phase in question, never on a fixed delay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import msgspec
import pytest

from baton.coordinator.core import Coordinator
from baton.coordinator.main import CoordinatorConfig, run_coordinator
from baton.schemas import timeouts
from baton.schemas.agent import DomainsReply, DomainsRequest, DomainState
from baton.schemas.base import utc_now
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.events import JobStats, LifecycleKind
from baton.schemas.migration import (
    AbortRequest,
    Ack,
    AgentAbortRequest,
    CheckName,
    CheckStatus,
    CleanupReply,
    CleanupRequest,
    MigrateAccepted,
    MigrateRequest,
    MigrationRecord,
    MigrationStatus,
    MigrationStatusRequest,
    Phase,
    PrepareReply,
    PrepareRequest,
    SourceFinished,
    SourceProgress,
    StartReply,
    StartRequest,
)
from baton.schemas.storage import (
    AgentStorageMoveReply,
    AgentStorageMoveRequest,
    DiskOutcome,
    StorageMoveAccepted,
    StorageMoveFinished,
    StorageMoveRecord,
    StorageMoveRequest,
    StorageStage,
    StorageStageEvent,
)
from baton.schemas.subjects import AgentEndpoint as A
from baton.schemas.subjects import CoordinatorEndpoint as C
from baton.schemas.subjects import MigrationEvent
from tests.integration.fake_agents import (
    FAST,
    GIB,
    IMAGES,
    LIBVIRT_FAILURE,
    SHARED,
    FakeAgent,
    Job,
    Mesh,
    Script,
    domain,
    host_caps,
)
from tests.integration.test_coordinator import ask

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)
DISK = f"{IMAGES}/vm1.qcow2"
QUICK = Script(steps=1, interval_s=0.01, resume_lead_s=0.05)
CONFIRM_FAILED = "operation failed: migration confirm phase failed: the source was not killed"


class Agent(FakeAgent):
    """A FakeAgent that can go wrong in the ways tested here. Only its endpoints are overridden;
    a scenario (``plan``) replaces FakeAgent's script and publishes its own reports."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.plan = ""  # a scenario below; "" leaves the job to FakeAgent's script
        self.release = asyncio.Event()  # a scenario waits for it where the test must act first
        self.source_after: DomainState | None = DomainState.RUNNING  # None: undefined
        self.domains_error: BatonError | None = None  # domains answers this (once set) ...
        self.domains_silent = False  # ... or never answers
        self.start_reply_delay_s = 0.0  # start answers this late (the migration runs meanwhile)
        self.cleanup_silent = False
        self.ignore_abort = False
        self.prepare_error: BatonError | None = None
        self.status_error: BatonError | None = None  # migration.status answers this
        # migration.status says libvirt still runs a job here for this many more reads (an
        # incoming job that ends a little after the source's call returned)
        self.job_reads_left = 0
        self.job_ran_at_cleanup: list[bool] = []  # per clean-up: did any host still run a job
        self._scenarios: asyncio.TaskGroup | None = None

    async def serve(self, url: str, tasks: asyncio.TaskGroup) -> None:
        self._scenarios = tasks
        await super().serve(url, tasks)

    # --- endpoints ------------------------------------------------------------------------------

    async def list_domains(self, request: DomainsRequest) -> DomainsReply:
        if self.domains_silent:
            await asyncio.Event().wait()
        if self.domains_error is not None:
            raise self.domains_error
        return await super().list_domains(request)

    async def prepare(self, request: PrepareRequest) -> PrepareReply:
        if self.prepare_error is not None:
            raise self.prepare_error
        return await super().prepare(request)

    async def start(self, request: StartRequest) -> StartReply:
        if self.plan:
            self._run(self._migration_scenario(request))
            reply = StartReply(migration_id=request.migration_id)
        else:
            reply = await super().start(request)
        await asyncio.sleep(self.start_reply_delay_s)  # a slow reply, not a wait for an event
        return reply

    async def abort(self, request: AgentAbortRequest) -> Ack:
        if self.ignore_abort:
            return Ack(detail="abort requested")  # ... and libvirt never ends the job
        return await super().abort(request)

    async def migration_status(self, request: MigrationStatusRequest) -> MigrationStatus:
        if self.status_error is not None:
            raise self.status_error
        status = await super().migration_status(request)
        if self.job_reads_left > 0:
            self.job_reads_left -= 1
            return msgspec.structs.replace(status, job=JobStats(operation="migration_in"))
        return status

    async def cleanup(self, request: CleanupRequest) -> CleanupReply:
        self.job_ran_at_cleanup.append(any(a.migrations for a in self.mesh.agents.values()))
        if self.cleanup_silent:
            await asyncio.Event().wait()
        return await super().cleanup(request)

    async def storage_move(self, request: AgentStorageMoveRequest) -> AgentStorageMoveReply:
        if not self.plan:
            return await super().storage_move(request)
        self._run(self._storage_scenario(request))
        return AgentStorageMoveReply(migration_id=request.migration_id)

    def _run(self, scenario: Coroutine[Any, Any, None]) -> None:
        assert self._scenarios is not None
        self._scenarios.create_task(scenario)

    # --- migration scenarios --------------------------------------------------------------------

    async def _migration_scenario(self, request: StartRequest) -> None:
        await self._emit(request.migration_id, MigrationEvent.SOURCE_PROGRESS, SourceProgress(
            migration_id=request.migration_id, host_id=self.host, at=utc_now(),
            stats=JobStats(operation="migration_out", data_total_bytes=GIB,
                           data_processed_bytes=GIB // 2)))
        scenarios = {"resume_then_fail": self._resume_then_fail,
                     "fail_then_hide": self._fail_then_hide,
                     "resume_paused": self._resume_paused,
                     "land_then_die": self._land_then_die,
                     "land_then_restart": self._land_then_die,  # running no job, never reporting
                     "land_late_then_die": self._land_late_then_die}
        error = await scenarios[self.plan](request)
        await self._emit(request.migration_id, MigrationEvent.SOURCE_FINISHED, SourceFinished(
            migration_id=request.migration_id, host_id=self.host, at=utc_now(), error=error,
            stats=None if error else JobStats(operation="migration_out", downtime_ms=42)))

    async def _resume_then_fail(self, request: StartRequest) -> ErrorReply:
        """The guest resumes on the destination, yet the source reports a failure and still
        shows the VM running: two copies, and only the switch-over says which one is live."""
        destination = self.mesh.by_uri(request.destination_uri)
        destination.domains[request.vm] = self.domains[request.vm]
        await destination.lifecycle(request.vm, LifecycleKind.RESUMED, "migrated")
        await self.release.wait()
        return ErrorReply(code=ErrorCode.HYPERVISOR, message=CONFIRM_FAILED)

    async def _fail_then_hide(self, request: StartRequest) -> ErrorReply:
        """The migration fails; from then on the source's VM is as ``source_after`` says, or its
        agent cannot tell (``domains_error``, ``domains_silent``, set by the test)."""
        await self.release.wait()
        if self.source_after is None:
            del self.domains[request.vm]
        else:
            self.domains[request.vm] = msgspec.structs.replace(
                self.domains[request.vm], state=self.source_after,
                active=self.source_after != DomainState.SHUTOFF)
        return ErrorReply(code=ErrorCode.HYPERVISOR, message=LIBVIRT_FAILURE)

    async def _land_then_die(self, request: StartRequest) -> None:
        """The guest lands on the destination and this agent dies before libvirt's answer: no
        outcome is ever reported (``source_after`` RUNNING: the source claims it too)."""
        destination = self.mesh.by_uri(request.destination_uri)
        destination.domains[request.vm] = self.domains[request.vm]
        if self.source_after is None:
            del self.domains[request.vm]
        await destination.lifecycle(request.vm, LifecycleKind.RESUMED, "migrated")
        await asyncio.Event().wait()

    async def _land_late_then_die(self, request: StartRequest) -> None:
        """libvirt's job runs on for a while after this agent fell silent, then the guest lands
        on the destination; no outcome is ever reported."""
        self.migrations[request.migration_id] = Job(vm=request.vm)
        await asyncio.sleep(1.5)
        del self.migrations[request.migration_id]
        await self._land_then_die(request)

    async def _resume_paused(self, request: StartRequest) -> None:
        """libvirt's call returns success, but the destination holds the guest paused."""
        destination = self.mesh.by_uri(request.destination_uri)
        destination.domains[request.vm] = msgspec.structs.replace(
            self.domains.pop(request.vm), state=DomainState.PAUSED)
        await destination.lifecycle(request.vm, LifecycleKind.RESUMED, "migrated")
        await self.release.wait()

    # --- storage-move scenarios -----------------------------------------------------------------

    async def _storage_scenario(self, request: AgentStorageMoveRequest) -> None:
        """The copies get in sync and the VM is pivoted onto them; then the move either fails
        (``fail_after_pivot``: the copy fails verification) or, after ``release``, succeeds.
        ``report_without_pivot`` reports success although the VM still uses its old files."""
        await self._publish_stage(request, StorageStage.COPYING)
        await self._publish_stage(request, StorageStage.READY)
        if self.plan == "hold_after_ready":
            await self.release.wait()
        if self.plan != "report_without_pivot":
            vm = self.domains[request.vm]
            new = {d.target: d.destination_path for d in request.disks}
            self.domains[request.vm] = msgspec.structs.replace(vm, disks=[
                msgspec.structs.replace(d, source_path=new.get(d.target, d.source_path))
                for d in vm.disks])
        await self._publish_stage(request, StorageStage.PIVOTED)
        failed = self.plan == "fail_after_pivot"
        await self._emit(request.migration_id, MigrationEvent.STORAGE_FINISHED,
                         StorageMoveFinished(
            migration_id=request.migration_id, host_id=self.host, at=utc_now(),
            error=ErrorReply(code=ErrorCode.HYPERVISOR, message=VERIFY_FAILED) if failed else None,
            disks=[DiskOutcome(target=d.target, path=d.destination_path, pivoted=True,
                               source_deleted=not failed) for d in request.disks]))

    async def _publish_stage(self, request: AgentStorageMoveRequest, stage: StorageStage) -> None:
        await self._emit(request.migration_id, MigrationEvent.STORAGE_STAGE, StorageStageEvent(
            migration_id=request.migration_id, host_id=self.host, at=utc_now(), stage=stage))

    async def _emit(self, migration_id: str, event: MigrationEvent, message: Any) -> None:
        subject = self.mesh.subjects.agent_report(self.host, migration_id, event)
        await self.nc.publish(subject, encode(message))


VERIFY_FAILED = (f"qemu-img check {FAST}/vm1.qcow2 exited 2: 37 errors were found on the image; "
                 f"the VM runs on the copy and the old file {DISK} is kept")


@pytest.fixture
async def mesh(nats_server) -> AsyncIterator[Mesh]:
    """As ``coordinator_fixtures.mesh`` (h1 holds vm1 and vmshared; h2 is the destination), with
    agents that can be told to go wrong."""
    mesh = Mesh()
    for host in ("h1", "h2"):
        mesh.agents[host] = Agent(host, mesh, host_caps(host))
    mesh["h1"].add_domain(domain("vm1"))
    mesh["h1"].add_domain(domain("vmshared", directory=SHARED))
    for agent in mesh.agents.values():
        agent.script = QUICK
    async with mesh.serving(nats_server.url):
        yield mesh


@contextlib.asynccontextmanager
async def coordinator_stopped_after(nats_server, grace_s: float,
                                    rollback_s: float) -> AsyncIterator[asyncio.Event]:
    """A coordinator of its own; setting the yielded event stops it (waited for on leaving)."""
    config = CoordinatorConfig(nats_url=nats_server.url, grace_s=grace_s, rollback_s=rollback_s)
    stop = asyncio.Event()
    started: asyncio.Future[Coordinator] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_coordinator(config, stop, started))
    await asyncio.wait_for(started, 10)
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def migrate(nc, **options: Any) -> MigrateAccepted:
    request = MigrateRequest(**({"vm": "vm1", "destination": "h2", "source": "h1"} | options))
    reply = await ask(nc, C.MIGRATE, request, MigrateAccepted)
    assert isinstance(reply, MigrateAccepted), reply
    return reply


def cleanups(mesh: Mesh, host: str) -> list[CleanupRequest]:
    return mesh[host].asked(A.MIGRATION_CLEANUP)


def rollback_note(record: MigrationRecord) -> str:
    return record.error.details.get("rollback", "")


# --- the roll-back's three refusals ---------------------------------------------------------


async def test_no_roll_back_once_the_guest_resumed_on_the_destination(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].plan = "resume_then_fail"
    accepted = await migrate(nats_client)
    await watcher.until(accepted.migration_id, {Phase.COMPLETING})
    mesh["h1"].release.set()
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, CONFIRM_FAILED) == (record.phase, record.error.message)
    assert rollback_note(record).startswith("not rolled back: the guest had resumed")
    assert ([], [], DomainState.RUNNING) == (cleanups(mesh, "h2"), cleanups(mesh, "h1"),
                                             mesh["h2"].domains["vm1"].state)
    assert (True, True) == (mesh.storage.exists("h2", DISK), mesh.storage.exists("h1", DISK))


@pytest.mark.parametrize("unreachable", ["unavailable", "silent"])
async def test_no_roll_back_while_the_source_cannot_be_read(
        coordinator, mesh, watcher, nats_client, monkeypatch, unreachable):
    monkeypatch.setattr(timeouts, "AGENT_DOMAINS", 0.5)
    mesh["h1"].plan = "fail_then_hide"
    accepted = await migrate(nats_client)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    if unreachable == "silent":
        mesh["h1"].domains_silent = True
    else:
        mesh["h1"].domains_error = BatonError(ErrorCode.UNAVAILABLE, "reading vm1: libvirt "
                                              "connection failed: Broken pipe")
    mesh["h1"].release.set()
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, LIBVIRT_FAILURE) == (record.phase, record.error.message)
    assert rollback_note(record).startswith("not rolled back: cannot confirm the VM on h1")
    assert ([], True) == (cleanups(mesh, "h2"), mesh.storage.exists("h2", DISK))


@pytest.mark.parametrize("source_after", [DomainState.PAUSED, DomainState.SHUTOFF, None],
                         ids=["paused", "shut-off", "undefined"])
async def test_no_roll_back_when_the_source_no_longer_holds_the_vm_as_before(
        coordinator, mesh, watcher, nats_client, source_after):
    mesh["h1"].plan = "fail_then_hide"
    mesh["h1"].source_after = source_after
    mesh["h1"].release.set()
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, LIBVIRT_FAILURE) == (record.phase, record.error.message)
    assert rollback_note(record).startswith("not rolled back: the VM is not intact on h1")
    assert ([], True) == (cleanups(mesh, "h2"), mesh.storage.exists("h2", DISK))


async def test_no_roll_back_when_the_guest_runs_on_the_destination_too_though_no_event_said_so(
        coordinator, mesh, watcher, nats_client):
    """The resume event was lost: only the destination's libvirt facts (migration.status) show
    the guest running there, and the verdict refuses to clean it (runs on both hosts)."""
    mesh["h1"].plan = "fail_then_hide"
    accepted = await migrate(nats_client)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    mesh["h2"].domains["vm1"] = domain("vm1")  # running, same UUID, no lifecycle event
    mesh["h1"].release.set()
    record = await watcher.final(accepted.migration_id)
    assert rollback_note(record).startswith("not rolled back (needs_attention): vm1 runs on "
                                            "both h1 and h2")
    assert ([], DomainState.RUNNING, True) == (
        cleanups(mesh, "h2"), mesh["h2"].domains["vm1"].state, mesh.storage.exists("h2", DISK))


async def test_no_roll_back_while_the_migrations_facts_cannot_be_read(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].plan = "fail_then_hide"
    mesh["h1"].release.set()
    mesh["h2"].status_error = BatonError(ErrorCode.UNAVAILABLE, "libvirt connection lost")
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, LIBVIRT_FAILURE) == (record.phase, record.error.message)
    assert "not rolled back: cannot read the migration's facts (libvirt connection lost); " \
        "check both hosts" == rollback_note(record)
    assert ([], True) == (cleanups(mesh, "h2"), mesh.storage.exists("h2", DISK))


@pytest.mark.parametrize("incoming_job_reads", [0, 2])
async def test_a_failure_the_source_reported_is_rolled_back_without_asking_it_to_abort(
        coordinator, mesh, watcher, nats_client, incoming_job_reads):
    """Once the destination's incoming job has ended too: it is waited for."""
    mesh["h1"].plan = "fail_then_hide"
    mesh["h1"].release.set()
    mesh["h2"].job_reads_left = incoming_job_reads
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    [cleanup] = cleanups(mesh, "h2")
    assert (Phase.FAILED, [], True, [DISK], 0) == (
        record.phase, mesh["h1"].asked(A.MIGRATION_ABORT), cleanup.remove_domain,
        cleanup.delete_paths, mesh["h2"].job_reads_left)


async def test_a_prepare_failure_asks_the_source_nothing_and_cleans_only_the_destination(
        coordinator, mesh, watcher, nats_client):
    mesh["h2"].prepare_error = BatonError(ErrorCode.HYPERVISOR, f"qemu-img create {DISK} "
                                          "failed: No space left on device")
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.HYPERVISOR) == (record.phase, record.error.code)
    assert ([], [], []) == (mesh["h1"].asked(A.MIGRATION_START),
                            mesh["h1"].asked(A.MIGRATION_ABORT), cleanups(mesh, "h1"))
    assert [[]] == [c.delete_paths for c in cleanups(mesh, "h2")]  # prepare created nothing


# --- completion: the source's disks go only once the outcome is confirmed --------------------


async def test_a_confirmation_failure_after_the_switch_over_deletes_and_destroys_nothing(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    monkeypatch.setattr(timeouts, "CONFIRM_WINDOW", 0.3)
    monkeypatch.setattr(timeouts, "CONFIRM_POLL", 0.05)
    mesh["h1"].plan = "resume_paused"
    accepted = await migrate(nats_client)
    await watcher.until(accepted.migration_id, {Phase.COMPLETING})
    mesh["h1"].release.set()
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, "confirm") == (record.phase, record.error.details.get("stage"))
    assert "vm1 is paused on h2, not running" in record.error.message
    assert ([], []) == (cleanups(mesh, "h1"), cleanups(mesh, "h2"))
    assert (True, True, "vm1") == (mesh.storage.exists("h1", DISK),
                                   mesh.storage.exists("h2", DISK),
                                   mesh["h2"].domains["vm1"].name)


async def test_disks_of_a_source_that_keeps_its_definition_are_not_deleted(
        coordinator, mesh, watcher, nats_client):
    accepted = await migrate(nats_client, undefine_source=False)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, DomainState.SHUTOFF) == (record.phase,
                                                      mesh["h1"].domains["vm1"].state)
    assert ([], True) == (cleanups(mesh, "h1"), mesh.storage.exists("h1", DISK))


async def test_a_migration_on_shared_storage_deletes_nothing_on_the_source(
        coordinator, mesh, watcher, nats_client):
    accepted = await migrate(nats_client, vm="vmshared")
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, [], True) == (record.phase, cleanups(mesh, "h1"),
                                           mesh.storage.exists("h1", f"{SHARED}/vmshared.qcow2"))


# --- time-outs of agent requests mid-job -----------------------------------------------------


async def test_a_roll_back_whose_clean_up_times_out_is_reported_not_repeated(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    monkeypatch.setattr(timeouts, "AGENT_MIGRATION_CLEANUP", 0.3)
    mesh["h1"].plan = "fail_then_hide"
    mesh["h1"].release.set()
    mesh["h2"].cleanup_silent = True
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, LIBVIRT_FAILURE, 1) == (record.phase, record.error.message,
                                                  len(cleanups(mesh, "h2")))
    assert rollback_note(record).startswith("destination clean-up failed: the agent of host "
                                            "'h2' did not answer")


async def test_a_start_that_times_out_is_stopped_before_the_destination_is_cleaned(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    """The start's reply is late, but the migration runs: the coordinator asks the source to
    abort it and cleans the destination only once both hosts' libvirt show no job any more."""
    monkeypatch.setattr(timeouts, "AGENT_MIGRATION_START", 0.3)
    mesh["h1"].script = Script(outcome="hang")  # the migration runs until it is aborted
    mesh["h1"].start_reply_delay_s = 1.0
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.TIMEOUT) == (record.phase, record.error.code)
    assert 1 == len(mesh["h1"].asked(A.MIGRATION_ABORT))
    assert ({}, [[DISK]]) == (mesh["h1"].migrations, [c.delete_paths for c in cleanups(mesh, "h2")])
    assert (DomainState.RUNNING, False) == (mesh["h1"].domains["vm1"].state,
                                            mesh.storage.exists("h2", DISK))


@pytest.mark.parametrize("facts_readable", [True, False])
async def test_an_offline_move_whose_start_times_out_is_cleaned_only_once_its_job_has_ended(
        coordinator, mesh, watcher, nats_client, monkeypatch, facts_readable):
    """An offline move's roll-back reads no libvirt job facts (the guest runs nowhere): the wait
    for the source's outcome after the abort is all that keeps the clean-up from removing the
    destination's files while the source still writes them. Facts that cannot be read while it
    waits are no proof that the job has ended: the wait then runs to its end (ABORT_SETTLE)."""
    monkeypatch.setattr(timeouts, "AGENT_MIGRATION_START", 0.3)
    monkeypatch.setattr(timeouts, "ABORT_SETTLE", 1.5)  # the job ends 0.5 s after the abort
    if not facts_readable:
        mesh["h2"].status_error = BatonError(ErrorCode.UNAVAILABLE, "libvirt connection lost")
    mesh["h1"].domains["vmshared"] = domain("vmshared", directory=SHARED,
                                            state=DomainState.SHUTOFF)
    mesh["h1"].script = Script(outcome="hang", abort_takes_s=0.5)
    mesh["h1"].start_reply_delay_s = 1.0
    accepted = await migrate(nats_client, vm="vmshared", live=False)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.TIMEOUT) == (record.phase, record.error.code)
    assert [False] == mesh["h2"].job_ran_at_cleanup
    assert (DomainState.SHUTOFF, {}) == (mesh["h1"].domains["vmshared"].state,
                                         mesh["h1"].migrations)


async def test_an_abort_the_source_never_confirms_does_not_clean_the_destination(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    """The roll-back asks both agents' migration.status: the source still runs the job, so the
    verdict is "wait", and after ABORT_SETTLE it reports instead of cleaning (verdict.py)."""
    monkeypatch.setattr(timeouts, "ABORT_SETTLE", 0.3)
    mesh["h1"].script = Script(outcome="hang")
    mesh["h1"].ignore_abort = True
    accepted = await migrate(nats_client)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    await ask(nats_client, C.ABORT, AbortRequest(migration_id=accepted.migration_id),
              MigrationRecord)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.TIMEOUT) == (record.phase, record.error.code)
    assert [] == cleanups(mesh, "h2")
    assert record.error.details["rollback"].startswith("not rolled back (wait): a libvirt job of "
                                                       "vm1 still runs on the source (h1)")


async def test_a_migration_without_tls_records_the_warning_the_operator_asked_for(
        coordinator, mesh, watcher, nats_client):
    accepted = await migrate(nats_client, tls=False)
    record = await watcher.final(accepted.migration_id)
    [encryption] = [c for c in record.checks if c.name == CheckName.ENCRYPTION]
    assert (Phase.SUCCEEDED, CheckStatus.WARN) == (record.phase, encryption.status)


# --- a source agent that dies during the migration (its outcome never comes) ----------------


async def test_a_source_that_dies_after_the_guest_landed_is_finished_from_the_facts(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    monkeypatch.setattr(timeouts, "SOURCE_SILENCE_LIMIT", 0.5)
    mesh["h1"].plan, mesh["h1"].source_after = "land_then_die", None
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, None) == (record.phase, record.error)
    assert [[DISK]] == [c.delete_paths for c in cleanups(mesh, "h1")]  # the copied source disk
    assert ([], DomainState.RUNNING) == (cleanups(mesh, "h2"), mesh["h2"].domains["vm1"].state)
    assert [] == mesh["h1"].asked(A.MIGRATION_ABORT)  # libvirt said the job had ended


async def test_a_source_that_dies_while_both_hosts_run_the_guest_touches_nothing(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    monkeypatch.setattr(timeouts, "SOURCE_SILENCE_LIMIT", 0.5)
    mesh["h1"].plan = "land_then_die"  # the source still shows vm1 running
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.TIMEOUT) == (record.phase, record.error.code)
    assert record.error.message.endswith("; vm1 runs on both h1 and h2")
    assert ([], []) == (cleanups(mesh, "h1"), cleanups(mesh, "h2"))
    assert [] == mesh["h1"].asked(A.MIGRATION_ABORT)  # no job runs: nothing to abort


async def test_a_source_that_dies_while_libvirt_still_migrates_is_waited_for_then_reported(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    monkeypatch.setattr(timeouts, "SOURCE_SILENCE_LIMIT", 0.5)
    monkeypatch.setattr(timeouts, "FACTS_SETTLE", 0.5)
    monkeypatch.setattr(timeouts, "ABORT_SETTLE", 0.3)
    mesh["h1"].script = Script(outcome="hang", silence_s=60)  # job runs, nothing reported
    mesh["h1"].ignore_abort = True
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.TIMEOUT) == (record.phase, record.error.code)
    assert record.error.message.endswith("; a libvirt job of vm1 still runs on the source (h1)")
    assert [] == cleanups(mesh, "h2")
    assert 1 == len(mesh["h1"].asked(A.MIGRATION_ABORT))  # the job runs: it is asked to stop
    assert record.error.details["rollback"] == (
        "not rolled back (wait): a libvirt job of vm1 still runs on the source (h1); check both "
        "hosts")


async def test_a_source_that_dies_before_the_guest_lands_is_waited_for_and_finished(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    monkeypatch.setattr(timeouts, "SOURCE_SILENCE_LIMIT", 0.5)
    mesh["h1"].plan, mesh["h1"].source_after = "land_late_then_die", None
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, None) == (record.phase, record.error)
    [completing] = [e for e in watcher.phases
                    if e.migration_id == accepted.migration_id and e.phase == Phase.COMPLETING]
    assert completing.reason in ("guest resumed on the destination",
                                 "the source agent fell silent; vm1 runs on h2 only: the move "
                                 "happened")


async def test_a_source_agent_that_restarted_is_settled_from_the_facts_without_waiting_out_the_silence(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    """A restarted agent answers, but runs no such migration: its report will never come."""
    monkeypatch.setattr(timeouts, "SOURCE_SILENCE_LIMIT", 3600)  # never reached here
    monkeypatch.setattr(timeouts, "SOURCE_QUIET_PROBE", 0.3)
    mesh["h1"].plan, mesh["h1"].source_after = "land_then_restart", None
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)  # within 10 s, not the silence limit
    assert (Phase.SUCCEEDED, None, None) == (record.phase, record.error, record.result)
    assert [[DISK]] == [c.delete_paths for c in cleanups(mesh, "h1")]
    assert mesh["h1"].asked(A.MIGRATION_STATUS)


async def test_a_quiet_source_agent_that_still_runs_the_job_is_waited_for(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    monkeypatch.setattr(timeouts, "SOURCE_SILENCE_LIMIT", 3600)
    monkeypatch.setattr(timeouts, "SOURCE_QUIET_PROBE", 0.3)
    mesh["h1"].script = Script(silence_s=2.0)  # quiet, but it answers that the job runs
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, 42) == (record.phase, record.result.downtime_ms)  # its own report
    assert [] == [e for e in watcher.phases if e.migration_id == accepted.migration_id
                  and "fell silent" in (e.reason or "")]
    assert len(mesh["h1"].asked(A.MIGRATION_STATUS)) >= 1  # it was asked while quiet


async def test_a_quiet_source_agent_that_cannot_say_whether_it_runs_the_job_is_waited_for(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    """No answer is no proof that the job is gone: the silence limit decides, not the probe."""
    monkeypatch.setattr(timeouts, "SOURCE_SILENCE_LIMIT", 3600)
    monkeypatch.setattr(timeouts, "SOURCE_QUIET_PROBE", 0.3)
    mesh["h1"].script = Script(silence_s=2.0)
    mesh["h1"].status_error = BatonError(ErrorCode.UNAVAILABLE, "libvirt connection lost")
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, 42) == (record.phase, record.result.downtime_ms)  # its own report
    assert len(mesh["h1"].asked(A.MIGRATION_STATUS)) >= 1  # it was asked while quiet


async def test_a_silent_source_whose_facts_cannot_be_read_fails_saying_so(
        coordinator, mesh, watcher, nats_client, monkeypatch):
    monkeypatch.setattr(timeouts, "SOURCE_SILENCE_LIMIT", 0.5)
    monkeypatch.setattr(timeouts, "ABORT_SETTLE", 0.3)
    mesh["h1"].plan, mesh["h1"].source_after = "land_then_die", None
    mesh["h2"].status_error = BatonError(ErrorCode.UNAVAILABLE, "libvirt connection lost")
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.TIMEOUT) == (record.phase, record.error.code)
    assert record.error.message.endswith("; its facts cannot be read (libvirt connection lost)")


# --- the coordinator stopping (its job tasks cancelled) --------------------------------------


async def test_the_coordinator_stopping_while_the_source_ignores_the_abort_destroys_nothing(
        nats_server, mesh, watcher, nats_client):
    mesh["h1"].script = Script(outcome="hang")
    mesh["h1"].ignore_abort = True
    async with coordinator_stopped_after(nats_server, grace_s=0.1, rollback_s=0.3) as stop:
        accepted = await migrate(nats_client)
        await watcher.until(accepted.migration_id, {Phase.MIGRATING})
        stop.set()
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.UNAVAILABLE, "the coordinator stopped during the migration"
            ) == (record.phase, record.error.code, record.error.message)
    assert (1, [], [], DomainState.RUNNING) == (
        len(mesh["h1"].asked(A.MIGRATION_ABORT)), cleanups(mesh, "h2"), cleanups(mesh, "h1"),
        mesh["h1"].domains["vm1"].state)
    assert True is mesh.storage.exists("h2", DISK)


async def test_the_coordinator_stopping_while_confirming_deletes_no_source_disk(
        nats_server, mesh, watcher, nats_client):
    mesh["h1"].plan = "resume_paused"
    async with coordinator_stopped_after(nats_server, grace_s=0.1, rollback_s=0.3) as stop:
        accepted = await migrate(nats_client)
        await watcher.until(accepted.migration_id, {Phase.COMPLETING})
        mesh["h1"].release.set()
        stop.set()
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, "the coordinator stopped during the migration") == (
        record.phase, record.error.message)
    assert ([], [], []) == (cleanups(mesh, "h1"), cleanups(mesh, "h2"),
                            mesh["h1"].asked(A.MIGRATION_ABORT))
    assert (True, True) == (mesh.storage.exists("h1", DISK), mesh.storage.exists("h2", DISK))


# --- storage moves --------------------------------------------------------------------------


async def move_disk(nc) -> StorageMoveAccepted:
    reply = await ask(nc, C.STORAGE_MOVE, StorageMoveRequest(vm="vm1", destination_pool="fast"),
                      StorageMoveAccepted)
    assert isinstance(reply, StorageMoveAccepted), reply
    return reply


async def test_a_disk_move_that_fails_after_its_pivot_is_neither_aborted_nor_rolled_back(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].plan = "fail_after_pivot"
    accepted = await move_disk(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert isinstance(record, StorageMoveRecord)
    assert (Phase.FAILED, VERIFY_FAILED) == (record.phase, record.error.message)
    assert ([True], [f"{FAST}/vm1.qcow2"], [False]) == (
        [d.pivoted for d in record.outcome], [d.path for d in record.outcome],
        [d.source_deleted for d in record.outcome])
    assert [] == mesh["h1"].asked(A.STORAGE_ABORT)


async def test_an_abort_once_the_copies_are_in_sync_is_refused_and_never_reaches_the_agent(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].plan = "hold_after_ready"
    accepted = await move_disk(nats_client)
    await watcher.until(accepted.migration_id, {Phase.COMPLETING})
    reply = await ask(nats_client, C.ABORT, AbortRequest(migration_id=accepted.migration_id),
                      StorageMoveRecord)
    mesh["h1"].release.set()
    record = await watcher.final(accepted.migration_id)
    assert (ErrorCode.CONFLICT, Phase.SUCCEEDED, []) == (
        reply.code, record.phase, mesh["h1"].asked(A.STORAGE_ABORT))


async def test_a_disk_move_reported_done_while_the_vm_keeps_its_old_file_ends_failed(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].plan = "report_without_pivot"
    accepted = await move_disk(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, "confirm", True) == (
        record.phase, record.error.details.get("stage"), f"vda uses {DISK}" in record.error.message)
