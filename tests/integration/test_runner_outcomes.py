"""What the migration runner tells operators, and when it calls a migration confirmed.

The phase reasons, error messages and roll-back notes checked here are what ``baton jobs`` and
``baton watch`` show (``PhaseEvent.reason``, the record's ``error``), so their exact text is part
of the behaviour. The coordinator runs in this process against scripted fake agents on a real
nats-server (see ``coordinator_fixtures``); :class:`Agent` adds the outcomes these tests need: a
source that loses the VM's definition at the switch-over, a destination that holds the guest
paused, a destination whose agent cannot read the VM once it holds it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from baton.schemas import timeouts
from baton.schemas.agent import DiskInfo, DomainsReply, DomainsRequest, DomainState
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.migration import (
    AbortRequest,
    BandwidthRequest,
    MigrateAccepted,
    MigrateRequest,
    MigrationRecord,
    Phase,
    StartRequest,
)
from baton.schemas.subjects import AgentEndpoint as A
from baton.schemas.subjects import CoordinatorEndpoint as C
from tests.integration.fake_agents import (
    GIB,
    IMAGES,
    FakeAgent,
    Mesh,
    Script,
    domain,
    host_caps,
)
from tests.integration.test_coordinator import ask

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)
QUICK = Script(steps=1, interval_s=0.01, resume_lead_s=0.05)
UNREADABLE = "reading vm1: libvirt connection failed: Broken pipe"


class Agent(FakeAgent):
    """A FakeAgent whose switch-over can leave the hosts other than requested."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.drop_source_definition = False  # the source loses the VM's definition regardless
        self.destination_paused = False  # the guest stays paused on the destination
        self.unreadable: set[str] = set()  # VMs this agent cannot read once it holds them

    async def list_domains(self, request: DomainsRequest) -> DomainsReply:
        if any(name in self.unreadable and name in self.domains for name in request.names or []):
            raise BatonError(ErrorCode.UNAVAILABLE, UNREADABLE)
        return await super().list_domains(request)

    async def _switch_over(self, request: StartRequest) -> None:
        await super()._switch_over(request)
        if self.drop_source_definition:
            self.domains.pop(request.vm, None)
        if self.destination_paused:
            destination = self.mesh.by_uri(request.destination_uri)
            destination.domains[request.vm] = msgspec.structs.replace(
                destination.domains[request.vm], state=DomainState.PAUSED)


@pytest.fixture
async def mesh(nats_server) -> AsyncIterator[Mesh]:
    """As ``coordinator_fixtures.mesh`` (h1 holds vm1 and the shut-off vmoff; h2 is the
    destination; h3 lacks the bridge br0), with agents that can leave the hosts otherwise."""
    mesh = Mesh()
    for host, bridges in (("h1", ("br0",)), ("h2", ("br0",)), ("h3", ("br9",))):
        mesh.agents[host] = Agent(host, mesh, host_caps(host, bridges=bridges))
        mesh[host].script = QUICK
    mesh["h1"].add_domain(domain("vm1"))
    mesh["h1"].add_domain(domain("vmoff", state=DomainState.SHUTOFF))
    async with mesh.serving(nats_server.url):
        yield mesh


async def migrate(nc, **options: Any) -> MigrateAccepted:
    request = MigrateRequest(**({"vm": "vm1", "destination": "h2", "source": "h1"} | options))
    reply = await ask(nc, C.MIGRATE, request, MigrateAccepted)
    assert isinstance(reply, MigrateAccepted), reply
    return reply


def reasons(watcher: Any, migration_id: str) -> list[tuple[Phase, str]]:
    return [(e.phase, e.reason) for e in watcher.phases if e.migration_id == migration_id]


@pytest.fixture
def quick_confirm(monkeypatch) -> None:
    monkeypatch.setattr(timeouts, "CONFIRM_WINDOW", 0.3)
    monkeypatch.setattr(timeouts, "CONFIRM_POLL", 0.05)


# --- what each phase says ----------------------------------------------------------------------


async def test_a_live_migration_gives_the_reason_of_every_phase(coordinator, mesh, watcher,
                                                                 nats_client):
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert Phase.SUCCEEDED == record.phase
    assert [(Phase.PENDING, "accepted"), (Phase.CHECKING, ""), (Phase.PREPARING, "storage copy"),
            (Phase.MIGRATING, "source agent started the migration"),
            (Phase.COMPLETING, "guest resumed on the destination"),
            (Phase.SUCCEEDED, "confirmed on both hosts")] == reasons(watcher,
                                                                     accepted.migration_id)


async def test_an_offline_migration_completes_because_the_source_returned(
        coordinator, mesh, watcher, nats_client):
    mesh.storage.shared_dirs.add(IMAGES)
    accepted = await migrate(nats_client, vm="vmoff", live=False)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, None) == (record.phase, record.switchover_at)
    assert [(Phase.MIGRATING, "source agent started the migration"),
            (Phase.COMPLETING, "the source's migrate call returned"),
            (Phase.SUCCEEDED, "confirmed on both hosts")] == reasons(
                watcher, accepted.migration_id)[-3:]


async def test_a_bandwidth_change_for_a_finished_migration_is_a_conflict_naming_its_phase(
        coordinator, mesh, watcher, nats_client):
    accepted = await migrate(nats_client)
    await watcher.final(accepted.migration_id)
    reply = await ask(nats_client, C.BANDWIDTH, BandwidthRequest(
        migration_id=accepted.migration_id, bandwidth_mib_s=25), MigrationRecord)
    assert isinstance(reply, ErrorReply), reply
    assert (ErrorCode.CONFLICT, "migration already succeeded") == (reply.code, reply.message)
    assert [] == mesh["h1"].asked(A.MIGRATION_SPEED)


# --- failures, aborts and their roll-back notes ---------------------------------------------


async def test_a_failed_check_touches_nothing_and_adds_no_roll_back_note(
        coordinator, mesh, watcher, nats_client):
    accepted = await migrate(nats_client, destination="h3")
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.PRECONDITION_FAILED, {}) == (
        record.phase, record.error.code, record.error.details)
    assert ([], []) == (mesh["h3"].asked(A.MIGRATION_PREPARE),
                        mesh["h3"].asked(A.MIGRATION_CLEANUP))


async def test_a_job_the_source_cancelled_on_its_own_is_aborted_and_cleanly_rolled_back(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].script = Script(outcome="hang")
    accepted = await migrate(nats_client)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    mesh["h1"].migrations[accepted.migration_id].abort.set()  # e.g. virsh domjobabort on h1
    record = await watcher.final(accepted.migration_id)
    assert (Phase.ABORTED, ErrorCode.CONFLICT, "aborted: the source agent cancelled the job",
            {}) == (record.phase, record.error.code, record.error.message, record.error.details)
    [cleanup] = mesh["h2"].asked(A.MIGRATION_CLEANUP)
    assert ([], [f"{IMAGES}/vm1.qcow2"], False) == (
        mesh["h1"].asked(A.MIGRATION_ABORT), cleanup.delete_paths,
        mesh.storage.exists("h2", f"{IMAGES}/vm1.qcow2"))


async def test_a_roll_back_names_every_file_the_destination_kept_and_why(
        coordinator, mesh, watcher, nats_client):
    two_disks = msgspec.structs.replace(domain("vm2"), disks=[
        DiskInfo(target=target, device="disk", source_type="file",
                 source_path=f"{IMAGES}/vm2-{target}.qcow2", format="qcow2",
                 capacity_bytes=10 * GIB) for target in ("vda", "vdb")])
    mesh["h1"].add_domain(two_disks)
    paths = [f"{IMAGES}/vm2-vda.qcow2", f"{IMAGES}/vm2-vdb.qcow2"]
    mesh["h1"].script = Script(outcome="hang")
    accepted = await migrate(nats_client, vm="vm2")
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    # meanwhile another domain on h2 was defined on the copies: its agent must keep them
    mesh["h2"].domains["squatter"] = msgspec.structs.replace(two_disks, name="squatter",
                                                             uuid="uuid-squatter")
    aborted = await ask(nats_client, C.ABORT, AbortRequest(migration_id=accepted.migration_id),
                        MigrationRecord)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.ABORTED, Phase.ABORTED) == (aborted.phase, record.phase)
    assert ("aborted: requested by an operator",
            f"destination kept {paths[0]}, {paths[1]}: {paths[0]} is still used by a domain on "
            f"this host; {paths[1]} is still used by a domain on this host") == (
        record.error.message, record.error.details.get("rollback"))
    assert [True, True] == [mesh.storage.exists("h2", p) for p in paths]


# --- confirmation: what the runner calls done ------------------------------------------------


async def test_a_transient_source_vm_may_leave_no_definition_behind_even_when_kept_is_asked(
        coordinator, mesh, watcher, nats_client, quick_confirm):
    mesh["h1"].add_domain(domain("vmt", persistent=False))
    accepted = await migrate(nats_client, vm="vmt", undefine_source=False)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, None) == (record.phase, record.error)
    assert (False, True) == ("vmt" in mesh["h1"].domains, mesh["h2"].domains["vmt"].persistent)


async def test_a_persistent_source_vm_that_lost_its_kept_definition_fails_confirmation(
        coordinator, mesh, watcher, nats_client, quick_confirm):
    mesh["h1"].drop_source_definition = True
    accepted = await migrate(nats_client, undefine_source=False)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.HYPERVISOR, "confirm") == (
        record.phase, record.error.code, record.error.details.get("stage"))
    assert ("libvirt reported the migration done, but: vm1 is gone from the source; expected "
            "an inactive definition kept") == record.error.message
    assert [] == mesh["h1"].asked(A.MIGRATION_CLEANUP) + mesh["h2"].asked(A.MIGRATION_CLEANUP)


async def test_a_confirmation_failure_lists_every_problem_on_both_hosts(
        coordinator, mesh, watcher, nats_client, quick_confirm):
    mesh["h1"].drop_source_definition = True
    mesh["h1"].destination_paused = True
    accepted = await migrate(nats_client, undefine_source=False)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, "confirm") == (record.phase, record.error.details.get("stage"))
    assert ("libvirt reported the migration done, but: vm1 is paused on h2, not running; "
            "vm1 is gone from the source; expected an inactive definition kept"
            ) == record.error.message


async def test_a_destination_that_cannot_be_read_is_not_confirmed(
        coordinator, mesh, watcher, nats_client, quick_confirm):
    mesh["h2"].unreadable = {"vm1"}
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.HYPERVISOR, "confirm") == (
        record.phase, record.error.code, record.error.details.get("stage"))
    assert (f"libvirt reported the migration done, but: unavailable: {UNREADABLE}"
            ) == record.error.message
    assert [] == mesh["h1"].asked(A.MIGRATION_CLEANUP) + mesh["h2"].asked(A.MIGRATION_CLEANUP)
