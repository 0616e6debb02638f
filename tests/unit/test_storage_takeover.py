"""Settling a disk move an earlier coordinator left running: the judgement table (pure)."""

from __future__ import annotations

import msgspec
import pytest

from baton.coordinator.storage_takeover import judge_move
from baton.coordinator.takeover import Step
from baton.schemas.agent import DiskInfo, DomainInfo, DomainState
from baton.schemas.base import utc_now
from baton.schemas.migration import MigrationStatus, Phase
from baton.schemas.storage import DiskMove, StorageMoveRecord, StorageMoveRequest

OLD = {"vda": "/slow/vm1-vda.qcow2", "vdb": "/slow/vm1-vdb.qcow2"}
NEW = {"vda": "/fast/vm1-vda.qcow2", "vdb": "/fast/vm1-vdb.qcow2"}


def record() -> StorageMoveRecord:
    now = utc_now()
    return StorageMoveRecord(
        migration_id="m1", vm="vm1", host="h1", destination_pool="fast", phase=Phase.MIGRATING,
        request=StorageMoveRequest(vm="vm1", destination_pool="fast"), created_at=now,
        updated_at=now, disks=[DiskMove(target=t, source_path=OLD[t], destination_path=NEW[t],
                                        format="qcow2") for t in ("vda", "vdb")])


def status(paths: dict[str, str] | None, *, known: bool = True,
           running: bool = False) -> MigrationStatus:
    domain = None if paths is None else DomainInfo(
        name="vm1", uuid="u1", state=DomainState.RUNNING, active=True, persistent=True,
        memory_kib=1, max_memory_kib=1, vcpus=1,
        disks=[DiskInfo(target=t, device="disk", source_type="file", source_path=p,
                        format="qcow2") for t, p in paths.items()])
    return MigrationStatus(host_id="h1", migration_id="m1", vm="vm1", domain=domain,
                           known=known, running_here=running)


TABLE = [
    ("still-running", status(OLD, running=True), Step.WAIT),
    ("running-though-pivoted", status(NEW, running=True), Step.WAIT),
    ("never-started", status(OLD, known=False), Step.UNTOUCHED),
    ("every-disk-on-its-copy", status(NEW), Step.ROLL_FORWARD),
    ("every-disk-on-its-old-file", status(OLD), Step.ROLL_BACK),
    ("one-moved-one-not", status({"vda": NEW["vda"], "vdb": OLD["vdb"]}), Step.NEEDS_ATTENTION),
    ("a-disk-elsewhere", status({"vda": "/other/x.qcow2", "vdb": OLD["vdb"]}),
     Step.NEEDS_ATTENTION),
    ("vm-gone", status(None), Step.NEEDS_ATTENTION),
]


@pytest.mark.parametrize(("facts", "step"), [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_a_disk_move_is_judged_from_its_hosts_facts(facts, step):
    assert step == judge_move(record(), facts).step


def test_the_reasons_name_the_disks():
    assert "vm1 uses the copies of vda, vdb" == judge_move(record(), status(NEW)).reason
    assert "vm1 still uses the old files of vda, vdb" == judge_move(record(), status(OLD)).reason
    mixed = judge_move(record(), status({"vda": NEW["vda"], "vdb": OLD["vdb"]}))
    assert "vm1 uses the copies of vda but not of the other disks of the move" == mixed.reason
    assert "vm1 is not on h1 any more" == judge_move(record(), status(None)).reason


def test_the_reasons_of_waiting_untouched_and_nothing_moved():
    assert "the agent of h1 still runs the move" == judge_move(record(),
                                                               status(OLD, running=True)).reason
    assert "the agent of h1 never started the move: nothing was touched" == judge_move(
        record(), status(OLD, known=False)).reason
    elsewhere = status({"vda": "/other/x.qcow2", "vdb": OLD["vdb"]})
    assert "vm1 uses the copies of no disk but not of the other disks of the move" == \
        judge_move(record(), elsewhere).reason


def test_a_mixed_move_names_every_disk_on_its_copy():
    three = msgspec.structs.replace(record(), disks=[*record().disks, DiskMove(
        target="vdc", source_path="/slow/vm1-vdc.qcow2", destination_path="/fast/vm1-vdc.qcow2",
        format="qcow2")])
    facts = status({**NEW, "vdc": "/slow/vm1-vdc.qcow2"})
    assert "vm1 uses the copies of vda, vdb but not of the other disks of the move" == \
        judge_move(three, facts).reason
