"""The guards of the agent's storage move (agent/storage_move.py) on its three destructive acts:
the pivot, the cancelling of a copy job, and the deletion of a file (the old one after the pivot,
the partial copy after a failure).

A small fake plays libvirt's block-copy API for one VM ``vm1`` (and, optionally, other domains
using files); the copies and the old files are real images made with qemu-img, so what is
checked is what the agent leaves on disk, beside the calls it made.
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

from baton.agent.block_copy import BlockJobProgress, DiskSources
from baton.agent.hypervisor import HostFacts
from baton.agent.ledger import Entry
from baton.agent.storage_move import (
    StorageMoveManager,
    path_problems,
    progress_stats,
    start_problems,
)
from baton.schemas.agent import DiskInfo, DomainInfo, DomainState
from baton.schemas.base import utc_now
from baton.schemas.codec import decode_any
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import BlockJobEvent, BlockJobStatus, JobStats
from baton.schemas.migration import Ack, SourceProgress
from baton.schemas.storage import (
    AgentStorageAbortRequest,
    AgentStorageMoveReply,
    AgentStorageMoveRequest,
    DiskMove,
    DiskOutcome,
    StorageMoveFinished,
    StorageStage,
    StorageStageEvent,
)
from baton.schemas.subjects import MigrationEvent, Subjects
from tests.support.hostfacts import host_facts
from tests.support.images import MIB, corrupt, make_image, needs_qemu_img
from tests.support.ledgers import fresh_ledger

pytestmark = needs_qemu_img
SIZE = 4 * MIB
S = Subjects()
NO_JOB = BatonError(ErrorCode.HYPERVISOR, "block job abort of vm1: invalid argument: "
                    "No active block job on disk")


def domain(name: str, paths: dict[str, str], state: DomainState = DomainState.RUNNING,
           disk_format: str | None = "qcow2") -> DomainInfo:
    return DomainInfo(
        name=name, uuid=f"uuid-{name}", state=state, active=state != DomainState.SHUTOFF,
        persistent=True, memory_kib=1, max_memory_kib=1, vcpus=1,
        disks=[DiskInfo(target=t, device="disk", source_type="file", source_path=p,
                        format=disk_format, capacity_bytes=SIZE) for t, p in paths.items()])


@dataclass
class Libvirt:
    """libvirt's block-copy API as the agent sees it, for ``vm1`` on one host."""

    live: dict[str, str]  # target -> the file the running VM uses
    state: DomainState = DomainState.RUNNING
    saved: dict[str, str] = field(default_factory=dict)  # target -> the saved definition's file
    others: list[DomainInfo] = field(default_factory=list)  # other domains on the host
    copy_as: str = "qcow2"  # what block_copy writes: qcow2 | raw | small | corrupt
    fail_copy: dict[str, Exception] = field(default_factory=dict)
    jobs: set[str] = field(default_factory=set)  # targets with a block job running
    figures_in_sync: set[str] = field(default_factory=set)  # cur == end in the job's figures
    mirror_ready: set[str] = field(default_factory=set)  # <mirror ready='yes'> in the live XML
    figures: dict[str, tuple[int, int]] = field(default_factory=dict)  # target -> (cur, end)
    pivot_lands: bool = True  # the pivot switches the live definition to the copy
    saved_follows_pivot: bool = True  # libvirt 9.0 rewrites the saved definition on pivot
    pool_dirs: tuple[str, ...] = ()  # the host's active pools' directories
    define_takes: bool = True  # define_disk_source changes the saved definition
    hold_pivot: asyncio.Event | None = None  # the pivot waits for it
    pivot_started: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (act, target)
    copies: dict[str, str] = field(default_factory=dict)  # target -> copy path

    def __post_init__(self) -> None:
        self.saved = self.saved or dict(self.live)

    async def domains(self, names, include_cpu_xml):
        every = [domain("vm1", self.live, self.state), *self.others]
        return [d for d in every if names is None or d.name in names]

    async def refresh_pools(self) -> None:
        pass

    async def host_facts(self) -> HostFacts:
        return host_facts(self.pool_dirs)

    @staticmethod
    def _lookup(vm: str) -> None:
        if vm != "vm1":  # libvirt's lookup of a name it does not know
            raise BatonError(ErrorCode.NOT_FOUND, f"Domain not found: no domain with name '{vm}'")

    async def block_copy(self, vm, target, destination_xml, bandwidth_bytes_s) -> None:
        self._lookup(vm)
        self.calls.append(("copy", target))
        if target in self.fail_copy:
            raise self.fail_copy[target]
        path = ET.fromstring(destination_xml).find("source").get("file")
        await asyncio.to_thread(self._write_copy, Path(path))
        self.copies[target] = path
        self.jobs.add(target)

    def _write_copy(self, path: Path) -> None:
        if self.copy_as == "raw":
            make_image(path, SIZE, "raw")
        elif self.copy_as == "small":
            make_image(path, SIZE // 2)
        elif self.copy_as == "corrupt":
            corrupt(make_image(path, SIZE))
        else:
            make_image(path, SIZE)

    async def block_job_progress(self, vm, target):
        self._lookup(vm)
        if target not in self.jobs:
            return None
        cur = SIZE if target in self.figures_in_sync else SIZE // 2
        cur, end = self.figures.get(target, (cur, SIZE))
        return BlockJobProgress(cur_bytes=cur, end_bytes=end, bandwidth_mib_s=0)

    async def block_job_abort(self, vm, target, pivot) -> None:
        self._lookup(vm)
        self.calls.append(("pivot" if pivot else "cancel", target))
        if target not in self.jobs:
            raise NO_JOB
        self.jobs.discard(target)
        if not pivot:
            return
        self.pivot_started.set()
        if self.hold_pivot is not None:
            await self.hold_pivot.wait()
        if self.pivot_lands:
            self.live[target] = self.copies[target]
            if self.saved_follows_pivot:
                self.saved[target] = self.copies[target]

    async def disk_sources(self, vm, target):
        self._lookup(vm)
        return DiskSources(live=self.live.get(target), persistent=self.saved.get(target),
                           mirror_ready=target in self.mirror_ready)

    async def define_disk_source(self, vm, target, path) -> None:
        self._lookup(vm)
        self.calls.append(("define", target))
        if self.define_takes:
            self.saved[target] = path

    def acts(self, act: str) -> list[str]:
        return [target for a, target in self.calls if a == act]


class Pools:
    """Old files in ``slow/``, copies into ``fast/``; one qcow2 per target of ``vm1``."""

    def __init__(self, root: Path, targets: tuple[str, ...] = ("vda",)) -> None:
        self.root = root
        (root / "slow").mkdir()
        (root / "fast").mkdir()
        self.old = {t: make_image(root / "slow" / f"vm1-{t}.qcow2", SIZE) for t in targets}
        self.new = {t: root / "fast" / f"vm1-{t}.qcow2" for t in targets}

    def libvirt(self, **options) -> Libvirt:
        return Libvirt(live={t: str(p) for t, p in self.old.items()},
                       pool_dirs=(str(self.root / "slow"), str(self.root / "fast")), **options)

    def request(self, keep_source: bool = False) -> AgentStorageMoveRequest:
        return AgentStorageMoveRequest(
            migration_id="m1", vm="vm1", keep_source=keep_source, progress_interval_ms=100,
            disks=[DiskMove(target=t, source_path=str(self.old[t]),
                            destination_path=str(self.new[t]), format="qcow2",
                            capacity_bytes=SIZE) for t in self.old])

    def exist(self, target: str = "vda") -> tuple[bool, bool]:
        """(old file exists, copy exists)."""
        return self.old[target].exists(), self.new[target].exists()


@pytest.fixture
def pools(tmp_path: Path) -> Pools:
    return Pools(tmp_path)


@pytest.fixture
def two_disks(tmp_path: Path) -> Pools:
    return Pools(tmp_path, ("vda", "vdb"))


class Move:
    """One storage move in a manager of its own; what it published, as it arrives."""

    def __init__(self) -> None:
        self.manager: StorageMoveManager
        self.finished: asyncio.Future[StorageMoveFinished] = (
            asyncio.get_running_loop().create_future())
        self.reports: asyncio.Queue[None] = asyncio.Queue()
        self.reply: AgentStorageMoveReply | None = None
        self.stages: list[StorageStageEvent] = []
        self.progress: list[SourceProgress] = []

    async def publish(self, subject: str, body: bytes) -> None:
        if subject == S.agent_report("h1", "m1", MigrationEvent.STORAGE_FINISHED):
            self.finished.set_result(decode_any(body, StorageMoveFinished))
        elif subject == S.agent_report("h1", "m1", MigrationEvent.STORAGE_STAGE):
            self.stages.append(decode_any(body, StorageStageEvent))
        elif subject == S.agent_report("h1", "m1", MigrationEvent.SOURCE_PROGRESS):
            self.progress.append(decode_any(body, SourceProgress))
            self.reports.put_nowait(None)

    async def checked_once_more(self) -> None:
        """Until the move has reported its copies again (so it has looked at what it knows)."""
        while not self.reports.empty():
            self.reports.get_nowait()
        await self.reports.get()

    def block_job(self, status: BlockJobStatus, disk: str = "vda", vm: str = "vm1") -> None:
        self.manager.observe(BlockJobEvent(host_id="h1", vm=vm, uuid=f"uuid-{vm}", disk=disk,
                                           job_type="copy", status=status, at=utc_now()))

    def ready(self, *disks: str) -> None:
        for disk in disks or ("vda",):
            self.block_job(BlockJobStatus.READY, disk)

    async def abort(self, vm: str = "vm1") -> Ack:
        return await self.manager.abort(AgentStorageAbortRequest(migration_id="m1", vm=vm))


@contextlib.asynccontextmanager
async def moving(libvirt: Libvirt, request: AgentStorageMoveRequest,
                 within_s: float = 10) -> AsyncIterator[Move]:
    """A started move; on leaving, its outcome has been published (or ``within_s`` passed)."""
    move = Move()
    async with asyncio.timeout(within_s), asyncio.TaskGroup() as tasks:
        move.manager = StorageMoveManager("h1", libvirt, S, move.publish, tasks, fresh_ledger())
        move.reply = await move.manager.start(request)
        await move.reports.get()  # the copies run and the move waits for them to be in sync
        yield move
        await move.finished


# --- the pivot waits for every copy to be in sync --------------------------------------------


async def test_no_disk_is_pivoted_until_every_copy_is_in_sync(two_disks):
    libvirt = two_disks.libvirt()
    async with moving(libvirt, two_disks.request()) as move:
        move.ready("vda")
        await move.checked_once_more()
        await move.abort()
    done = move.finished.result()
    assert ([], True, [False, False]) == (libvirt.acts("pivot"), done.aborted,
                                          [d.pivoted for d in done.disks])
    assert ((True, False), (True, False)) == (two_disks.exist("vda"), two_disks.exist("vdb"))


@pytest.mark.parametrize(("figures", "xml"), [(True, False), (False, True)],
                         ids=["figures-only", "xml-only"])
async def test_a_missed_ready_event_counts_only_when_job_figures_and_live_xml_agree(
        pools, figures, xml):
    libvirt = pools.libvirt(figures_in_sync={"vda"} if figures else set(),
                            mirror_ready={"vda"} if xml else set())
    async with moving(libvirt, pools.request()) as move:
        await move.checked_once_more()
        await move.abort()
    assert ([], True, (True, False)) == (libvirt.acts("pivot"), move.finished.result().aborted,
                                         pools.exist())


async def test_a_missed_ready_event_is_made_up_for_by_the_job_figures_and_the_live_xml(pools):
    libvirt = pools.libvirt(figures_in_sync={"vda"}, mirror_ready={"vda"})
    async with moving(libvirt, pools.request()) as move:
        pass  # no READY event at all
    assert (None, ["vda"], (False, True)) == (move.finished.result().error,
                                              libvirt.acts("pivot"), pools.exist())


# --- aborts -----------------------------------------------------------------------------------


async def test_an_abort_before_the_pivot_cancels_the_copy_and_removes_it(pools):
    libvirt = pools.libvirt()
    async with moving(libvirt, pools.request()) as move:
        ack = await move.abort()
    done = move.finished.result()
    assert "abort requested; the outcome follows as storage.finished" == ack.detail
    assert (True, ErrorCode.CONFLICT, "aborted before the pivot: the VM keeps its old files and "
            "the partial copies were removed") == (done.aborted, done.error.code,
                                                   done.error.message)
    assert [DiskOutcome(target="vda", path=str(pools.old["vda"]), copy_removed=True)] == done.disks
    assert (["vda"], [], (True, False)) == (libvirt.acts("cancel"), libvirt.acts("pivot"),
                                            pools.exist())


async def test_an_abort_once_the_pivot_has_begun_is_refused_and_the_move_completes(pools):
    libvirt = pools.libvirt(hold_pivot=asyncio.Event())
    async with moving(libvirt, pools.request()) as move:
        move.ready()
        await libvirt.pivot_started.wait()
        with pytest.raises(BatonError) as caught:
            await move.abort()
        libvirt.hold_pivot.set()
    assert (ErrorCode.CONFLICT, None, (False, True)) == (
        caught.value.code, move.finished.result().error, pools.exist())
    assert ("the copies are in sync and the VM is being switched to them; the move can no longer "
            "be aborted", []) == (caught.value.message, libvirt.acts("cancel"))


async def test_an_abort_naming_another_vm_is_refused_and_the_move_goes_on(pools):
    libvirt = pools.libvirt()
    async with moving(libvirt, pools.request()) as move:
        with pytest.raises(BatonError) as caught:
            await move.abort(vm="vm2")
        move.ready()
    assert (ErrorCode.NOT_FOUND, None, [], (False, True)) == (
        caught.value.code, move.finished.result().error, libvirt.acts("cancel"), pools.exist())
    assert "no storage move m1 of vm2 runs on this host" == caught.value.message


# --- a copy that ends early -------------------------------------------------------------------


@pytest.mark.parametrize(("vm", "disk"), [("vm2", "vda"), ("vm1", "vdb")],
                         ids=["another-vm", "a-disk-not-moved"])
async def test_a_failed_block_job_of_another_vm_or_disk_does_not_stop_the_move(pools, vm, disk):
    libvirt = pools.libvirt()
    async with moving(libvirt, pools.request()) as move:
        move.block_job(BlockJobStatus.FAILED, disk=disk, vm=vm)
        await move.checked_once_more()
        move.ready()
    assert (None, [], (False, True)) == (move.finished.result().error, libvirt.acts("cancel"),
                                         pools.exist())


async def test_a_copy_that_fails_before_the_pivot_is_cancelled_and_removed(pools):
    libvirt = pools.libvirt()
    async with moving(libvirt, pools.request(), within_s=5) as move:
        move.block_job(BlockJobStatus.FAILED)
    done = move.finished.result()
    assert (ErrorCode.HYPERVISOR, False, False, True) == (
        done.error.code, done.aborted, done.disks[0].pivoted, done.disks[0].copy_removed)
    assert ("the copy of vda ended (failed) before the pivot; the VM keeps its old files"
            == done.error.message)
    assert (["vda"], [], (True, False)) == (libvirt.acts("cancel"), libvirt.acts("pivot"),
                                            pools.exist())


async def test_a_copy_job_that_vanished_fails_the_move_and_removes_the_copy(pools):
    libvirt = pools.libvirt()
    async with moving(libvirt, pools.request()) as move:
        libvirt.jobs.clear()  # someone else cancelled it, and its event went missing
    done = move.finished.result()
    assert (ErrorCode.HYPERVISOR, "the copy of vda ended (its job disappeared) before the pivot; "
            "the VM keeps its old files") == (done.error.code, done.error.message)
    assert ([], (True, False)) == (libvirt.acts("pivot"), pools.exist())


async def test_a_failure_starting_the_second_copy_cancels_only_the_first(two_disks):
    libvirt = two_disks.libvirt(fail_copy={"vdb": BatonError(
        ErrorCode.HYPERVISOR, "block copy of vm1 vdb: internal error: unable to execute QEMU "
        "command 'blockdev-mirror'")})
    move = Move()
    async with asyncio.timeout(10), asyncio.TaskGroup() as tasks:
        move.manager = StorageMoveManager("h1", libvirt, S, move.publish, tasks, fresh_ledger())
        await move.manager.start(two_disks.request())
        done = await move.finished
    assert (["vda", "vdb"], ["vda"], []) == (libvirt.acts("copy"), libvirt.acts("cancel"),
                                             libvirt.acts("pivot"))
    assert (True, [True, False]) == ("blockdev-mirror" in done.error.message,
                                     [d.copy_removed for d in done.disks])
    assert ((True, False), (True, False)) == (two_disks.exist("vda"), two_disks.exist("vdb"))


# --- after the pivot: what decides whether the old file goes ---------------------------------


async def test_a_pivot_that_leaves_the_vm_on_its_old_file_fails_and_deletes_nothing(pools):
    libvirt = pools.libvirt(pivot_lands=False)
    async with moving(libvirt, pools.request()) as move:
        move.ready()
    done = move.finished.result()
    assert (ErrorCode.HYPERVISOR, True) == (done.error.code, "nothing was deleted"
                                            in done.error.message)
    assert ([], [], (True, True)) == (libvirt.acts("define"), libvirt.acts("cancel"),
                                      pools.exist())


async def test_a_saved_definition_that_stays_on_the_old_file_keeps_the_old_file(pools):
    libvirt = pools.libvirt(saved_follows_pivot=False, define_takes=False)
    async with moving(libvirt, pools.request()) as move:
        move.ready()
    done = move.finished.result()
    assert (ErrorCode.HYPERVISOR, True, False) == (
        done.error.code, "still points" in done.error.message, done.disks[0].source_deleted)
    assert (["vda"], (True, True)) == (libvirt.acts("define"), pools.exist())


@pytest.mark.parametrize(("copy_as", "words"), [
    ("raw", "is raw, expected qcow2"),
    ("small", f"virtual size of {SIZE // 2} bytes"),
    ("corrupt", "exited 2"),
])
async def test_a_copy_that_fails_verification_after_the_pivot_keeps_both_files(
        pools, copy_as, words):
    libvirt = pools.libvirt(copy_as=copy_as)
    async with moving(libvirt, pools.request()) as move:
        move.ready()
    done = move.finished.result()
    outcome = done.disks[0]
    assert (ErrorCode.HYPERVISOR, True, True) == (
        done.error.code, words in done.error.message, "old file" in done.error.message)
    assert (True, False, False, str(pools.new["vda"])) == (
        outcome.pivoted, outcome.source_deleted, outcome.copy_removed, outcome.path)
    assert (["vda"], [], (True, True)) == (libvirt.acts("pivot"), libvirt.acts("cancel"),
                                           pools.exist())


async def test_an_old_file_another_domain_still_uses_is_kept(pools):
    libvirt = pools.libvirt(others=[domain("vm2", {"vdb": str(pools.old["vda"])})])
    async with moving(libvirt, pools.request()) as move:
        move.ready()
    outcome = move.finished.result().disks[0]
    assert (None, True, False) == (move.finished.result().error, outcome.pivoted,
                                   outcome.source_deleted)
    assert (True, (True, True)) == ("still used by a domain" in outcome.detail, pools.exist())


async def test_keep_source_keeps_the_old_file_after_a_verified_pivot(pools):
    libvirt = pools.libvirt()
    async with moving(libvirt, pools.request(keep_source=True)) as move:
        move.ready()
    assert (None, False, (True, True)) == (move.finished.result().error,
                                           move.finished.result().disks[0].source_deleted,
                                           pools.exist())


# --- refusing to start ------------------------------------------------------------------------


async def test_a_destination_file_that_exists_already_is_refused_and_left_untouched(pools):
    pools.new["vda"].write_bytes(b"somebody's data")
    libvirt = pools.libvirt()
    async with asyncio.TaskGroup() as tasks:
        manager = StorageMoveManager("h1", libvirt, S, Move().publish, tasks, fresh_ledger())
        with pytest.raises(BatonError) as caught:
            await manager.start(pools.request())
    assert (ErrorCode.PRECONDITION_FAILED, [], b"somebody's data") == (
        caught.value.code, libvirt.calls, pools.new["vda"].read_bytes())


@pytest.mark.parametrize(("vm", "problem"), [
    (domain("vm1", {"vda": "/slow/vm1.qcow2"}, DomainState.SHUTOFF),
     "vm1 is shutoff: a block copy needs a running VM"),
    (domain("vm1", {"vda": "/slow/other.qcow2"}), "vm1 vda is not /slow/vm1.qcow2 any more"),
])
def test_a_request_the_vm_contradicts_is_refused(vm, problem):
    request = AgentStorageMoveRequest(migration_id="m1", vm="vm1", disks=[DiskMove(
        target="vda", source_path="/slow/vm1.qcow2", destination_path="/fast/vm1.qcow2",
        format="qcow2")])
    assert [problem] == start_problems(request, vm)


def test_a_request_naming_another_format_than_the_disks_is_refused():
    request = AgentStorageMoveRequest(migration_id="m1", vm="vm1", disks=[DiskMove(
        target="vda", source_path="/slow/vm1.qcow2", destination_path="/fast/vm1.qcow2",
        format="raw")])
    assert ["vda is qcow2, not raw"] == start_problems(
        request, domain("vm1", {"vda": "/slow/vm1.qcow2"}))


# --- an abort for a move the agent forgot (it restarted) -------------------------------------


def forgotten(pools: Pools) -> AgentStorageAbortRequest:
    return AgentStorageAbortRequest(migration_id="m1", vm="vm1", disks=pools.request().disks)


STARTED_HERE = object()


async def abort_forgotten(libvirt: Libvirt, request: AgentStorageAbortRequest,
                          started: object = STARTED_HERE) -> Ack:
    """``started``: the move whose copies the agent's ledger names (it started that move, then
    restarted): by default the one the request names; None: none."""
    ledger = fresh_ledger()
    move = request if started is STARTED_HERE else started
    if isinstance(move, AgentStorageAbortRequest):
        ledger.put(Entry(migration_id=move.migration_id, vm=move.vm,
                         created_paths=[d.destination_path for d in move.disks]))
    async with asyncio.TaskGroup() as tasks:
        manager = StorageMoveManager("h1", libvirt, S, Move().publish, tasks, ledger)
        return await manager.abort(request)


@pytest.mark.parametrize("named", ["copies-never-started-here", "another-vm"])
async def test_a_forgotten_abort_never_deletes_files_this_agent_did_not_start_copying(
        pools, named):
    make_image(pools.new["vda"], SIZE)
    libvirt = pools.libvirt(jobs={"vda"})
    started = forgotten(pools) if named == "another-vm" else None
    request = AgentStorageAbortRequest(migration_id="m1", vm="vm2" if started else "vm1",
                                       disks=forgotten(pools).disks)
    with pytest.raises(ExceptionGroup) as caught:
        await abort_forgotten(libvirt, request, started)
    [error] = caught.value.exceptions
    assert (ErrorCode.FORBIDDEN, [], (True, True)) == (error.code, libvirt.acts("cancel"),
                                                       pools.exist())
    assert error.message.endswith("an agent deletes only files it made; nothing was touched")


async def test_a_forgotten_copy_still_running_is_cancelled_and_its_copy_removed(pools):
    make_image(pools.new["vda"], SIZE)
    libvirt = pools.libvirt(jobs={"vda"})
    await abort_forgotten(libvirt, forgotten(pools))
    assert (["vda"], (True, False)) == (libvirt.acts("cancel"), pools.exist())


async def test_a_forgotten_copy_with_no_job_left_is_removed_without_cancelling_anything(pools):
    make_image(pools.new["vda"], SIZE)
    libvirt = pools.libvirt()
    await abort_forgotten(libvirt, forgotten(pools))
    assert ([], (True, False)) == (libvirt.acts("cancel"), pools.exist())


async def test_a_disk_already_switched_to_its_copy_is_left_alone_even_with_a_job_on_it(pools):
    make_image(pools.new["vda"], SIZE)
    libvirt = pools.libvirt(jobs={"vda"})  # e.g. a backup job on the disk, not our copy
    libvirt.live["vda"] = libvirt.saved["vda"] = str(pools.new["vda"])
    ack = await abort_forgotten(libvirt, forgotten(pools))
    assert ([], (True, True), True) == (libvirt.acts("cancel"), pools.exist(),
                                        "left ['vda'] (already switched)" in ack.detail)


# --- what the move tells the coordinator on the way --------------------------------------------


async def test_a_move_answers_with_its_id_and_publishes_copying_ready_and_pivoted_in_order(
        two_disks):
    libvirt = two_disks.libvirt()
    async with moving(libvirt, two_disks.request()) as move:
        move.ready("vda", "vdb")
    assert AgentStorageMoveReply(migration_id="m1") == move.reply
    assert [("m1", "h1", StorageStage.COPYING, "copying vda, vdb"),
            ("m1", "h1", StorageStage.READY, "copies in sync; pivoting"),
            ("m1", "h1", StorageStage.PIVOTED, "the VM uses the new files")] == [
        (e.migration_id, e.host_id, e.stage, e.detail) for e in move.stages]


async def test_progress_adds_up_every_disks_figures_and_the_outcome_carries_the_last_report(
        two_disks):
    libvirt = two_disks.libvirt()
    async with moving(libvirt, two_disks.request()) as move:
        move.ready("vda", "vdb")
    first, last = move.progress[0], move.progress[-1]
    assert ("m1", "h1", "block_copy", 2 * SIZE, SIZE, SIZE) == (
        first.migration_id, first.host_id, first.stats.operation, first.stats.disk_total_bytes,
        first.stats.disk_processed_bytes, first.stats.disk_remaining_bytes)
    assert last.stats == move.finished.result().stats
    assert 0 <= last.stats.time_elapsed_ms <= 10_000  # since the copy started, within the test


async def test_a_vanished_job_still_lets_the_other_disks_figures_be_reported(two_disks):
    libvirt = two_disks.libvirt()
    async with moving(libvirt, two_disks.request()) as move:
        libvirt.jobs.discard("vda")
    done = move.finished.result()
    assert (SIZE, SIZE // 2) == (done.stats.disk_total_bytes, done.stats.disk_processed_bytes)
    assert (["vda", "vdb"], ((True, False), (True, False))) == (
        libvirt.acts("cancel"), (two_disks.exist("vda"), two_disks.exist("vdb")))


@pytest.mark.parametrize(("figures", "pivoted"), [((0, 0), False), ((1, 1), True)],
                         ids=["no-bytes-yet", "every-byte"])
async def test_job_figures_count_as_in_sync_only_once_there_are_bytes_and_all_are_copied(
        pools, figures, pivoted):
    libvirt = pools.libvirt(figures={"vda": figures}, mirror_ready={"vda"})
    async with moving(libvirt, pools.request()) as move:
        if not pivoted:
            await move.checked_once_more()
            await move.abort()
    assert (["vda"] if pivoted else [], not pivoted) == (libvirt.acts("pivot"),
                                                         move.finished.result().aborted)


async def test_a_bug_during_the_move_is_reported_as_internal_and_the_copy_is_removed(two_disks):
    libvirt = two_disks.libvirt(fail_copy={"vdb": RuntimeError("a bug")})
    move = Move()
    async with asyncio.timeout(10), asyncio.TaskGroup() as tasks:
        move.manager = StorageMoveManager("h1", libvirt, S, move.publish, tasks, fresh_ledger())
        await move.manager.start(two_disks.request())
        done = await move.finished
    assert (ErrorCode.INTERNAL, "the agent failed while moving the disks; its log has the "
            "details", False) == (done.error.code, done.error.message, done.aborted)
    assert (["vda"], (True, False)) == (libvirt.acts("cancel"), two_disks.exist("vda"))


# --- refusing to start, in detail ----------------------------------------------------------------


async def start_refused(libvirt: Libvirt, request: AgentStorageMoveRequest) -> BatonError:
    async with asyncio.TaskGroup() as tasks:
        manager = StorageMoveManager("h1", libvirt, S, Move().publish, tasks, fresh_ledger())
        with pytest.raises(BatonError) as caught:
            await manager.start(request)
    return caught.value


async def test_a_request_without_disks_is_a_bad_request(pools):
    request = AgentStorageMoveRequest(migration_id="m1", vm="vm1", disks=[])
    error = await start_refused(pools.libvirt(), request)
    assert (ErrorCode.BAD_REQUEST, "no disks to move") == (error.code, error.message)


async def test_every_problem_with_the_vm_and_the_destination_is_named_in_one_refusal(pools):
    pools.new["vda"].write_bytes(b"somebody's data")
    error = await start_refused(pools.libvirt(state=DomainState.SHUTOFF), pools.request())
    assert (ErrorCode.PRECONDITION_FAILED, f"vm1 is shutoff: a block copy needs a running VM; "
            f"{pools.new['vda']} already exists; refusing to overwrite it") == (
        error.code, error.message)


async def test_a_vm_that_is_not_running_is_refused_even_when_the_destination_is_free(pools):
    error = await start_refused(pools.libvirt(state=DomainState.SHUTOFF), pools.request())
    assert (ErrorCode.PRECONDITION_FAILED, "vm1 is shutoff: a block copy needs a running VM") == (
        error.code, error.message)


async def test_a_second_move_of_the_same_id_or_the_same_vm_is_refused_while_one_runs(pools):
    libvirt = pools.libvirt()
    other_vm = AgentStorageMoveRequest(migration_id="m1", vm="vm2", disks=pools.request().disks)
    other_id = AgentStorageMoveRequest(migration_id="m2", vm="vm1", disks=pools.request().disks)
    async with moving(libvirt, pools.request()) as move:
        refusals = []
        for request in (other_vm, other_id):
            with pytest.raises(BatonError) as caught:
                await move.manager.start(request)
            refusals.append((caught.value.code, caught.value.message))
        move.ready()
    assert [(ErrorCode.CONFLICT, "storage move m1 already runs"),
            (ErrorCode.CONFLICT, "vm1 is already moving its disks")] == refusals
    assert (["vda"], None) == (libvirt.acts("copy"), move.finished.result().error)


def test_a_destination_directory_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "vm1.qcow2"
    moves = [DiskMove(target="vda", source_path="/slow/vm1.qcow2",
                      destination_path=str(missing), format="qcow2")]
    assert [f"directory {tmp_path / 'nowhere'} does not exist"] == path_problems(moves)


def test_a_disk_without_a_format_in_its_definition_counts_as_raw():
    request = AgentStorageMoveRequest(migration_id="m1", vm="vm1", disks=[DiskMove(
        target="vda", source_path="/slow/vm1.img", destination_path="/fast/vm1.img",
        format="raw")])
    assert [] == start_problems(request, domain("vm1", {"vda": "/slow/vm1.img"},
                                                disk_format=None))


@pytest.mark.parametrize(("copied", "total", "elapsed_s", "rate", "remaining"), [
    (30 * MIB, 100 * MIB, 10, 3 * MIB, 70 * MIB),
    (4 * MIB, 4 * MIB, 0.5, 8 * MIB, 0),  # under a second: the rate is still worked out
    (0, 0, 0, 0, 0),  # nothing elapsed yet: no rate rather than a division by zero
])
def test_progress_figures_are_the_copies_bytes_and_their_average_rate(
        copied, total, elapsed_s, rate, remaining):
    assert JobStats(operation="block_copy", time_elapsed_ms=int(elapsed_s * 1000),
                    data_total_bytes=total, data_processed_bytes=copied,
                    data_remaining_bytes=remaining, disk_total_bytes=total,
                    disk_processed_bytes=copied, disk_remaining_bytes=remaining,
                    disk_bps=rate) == progress_stats(copied, total, elapsed_s)


async def test_an_abort_naming_no_disks_for_a_move_this_agent_does_not_run_is_not_found(pools):
    libvirt = pools.libvirt()
    async with asyncio.TaskGroup() as tasks:
        manager = StorageMoveManager("h1", libvirt, S, Move().publish, tasks, fresh_ledger())
        with pytest.raises(BatonError) as caught:
            await manager.abort(AgentStorageAbortRequest(migration_id="m1", vm="vm1"))
    assert (ErrorCode.NOT_FOUND, "no storage move m1 runs on this host", []) == (
        caught.value.code, caught.value.message, libvirt.calls)


async def test_a_move_notes_its_copies_in_the_ledger_before_it_asks_libvirt_to_copy(pools):
    libvirt = pools.libvirt()
    ledger = fresh_ledger()
    async with asyncio.TaskGroup() as tasks:
        manager = StorageMoveManager("h1", libvirt, S, Move().publish, tasks, ledger)
        await manager.start(pools.request())
        entry = ledger.get("m1")
        await manager.abort(AgentStorageAbortRequest(migration_id="m1", vm="vm1"))
    assert ("vm1", [str(pools.new["vda"])]) == (entry.vm, entry.created_paths)


async def test_a_job_id_that_already_ran_here_is_refused_before_any_copy(pools):
    libvirt = pools.libvirt()
    ledger = fresh_ledger()
    ledger.put(Entry(migration_id="m1", vm="vm1", created_paths=["/elsewhere/old.qcow2"]))
    async with asyncio.TaskGroup() as tasks:
        manager = StorageMoveManager("h1", libvirt, S, Move().publish, tasks, ledger)
        with pytest.raises(BatonError) as caught:
            await manager.start(pools.request())
    assert (ErrorCode.CONFLICT, "job m1 already ran on this host; a new storage move needs a "
            "new id", []) == (caught.value.code, caught.value.message, libvirt.acts("copy"))
    assert ["/elsewhere/old.qcow2"] == ledger.get("m1").created_paths  # its record kept as is


async def test_a_copy_outside_every_pool_is_refused_naming_the_path(pools, tmp_path):
    outside = tmp_path / "etc" / "a.qcow2"
    outside.parent.mkdir()
    request = pools.request()
    disks = [msgspec.structs.replace(request.disks[0], destination_path=str(outside))]
    error = await start_refused(pools.libvirt(), msgspec.structs.replace(request, disks=disks))
    assert (ErrorCode.FORBIDDEN, f"{outside}: not in the directory of an active storage pool "
            "of this host; an agent copies disks only there") == (error.code, error.message)
