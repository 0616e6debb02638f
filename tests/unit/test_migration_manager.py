"""The agent's half of a migration (agent/migration.py, MigrationManager) below the lab.

A fake hypervisor raises libvirt's failures as the adapter's ``translate()`` and call deadline
produce them (``hypervisor`` with libvirt's message, ``unavailable`` for a lost connection,
``timeout`` for a call libvirt did not answer in time, ``not_found`` for an unknown domain) at
each step; each test checks what the agent answers, what it publishes, and what it leaves behind:
disk files (real files, qemu-img for the created ones) and domains.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from baton.agent import migration
from baton.agent.ledger import Entry, Ledger
from baton.agent.migration import POSTCOPY_RECOVERY_ATTEMPTS, MigrationManager, resume_bound_s
from baton.agent.migration_plan import MigrationFlag, MigrationPlan
from baton.agent.start_cost import PRIOR_S
from baton.schemas.agent import (
    PAUSED_POSTCOPY,
    PAUSED_POSTCOPY_FAILED,
    RUNNING_POSTCOPY_FAILED,
    DiskInfo,
    DomainInfo,
    DomainState,
    StoragePool,
)
from baton.schemas.base import utc_now
from baton.schemas.codec import decode_any
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import JobCompletedEvent, JobStats
from baton.schemas.migration import (
    AgentAbortRequest,
    CleanupReply,
    CleanupRequest,
    DiskPlan,
    MigrationStatusRequest,
    PostcopySwitch,
    PrepareRequest,
    SourceFinished,
    SourceProgress,
    SpeedRequest,
    StartRequest,
)
from baton.schemas.subjects import MigrationEvent, Subjects
from tests.fakes import definition_xml
from tests.support.images import MIB, needs_qemu_img
from tests.support.ledgers import fresh_ledger

S = Subjects()
# What LibvirtHypervisor raises (agent/libvirt/connection.py: translate() and Connection.call).
HYPERVISOR = BatonError(ErrorCode.HYPERVISOR, "migrating vm1: operation failed: migration out "
                        "job: unexpectedly failed")
UNAVAILABLE = BatonError(ErrorCode.UNAVAILABLE, "migrating vm1: libvirt connection failed: "
                         "End of file while reading data: Input/output error")
TIMEOUT = BatonError(ErrorCode.TIMEOUT, "removing vm1: libvirt did not answer within 30 s")
NOT_FOUND = BatonError(ErrorCode.NOT_FOUND, "no domain named 'vm9' on this host")
FAILURES = pytest.mark.parametrize("failure", [HYPERVISOR, UNAVAILABLE, TIMEOUT],
                                   ids=["hypervisor", "unavailable", "timeout"])


def domain(name: str, paths: tuple[str, ...] = (), state: DomainState = DomainState.RUNNING,
           ) -> DomainInfo:
    return DomainInfo(
        name=name, uuid=f"uuid-{name}", state=state, active=state != DomainState.SHUTOFF,
        persistent=True, memory_kib=1, max_memory_kib=1, vcpus=1,
        disks=[DiskInfo(target=f"vd{chr(97 + i)}", device="disk", source_type="file",
                        source_path=p, format="qcow2") for i, p in enumerate(paths)])


@dataclass
class Hypervisor:
    """The part of the Hypervisor port a MigrationManager uses, on a host with domains ``vms``.
    ``fail`` makes a method raise; ``migrate`` runs until the test ends it through ``outcome``
    (None: success, or the error libvirt's call raised). Standalone on purpose: tests/fakes.py
    is another engineer's, and these tests pin agent/migration.py, not the fake."""

    vms: dict[str, DomainInfo] = field(default_factory=dict)
    fail: dict[str, BaseException] = field(default_factory=dict)  # method name -> raised
    job_stats_failures: list[BatonError] = field(default_factory=list)  # raised first, in order
    stats: JobStats | None = None
    calls: list[tuple[str, object]] = field(default_factory=list)
    plans: list[MigrationPlan] = field(default_factory=list)  # what migrate was asked to do
    outcome: asyncio.Future[BaseException | None] | None = None
    migrating: asyncio.Event = field(default_factory=asyncio.Event)
    pool_dirs: tuple[Path, ...] = ()  # the directories of the host's active pools

    def _call(self, name: str, arg: object) -> None:
        self.calls.append((name, arg))
        if name in self.fail:
            raise self.fail[name]

    def called(self, name: str) -> list[object]:
        return [arg for n, arg in self.calls if n == name]

    async def domains(self, names, include_cpu_xml):
        self._call("domains", names)
        if names is None:
            return list(self.vms.values())
        missing = [n for n in names if n not in self.vms]
        if missing:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {missing[0]!r} on this host")
        return [self.vms[n] for n in names]

    async def migratable_xml(self, vm: str, inactive: bool) -> str:
        self._call("migratable_xml", (vm, inactive))
        if vm not in self.vms:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {vm!r} on this host")
        return definition_xml(self.vms[vm])

    async def migrate(self, vm: str, plan: MigrationPlan) -> None:
        self._call("migrate", vm)
        self.plans.append(plan)
        self.outcome = asyncio.get_running_loop().create_future()
        self.migrating.set()
        try:
            error = await self.outcome
        except asyncio.CancelledError:
            self.calls.append(("migrate_cancelled", vm))  # the adapter aborts the job here
            raise
        if error is not None:
            raise error

    async def job_stats(self, vm: str) -> JobStats | None:
        self._call("job_stats", vm)
        if self.job_stats_failures:
            raise self.job_stats_failures.pop(0)
        return self.stats

    async def abort_job(self, vm: str) -> None:
        self._call("abort_job", vm)

    async def set_max_speed(self, vm: str, bandwidth_mib_s: int, postcopy: bool = False) -> None:
        self._call("set_max_speed_postcopy" if postcopy else "set_max_speed", (vm, bandwidth_mib_s))

    async def set_max_downtime(self, vm: str, downtime_ms: int) -> None:
        self._call("set_max_downtime", (vm, downtime_ms))

    async def start_postcopy(self, vm: str) -> None:
        self._call("start_postcopy", vm)

    async def remove_domain(self, vm: str, uuid: str) -> bool:
        self._call("remove_domain", vm)
        [found] = [d for d in self.vms.values() if d.uuid == uuid] or [None]
        if found is None:
            return False
        if found.name != vm:
            raise BatonError(ErrorCode.CONFLICT, f"the domain with UUID {uuid} here is "
                             f"{found.name!r}, not {vm!r}: not removed")
        if found.state == DomainState.RUNNING:
            raise BatonError(ErrorCode.CONFLICT, f"{vm} is running on this host: a clean-up "
                             "never destroys a running guest")
        return self.vms.pop(vm, None) is not None

    async def host_facts(self):
        self._call("host_facts", None)
        return HostPools([StoragePool(name=p.name, type="dir", target_path=str(p), active=True)
                          for p in self.pool_dirs])

    async def refresh_pools(self) -> None:
        self._call("refresh_pools", None)


@dataclass
class HostPools:
    pools: list[StoragePool]


async def any_peer(host: str | None, uri: str) -> None:
    """The peer check passes (tests of agent/peers.py and the contract tests pin it)."""


class Agent:
    """A MigrationManager in a TaskGroup of its own, and what it published."""

    def __init__(self, hv: Hypervisor, ledger: Ledger) -> None:
        self.hv = hv
        self.ledger = ledger
        self.manager: MigrationManager
        self.finished: list[SourceFinished] = []
        self.progress: asyncio.Queue[SourceProgress] = asyncio.Queue()
        self.ended = asyncio.Event()

    async def publish(self, subject: str, body: bytes) -> None:
        if subject.endswith(MigrationEvent.SOURCE_FINISHED):
            self.finished.append(decode_any(body, SourceFinished))
            self.ended.set()
        elif subject.endswith(MigrationEvent.SOURCE_PROGRESS):
            self.progress.put_nowait(decode_any(body, SourceProgress))

    async def start(self, vm: str = "vm1", migration_id: str = "m1", **options) -> None:
        await self.manager.start(StartRequest(
            migration_id=migration_id, vm=vm, destination_uri="qemu+tcp://h2/system",
            progress_interval_ms=100, **options))

    async def outcome(self, error: BaseException | None = None) -> SourceFinished:
        """End libvirt's migrate call with ``error`` (None: success); the one report it gave."""
        await self.hv.migrating.wait()
        assert self.hv.outcome is not None
        self.hv.outcome.set_result(error)
        await self.ended.wait()
        [finished] = self.finished
        return finished


@contextlib.asynccontextmanager
async def agent(hv: Hypervisor, within_s: float = 5, check_peer=any_peer,
                ledger: Ledger | None = None, peer_domains=None) -> AsyncIterator[Agent]:
    """``ledger``: the agent's record of what it made (default: a new, empty one);
    ``peer_domains``: how other hosts' agents answer for a domain (default: none answers)."""
    ledger = ledger or fresh_ledger()
    running = Agent(hv, ledger)
    async with asyncio.timeout(within_s), asyncio.TaskGroup() as tasks:
        running.manager = MigrationManager("h1", hv, S, running.publish, tasks, ledger,
                                           check_peer, peer_domains)
        yield running


def arriving(vm: str, *disks: Path) -> DomainInfo:
    """The domain of an incoming migration: paused until the switch-over."""
    return domain(vm, tuple(str(d) for d in disks), state=DomainState.PAUSED)


def owned(a: Agent, *created: Path, incoming: DomainInfo | None = None) -> None:
    """Arrange this agent's ledger: it made ``created`` and expects ``incoming`` for m1."""
    a.ledger.put(Entry(migration_id="m1", vm="vm1", created_paths=[str(p) for p in created],
                       incoming_uuid=None if incoming is None else incoming.uuid))


@pytest.fixture(autouse=True)
def no_wait_for_the_completed_event(monkeypatch):
    """A success waits for libvirt's job-completed event; these tests send it first or never."""
    monkeypatch.setattr(migration, "COMPLETED_EVENT_WAIT_S", 0.01)


def host(*vms: DomainInfo, **options) -> Hypervisor:
    return Hypervisor(vms={vm.name: vm for vm in vms}, **options)


# --- start --------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [UNAVAILABLE, TIMEOUT], ids=["unavailable", "timeout"])
async def test_start_while_libvirt_cannot_be_asked_fails_and_launches_nothing(failure):
    hv = host(domain("vm1"), fail={"domains": failure})
    async with agent(hv) as a:
        with pytest.raises(BatonError) as caught:
            await a.start()
    assert (failure.code, [], []) == (caught.value.code, hv.called("migrate"), a.finished)


async def test_start_of_an_unknown_vm_is_not_found_and_launches_nothing():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        with pytest.raises(BatonError) as caught:
            await a.start(vm="vm9")
    assert (ErrorCode.NOT_FOUND, []) == (caught.value.code, hv.called("migrate"))


async def test_a_live_start_of_a_shut_off_vm_is_refused_before_libvirt_is_asked_to_migrate():
    hv = host(domain("vm1", state=DomainState.SHUTOFF))
    async with agent(hv) as a:
        with pytest.raises(BatonError) as caught:
            await a.start()
    assert (ErrorCode.PRECONDITION_FAILED, []) == (caught.value.code, hv.called("migrate"))


async def test_a_second_start_for_a_migrating_vm_or_a_running_id_is_a_conflict():
    hv = host(domain("vm1"), domain("vm2"))
    async with agent(hv) as a:
        await a.start()
        codes = []
        for vm, migration_id in (("vm1", "m2"), ("vm2", "m1")):
            with pytest.raises(BatonError) as caught:
                await a.start(vm=vm, migration_id=migration_id)
            codes.append(caught.value.code)
        await a.outcome(None)
    assert ([ErrorCode.CONFLICT] * 2, ["vm1"]) == (codes, hv.called("migrate"))


# --- copies into another pool ------------------------------------------------------------------


async def test_copies_into_another_pool_send_libvirt_both_definitions_with_the_new_paths():
    hv = host(domain("vm1", ("/pools/slow/vm1.qcow2", "/pools/slow/vm1-data.qcow2")))
    async with agent(hv) as a:
        await a.start(copy_disks=["vda", "vdb"], destination_paths={"vda": "/pools/fast/vm1.qcow2"})
        await a.outcome(None)
    [plan] = hv.plans
    sources = {which: [s.get("file") for s in ET.fromstring(str(plan.params[which])).iter("source")]
               for which in ("destination_xml", "persistent_xml")}
    assert {"destination_xml": ["/pools/fast/vm1.qcow2", "/pools/slow/vm1-data.qcow2"],
            "persistent_xml": ["/pools/fast/vm1.qcow2", "/pools/slow/vm1-data.qcow2"]} == sources
    assert [("vm1", False), ("vm1", True)] == hv.called("migratable_xml")


async def test_a_transient_move_into_another_pool_sends_no_persistent_definition():
    hv = host(domain("vm1", ("/pools/slow/vm1.qcow2",)))
    async with agent(hv) as a:
        await a.start(copy_disks=["vda"], destination_paths={"vda": "/pools/fast/vm1.qcow2"},
                      persistent=False)
        await a.outcome(None)
    [plan] = hv.plans
    assert "persistent_xml" not in plan.params
    assert ["/pools/fast/vm1.qcow2"] == [
        s.get("file") for s in ET.fromstring(str(plan.params["destination_xml"])).iter("source")]
    assert [("vm1", False)] == hv.called("migratable_xml")


async def test_a_copy_without_other_paths_leaves_the_definitions_to_libvirt():
    hv = host(domain("vm1", ("/pools/slow/vm1.qcow2",)))
    async with agent(hv) as a:
        await a.start(copy_disks=["vda"])
        await a.outcome(None)
    [plan] = hv.plans
    assert ([], set()) == (hv.called("migratable_xml"),
                           {"destination_xml", "persistent_xml"} & set(plan.params))


@pytest.mark.parametrize(("paths", "copied", "said"), [
    ({"vdb": "/pools/fast/x.qcow2"}, ["vda"], "vdb not copied: only a copied disk can land at "
     "another path on the destination"),
    ({"vda": "fast/vm1.qcow2"}, ["vda"], "disk path must be absolute: fast/vm1.qcow2"),
    ({"vdc": "/pools/fast/x.qcow2"}, ["vda", "vdc"], "cannot put vdc elsewhere: the domain has no "
     "file-backed disk vdc (only such disks are copied)"),
], ids=["not-copied", "relative", "no-such-disk"])
async def test_a_path_the_source_cannot_honour_is_refused_before_libvirt_is_asked(paths, copied,
                                                                                   said):
    hv = host(domain("vm1", ("/pools/slow/vm1.qcow2", "/pools/slow/vm1-data.qcow2")))
    async with agent(hv) as a:
        with pytest.raises(BatonError) as caught:
            await a.start(copy_disks=copied, destination_paths=paths)
    assert (ErrorCode.BAD_REQUEST, said, [], None) == (
        caught.value.code, caught.value.message, hv.called("migrate"), a.ledger.get("m1"))


# --- the migrate call and its one report -------------------------------------------------------


@FAILURES
async def test_a_failed_migrate_call_is_reported_once_with_libvirts_code_and_message(failure):
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await a.start()
        finished = await a.outcome(failure)
    assert (failure.code, failure.message, False, None) == (
        finished.error.code, finished.error.message, finished.aborted, finished.stats)
    assert ([], ["vm1"]) == (hv.called("remove_domain"), list(hv.vms))


async def test_the_job_is_forgotten_once_reported_so_the_vm_can_migrate_again():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await a.start()
        await a.outcome(HYPERVISOR)
        hv.migrating.clear()
        a.ended.clear()
        a.finished.clear()
        await a.start(migration_id="m2")
        await a.outcome(None)
    assert ["vm1", "vm1"] == hv.called("migrate")


async def test_a_migration_that_fails_after_an_abort_is_reported_aborted():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await a.start()
        await hv.migrating.wait()
        await a.manager.abort(AgentAbortRequest(migration_id="m1", vm="vm1"))
        finished = await a.outcome(BatonError(ErrorCode.HYPERVISOR, "migrating vm1: operation "
                                              "aborted: migration out job: canceled by client"))
    assert (True, ["vm1"]) == (finished.aborted, hv.called("abort_job"))


async def test_a_success_reports_the_figures_of_libvirts_job_completed_event():
    hv = host(domain("vm1"))
    figures = JobStats(operation="migration_out", downtime_ms=42)
    async with agent(hv) as a:
        await a.start()
        await hv.migrating.wait()
        a.manager.observe(JobCompletedEvent(host_id="h1", vm="vm1", uuid="uuid-vm1",
                                            stats=figures, at=utc_now()))
        finished = await a.outcome(None)
    assert (None, figures) == (finished.error, finished.stats)


CAPPED_MOVE = JobStats(operation="migration_out", time_elapsed_ms=2500,
                      data_processed_bytes=96 << 20)  # 96 MiB at 48 MiB/s: 2 s of the 2.5


async def completed(a: Agent, hv: Hypervisor, error: BaseException | None = None,
                    **options) -> SourceFinished:
    await a.start(**options)
    await hv.migrating.wait()
    a.manager.observe(JobCompletedEvent(host_id="h1", vm="vm1", uuid="uuid-vm1",
                                        stats=CAPPED_MOVE, at=utc_now()))
    return await a.outcome(error)


@pytest.mark.parametrize("copy_disks", [[], ["vda"]])
async def test_a_completed_move_at_one_cap_teaches_this_hosts_start_for_its_kind(copy_disks):
    hv = host(domain("vm1", ("/pool/vm1.qcow2",)))
    async with agent(hv) as a:
        await completed(a, hv, bandwidth_mib_s=48, copy_disks=copy_disks)
    learned = a.manager.start_cost
    assert (pytest.approx(0.5), PRIOR_S) == (learned.seconds(copy=bool(copy_disks)),
                                             learned.seconds(copy=not copy_disks))


async def test_a_move_whose_cap_changed_while_it_ran_teaches_nothing():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await a.start(bandwidth_mib_s=48)
        await hv.migrating.wait()
        await a.manager.speed(SpeedRequest(migration_id="m1", vm="vm1", bandwidth_mib_s=48))
        a.manager.observe(JobCompletedEvent(host_id="h1", vm="vm1", uuid="uuid-vm1",
                                            stats=CAPPED_MOVE, at=utc_now()))
        await a.outcome(None)
    assert PRIOR_S == a.manager.start_cost.seconds(copy=False)


async def test_a_failed_move_teaches_nothing():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await completed(a, hv, BatonError(ErrorCode.HYPERVISOR, "migrating vm1: broken"),
                        bandwidth_mib_s=48)
    assert PRIOR_S == a.manager.start_cost.seconds(copy=False)


async def test_a_success_without_the_job_completed_event_is_reported_without_figures():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await a.start()
        finished = await a.outcome(None)
    assert (None, None, False) == (finished.error, finished.stats, finished.aborted)


async def test_an_unexpected_exception_in_the_migrate_call_is_reported_as_internal():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await a.start()
        finished = await a.outcome(RuntimeError("secret detail"))
    assert (ErrorCode.INTERNAL, False) == (finished.error.code,
                                           "secret detail" in finished.error.message)


async def test_progress_survives_a_failed_read_and_sets_the_downtime_once_a_job_runs():
    hv = host(domain("vm1"), stats=JobStats(operation="migration_out", data_total_bytes=10),
              job_stats_failures=[UNAVAILABLE])
    async with agent(hv) as a:
        await a.start(max_downtime_ms=300)
        first, second = await a.progress.get(), await a.progress.get()
        await a.outcome(None)
    assert ([10, 10], [("vm1", 300)]) == ([first.stats.data_total_bytes,
                                           second.stats.data_total_bytes],
                                          hv.called("set_max_downtime"))


async def test_a_cap_asked_for_early_is_set_again_once_memory_is_being_sent():
    """A cap set before libvirt's migrate call applied its own parameters is overwritten by the
    call's cap: it is set again once memory is being sent (and only once)."""
    hv = host(domain("vm1"))  # no job figures yet
    async with agent(hv) as a:
        await a.start(bandwidth_mib_s=4)
        await hv.migrating.wait()
        await a.manager.speed(SpeedRequest(migration_id="m1", vm="vm1", bandwidth_mib_s=256))
        hv.stats = JobStats(operation="migration_out", data_total_bytes=10)  # the job runs...
        await a.progress.get()
        while_preparing = list(hv.called("set_max_speed"))
        hv.stats = JobStats(operation="migration_out", data_total_bytes=10,
                            memory_processed_bytes=1)  # ...and sends memory: its own cap is set
        await a.progress.get()
        await a.progress.get()
        await a.outcome(None)
    assert ([("vm1", 256)], [("vm1", 256), ("vm1", 256)]) == (while_preparing,
                                                             hv.called("set_max_speed"))


async def test_the_agent_stopping_mid_migration_cancels_libvirts_call_and_removes_nothing():
    hv = host(domain("vm1"))
    runner = asyncio.create_task(_migrate_until_cancelled(hv))
    await hv.migrating.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert (["vm1"], [], [], ["vm1"]) == (hv.called("migrate_cancelled"),
                                          hv.called("remove_domain"), hv.called("abort_job"),
                                          list(hv.vms))


async def _migrate_until_cancelled(hv: Hypervisor) -> None:
    async with agent(hv, within_s=10) as a:
        await a.start()
        await asyncio.Event().wait()


# --- speed and abort ----------------------------------------------------------------------------


async def test_speed_and_abort_of_a_migration_not_running_here_touch_nothing():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        codes = []
        for ask in (a.manager.speed(SpeedRequest(migration_id="m9", vm="vm1", bandwidth_mib_s=5)),
                    a.manager.abort(AgentAbortRequest(migration_id="m9", vm="vm1"))):
            with pytest.raises(BatonError) as caught:
                await ask
            codes.append(caught.value.code)
    assert ([ErrorCode.NOT_FOUND] * 2, [], []) == (codes, hv.called("set_max_speed"),
                                                  hv.called("abort_job"))


async def test_an_abort_naming_another_vm_than_the_migrations_aborts_no_job():
    hv = host(domain("vm1"), domain("vm2"))
    async with agent(hv) as a:
        await a.start()
        with pytest.raises(BatonError) as caught:
            await a.manager.abort(AgentAbortRequest(migration_id="m1", vm="vm2"))
        finished = await a.outcome(None)
    assert (ErrorCode.NOT_FOUND, [], False) == (caught.value.code, hv.called("abort_job"),
                                                finished.aborted)


@FAILURES
async def test_a_failed_bandwidth_change_is_answered_with_libvirts_error(failure):
    hv = host(domain("vm1"), fail={"set_max_speed": failure})
    async with agent(hv) as a:
        await a.start()
        with pytest.raises(BatonError) as caught:
            await a.manager.speed(SpeedRequest(migration_id="m1", vm="vm1", bandwidth_mib_s=5))
        await a.outcome(None)
    assert (failure.code, [("vm1", 5)]) == (caught.value.code, hv.called("set_max_speed"))


# --- prepare (destination) -----------------------------------------------------------------------


def plans(*paths: Path) -> PrepareRequest:
    return PrepareRequest(migration_id="m1", vm="vm1", disks=[
        DiskPlan(target=f"vd{chr(97 + i)}", path=str(p), format="qcow2", capacity_bytes=4 * MIB)
        for i, p in enumerate(paths)])


@needs_qemu_img
async def test_prepare_creates_every_planned_disk_and_refreshes_the_pools(tmp_path):
    hv = host(pool_dirs=(tmp_path,))
    async with agent(hv) as a:
        reply = await a.manager.prepare(plans(tmp_path / "a.qcow2", tmp_path / "b.qcow2"))
    assert ([str(tmp_path / "a.qcow2"), str(tmp_path / "b.qcow2")], [None]) == (
        reply.created_paths, hv.called("refresh_pools"))


@needs_qemu_img
async def test_prepare_that_meets_an_existing_file_removes_what_it_made_and_nothing_else(
        tmp_path):
    existing = tmp_path / "b.qcow2"
    existing.write_bytes(b"somebody's data")
    async with agent(host(pool_dirs=(tmp_path,))) as a:
        with pytest.raises(BatonError) as caught:
            await a.manager.prepare(plans(tmp_path / "a.qcow2", existing))
    assert (ErrorCode.CONFLICT, False, b"somebody's data") == (
        caught.value.code, (tmp_path / "a.qcow2").exists(), existing.read_bytes())


@needs_qemu_img
async def test_prepare_that_cannot_create_a_disk_removes_the_ones_it_made(tmp_path):
    request = plans(tmp_path / "a.qcow2", tmp_path / "b.img")
    request.disks[1] = DiskPlan(target="vdb", path=str(tmp_path / "b.img"), format="nonsense",
                                capacity_bytes=MIB)
    async with agent(host(pool_dirs=(tmp_path,))) as a:
        with pytest.raises(BatonError) as caught:
            await a.manager.prepare(request)
    assert (ErrorCode.HYPERVISOR, []) == (caught.value.code, list(tmp_path.iterdir()))


async def test_prepare_outside_every_pool_directory_is_forbidden_and_creates_nothing(tmp_path):
    pool, elsewhere = tmp_path / "pool", tmp_path / "etc"
    pool.mkdir()
    elsewhere.mkdir()
    async with agent(host(pool_dirs=(pool,))) as a:
        with pytest.raises(BatonError) as caught:
            await a.manager.prepare(plans(pool / "a.qcow2", elsewhere / "cron.daily"))
    assert (ErrorCode.FORBIDDEN, [], []) == (caught.value.code, list(pool.iterdir()),
                                             list(elsewhere.iterdir()))
    assert caught.value.message.startswith(f"{elsewhere / 'cron.daily'}: not in the directory")


async def test_prepare_through_a_symlink_out_of_the_pool_is_forbidden(tmp_path):
    pool, elsewhere = tmp_path / "pool", tmp_path / "etc"
    pool.mkdir()
    elsewhere.mkdir()
    (pool / "link").symlink_to(elsewhere)
    async with agent(host(pool_dirs=(pool,))) as a:
        with pytest.raises(BatonError) as caught:
            await a.manager.prepare(plans(pool / "link" / "a.qcow2"))
    assert (ErrorCode.FORBIDDEN, []) == (caught.value.code, list(elsewhere.iterdir()))


async def test_prepare_for_a_vm_already_defined_here_is_a_conflict_and_notes_nothing(tmp_path):
    async with agent(host(domain("vm1"), pool_dirs=(tmp_path,))) as a:
        with pytest.raises(BatonError) as caught:
            await a.manager.prepare(plans(tmp_path / "a.qcow2"))
        entry = a.ledger.get("m1")
    assert (ErrorCode.CONFLICT, None, []) == (caught.value.code, entry, list(tmp_path.iterdir()))


@needs_qemu_img
async def test_prepare_notes_the_expected_domain_and_its_disks_in_the_ledger_on_disk(tmp_path):
    request = PrepareRequest(migration_id="m1", vm="vm1", domain_uuid="uuid-vm1", disks=[
        DiskPlan(target="vda", path=str(tmp_path / "a.qcow2"), format="qcow2",
                 capacity_bytes=MIB)])
    async with agent(host(pool_dirs=(tmp_path,))) as a:
        await a.manager.prepare(request)
        with pytest.raises(BatonError) as caught:  # the same id twice: never a second owner
            await a.manager.prepare(request)
    restarted = Ledger(a.ledger.directory)
    assert (Entry(migration_id="m1", vm="vm1", incoming_uuid="uuid-vm1",
                  created_paths=[str(tmp_path / "a.qcow2")]), ErrorCode.CONFLICT) == (
        restarted.get("m1"), caught.value.code)


@needs_qemu_img
async def test_prepare_whose_pool_refresh_fails_leaves_no_disk_behind(tmp_path):
    async with agent(host(fail={"refresh_pools": UNAVAILABLE}, pool_dirs=(tmp_path,))) as a:
        with pytest.raises(BatonError):
            await a.manager.prepare(plans(tmp_path / "a.qcow2"))
    assert [] == list(tmp_path.iterdir())


# --- cleanup (either side) ----------------------------------------------------------------------


def cleanup(*paths: Path, remove_domain: bool = False) -> CleanupRequest:
    return CleanupRequest(migration_id="m1", vm="vm1", remove_domain=remove_domain,
                          delete_paths=[str(p) for p in paths])


def files(tmp_path: Path, *names: str) -> list[Path]:
    made = [tmp_path / n for n in names]
    for path in made:
        path.write_bytes(b"data")
    return made


async def test_cleanup_removes_the_domain_and_then_deletes_the_files_it_used(tmp_path):
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(arriving("vm1", disk))
    async with agent(hv) as a:
        owned(a, disk, incoming=domain("vm1"))
        reply = await a.manager.cleanup(cleanup(disk, remove_domain=True))
    assert (True, [str(disk)], [], False) == (reply.domain_removed, reply.deleted_paths,
                                              reply.kept_paths, disk.exists())
    assert ({}, [None]) == (hv.vms, hv.called("refresh_pools"))


async def test_cleanup_without_remove_domain_leaves_the_domain_and_the_files_it_uses(tmp_path):
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(domain("vm1", (str(disk),)))
    async with agent(hv) as a:
        owned(a, disk, incoming=domain("vm1"))
        reply = await a.manager.cleanup(cleanup(disk))
    assert (False, [], [str(disk)], True) == (reply.domain_removed, reply.deleted_paths,
                                              reply.kept_paths, disk.exists())
    assert ([], ["vm1"]) == (hv.called("remove_domain"), list(hv.vms))


async def test_cleanup_keeps_a_file_another_domain_uses_and_says_why(tmp_path):
    mine, shared = files(tmp_path, "vm1.qcow2", "shared.qcow2")
    hv = host(arriving("vm1", mine), domain("vm2", (str(shared),)))
    async with agent(hv) as a:
        owned(a, mine, shared, incoming=domain("vm1"))
        reply = await a.manager.cleanup(cleanup(mine, shared, remove_domain=True))
    assert ([str(mine)], [str(shared)], True) == (reply.deleted_paths, reply.kept_paths,
                                                  shared.exists())
    assert f"{shared} is still used by a domain on this host" == reply.detail


@FAILURES
async def test_cleanup_whose_domain_removal_fails_deletes_no_file(tmp_path, failure):
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(domain("vm1", (str(disk),)), fail={"remove_domain": failure})
    async with agent(hv) as a:
        owned(a, disk, incoming=domain("vm1"))
        with pytest.raises(BatonError) as caught:
            await a.manager.cleanup(cleanup(disk, remove_domain=True))
    assert (failure.code, True, ["vm1"]) == (caught.value.code, disk.exists(), list(hv.vms))


@pytest.mark.parametrize("failure", [UNAVAILABLE, TIMEOUT], ids=["unavailable", "timeout"])
async def test_cleanup_that_cannot_list_the_domains_deletes_no_file(tmp_path, failure):
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(fail={"domains": failure})
    async with agent(hv) as a:
        owned(a, disk)
        with pytest.raises(BatonError) as caught:
            await a.manager.cleanup(cleanup(disk))
    assert (failure.code, True) == (caught.value.code, disk.exists())


# --- cleanup: only what this agent made, received or sent away (agent/ledger.py) ---------------


async def test_cleanup_never_deletes_a_file_this_agent_did_not_create_for_that_migration(tmp_path):
    ours, theirs = files(tmp_path, "vm1.qcow2", "passwd")
    async with agent(host()) as a:
        owned(a, ours)
        reply = await a.manager.cleanup(cleanup(ours, theirs))
        other_id = await a.manager.cleanup(CleanupRequest(migration_id="m2", vm="vm1",
                                                          delete_paths=[str(ours)]))
    assert ([str(ours)], [str(theirs)], b"data") == (reply.deleted_paths, reply.kept_paths,
                                                     theirs.read_bytes())
    assert (f"{theirs} was not created by this agent for migration m1: an agent deletes only "
            "files it made") == reply.detail
    assert ([], [str(ours)]) == (other_id.deleted_paths, other_id.kept_paths)


async def test_cleanup_never_removes_a_domain_this_host_did_not_prepare_to_receive():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        reply = await a.manager.cleanup(cleanup(remove_domain=True))
    assert (False, ["vm1"], []) == (reply.domain_removed, list(hv.vms), hv.called("remove_domain"))
    assert ("vm1 is not a domain this host prepared to receive in migration m1: not removed"
            == reply.detail)


async def test_cleanup_never_removes_a_domain_of_that_name_with_another_uuid():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        a.ledger.put(Entry(migration_id="m1", vm="vm1", incoming_uuid="uuid-of-the-arrival"))
        reply = await a.manager.cleanup(cleanup(remove_domain=True))
    assert (False, ["vm1"]) == (reply.domain_removed, list(hv.vms))
    assert ("vm1 here is not the domain (UUID uuid-of-the-arrival) that migration m1 brought: "
            "not removed") == reply.detail


async def test_cleanup_never_removes_another_vm_than_the_one_the_migration_brings():
    hv = host(domain("vm1"), domain("vm2"))
    async with agent(hv) as a:
        owned(a, incoming=domain("vm1"))
        reply = await a.manager.cleanup(CleanupRequest(migration_id="m1", vm="vm2",
                                                       remove_domain=True))
    assert (False, ["vm1", "vm2"]) == (reply.domain_removed, sorted(hv.vms))
    assert "migration m1 brings vm1 here, not vm2: vm2 not removed" == reply.detail


async def test_cleanup_never_destroys_the_incoming_domain_once_its_guest_runs(tmp_path):
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(domain("vm1", (str(disk),)))  # resumed here: maybe the only live copy
    async with agent(hv) as a:
        owned(a, disk, incoming=domain("vm1"))
        with pytest.raises(BatonError) as caught:
            await a.manager.cleanup(cleanup(disk, remove_domain=True))
    assert (ErrorCode.CONFLICT, ["vm1"], True) == (caught.value.code, list(hv.vms), disk.exists())


async def test_the_ledger_survives_a_restart_of_the_agent(tmp_path):
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(arriving("vm1"))
    async with agent(hv) as a:
        owned(a, disk, incoming=domain("vm1"))
    restarted = Ledger(a.ledger.directory)
    restarted.open()
    async with agent(hv, ledger=restarted) as b:
        reply = await b.manager.cleanup(cleanup(disk, remove_domain=True))
    assert (True, [str(disk)]) == (reply.domain_removed, reply.deleted_paths)


async def test_the_source_deletes_the_disks_it_copied_away_only_once_the_migration_completed(
        tmp_path):
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(domain("vm1", (str(disk),)))
    async with agent(hv, peer_domains=peer(domain("vm1"))) as a:  # h2 runs it already
        await a.start(copy_disks=["vda"], destination_host="h2")
        del hv.vms["vm1"]  # what undefine-source leaves; the file is in use by nobody now
        during = await a.manager.cleanup(cleanup(disk))  # libvirt has not answered yet
        await a.outcome(None)
        after = await a.manager.cleanup(cleanup(disk))
    assert ([], [str(disk)], [str(disk)], False) == (
        during.deleted_paths, during.kept_paths, after.deleted_paths, disk.exists())
    assert (f"{disk} was sent away by migration m1, which has not completed on this host: kept"
            == during.detail)


def peer(*answers: DomainInfo | BatonError):
    """The destination's agent, answering for ``vm1`` on h2; records who asked."""
    asked: list[tuple[str, str]] = []

    async def fetch(host: str, vm: str) -> DomainInfo:
        asked.append((host, vm))
        found = [a for a in answers if isinstance(a, BatonError) or a.name == vm]
        if not found:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {vm!r} on {host}")
        if isinstance(found[0], BatonError):
            raise found[0]
        return found[0]
    fetch.asked = asked  # type: ignore[attr-defined]
    return fetch


async def sent_then_restarted(tmp_path, here: DomainInfo | None, *there: DomainInfo | BatonError,
                              ) -> tuple[CleanupReply, Path, list[tuple[str, str]]]:
    """h1 started a copy of vm1 to h2 and was killed before libvirt answered; a new agent on
    the same ledger is asked to delete the sent disk. ``here``: vm1 on h1 then."""
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(domain("vm1", (str(disk),)))
    async with agent(hv) as a:
        await a.start(copy_disks=["vda"], destination_host="h2")
        await a.outcome(HYPERVISOR)  # the answer that never reaches a killed agent: not noted
    entry = a.ledger.get("m1")
    assert entry is not None and not entry.sent_completed
    hv.vms = {} if here is None else {"vm1": here}
    restarted = Ledger(a.ledger.directory)
    restarted.open()
    fetch = peer(*there)
    async with agent(hv, ledger=restarted, peer_domains=fetch) as b:
        reply = await b.manager.cleanup(cleanup(disk))
    return reply, disk, fetch.asked  # type: ignore[attr-defined]


async def test_a_restarted_source_deletes_sent_disks_once_both_hosts_libvirt_prove_the_move(
        tmp_path):
    reply, disk, asked = await sent_then_restarted(tmp_path, None, domain("vm1"))
    assert ([str(disk)], False, [("h2", "vm1")]) == (reply.deleted_paths, disk.exists(), asked)


async def test_a_restarted_source_with_the_domain_shut_off_here_also_deletes(tmp_path):
    reply, disk, _ = await sent_then_restarted(
        tmp_path, domain("vm1", state=DomainState.SHUTOFF), domain("vm1"))
    assert ([str(disk)], False) == (reply.deleted_paths, disk.exists())


@pytest.mark.parametrize(("here", "there"), [
    (domain("vm1"), domain("vm1")),  # runs on both: nothing is proven
    (None, domain("vm1", state=DomainState.PAUSED)),  # not resumed there
    (None, DomainInfo(name="vm1", uuid="uuid-another", state=DomainState.RUNNING, active=True,
                      persistent=True, memory_kib=1, max_memory_kib=1, vcpus=1)),
    (None, BatonError(ErrorCode.UNAVAILABLE, "no agent answers for host 'h2'")),
    (None, None),  # h2 has no vm1
], ids=["running-here", "paused-there", "another-domain-there", "peer-away", "nowhere"])
async def test_a_restarted_source_keeps_sent_disks_without_proof(tmp_path, here, there):
    reply, disk, _ = await sent_then_restarted(tmp_path, here, *([] if there is None else [there]))
    assert ([], [str(disk)], True) == (reply.deleted_paths, reply.kept_paths, disk.exists())


async def test_a_restarted_source_asks_no_peer_without_knowing_where_the_vm_went(tmp_path):
    """Ledger entries written before sent_to/sent_uuid existed, or a start without
    destination_host: no proof can be had, so nothing is asked and the disk stays."""
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(domain("vm1", (str(disk),)))
    async with agent(hv) as a:
        await a.start(copy_disks=["vda"])  # no destination_host
        await a.outcome(HYPERVISOR)
    hv.vms = {}
    fetch = peer(domain("vm1"))
    restarted = Ledger(a.ledger.directory)
    restarted.open()
    async with agent(hv, ledger=restarted, peer_domains=fetch) as b:
        reply = await b.manager.cleanup(cleanup(disk))
    assert ([], True, []) == (reply.deleted_paths, disk.exists(), fetch.asked)  # type: ignore[attr-defined]


async def test_a_restarted_source_without_a_way_to_ask_peers_keeps_the_sent_disks(tmp_path):
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(domain("vm1", (str(disk),)))
    async with agent(hv) as a:
        await a.start(copy_disks=["vda"], destination_host="h2")
        await a.outcome(HYPERVISOR)
    hv.vms = {}
    restarted = Ledger(a.ledger.directory)
    restarted.open()
    async with agent(hv, ledger=restarted) as b:  # no peer_domains
        reply = await b.manager.cleanup(cleanup(disk))
    assert ([], [str(disk)], True) == (reply.deleted_paths, reply.kept_paths, disk.exists())


async def test_the_source_keeps_the_disks_of_a_migration_that_failed(tmp_path):
    [disk] = files(tmp_path, "vm1.qcow2")
    hv = host(domain("vm1", (str(disk),)))
    async with agent(hv) as a:
        await a.start(copy_disks=["vda"])
        await a.outcome(HYPERVISOR)
        del hv.vms["vm1"]
        reply = await a.manager.cleanup(cleanup(disk))
    assert ([], True) == (reply.deleted_paths, disk.exists())


async def test_start_refused_by_the_peer_check_launches_nothing_and_notes_nothing():
    async def refuse(host: str | None, uri: str) -> None:
        raise BatonError(ErrorCode.FORBIDDEN, f"{uri} is not the migration URI of {host}")

    hv = host(domain("vm1"))
    async with agent(hv, check_peer=refuse) as a:
        with pytest.raises(BatonError) as caught:
            await a.manager.start(StartRequest(migration_id="m1", vm="vm1",
                                               destination_uri="qemu+tcp://evil/system",
                                               destination_host="h2"))
        entry = a.ledger.get("m1")
    assert (ErrorCode.FORBIDDEN, [], None, []) == (caught.value.code, hv.called("migrate"),
                                                  entry, a.finished)


async def test_a_migration_id_that_already_ran_here_cannot_start_again():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await a.start()
        await a.outcome(None)
        with pytest.raises(BatonError) as caught:
            await a.start()
    assert (ErrorCode.CONFLICT, ["vm1"]) == (caught.value.code, hv.called("migrate"))


# --- status: facts read when asked ------------------------------------------------------------


async def test_status_reports_the_domain_its_job_and_which_files_of_the_migration_exist(tmp_path):
    made, gone = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    made.write_bytes(b"data")
    hv = host(arriving("vm1", made), stats=JobStats(operation="migration_in"))
    async with agent(hv) as a:
        owned(a, made, gone, incoming=domain("vm1"))
        status = await a.manager.status(MigrationStatusRequest(migration_id="m1", vm="vm1"))
    assert (DomainState.PAUSED, "migration_in", None, True, "uuid-vm1", False) == (
        status.domain.state, status.job.operation, status.job_error, status.known,
        status.incoming_uuid, status.running_here)
    assert [(str(made), True), (str(gone), False)] == [(f.path, f.exists) for f in status.created]


async def test_status_says_when_the_job_could_not_be_read_instead_of_guessing():
    hv = host(domain("vm1"), job_stats_failures=[UNAVAILABLE])
    async with agent(hv) as a:
        status = await a.manager.status(MigrationStatusRequest(migration_id="m1", vm="vm1"))
    assert (None, UNAVAILABLE.message, False) == (status.job, status.job_error, status.known)


@pytest.mark.parametrize("after", ["gone", "shut off"])
async def test_status_of_a_vm_whose_migration_ends_while_it_is_read_says_what_libvirt_says_then(
        after):
    hv = host(domain("vm1"), job_stats_failures=[
        BatonError(ErrorCode.NOT_FOUND, "no domain named 'vm1' on this host")])
    read_job = hv.job_stats

    async def job_stats_as_the_migration_ends(vm: str) -> JobStats | None:
        if after == "gone":  # libvirt removes the source's domain as the migration completes
            del hv.vms[vm]
        else:
            hv.vms[vm] = domain(vm, state=DomainState.SHUTOFF)
        return await read_job(vm)

    hv.job_stats = job_stats_as_the_migration_ends  # type: ignore[method-assign]
    async with agent(hv) as a:
        status = await a.manager.status(MigrationStatusRequest(migration_id="m1", vm="vm1"))
    expected = None if after == "gone" else DomainState.SHUTOFF
    assert (expected, None, None) == (status.domain and status.domain.state, status.job,
                                      status.job_error)


async def test_status_of_a_migration_running_here_and_of_a_vm_not_here():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await a.start()
        running = await a.manager.status(MigrationStatusRequest(migration_id="m1", vm="vm1"))
        elsewhere = await a.manager.status(MigrationStatusRequest(migration_id="m1", vm="vm2"))
        await a.outcome(None)
    assert (True, True) == (running.running_here, running.known)
    assert (None, False, False) == (elsewhere.domain, elsewhere.running_here, elsewhere.known)


async def test_only_the_copied_disks_are_noted_as_sent_and_done_once_libvirt_said_so(tmp_path):
    local, shared = files(tmp_path, "vm1.qcow2", "shared.qcow2")
    hv = host(domain("vm1", (str(local), str(shared))), stats=JobStats(operation="migration_out"))
    async with agent(hv) as a:
        await a.start(copy_disks=["vda"])
        during = await a.manager.status(MigrationStatusRequest(migration_id="m1", vm="vm1"))
        await a.outcome(None)
        after = await a.manager.status(MigrationStatusRequest(migration_id="m1", vm="vm1"))
    assert ([(str(local), True)], False, True) == (
        [(f.path, f.exists) for f in during.sent], during.sent_completed, after.sent_completed)
    assert {"vm1"} == set(hv.called("job_stats"))


async def test_refusals_say_what_to_do(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    hv = host(domain("vm1"), domain("vm2"), pool_dirs=(pool,))
    messages = []
    async with agent(hv) as a:
        await a.start()
        for ask in (lambda: a.manager.start(StartRequest(migration_id="m1", vm="vm2",
                                                         destination_uri="qemu+tcp://h2/system")),
                    lambda: a.manager.prepare(PrepareRequest(migration_id="m1", vm="vm3")),
                    lambda: a.manager.prepare(PrepareRequest(migration_id="m2", vm="vm2")),
                    lambda: a.manager.prepare(msgspec.structs.replace(
                        plans(tmp_path / "a.qcow2", tmp_path / "b.qcow2"), migration_id="m3",
                        vm="vm5"))):
            with pytest.raises(BatonError) as caught:
                await ask()
            messages.append(caught.value.message)
        await a.outcome(None)
        with pytest.raises(BatonError) as again:
            await a.start()
        gone = await a.manager.cleanup(CleanupRequest(migration_id="m9", vm="vm9",
                                                      remove_domain=True))
    assert ["migration m1 already runs",
            "migration m1 was already prepared or ran on this host; a new migration needs a new id",
            "vm2 (UUID uuid-vm2) is already defined on this host: a migration cannot bring it here",
            f"{tmp_path / 'a.qcow2'}, {tmp_path / 'b.qcow2'}: not in the directory of an active "
            "storage pool of this host; an agent creates disks only there"] == messages
    assert ("migration m1 already ran on this host; a new migration needs a new id", "") == (
        again.value.message, gone.detail)


# --- what the caller is answered and what the operator's log records ---------------------------


def logged(logs: list[dict], *events: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] in events]


async def test_start_answers_with_the_migration_id_and_asks_libvirt_for_the_planned_move():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        reply = await a.manager.start(StartRequest(
            migration_id="m1", vm="vm1", destination_uri="qemu+tcp://h2/system",
            progress_interval_ms=100, max_downtime_ms=300))
        await a.outcome(None)
    [plan] = hv.plans
    assert ("m1", "qemu+tcp://h2/system", 300, True) == (
        reply.migration_id, plan.destination_uri, plan.max_downtime_ms,
        MigrationFlag.LIVE in plan.flags)


async def test_a_migrations_start_and_failure_are_logged_with_libvirts_message():
    hv = host(domain("vm1"))
    with capture_logs() as logs:
        async with agent(hv) as a:
            await a.start()
            await a.outcome(HYPERVISOR)
    [plan] = hv.plans
    assert [{"event": "migration_started", "log_level": "info", "migration_id": "m1",
             "vm": "vm1", "destination": "qemu+tcp://h2/system", "flags": sorted(plan.flags)},
            {"event": "migration_finished", "log_level": "info", "migration_id": "m1",
             "vm": "vm1", "ok": False, "aborted": False, "error": HYPERVISOR.message},
            ] == logged(logs, "migration_started", "migration_finished")


async def test_a_successful_migration_is_logged_ok_without_an_error():
    with capture_logs() as logs:
        async with agent(host(domain("vm1"))) as a:
            await a.start()
            await a.outcome(None)
    assert [{"event": "migration_finished", "log_level": "info", "migration_id": "m1",
             "vm": "vm1", "ok": True, "aborted": False, "error": None},
            ] == logged(logs, "migration_finished")


async def test_an_unexpected_exception_is_logged_with_its_traceback_and_answered_generically():
    with capture_logs() as logs:
        async with agent(host(domain("vm1"))) as a:
            await a.start()
            finished = await a.outcome(RuntimeError("secret detail"))
    assert "the agent failed while migrating; its log has the details" == finished.error.message
    assert [{"event": "migration_task_failed", "log_level": "error", "migration_id": "m1",
             "exc_info": True}] == logged(logs, "migration_task_failed")


async def test_progress_reads_the_migrating_vms_job_and_logs_a_failed_read_at_debug():
    hv = host(domain("vm1"), domain("vm2"),
              stats=JobStats(operation="migration_out", data_total_bytes=10),
              job_stats_failures=[UNAVAILABLE])
    with capture_logs() as logs:
        async with agent(hv) as a:
            await a.start()
            await a.progress.get()
            await a.outcome(None)
    assert {"vm1"} == set(hv.called("job_stats"))
    assert [{"event": "migration_progress_unavailable", "log_level": "debug",
             "error": UNAVAILABLE.message}] == logged(logs, "migration_progress_unavailable")


async def test_speed_and_abort_say_what_they_did_and_why_a_stranger_is_refused():
    hv = host(domain("vm1"))
    async with agent(hv) as a:
        await a.start()
        speed = await a.manager.speed(SpeedRequest(migration_id="m1", vm="vm1",
                                                   bandwidth_mib_s=5))
        with pytest.raises(BatonError) as caught:
            await a.manager.abort(AgentAbortRequest(migration_id="m9", vm="vm1"))
        abort = await a.manager.abort(AgentAbortRequest(migration_id="m1", vm="vm1"))
        await a.outcome(None)
    assert ("bandwidth set to 5 MiB/s", "abort requested; the outcome follows as source.finished",
            "no migration m9 of vm1 runs on this host") == (speed.detail, abort.detail,
                                                            caught.value.message)


@needs_qemu_img
async def test_prepare_logs_the_disks_it_created(tmp_path):
    with capture_logs() as logs:
        async with agent(host(pool_dirs=(tmp_path,))) as a:
            await a.manager.prepare(plans(tmp_path / "a.qcow2"))
    assert [{"event": "migration_prepared", "log_level": "info", "migration_id": "m1",
             "created": [str(tmp_path / "a.qcow2")]}] == logged(logs, "migration_prepared")


async def test_cleanup_logs_what_it_removed_deleted_and_kept(tmp_path):
    mine, shared = files(tmp_path, "vm1.qcow2", "shared.qcow2")
    hv = host(arriving("vm1", mine), domain("vm2", (str(shared),)))
    with capture_logs() as logs:
        async with agent(hv) as a:
            owned(a, mine, shared, incoming=domain("vm1"))
            await a.manager.cleanup(cleanup(mine, shared, remove_domain=True))
    assert [{"event": "migration_cleanup", "log_level": "info", "migration_id": "m1",
             "vm": "vm1", "domain_removed": True, "deleted": [str(mine)],
             "kept": [str(shared)]}] == logged(logs, "migration_cleanup")


async def test_cleanup_gives_every_kept_files_reason_separated_by_semicolons(tmp_path):
    shared = files(tmp_path, "shared.qcow2")[0]
    gone = tmp_path / "gone.qcow2"
    async with agent(host(domain("vm2", (str(shared),)))) as a:
        owned(a, shared, gone)
        reply = await a.manager.cleanup(cleanup(shared, gone))
    assert (f"{shared} is still used by a domain on this host; {gone} was already gone"
            == reply.detail)


@dataclass
class Stalling(Hypervisor):
    """libvirt's figures for a guest that dirties memory as fast as the link copies it: one
    simulated second per reading, 20 MiB left pass after pass."""

    readings: int = 0

    async def job_stats(self, vm: str) -> JobStats | None:
        self._call("job_stats", vm)
        self.readings += 1
        return JobStats(operation="migration_out", time_elapsed_ms=self.readings * 1000,
                        memory_remaining_bytes=20 << 20, memory_iteration=2 + self.readings)


async def test_a_stalled_migration_with_the_ramp_gets_its_downtime_raised_step_by_step():
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15) as a:
        await a.start(downtime_ramp=True)
        progress = await a.progress.get()
        while len(progress.escalations) < 2:
            progress = await a.progress.get()
        await a.outcome(None)
    assert [("vm1", 500), ("vm1", 1000)] == hv.called("set_max_downtime")[:2]
    assert progress.escalations[0].startswith("no progress for 10 s at pass")
    assert progress.escalations[1].endswith("downtime limit 500 -> 1000 ms")


async def test_without_the_ramp_a_stalled_migration_keeps_its_downtime():
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15) as a:
        await a.start()
        progress = await a.progress.get()
        while hv.readings < 25:  # well past the point where the ramp would have stepped twice
            progress = await a.progress.get()
        await a.outcome(None)
    assert ([], []) == (hv.called("set_max_downtime"), progress.escalations)


async def test_strategy_postcopy_switches_once_and_the_progress_says_so():
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS)
        progress = await a.progress.get()
        while hv.readings < 5:
            progress = await a.progress.get()
        await a.outcome(None)
    assert (["vm1"], True) == (hv.called("start_postcopy"), progress.postcopy)
    [step] = progress.escalations
    assert step.endswith("switched to post-copy")
    assert [] == hv.called("set_max_downtime")


async def test_a_move_switched_to_postcopy_teaches_no_start():
    """Its post-copy phase runs at a cap of its own."""
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS, bandwidth_mib_s=48)
        while not (await a.progress.get()).postcopy:
            pass
        a.manager.observe(JobCompletedEvent(host_id="h1", vm="vm1", uuid="uuid-vm1",
                                            stats=CAPPED_MOVE, at=utc_now()))
        finished = await a.outcome(None)
    assert (True, PRIOR_S) == (finished.postcopy, a.manager.start_cost.seconds(copy=False))


async def test_a_refused_postcopy_switch_is_tried_again_and_not_reported_as_done():
    hv = Stalling(vms={"vm1": domain("vm1")},
                  fail={"start_postcopy": BatonError(ErrorCode.HYPERVISOR, "not now")})
    async with agent(hv, within_s=15) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS)
        progress = await a.progress.get()
        while hv.readings < 4:
            progress = await a.progress.get()
        await a.outcome(None)
    assert len(hv.called("start_postcopy")) >= 2
    assert (False, []) == (progress.postcopy, progress.escalations)


async def end_call(hv: Hypervisor, calls: int, error: BaseException | None) -> None:
    """End libvirt's ``calls``-th migrate call (counting from 1) with ``error``."""
    async with asyncio.timeout(10):
        while len(hv.plans) < calls:
            hv.migrating.clear()
            if len(hv.plans) < calls:
                await hv.migrating.wait()
    assert hv.outcome is not None and not hv.outcome.done()
    hv.outcome.set_result(error)


POSTCOPY_BROKEN = BatonError(ErrorCode.HYPERVISOR, "migrating vm1: operation failed: job "
                             "'migration out' failed in post-copy phase")


def stream_broken(name: str = "vm1") -> DomainInfo:
    """The source's domain once its post-copy stream broke: paused, reason post-copy failed."""
    return msgspec.structs.replace(domain(name, state=DomainState.PAUSED),
                                   state_reason=PAUSED_POSTCOPY_FAILED)


async def switched(a: Agent) -> None:
    progress = await a.progress.get()
    while not progress.postcopy:
        progress = await a.progress.get()


async def test_a_postcopy_migration_whose_stream_failed_is_recovered_with_postcopy_resume(
        monkeypatch):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.0)
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS, bandwidth_mib_s=16,
                      max_downtime_ms=700)
        await switched(a)
        hv.vms["vm1"] = stream_broken()
        await end_call(hv, 1, POSTCOPY_BROKEN)
        await end_call(hv, 2, UNAVAILABLE)  # the link is not back yet
        await end_call(hv, 3, None)
        await a.ended.wait()
    [finished] = a.finished
    assert (None, False, True) == (finished.error, finished.aborted, finished.postcopy)
    assert finished.escalations[-1] == f"post-copy failed ({POSTCOPY_BROKEN.message}); " \
        "recovered (attempt 2)"
    resumed = [MigrationFlag.POSTCOPY_RESUME in plan.flags for plan in hv.plans]
    assert [False, True, True] == resumed
    # the guest already runs on the destination: a resume has no downtime to limit
    assert [700, None, None] == [plan.max_downtime_ms for plan in hv.plans]
    assert 16 == hv.plans[2].params["bandwidth.postcopy"]
    assert ["vm1"] == hv.called("start_postcopy")  # switched once, never again on resume


async def test_a_failure_before_the_switch_is_not_resumed():
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15) as a:
        await a.start(postcopy=PostcopySwitch.WHEN_STALLED)  # not stalled long enough yet
        finished = await a.outcome(HYPERVISOR)
    assert (HYPERVISOR.message, 1) == (finished.error and finished.error.message, len(hv.plans))


@pytest.mark.parametrize(("destination_host", "waits_on"), [("h2", "h2"),
                                                             (None, "the destination")])
async def test_a_postcopy_that_cannot_be_recovered_says_so_and_how(monkeypatch, destination_host,
                                                                   waits_on):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WINDOW_S", 1.0)
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS, destination_host=destination_host)
        await switched(a)
        hv.vms["vm1"] = stream_broken()
        for call in range(1, 2 + POSTCOPY_RECOVERY_ATTEMPTS):
            await end_call(hv, call, POSTCOPY_BROKEN if call == 1 else UNAVAILABLE)
        await a.ended.wait()
    [finished] = a.finished
    assert finished.error is not None and not finished.aborted
    assert 1 + POSTCOPY_RECOVERY_ATTEMPTS == len(hv.plans)
    assert (ErrorCode.HYPERVISOR, {"stage": "postcopy"}, (
        f"post-copy failed and was not recovered ({UNAVAILABLE.message}): the guest waits on "
        f"{waits_on} for the memory still on this host; neither side was touched. Recover it "
        "when the link is back: virsh migrate --postcopy --postcopy-resume vm1 "
        "qemu+tcp://h2/system")) == (finished.error.code, finished.error.details,
                                     finished.error.message)


async def test_a_bandwidth_change_reaches_the_postcopy_cap_too_when_it_may_switch():
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS)
        await a.manager.speed(SpeedRequest(migration_id="m1", vm="vm1", bandwidth_mib_s=64))
        await a.outcome(None)
    assert ([("vm1", 64)], [("vm1", 64)]) == (hv.called("set_max_speed"),
                                              hv.called("set_max_speed_postcopy"))


async def broken_once(hv: Hypervisor, source_now: DomainInfo | None, answers,
                      **options) -> SourceFinished:
    """A post-copy migration whose stream broke once, libvirt here then showing ``source_now``
    (None: the domain is gone) and the destination's agent answering ``answers`` (a domain, or
    a fetch of its own)."""
    fetch = answers if callable(answers) else peer(answers)
    async with agent(hv, within_s=15, peer_domains=fetch) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS, destination_host="h2", **options)
        await switched(a)
        if source_now is None:
            del hv.vms["vm1"]
        else:
            hv.vms["vm1"] = source_now
        await end_call(hv, 1, POSTCOPY_BROKEN)
        await a.ended.wait()
    [finished] = a.finished
    return finished


async def test_a_postcopy_that_ended_while_its_call_failed_is_done_once_the_destination_says_so(
        monkeypatch):
    # seen in the lab: a resume call failed ("QEMU reports migration is still running") while
    # QEMU finished the move; libvirt here no longer has the domain, the destination runs it
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    arrived = domain("vm1")  # running, reason 0: all its memory there
    hv = Stalling(vms={"vm1": domain("vm1")})
    finished = await broken_once(hv, None, arrived)
    assert (None, 1) == (finished.error, len(hv.plans))  # judged from the facts, not resumed
    assert finished.escalations[-1].endswith("it completed all the same")


async def test_a_postcopy_gone_from_here_but_not_running_there_is_not_called_done(monkeypatch):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WINDOW_S", 0.5)
    still_missing_pages = msgspec.structs.replace(domain("vm1"),
                                                  state_reason=RUNNING_POSTCOPY_FAILED)
    hv = Stalling(vms={"vm1": domain("vm1")})
    finished = await broken_once(hv, None, still_missing_pages)
    assert finished.error is not None and "not recovered" in finished.error.message


@pytest.mark.parametrize("undefine_source", [True, False])
async def test_a_postcopy_qemu_completed_leaves_the_source_undefined_as_asked(
        monkeypatch, undefine_source):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    hv = Stalling(vms={"vm1": domain("vm1")})
    left_defined = domain("vm1", state=DomainState.SHUTOFF)  # libvirt did not undefine it
    finished = await broken_once(hv, left_defined, domain("vm1"),
                                 undefine_source=undefine_source)
    assert finished.error is None
    assert (["vm1"] if undefine_source else []) == hv.called("remove_domain")


async def test_another_domain_wearing_the_name_here_is_never_undefined(monkeypatch):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    hv = Stalling(vms={"vm1": domain("vm1")})
    stranger = msgspec.structs.replace(domain("vm1", state=DomainState.SHUTOFF), uuid="other")
    finished = await broken_once(hv, stranger, domain("vm1"))
    assert (None, []) == (finished.error, hv.called("remove_domain"))


async def test_another_domain_of_that_name_on_the_destination_is_no_proof(monkeypatch):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WINDOW_S", 0.5)
    hv = Stalling(vms={"vm1": domain("vm1")})
    impostor = msgspec.structs.replace(domain("vm1"), uuid="other")
    finished = await broken_once(hv, None, impostor)
    assert finished.error is not None and "not recovered" in finished.error.message


async def postcopy_ended_here(hv: Hypervisor, peer_domains) -> SourceFinished:
    """A post-copy migration whose stream broke, after which libvirt here shows vm1 shut off
    and still defined (QEMU may have finished the move); ``peer_domains`` answers for h2."""
    async with agent(hv, within_s=15, peer_domains=peer_domains) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS, destination_host="h2",
                      undefine_source=True)
        await switched(a)
        hv.vms["vm1"] = domain("vm1", state=DomainState.SHUTOFF)
        await end_call(hv, 1, POSTCOPY_BROKEN)
        await a.ended.wait()
    [finished] = a.finished
    return finished


@pytest.mark.parametrize("peer_domains", [
    peer(BatonError(ErrorCode.UNAVAILABLE, "no agent answers for host 'h2'")), None],
    ids=["destination-agent-away", "no-way-to-ask"])
async def test_without_the_destinations_word_the_source_left_after_postcopy_is_never_undefined(
        monkeypatch, peer_domains):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WINDOW_S", 0.5)
    hv = Stalling(vms={"vm1": domain("vm1")})
    finished = await postcopy_ended_here(hv, peer_domains)
    assert finished.error is not None and "not recovered" in finished.error.message
    assert ([], "vm1") == (hv.called("remove_domain"), hv.vms["vm1"].name)


async def test_the_source_asks_the_destination_named_and_undefines_its_own_domain(monkeypatch):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    hv = Stalling(vms={"vm1": domain("vm1")})
    fetch = peer(domain("vm1"))  # running there, all its memory
    finished = await postcopy_ended_here(hv, fetch)
    assert (None, ["vm1"], {}) == (finished.error, hv.called("remove_domain"), hv.vms)
    assert {("h2", "vm1")} == set(fetch.asked)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("cap_mib_s", "memory_total_bytes", "bound_s"), [
    (16, 1024 * MIB, 60 + 2 * 1024 / 16),  # twice the whole memory at the cap, and the slack
    (64, 1024 * MIB, 60 + 2 * 1024 / 64),
    (16, None, 60),  # libvirt reported no memory yet: the slack alone
    (None, 1024 * MIB, 60 + 60),  # no cap to reckon with: a minute
])
def test_a_resume_call_may_run_twice_its_memorys_time_at_the_cap_and_a_minute_more(
        cap_mib_s, memory_total_bytes, bound_s):
    assert bound_s == resume_bound_s(cap_mib_s, memory_total_bytes)


async def resumes_hanging(monkeypatch, hv: Stalling, window_s: float):
    """A post-copy at 16 MiB/s whose stream breaks and whose every resume call hangs, each
    interrupted at its bound (0.05 s of slack, shortened for the tests): how it finished."""
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WINDOW_S", window_s)
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RESUME_SLACK_S", 0.05)
    async with agent(hv, within_s=15) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS, bandwidth_mib_s=16,
                      destination_host="h2")
        await switched(a)
        hv.vms["vm1"] = stream_broken()
        await end_call(hv, 1, POSTCOPY_BROKEN)  # every resume call after it hangs
        await a.ended.wait()
    [finished] = a.finished
    return finished


async def test_a_resume_call_that_hangs_is_interrupted_at_its_bound_and_tried_again(monkeypatch):
    hv = Stalling(vms={"vm1": domain("vm1")})  # its figures give no memory total: the slack
    finished = await resumes_hanging(monkeypatch, hv, window_s=1.0)
    assert (1 + POSTCOPY_RECOVERY_ATTEMPTS, POSTCOPY_RECOVERY_ATTEMPTS) == (
        len(hv.plans), len(hv.called("migrate_cancelled")))
    assert finished.error is not None
    assert finished.error.message.startswith("post-copy failed and was not recovered (the "
                                             "post-copy resume of vm1 did not end within 0 s; "
                                             "it was interrupted): the guest waits on h2")


class SmallGuest(Stalling):
    """libvirt reports the guest's whole memory: 8 MiB, half a second at a 16 MiB/s cap."""

    async def job_stats(self, vm: str) -> JobStats | None:
        stats = await super().job_stats(vm)
        return msgspec.structs.replace(stats, memory_total_bytes=8 * MIB)


async def test_a_hanging_resume_is_given_twice_its_memorys_time_at_the_cap(monkeypatch):
    finished = await resumes_hanging(monkeypatch, SmallGuest(vms={"vm1": domain("vm1")}),
                                     window_s=0.5)
    assert finished.error is not None
    # 0.05 s of slack and 2 x 8 MiB at 16 MiB/s: 1.05 s, said as 1 s (without the memory: 0 s)
    assert "the post-copy resume of vm1 did not end within 1 s" in finished.error.message


def watch_readings(hv: Hypervisor) -> asyncio.Event:
    """An event set each time libvirt here is asked for every domain (the recovery's reading)."""
    read, domains = asyncio.Event(), hv.domains

    async def reading(names, include_cpu_xml):
        if names is None:
            read.set()
        return await domains(names, include_cpu_xml)
    hv.domains = reading  # type: ignore[method-assign]
    return read


async def test_a_postcopy_still_running_here_is_waited_for_then_resumed_once_it_failed(
        monkeypatch):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS)
        await switched(a)
        # the call failed, but libvirt here still shows post-copy under way: QEMU is at it
        hv.vms["vm1"] = msgspec.structs.replace(domain("vm1", state=DomainState.PAUSED),
                                                state_reason=PAUSED_POSTCOPY)
        read = watch_readings(hv)
        await end_call(hv, 1, POSTCOPY_BROKEN)
        for _ in range(2):  # two readings that show it still under way
            read.clear()
            await read.wait()
        assert 1 == len(hv.plans)  # not resumed while QEMU is at it
        hv.vms["vm1"] = stream_broken()  # now it failed: the agent resumes it
        await end_call(hv, 2, None)
        await a.ended.wait()
    [finished] = a.finished
    assert (None, [False, True]) == (finished.error, [MigrationFlag.POSTCOPY_RESUME in p.flags
                                                      for p in hv.plans])


def answering(*answers: DomainInfo):
    """The destination's agent answering for vm1 with each of ``answers`` in turn, then the
    last one again."""
    left = list(answers)

    async def fetch(host: str, vm: str) -> DomainInfo:
        return left.pop(0) if len(left) > 1 else left[0]
    return fetch


async def test_a_postcopy_gone_from_here_is_done_once_the_destination_has_all_its_memory(
        monkeypatch):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    still_missing_pages = msgspec.structs.replace(domain("vm1"),
                                                  state_reason=RUNNING_POSTCOPY_FAILED)
    hv = Stalling(vms={"vm1": domain("vm1")})
    finished = await broken_once(hv, None, answering(still_missing_pages, domain("vm1")))
    assert (None, 1) == (finished.error, len(hv.plans))  # asked again, not given up on
    assert finished.escalations[-1].endswith("it completed all the same")


async def test_without_its_ledger_entry_the_source_proves_nothing_and_undefines_nothing(
        monkeypatch):
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WAIT_S", 0.01)
    monkeypatch.setattr("baton.agent.migration.POSTCOPY_RECOVERY_WINDOW_S", 0.5)
    hv = Stalling(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15, peer_domains=peer(domain("vm1"))) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS, destination_host="h2",
                      undefine_source=True)
        await switched(a)
        (a.ledger.directory / "m1.json").unlink()  # the UUID it sent is no longer known
        hv.vms["vm1"] = domain("vm1", state=DomainState.SHUTOFF)
        await end_call(hv, 1, POSTCOPY_BROKEN)
        await a.ended.wait()
    [finished] = a.finished
    assert finished.error is not None and "not recovered" in finished.error.message
    assert ([], "vm1") == (hv.called("remove_domain"), hv.vms["vm1"].name)


async def test_each_progress_report_carries_the_eta_of_libvirts_latest_figures():
    # pass 2, 64 MiB left at 32 MiB/s while the guest dirties 4 MiB/s; the pass is taken to
    # have begun half-way to the first reading (0.5 s in). 2 s to send the 64 MiB, then the
    # 10 MiB dirtied since the pass began (0.3125 s), then 1.25 MiB within the 300 ms pause
    # (39 ms): 2.35 s, given to a tenth
    hv = host(domain("vm1"), stats=JobStats(
        time_elapsed_ms=1000, memory_iteration=2, memory_total_bytes=128 * MIB,
        memory_remaining_bytes=64 * MIB, memory_bps=32 * MIB, memory_dirty_rate_pages_s=1024))
    async with agent(hv) as a:
        await a.start(max_downtime_ms=300)
        progress = await a.progress.get()
        await a.outcome(None)
    assert 2.4 == progress.eta_s


class Outrun(Stalling):
    """A guest dirtying 64 MiB/s, faster than any cap here: pre-copy gives no ETA."""

    async def job_stats(self, vm: str) -> JobStats | None:
        stats = await super().job_stats(vm)
        return msgspec.structs.replace(stats, memory_total_bytes=128 * MIB,
                                       memory_dirty_rate_pages_s=16384)


async def test_after_the_postcopy_switch_the_eta_is_the_rest_sent_once():
    hv = Outrun(vms={"vm1": domain("vm1")})
    async with agent(hv, within_s=15) as a:
        await a.start(postcopy=PostcopySwitch.AFTER_FIRST_PASS, bandwidth_mib_s=16)
        progress = await a.progress.get()
        while not progress.postcopy:
            progress = await a.progress.get()
        await a.outcome(None)
    assert 1.2 == progress.eta_s  # 20 MiB at 16 MiB/s, once (pre-copy: never, no ETA)
