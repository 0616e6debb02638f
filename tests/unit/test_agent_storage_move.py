"""The agent's storage move against a fake block copier and real image files (qemu-img).

The fake plays libvirt: block_copy creates the destination image, READY arrives as a block-job
event, a pivot repoints the live and the saved definition. What is checked is the agent's order
of work and what it leaves on disk.
"""

from __future__ import annotations

import asyncio
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from baton.agent import block_copy
from baton.agent.block_copy import BlockJobProgress, DiskSources
from baton.agent.hypervisor import HostFacts
from baton.agent.storage_move import StorageMoveManager, progress_stats, start_problems
from baton.schemas.agent import DiskInfo, DomainInfo, DomainState
from baton.schemas.base import utc_now
from baton.schemas.codec import decode_any
from baton.schemas.events import BlockJobEvent, BlockJobStatus
from baton.schemas.storage import (
    AgentStorageAbortRequest,
    AgentStorageMoveRequest,
    DiskMove,
    StorageMoveFinished,
)
from baton.schemas.subjects import Subjects
from tests.support.hostfacts import host_facts
from tests.support.ledgers import fresh_ledger

MIB = 1024 * 1024
needs_qemu_img = pytest.mark.skipif(subprocess.run(["which", "qemu-img"], capture_output=True)
                                    .returncode != 0, reason="needs qemu-img")


@dataclass
class FakeCopier:
    source: Path
    saved_follows_pivot: bool = True  # libvirt 9.0 rewrites the saved definition on pivot
    live: str = ""
    saved: str = ""
    calls: list[str] = field(default_factory=list)
    manager: StorageMoveManager | None = None

    def __post_init__(self) -> None:
        self.live = self.saved = str(self.source)

    async def domains(self, names, include_cpu_xml):
        disk = DiskInfo(target="vda", device="disk", source_type="file", source_path=self.live,
                        format="qcow2", capacity_bytes=64 * MIB)
        return [DomainInfo(name="vm1", uuid="u", state=DomainState.RUNNING, active=True,
                           persistent=True, memory_kib=1, max_memory_kib=1, vcpus=1,
                           disks=[disk])]

    async def refresh_pools(self) -> None:
        self.calls.append("refresh")

    async def host_facts(self) -> HostFacts:  # the pools fixture's slow/ and fast/
        return host_facts([str(self.source.parent), str(self.source.parent.parent / "fast")])

    async def block_copy(self, vm, target, destination_xml, bandwidth_bytes_s) -> None:
        path = ET.fromstring(destination_xml).find("source").get("file")  # libvirt makes the file
        await asyncio.to_thread(subprocess.run, ["qemu-img", "create", "-q", "-f", "qcow2", path,
                                                 str(64 * MIB)], check=True)
        self.calls.append(f"copy {bandwidth_bytes_s}")

    async def block_job_progress(self, vm, target):
        return BlockJobProgress(cur_bytes=32 * MIB, end_bytes=64 * MIB, bandwidth_mib_s=0)

    async def block_job_abort(self, vm, target, pivot) -> None:
        self.calls.append("pivot" if pivot else "cancel")
        if pivot:
            self.live = str(self.source.parent.parent / "fast" / self.source.name)
            self.saved = self.live if self.saved_follows_pivot else self.saved

    async def disk_sources(self, vm, target):
        return DiskSources(live=self.live, persistent=self.saved, mirror_ready=False)

    async def define_disk_source(self, vm, target, path) -> None:
        self.calls.append("define")
        self.saved = path

    def ready(self) -> None:
        assert self.manager is not None
        self.manager.observe(BlockJobEvent(host_id="h1", vm="vm1", uuid="u", disk="vda",
                                           job_type="copy", status=BlockJobStatus.READY,
                                           at=utc_now()))


@pytest.fixture
def pools(tmp_path: Path) -> tuple[Path, Path]:
    slow, fast = tmp_path / "slow", tmp_path / "fast"
    slow.mkdir()
    fast.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(slow / "vm1.qcow2"),
                    str(64 * MIB)], check=True)
    return slow / "vm1.qcow2", fast / "vm1.qcow2"


async def run_move(copier: FakeCopier, old: Path, new: Path, *, keep_source: bool = False,
                   abort: bool = False) -> StorageMoveFinished:
    finished: asyncio.Future[StorageMoveFinished] = asyncio.get_running_loop().create_future()

    async def publish(subject: str, body: bytes) -> None:
        if subject.endswith("storage.finished"):
            finished.set_result(decode_any(body, StorageMoveFinished))

    request = AgentStorageMoveRequest(migration_id="m1", vm="vm1", bandwidth_mib_s=4,
                                      keep_source=keep_source, progress_interval_ms=100,
                                      disks=[DiskMove(target="vda", source_path=str(old),
                                                      destination_path=str(new), format="qcow2",
                                                      capacity_bytes=64 * MIB)])
    async with asyncio.TaskGroup() as tasks:
        manager = StorageMoveManager("h1", copier, Subjects(), publish, tasks, fresh_ledger())
        copier.manager = manager
        await manager.start(request)
        await asyncio.sleep(0.2)
        if abort:
            await manager.abort(AgentStorageAbortRequest(migration_id="m1", vm="vm1"))
        else:
            copier.ready()
        return await asyncio.wait_for(finished, 30)


@needs_qemu_img
async def test_the_old_file_goes_only_after_the_pivot_and_a_clean_verification(pools):
    old, new = pools
    copier = FakeCopier(old)
    done = await run_move(copier, old, new)
    assert (None, True, True) == (done.error, done.disks[0].pivoted, done.disks[0].source_deleted)
    assert (False, True) == (old.exists(), new.exists())
    assert ["copy 4194304", "refresh", "pivot", "refresh"] == copier.calls  # bytes/s for libvirt


@needs_qemu_img
async def test_a_saved_definition_left_on_the_old_file_is_redefined_before_any_delete(pools):
    old, new = pools
    copier = FakeCopier(old, saved_follows_pivot=False)
    done = await run_move(copier, old, new)
    assert (None, str(new)) == (done.error, copier.saved)
    assert ["pivot", "define"] == copier.calls[2:4]
    assert not old.exists()


@needs_qemu_img
async def test_keep_source_keeps_the_old_file(pools):
    old, new = pools
    done = await run_move(FakeCopier(old), old, new, keep_source=True)
    assert (None, False, True, True) == (done.error, done.disks[0].source_deleted, old.exists(),
                                         new.exists())


@needs_qemu_img
async def test_an_abort_before_the_pivot_cancels_the_copy_and_removes_it(pools):
    old, new = pools
    copier = FakeCopier(old)
    done = await run_move(copier, old, new, abort=True)
    assert (True, False, True) == (done.aborted, done.disks[0].pivoted, done.disks[0].copy_removed)
    assert (True, False, str(old)) == (old.exists(), new.exists(), copier.live)
    assert "pivot" not in copier.calls and "cancel" in copier.calls


def test_a_request_for_a_disk_the_vm_no_longer_uses_is_refused():
    vm = asyncio.run(FakeCopier(Path("/p/slow/a.qcow2")).domains(None, False))[0]
    request = AgentStorageMoveRequest(migration_id="m", vm="vm1", disks=[DiskMove(
        target="vda", source_path="/p/slow/b.qcow2", destination_path="/p/fast/b.qcow2",
        format="qcow2")])
    assert ["vm1 vda is not /p/slow/b.qcow2 any more"] == start_problems(request, vm)


def test_progress_figures_use_the_average_rate_since_the_copy_started():
    stats = progress_stats(copied=30 * MIB, total=100 * MIB, elapsed_s=10)
    assert (3 * MIB, 70 * MIB, 10_000) == (stats.disk_bps, stats.data_remaining_bytes,
                                           stats.time_elapsed_ms)


def test_block_copy_xml_reads_and_rewrites_one_disk_source():
    xml = ("<domain xmlns:baton='urn:x'><metadata><baton:x/></metadata><devices>"
           "<disk type='file'><source file='/old' index='1'/><target dev='vda'/>"
           "<mirror type='file' ready='yes'/></disk></devices></domain>")
    rewritten = block_copy.with_disk_source(xml, "vda", "/new")
    assert ("/old", True, "/new", True) == (
        block_copy.disk_source(xml, "vda"), block_copy.mirror_ready(xml, "vda"),
        block_copy.disk_source(rewritten, "vda"), "baton:x" in rewritten)
    copy = ET.fromstring(block_copy.copy_destination_xml("/a'b", "raw"))
    assert ("/a'b", "raw") == (copy.find("source").get("file"), copy.find("driver").get("type"))
