"""The agent's migration endpoints (prepare, start, speed, abort, cleanup): every implementation
answers each request with the real agent's reply type, error code and facts.

libvirt's test driver has no migration or job APIs, so only what the real agent decides before
it asks libvirt to migrate is covered: ``start`` answers (or refuses) before the migrate call,
which then fails in the background; ``speed`` and ``abort`` only for a migration that does not
run (the test driver ends every migration at once, so "a second start while one runs" and "speed
of a running migration" are left to the unit and lab tests). ``cleanup`` removing a domain that
exists is not covered either: the test driver's undefine refuses the NVRAM and checkpoint flags
the adapter passes (the real agent answers ``hypervisor`` there, after destroying the domain).
"""

from __future__ import annotations

from os.path import basename
from typing import Any

import pytest

from baton.schemas.errors import ErrorCode
from baton.schemas.migration import (
    AgentAbortRequest,
    CleanupReply,
    CleanupRequest,
    DiskPlan,
    MigrationStatus,
    MigrationStatusRequest,
    PredictRequest,
    PrepareReply,
    PrepareRequest,
    SpeedRequest,
    StartReply,
    StartRequest,
)
from baton.schemas.subjects import AgentEndpoint as A
from tests.contract.cases import Case, answer, basenames, refuses, replies
from tests.contract.implementations import HOST, MISSING_DIR, PEER, Implementation

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def prepare(*paths: str, disk_format: str = "qcow2") -> PrepareRequest:
    return PrepareRequest(migration_id="m1", vm="vm9", disks=[
        DiskPlan(target=f"vd{chr(97 + i)}", path=p, format=disk_format, capacity_bytes=MIB)
        for i, p in enumerate(paths)])


def start(a: Implementation, vm: str = "vm1", **options) -> StartRequest:
    return StartRequest(migration_id="m1", vm=vm, **{
        "destination_uri": a.peer_uri, "destination_host": PEER} | options)


def made_by_prepare(a: Implementation) -> PrepareRequest:
    """What the destination's agent makes itself: the only file a clean-up may delete."""
    return prepare(f"{a.other_pool_dir}/n.qcow2")


def cleanup(vm: str = "vm9", *paths: str, remove_domain: bool = False) -> CleanupRequest:
    return CleanupRequest(migration_id="m1", vm=vm, remove_domain=remove_domain,
                          delete_paths=list(paths))


def cleaned(reply: CleanupReply) -> tuple[bool, list[str], list[str]]:
    return reply.domain_removed, basenames(reply.deleted_paths), basenames(reply.kept_paths)


def facts_of(reply: MigrationStatus, running: object = False) -> tuple[Any, ...]:
    """What every implementation agrees on (``running=None``: not compared, the test driver's
    migrate call may already have failed and ended the job)."""
    domain = None if reply.domain is None else (reply.domain.name, reply.domain.state)
    return (domain, reply.known, reply.running_here if running is False else running,
            [(basename(f.path), f.exists) for f in reply.created],
            [(basename(f.path), f.exists) for f in reply.sent])


def created(reply: PrepareReply) -> list[str]:
    return basenames(reply.created_paths)


STARTED = (A.MIGRATION_START, start)
PREPARED = (A.MIGRATION_PREPARE, made_by_prepare)
NOTHING_CLEANED = (False, [], [])

CASES = [
    # --- prepare (destination) ------------------------------------------------------------------
    Case("prepare-no-disks", A.MIGRATION_PREPARE, lambda a: prepare(), replies(PrepareReply, []),
         facts=created, canned=True),
    Case("prepare-in-a-pool", A.MIGRATION_PREPARE, lambda a: prepare(f"{a.other_pool_dir}/n.qcow2"),
         replies(PrepareReply, ["n.qcow2"]), facts=created),
    Case("prepare-outside-every-pool", A.MIGRATION_PREPARE,
         lambda a: prepare(f"{a.outside_dir}/n.qcow2"), refuses(ErrorCode.FORBIDDEN)),
    Case("prepare-a-vm-defined-here", A.MIGRATION_PREPARE,
         lambda a: PrepareRequest(migration_id="m1", vm="vm1"), refuses(ErrorCode.CONFLICT)),
    Case("prepare-same-migration-twice", A.MIGRATION_PREPARE, made_by_prepare,
         refuses(ErrorCode.CONFLICT), before=(PREPARED,)),
    Case("prepare-relative-path", A.MIGRATION_PREPARE, lambda a: prepare("disks/n.qcow2"),
         refuses(ErrorCode.BAD_REQUEST)),
    Case("prepare-existing-disk", A.MIGRATION_PREPARE, lambda a: prepare(a.disk("vm1")),
         refuses(ErrorCode.CONFLICT)),
    Case("prepare-the-pool-directory", A.MIGRATION_PREPARE, lambda a: prepare(a.pool_dir),
         refuses(ErrorCode.FORBIDDEN)),
    Case("prepare-same-path-twice", A.MIGRATION_PREPARE,
         lambda a: prepare(f"{a.other_pool_dir}/n.qcow2", f"{a.other_pool_dir}/n.qcow2"),
         refuses(ErrorCode.CONFLICT)),
    Case("prepare-missing-directory", A.MIGRATION_PREPARE,
         lambda a: prepare(f"{MISSING_DIR}/n.qcow2"), refuses(ErrorCode.FORBIDDEN)),
    Case("prepare-unknown-format", A.MIGRATION_PREPARE,
         lambda a: prepare(f"{a.other_pool_dir}/n.img", disk_format="bogus"),
         refuses(ErrorCode.HYPERVISOR)),
    Case("prepare-negative-capacity", A.MIGRATION_PREPARE,
         lambda a: b'{"migration_id": "m1", "vm": "vm9", "disks": [{"target": "vda", "path": '
                   b'"/x/n.qcow2", "format": "qcow2", "capacity_bytes": -1}]}',
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("prepare-invalid-migration-id", A.MIGRATION_PREPARE,
         lambda a: b'{"migration_id": "m.1", "vm": "vm9"}', refuses(ErrorCode.BAD_REQUEST),
         canned=True),
    # --- start (source): answered before libvirt's migrate call ---------------------------------
    Case("start-live", A.MIGRATION_START, start, replies(StartReply, "m1"),
         facts=lambda r: r.migration_id),
    Case("start-offline-of-shut-off-vm", A.MIGRATION_START,
         lambda a: start(a, "vmoff", live=False), replies(StartReply, "m1"),
         facts=lambda r: r.migration_id),
    Case("start-unknown-vm", A.MIGRATION_START, lambda a: start(a, "nosuch"),
         refuses(ErrorCode.NOT_FOUND)),
    Case("start-to-a-uri-no-peer-announces", A.MIGRATION_START,
         lambda a: start(a, destination_uri="qemu+tcp://attacker.example/system"),
         refuses(ErrorCode.FORBIDDEN)),
    Case("start-without-destination-host", A.MIGRATION_START,
         lambda a: start(a, destination_host=None), refuses(ErrorCode.FORBIDDEN)),
    Case("start-to-this-host", A.MIGRATION_START, lambda a: start(a, destination_host=HOST),
         refuses(ErrorCode.FORBIDDEN)),
    Case("start-to-a-host-without-agent", A.MIGRATION_START,
         lambda a: start(a, destination_host="h7"), refuses(ErrorCode.UNAVAILABLE)),
    Case("start-same-migration-twice", A.MIGRATION_START, start, refuses(ErrorCode.CONFLICT),
         before=(STARTED,)),
    Case("start-live-of-shut-off-vm", A.MIGRATION_START, lambda a: start(a, "vmoff"),
         refuses(ErrorCode.PRECONDITION_FAILED)),
    Case("start-offline-not-persistent", A.MIGRATION_START,
         lambda a: start(a, "vmoff", live=False, persistent=False), refuses(ErrorCode.BAD_REQUEST)),
    Case("start-offline-with-copy", A.MIGRATION_START,
         lambda a: start(a, "vmoff", live=False, copy_disks=["vda"]),
         refuses(ErrorCode.UNSUPPORTED)),
    Case("start-zero-bandwidth", A.MIGRATION_START,
         lambda a: b'{"migration_id": "m1", "vm": "vm1", "destination_uri": "qemu+tcp://h2/system",'
                   b' "bandwidth_mib_s": 0}', refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("start-progress-interval-too-short", A.MIGRATION_START,
         lambda a: b'{"migration_id": "m1", "vm": "vm1", "destination_uri": "qemu+tcp://h2/system",'
                   b' "progress_interval_ms": 10}', refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("start-without-destination", A.MIGRATION_START,
         lambda a: b'{"migration_id": "m1", "vm": "vm1"}', refuses(ErrorCode.BAD_REQUEST),
         canned=True),
    # --- start of a copy into another pool: the destination paths --------------------------------
    Case("start-copy-into-another-pool", A.MIGRATION_START,
         lambda a: start(a, copy_disks=["vda"],
                         destination_paths={"vda": f"{a.other_pool_dir}/vm1.qcow2"}),
         replies(StartReply, "m1"), facts=lambda r: r.migration_id),
    Case("start-moving-a-disk-not-copied", A.MIGRATION_START,
         lambda a: start(a, destination_paths={"vda": f"{a.other_pool_dir}/vm1.qcow2"}),
         refuses(ErrorCode.BAD_REQUEST)),
    Case("start-moving-a-disk-to-a-relative-path", A.MIGRATION_START,
         lambda a: start(a, copy_disks=["vda"], destination_paths={"vda": "fast/vm1.qcow2"}),
         refuses(ErrorCode.BAD_REQUEST)),
    Case("start-moving-a-disk-the-vm-lacks", A.MIGRATION_START,
         lambda a: start(a, copy_disks=["vda", "vdz"],
                         destination_paths={"vdz": f"{a.other_pool_dir}/vm1.qcow2"}),
         refuses(ErrorCode.BAD_REQUEST)),
    # --- speed and abort: only of a migration that runs here ------------------------------------
    Case("speed-nothing-running", A.MIGRATION_SPEED,
         lambda a: SpeedRequest(migration_id="m1", vm="vm1", bandwidth_mib_s=10),
         refuses(ErrorCode.NOT_FOUND)),
    Case("speed-another-vms-migration", A.MIGRATION_SPEED,
         lambda a: SpeedRequest(migration_id="m1", vm="vm2", bandwidth_mib_s=10),
         refuses(ErrorCode.NOT_FOUND), before=(STARTED,)),
    Case("speed-zero", A.MIGRATION_SPEED,
         lambda a: b'{"migration_id": "m1", "vm": "vm1", "bandwidth_mib_s": 0}',
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("abort-nothing-running", A.MIGRATION_ABORT,
         lambda a: AgentAbortRequest(migration_id="m1", vm="vm1"), refuses(ErrorCode.NOT_FOUND)),
    Case("abort-another-vms-migration", A.MIGRATION_ABORT,
         lambda a: AgentAbortRequest(migration_id="m1", vm="vm2"), refuses(ErrorCode.NOT_FOUND),
         before=(STARTED,)),
    Case("abort-unknown-migration-id", A.MIGRATION_ABORT,
         lambda a: AgentAbortRequest(migration_id="m2", vm="vm1"), refuses(ErrorCode.NOT_FOUND),
         before=(STARTED,)),
    Case("abort-overlong-migration-id", A.MIGRATION_ABORT,
         lambda a: AgentAbortRequest(migration_id="m" * 65, vm="vm1"),
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    # --- cleanup (either side) ------------------------------------------------------------------
    Case("cleanup-never-prepared", A.MIGRATION_CLEANUP, lambda a: cleanup(),
         replies(CleanupReply, NOTHING_CLEANED), facts=cleaned, canned=True),
    Case("cleanup-unknown-domain", A.MIGRATION_CLEANUP,
         lambda a: cleanup("nosuch", remove_domain=True),
         replies(CleanupReply, NOTHING_CLEANED), facts=cleaned),
    Case("cleanup-disk-in-use", A.MIGRATION_CLEANUP, lambda a: cleanup("vm9", a.disk("vm1")),
         replies(CleanupReply, (False, [], ["vm1.qcow2"])), facts=cleaned),
    Case("cleanup-what-prepare-made", A.MIGRATION_CLEANUP,
         lambda a: cleanup("vm9", f"{a.other_pool_dir}/n.qcow2"),
         replies(CleanupReply, (False, ["n.qcow2"], [])), facts=cleaned, before=(PREPARED,)),
    Case("cleanup-what-prepare-made-under-another-id", A.MIGRATION_CLEANUP,
         lambda a: CleanupRequest(migration_id="m2", vm="vm9",
                                  delete_paths=[f"{a.other_pool_dir}/n.qcow2"]),
         replies(CleanupReply, (False, [], ["n.qcow2"])), facts=cleaned, before=(PREPARED,)),
    Case("cleanup-a-file-prepare-did-not-make", A.MIGRATION_CLEANUP,
         lambda a: cleanup("vm9", f"{a.pool_dir}/left.qcow2"),
         replies(CleanupReply, (False, [], ["left.qcow2"])), facts=cleaned,
         arrange=lambda a: a.add_file(f"{a.pool_dir}/left.qcow2"), before=(PREPARED,)),
    Case("cleanup-file-already-gone", A.MIGRATION_CLEANUP,
         lambda a: cleanup("vm9", f"{a.pool_dir}/absent.qcow2"),
         replies(CleanupReply, (False, [], ["absent.qcow2"])), facts=cleaned),
    Case("cleanup-same-file-twice", A.MIGRATION_CLEANUP,
         lambda a: cleanup("vm9", f"{a.other_pool_dir}/n.qcow2", f"{a.other_pool_dir}/n.qcow2"),
         replies(CleanupReply, (False, ["n.qcow2"], ["n.qcow2"])), facts=cleaned,
         before=(PREPARED,)),
    Case("cleanup-relative-path", A.MIGRATION_CLEANUP,
         lambda a: cleanup("vm9", "baton-contract-absent.qcow2"),
         replies(CleanupReply, (False, [], ["baton-contract-absent.qcow2"])), facts=cleaned),
    Case("cleanup-outside-every-pool", A.MIGRATION_CLEANUP,
         lambda a: cleanup("vm9", f"{a.outside_dir}/stray.img"),
         replies(CleanupReply, (False, [], ["stray.img"])), facts=cleaned,
         arrange=lambda a: a.add_file(f"{a.outside_dir}/stray.img")),
    Case("cleanup-a-running-vm-it-did-not-receive", A.MIGRATION_CLEANUP,
         lambda a: cleanup("vm1", remove_domain=True), replies(CleanupReply, NOTHING_CLEANED),
         facts=cleaned, before=(PREPARED,)),
    # --- status (either side): libvirt's facts and the ledger's ---------------------------------
    Case("status-of-a-migration-never-seen", A.MIGRATION_STATUS,
         lambda a: MigrationStatusRequest(migration_id="m1", vm="vm9"),
         replies(MigrationStatus, (None, False, False, [], [])), facts=facts_of),
    Case("status-of-a-running-vm", A.MIGRATION_STATUS,
         lambda a: MigrationStatusRequest(migration_id="m1", vm="vm1"),
         replies(MigrationStatus, (("vm1", "running"), False, False, [], [])), facts=facts_of),
    Case("status-after-prepare", A.MIGRATION_STATUS,
         lambda a: MigrationStatusRequest(migration_id="m1", vm="vm9"),
         replies(MigrationStatus, (None, True, False, [("n.qcow2", True)], [])), facts=facts_of,
         before=(PREPARED,)),
    Case("status-after-prepare-and-cleanup", A.MIGRATION_STATUS,
         lambda a: MigrationStatusRequest(migration_id="m1", vm="vm9"),
         replies(MigrationStatus, (None, True, False, [("n.qcow2", False)], [])),
         facts=facts_of, before=(PREPARED, (A.MIGRATION_CLEANUP, lambda a: cleanup(
             "vm9", f"{a.other_pool_dir}/n.qcow2")))),
    Case("status-of-another-vm-than-prepared", A.MIGRATION_STATUS,
         lambda a: MigrationStatusRequest(migration_id="m1", vm="vm2"),
         replies(MigrationStatus, (("vm2", "running"), False, False, [], [])), facts=facts_of,
         before=(PREPARED,)),
    Case("status-started-here", A.MIGRATION_STATUS,
         lambda a: MigrationStatusRequest(migration_id="m1", vm="vm1"),
         replies(MigrationStatus, (("vm1", "running"), True, None, [], [("vm1.qcow2", True)])),
         facts=lambda r: facts_of(r, running=None), before=(
             (A.MIGRATION_START, lambda a: start(a, "vm1", copy_disks=["vda"])),)),
    # --- predict (source): measure the dirty rate, then the pre-copy model -----------------------
    Case("predict-an-unknown-vm", A.MIGRATION_PREDICT, lambda a: PredictRequest(vm="vm9"),
         refuses(ErrorCode.NOT_FOUND)),
    Case("predict-a-shut-off-vm", A.MIGRATION_PREDICT,
         lambda a: PredictRequest(vm="vmoff", link_mib_s=30), refuses(ErrorCode.PRECONDITION_FAILED)),
    Case("cleanup-paths-not-a-list", A.MIGRATION_CLEANUP,
         lambda a: b'{"migration_id": "m1", "vm": "vm9", "delete_paths": "/x/y.qcow2"}',
         refuses(ErrorCode.BAD_REQUEST), canned=True),
]


async def test_every_implementation_answers_a_migration_request_as_the_real_agent_does(
        implementation, case):
    assert case.expected == await answer(implementation, case)
