"""The real coordinator service, in this process, driving scripted fake agents over a real NATS.

The hosts and VMs are described in ``coordinator_fixtures``. Only public subjects are used:
requests on ``baton.coordinator.*``, events on ``baton.migrations.*``; the fake agents record what
the coordinator asked of them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import msgspec
import pytest

from baton.coordinator.core import Coordinator
from baton.coordinator.main import CoordinatorConfig, run_coordinator
from baton.schemas.agent import DomainState
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.migration import (
    AbortRequest,
    BandwidthRequest,
    CheckName,
    CheckRequest,
    CheckStatus,
    JobsReply,
    JobsRequest,
    MigrateAccepted,
    MigrateRequest,
    MigrationRecord,
    Phase,
    PostcopySwitch,
    PreflightReport,
    StorageMode,
    Strategy,
)
from baton.schemas.subjects import AgentEndpoint as A
from baton.schemas.subjects import CoordinatorEndpoint as C
from baton.schemas.subjects import Subjects
from tests.integration.coordinator_fixtures import ask, touched
from tests.integration.fake_agents import (
    FAST,
    IMAGES,
    LIBVIRT_FAILURE,
    Mesh,
    Script,
    domain,
    fake_uuid,
)

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)
S = Subjects()


async def migrate(nc, **options: Any) -> MigrateAccepted:
    reply = await ask(nc, C.MIGRATE, MigrateRequest(**({"vm": "vm1", "destination": "h2"}
                                                       | options)), MigrateAccepted)
    assert isinstance(reply, MigrateAccepted), reply
    return reply


# --- the happy paths ------------------------------------------------------------------------


async def test_migrate_is_accepted_at_once_and_publishes_every_phase_in_order(
        coordinator, mesh, watcher, nats_client):
    t0 = time.monotonic()
    accepted = await migrate(nats_client, source="h1")
    assert time.monotonic() - t0 < 1.0
    record = await watcher.final(accepted.migration_id)
    assert [Phase.PENDING, Phase.CHECKING, Phase.PREPARING, Phase.MIGRATING, Phase.COMPLETING,
            Phase.SUCCEEDED] == watcher.phases_of(accepted.migration_id)
    assert ("vm1", "h1", "h2", None) == (record.vm, record.source, record.destination,
                                         record.error)
    assert record.switchover_at is not None and record.result is not None
    assert (42, DomainState.RUNNING) == (record.result.downtime_ms,
                                         mesh["h2"].domains["vm1"].state)
    assert "vm1" not in mesh["h1"].domains


async def test_copy_migration_precreates_copies_and_deletes_only_the_local_disk(
        coordinator, mesh, watcher, nats_client):
    accepted = await migrate(nats_client)  # source found through discovery
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, StorageMode.COPY, "h1") == (record.phase, record.storage,
                                                         accepted.source)
    [prepare] = mesh["h2"].asked(A.MIGRATION_PREPARE)
    assert [(f"{IMAGES}/vm1.qcow2", "qcow2", 10 * 1024**3)] == [
        (d.path, d.format, d.capacity_bytes) for d in prepare.disks]
    [start] = mesh["h1"].asked(A.MIGRATION_START)
    assert (["vda"], "qemu+tcp://10.77.0.2/system", "10.77.0.2") == (
        start.copy_disks, start.destination_uri, start.destination_address)
    [cleanup] = mesh["h1"].asked(A.MIGRATION_CLEANUP)
    assert ([f"{IMAGES}/vm1.qcow2"], False) == (cleanup.delete_paths, cleanup.remove_domain)


async def test_a_copy_into_another_pool_lands_there_and_deletes_the_source_path(
        coordinator, mesh, watcher, nats_client):
    accepted = await migrate(nats_client, target_pool="fast")
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, StorageMode.COPY) == (record.phase, record.storage)
    [prepare] = mesh["h2"].asked(A.MIGRATION_PREPARE)
    assert [(f"{FAST}/vm1.qcow2", f"{IMAGES}/vm1.qcow2")] == [
        (d.path, d.source_path) for d in prepare.disks]
    [start] = mesh["h1"].asked(A.MIGRATION_START)
    assert (["vda"], {"vda": f"{FAST}/vm1.qcow2"}) == (start.copy_disks, start.destination_paths)
    [cleanup] = mesh["h1"].asked(A.MIGRATION_CLEANUP)
    assert [f"{IMAGES}/vm1.qcow2"] == cleanup.delete_paths
    assert [f"{FAST}/vm1.qcow2"] == [d.source_path for d in mesh["h2"].domains["vm1"].disks]


async def test_a_copy_into_a_pool_the_destination_lacks_is_refused_before_any_host_is_touched(
        coordinator, mesh, watcher, nats_client):
    accepted = await migrate(nats_client, target_pool="nvme")
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.PRECONDITION_FAILED) == (record.phase, record.error.code)
    assert "h2 has no storage pool 'nvme'" in record.error.message
    assert [] == touched(mesh)


async def test_auto_storage_on_a_shared_disk_copies_nothing(coordinator, mesh, watcher,
                                                           nats_client):
    accepted = await migrate(nats_client, vm="vmshared", undefine_source=False,
                             persistent=False)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, StorageMode.SHARED) == (record.phase, record.storage)
    [prepare] = mesh["h2"].asked(A.MIGRATION_PREPARE)  # only to expect the VM, by UUID
    assert ([], fake_uuid("vmshared"), []) == (prepare.disks, prepare.domain_uuid,
                                               mesh["h1"].asked(A.MIGRATION_CLEANUP))
    [start] = mesh["h1"].asked(A.MIGRATION_START)
    assert ([], False, False) == (start.copy_disks, start.persistent, start.undefine_source)
    assert (False, DomainState.SHUTOFF) == (mesh["h2"].domains["vmshared"].persistent,
                                            mesh["h1"].domains["vmshared"].state)


async def test_progress_is_published_at_least_once_a_second_even_when_the_agent_is_silent(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].script = Script(steps=3, interval_s=0.1, silence_s=2.5)
    accepted = await migrate(nats_client, source="h1")
    await watcher.final(accepted.migration_id)
    stamps = [e.at for e in watcher.progress if e.migration_id == accepted.migration_id]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert len(stamps) >= 4 and max(gaps) < 1.0
    assert {Phase.MIGRATING} <= {e.phase for e in watcher.progress}
    assert any(e.stats.data_processed_bytes for e in watcher.progress)


async def test_dry_run_answers_with_the_report_and_touches_nothing(coordinator, mesh,
                                                                  nats_client):
    report = await ask(nats_client, C.MIGRATE, MigrateRequest(vm="vm1", destination="h2",
                                                               dry_run=True), PreflightReport)
    assert (True, StorageMode.COPY) == (report.ok, report.storage)
    assert list(CheckName) == [c.name for c in report.checks]
    assert [] == touched(mesh) and {} == mesh.storage.tokens


async def test_check_reports_every_check_together(coordinator, nats_client):
    report = await ask(nats_client, C.CHECK, CheckRequest(vm="vm1", destination="h3"),
                       PreflightReport)
    by_name = {c.name: c.status for c in report.checks}
    assert (False, CheckStatus.FAIL, CheckStatus.PASS) == (
        report.ok, by_name[CheckName.NETWORK], by_name[CheckName.MEMORY])
    assert len(CheckName) == len(report.checks)


async def test_check_with_a_cap_predicts_from_the_sources_measurement(coordinator, mesh,
                                                                       nats_client):
    source = mesh.agents["h1"]
    calm = await ask(nats_client, C.CHECK, CheckRequest(vm="vm1", destination="h2",
                                                        bandwidth_mib_s=50), PreflightReport)
    source.dirty_rate_mib_s = 80.0  # faster than the link: pre-copy never ends
    busy = await ask(nats_client, C.CHECK, CheckRequest(
        vm="vm1", destination="h2", bandwidth_mib_s=50, strategy=Strategy.PRECOPY),
        PreflightReport)
    uncapped = await ask(nats_client, C.CHECK, CheckRequest(vm="vm1", destination="h2"),
                         PreflightReport)
    assert calm.prediction is not None and busy.prediction is not None
    assert (2.0, "fake", 50.0, True, Strategy.PRECOPY) == (
        calm.prediction.dirty_rate_mib_s, calm.prediction.dirty_rate_mode,
        calm.prediction.link_mib_s, calm.prediction.converges, calm.prediction.strategy)
    assert (False, Strategy.AUTO_CONVERGE) == (busy.prediction.converges,
                                               busy.prediction.strategy)
    convergence = {r.prediction.dirty_rate_mib_s: next(
        c for c in r.checks if c.name == CheckName.CONVERGENCE) for r in (calm, busy)}
    assert (CheckStatus.PASS, CheckStatus.WARN) == (convergence[2.0].status,
                                                    convergence[80.0].status)
    assert uncapped.prediction is not None and uncapped.prediction.strategy is None
    assert 3 == len(source.asked(A.MIGRATION_PREDICT))


async def test_the_prediction_is_asked_at_the_limit_and_switch_asked_for_and_its_failure_said(
        coordinator, mesh, nats_client):
    source = mesh.agents["h1"]
    # shared storage asked for a VM with a local disk: that check fails, the disk is not copied
    await ask(nats_client, C.CHECK, CheckRequest(
        vm="vm1", destination="h2", storage=StorageMode.SHARED, bandwidth_mib_s=50,
        max_downtime_ms=500, allow_postcopy=True), PreflightReport)
    [asked] = source.asked(A.MIGRATION_PREDICT)
    assert (50, 500, True, 0) == (asked.link_mib_s, asked.max_downtime_ms, asked.allow_postcopy,
                                  asked.disk_bytes)
    source.predict_error = BatonError(ErrorCode.UNSUPPORTED, "cannot read this guest's memory")
    report = await ask(nats_client, C.CHECK, CheckRequest(vm="vm1", destination="h2"),
                       PreflightReport)
    convergence = next(c for c in report.checks if c.name == CheckName.CONVERGENCE)
    assert (None, CheckStatus.WARN, "no prediction: cannot read this guest's memory") == (
        report.prediction, convergence.status, convergence.reason)


async def test_a_copy_is_predicted_to_send_each_disk_at_its_whole_virtual_size(
        coordinator, mesh, nats_client):
    # QEMU's mirror goes through unallocated clusters under the cap too (agent/prediction.py)
    source = mesh.agents["h1"]
    vm = source.domains["vm1"]
    thin = msgspec.structs.replace(vm.disks[0], allocation_bytes=1 << 30)
    source.domains["vm1"] = msgspec.structs.replace(vm, disks=[thin])
    report = await ask(nats_client, C.CHECK, CheckRequest(
        vm="vm1", destination="h2", storage=StorageMode.COPY, bandwidth_mib_s=50), PreflightReport)
    [asked] = source.asked(A.MIGRATION_PREDICT)
    assert (10 << 30, thin.capacity_bytes) == (asked.disk_bytes, 10 << 30), report.checks


async def test_only_strategy_auto_has_the_source_measure_before_a_migration(
        coordinator, mesh, watcher, nats_client):
    for vm, strategy in (("vm1", Strategy.PRECOPY), ("vmshared", Strategy.AUTO)):
        accepted = await migrate(nats_client, vm=vm, destination="h2", strategy=strategy,
                                 bandwidth_mib_s=50)
        record = await watcher.final(accepted.migration_id)
        assert Phase.SUCCEEDED == record.phase, record.error
        assert (strategy == Strategy.AUTO) == (record.prediction is not None)
    [asked] = mesh.agents["h1"].asked(A.MIGRATION_PREDICT)
    assert (50, "vmshared") == (asked.link_mib_s, asked.vm)
    [started] = [r for r in mesh.agents["h1"].asked(A.MIGRATION_START) if r.vm == "vmshared"]
    # the source's ETA starts from them
    assert (2.0, record.prediction.whole_mib) == (started.expected_dirty_rate_mib_s,
                                                  started.expected_whole_mib)
    assert record.prediction.whole_mib > 0


async def test_by_default_auto_starts_with_what_the_prediction_says_ends_the_move(
        coordinator, mesh, watcher, nats_client):
    # 80 MiB/s dirtied behind a 50 MiB/s cap: neither pre-copy nor the downtime ramp ends it
    source = mesh.agents["h1"]
    source.dirty_rate_mib_s = 80.0
    chosen = {}
    for vm, allow_postcopy in (("vm1", True), ("vmshared", False)):
        accepted = await migrate(nats_client, vm=vm, destination="h2", bandwidth_mib_s=50,
                                 allow_postcopy=allow_postcopy)  # no strategy: auto
        record = await watcher.final(accepted.migration_id)
        assert Phase.SUCCEEDED == record.phase, record.error
        assert record.prediction is not None and record.prediction.dirty_rate_mib_s == 80.0
        chosen[vm] = record.auto_choice
    switched, throttled = (next(r for r in source.asked(A.MIGRATION_START) if r.vm == vm)
                           for vm in ("vm1", "vmshared"))
    assert (PostcopySwitch.AFTER_FIRST_PASS, False, True) == (
        switched.postcopy, switched.auto_converge, switched.downtime_ramp)
    assert (PostcopySwitch.OFF, True, True) == (
        throttled.postcopy, throttled.auto_converge, throttled.downtime_ramp)
    stuck = ("predicted at 50 MiB/s for a guest dirtying 80.0 MiB/s, neither pre-copy nor "
             "raising the downtime limit ends it")
    assert chosen["vm1"] == f"post-copy after the first pass: {stuck}"
    assert chosen["vmshared"].startswith(f"auto-converge from the start: {stuck}")


@pytest.mark.parametrize(("escalations", "postcopy"), [
    # a post-copy recovery happens after the source's last progress report
    (["switched to post-copy", "recovered (attempt 1)"], True),
    (["downtime limit raised to 500 ms"], False),  # either alone is enough to be noted
    ([], True),
])
async def test_steps_the_source_reports_only_in_its_outcome_reach_the_record(
        coordinator, mesh, watcher, nats_client, escalations, postcopy):
    mesh["h1"].script.final_escalations = escalations
    mesh["h1"].script.final_postcopy = postcopy
    accepted = await migrate(nats_client, strategy=Strategy.POSTCOPY)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, escalations, postcopy) == (
        record.phase, record.escalations, record.postcopy)


async def test_a_migration_switched_to_postcopy_is_completing_and_never_timed_out(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].script = Script(steps=3, interval_s=0.1, outcome="hang", postcopy_from_step=1)
    accepted = await migrate(nats_client, strategy=Strategy.POSTCOPY, timeout_s=1)
    await watcher.until(accepted.migration_id, {Phase.COMPLETING}, 10)
    await asyncio.sleep(2.5)  # well past the completion timeout
    phases = watcher.phases_of(accepted.migration_id)
    assert Phase.COMPLETING == phases[-1] and Phase.FAILED not in phases
    assert [] == mesh["h1"].asked(A.MIGRATION_ABORT)  # post-copy cannot be aborted: never asked
    record = watcher.phases[-1].record
    assert (True, "switched to post-copy: the guest runs on the destination") == (
        record.postcopy, watcher.phases[-1].reason)


# --- pre-flight failures stop before anything is touched -----------------------------------


def _missing_bridge(mesh: Mesh) -> dict[str, Any]:
    return {"destination": "h3"}


def _shared_disk_not_visible(mesh: Mesh) -> dict[str, Any]:
    return {"storage": StorageMode.SHARED}


def _not_enough_memory(mesh: Mesh) -> dict[str, Any]:
    mesh["h1"].domains["vm1"] = domain("vm1", memory_gib=64)
    return {}


def _cpu_incompatible(mesh: Mesh) -> dict[str, Any]:
    mesh["h2"].cpu_reply = msgspec.structs.replace(
        mesh["h2"].cpu_reply, runnable=False, result="incompatible",
        reason="host CPU lacks avx512f")
    return {}


def _already_on_destination(mesh: Mesh) -> dict[str, Any]:
    mesh["h2"].add_domain(domain("vm1", directory="/var/lib/other", state=DomainState.SHUTOFF))
    return {}


def _blocking_device(mesh: Mesh) -> dict[str, Any]:
    mesh["h1"].domains["vm1"] = domain("vm1", blockers=("hostdev 0000:03:00.0",))
    return {}


def _pool_too_small(mesh: Mesh) -> dict[str, Any]:
    caps = mesh["h2"].caps_reply
    pool = msgspec.structs.replace(caps.pools[0], available_bytes=1024**3)
    mesh["h2"].caps_reply = msgspec.structs.replace(caps, pools=[pool])
    return {"storage": StorageMode.COPY}


@pytest.mark.parametrize(("arrange", "failing"), [
    (_missing_bridge, CheckName.NETWORK),
    (_shared_disk_not_visible, CheckName.STORAGE),
    (_not_enough_memory, CheckName.MEMORY),
    (_cpu_incompatible, CheckName.CPU),
    (_already_on_destination, CheckName.VM),
    (_blocking_device, CheckName.DEVICES),
    (_pool_too_small, CheckName.STORAGE),
])
async def test_each_preflight_failure_stops_before_prepare_or_start(
        coordinator, mesh, watcher, nats_client, arrange, failing):
    options = arrange(mesh)
    accepted = await migrate(nats_client, **options)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.PRECONDITION_FAILED) == (record.phase, record.error.code)
    assert failing in {c.name for c in record.checks if c.status == CheckStatus.FAIL}
    assert [Phase.PENDING, Phase.CHECKING, Phase.FAILED] == watcher.phases_of(
        accepted.migration_id)
    assert [] == touched(mesh)


async def test_cpu_comparison_unsupported_is_a_warning_not_a_failure(coordinator, mesh,
                                                                    nats_client):
    mesh["h2"].cpu_error = BatonError(ErrorCode.UNSUPPORTED, "this function is not supported")
    report = await ask(nats_client, C.CHECK, CheckRequest(vm="vm1", destination="h2"),
                       PreflightReport)
    assert (True, CheckStatus.WARN) == (
        report.ok, {c.name: c.status for c in report.checks}[CheckName.CPU])


# --- abort, failure and conflict -----------------------------------------------------------


async def test_abort_mid_migration_keeps_the_source_and_cleans_the_destination(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].script = Script(outcome="hang")
    accepted = await migrate(nats_client)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    record = await ask(nats_client, C.ABORT, AbortRequest(migration_id=accepted.migration_id),
                       MigrationRecord)
    assert Phase.ABORTED == record.phase
    assert "canceled by client" not in record.error.message  # ours says it was requested
    [abort] = mesh["h1"].asked(A.MIGRATION_ABORT)
    [cleanup] = mesh["h2"].asked(A.MIGRATION_CLEANUP)
    assert (abort.migration_id, True, [f"{IMAGES}/vm1.qcow2"]) == (
        accepted.migration_id, cleanup.remove_domain, cleanup.delete_paths)
    assert DomainState.RUNNING == mesh["h1"].domains["vm1"].state
    assert [Phase.ABORTED] == watcher.phases_of(accepted.migration_id)[-1:]


async def test_failure_mid_migration_reports_libvirts_reason_and_cleans_up(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].script = Script(outcome="fail")
    accepted = await migrate(nats_client)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.FAILED, ErrorCode.HYPERVISOR, LIBVIRT_FAILURE) == (
        record.phase, record.error.code, record.error.message)
    [cleanup] = mesh["h2"].asked(A.MIGRATION_CLEANUP)
    assert (True, [f"{IMAGES}/vm1.qcow2"]) == (cleanup.remove_domain, cleanup.delete_paths)
    assert not mesh.storage.exists("h2", f"{IMAGES}/vm1.qcow2")


async def test_a_second_migrate_of_the_same_vm_is_a_conflict(coordinator, mesh, watcher,
                                                             nats_client):
    mesh["h1"].script = Script(outcome="hang")
    first = await migrate(nats_client)
    second = await ask(nats_client, C.MIGRATE, MigrateRequest(vm="vm1", destination="h3"),
                       MigrateAccepted)
    assert (ErrorCode.CONFLICT, first.migration_id) == (second.code,
                                                        second.details["migration_id"])
    await ask(nats_client, C.ABORT, AbortRequest(migration_id=first.migration_id),
              MigrationRecord)
    assert Phase.ABORTED == (await watcher.final(first.migration_id)).phase


async def test_bandwidth_change_is_forwarded_to_the_source_while_migrating(
        coordinator, mesh, watcher, nats_client):
    mesh["h1"].script = Script(outcome="hang")
    accepted = await migrate(nats_client, bandwidth_mib_s=100)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    record = await ask(nats_client, C.BANDWIDTH, BandwidthRequest(
        migration_id=accepted.migration_id, bandwidth_mib_s=25), MigrationRecord)
    [speed] = mesh["h1"].asked(A.MIGRATION_SPEED)
    [start] = mesh["h1"].asked(A.MIGRATION_START)
    assert (25, 25, 100) == (record.bandwidth_mib_s, speed.bandwidth_mib_s,
                             start.bandwidth_mib_s)
    await ask(nats_client, C.ABORT, AbortRequest(migration_id=accepted.migration_id),
              MigrationRecord)


async def test_a_cap_changed_before_the_source_starts_is_the_one_it_starts_with(
        coordinator, mesh, watcher, nats_client):
    source = mesh.agents["h1"]
    source.measuring = asyncio.Event()  # strategy auto's measurement holds it in checking
    accepted = await migrate(nats_client, bandwidth_mib_s=100)
    await watcher.until(accepted.migration_id, {Phase.CHECKING})
    record = await ask(nats_client, C.BANDWIDTH, BandwidthRequest(
        migration_id=accepted.migration_id, bandwidth_mib_s=20), MigrationRecord)
    assert (Phase.CHECKING, 20) == (record.phase, record.bandwidth_mib_s)
    source.measuring.set()
    assert Phase.SUCCEEDED == (await watcher.final(accepted.migration_id)).phase
    [start] = source.asked(A.MIGRATION_START)
    assert (20, []) == (start.bandwidth_mib_s, source.asked(A.MIGRATION_SPEED))


async def test_jobs_lists_migrations_and_filters_active_ones(coordinator, mesh, watcher,
                                                            nats_client):
    done = await migrate(nats_client, vm="vmshared")
    await watcher.final(done.migration_id)
    mesh["h1"].script = Script(outcome="hang")
    running = await migrate(nats_client)
    await watcher.until(running.migration_id, {Phase.MIGRATING})
    every = await ask(nats_client, C.JOBS, JobsRequest(), JobsReply)
    active = await ask(nats_client, C.JOBS, JobsRequest(active_only=True), JobsReply)
    assert {done.migration_id, running.migration_id} == {m.migration_id for m in every.migrations}
    assert [running.migration_id] == [m.migration_id for m in active.migrations]
    await ask(nats_client, C.ABORT, AbortRequest(migration_id=running.migration_id),
              MigrationRecord)


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", ErrorCode.BAD_REQUEST),
    (encode(MigrateRequest(vm="nope", destination="h2", source="h1")), ErrorCode.NOT_FOUND),
    (encode(MigrateRequest(vm="nope", destination="h2")), ErrorCode.NOT_FOUND),
    (encode(MigrateRequest(vm="vm1", destination="h9", source="h1")), ErrorCode.NOT_FOUND),
    (encode(MigrateRequest(vm="vm1", destination="h2", source="h9")), ErrorCode.NOT_FOUND),
    (encode(MigrateRequest(vm="vm1", destination="h1", source="h1")), ErrorCode.BAD_REQUEST),
    (encode(MigrateRequest(vm="vm1", destination="h1")), ErrorCode.BAD_REQUEST),
    (encode(MigrateRequest(vm="vm1", destination="h2", live=False)), ErrorCode.BAD_REQUEST),
    (encode(MigrateRequest(vm="vmoff", destination="h2", live=False, persistent=False,
                           storage=StorageMode.COPY)), ErrorCode.BAD_REQUEST),
    (encode(MigrateRequest(vm="vmoff", destination="h2")), ErrorCode.BAD_REQUEST),
    (b'{"vm": "vm1", "destination": "h2", "bandwidth_mib_s": 0}', ErrorCode.BAD_REQUEST),
])
async def test_bad_input_gets_a_typed_error_and_the_service_keeps_serving(
        coordinator, mesh, nats_client, body, code):
    reply = await ask(nats_client, C.MIGRATE, body, MigrateAccepted)
    assert isinstance(reply, ErrorReply) and code == reply.code, reply
    assert [] == touched(mesh)
    assert isinstance(await ask(nats_client, C.JOBS, b"", JobsReply), JobsReply)


async def test_an_abort_that_comes_too_late_waits_for_the_sources_outcome_and_removes_nothing(
        coordinator, mesh, watcher, nats_client):
    # libvirt finishes the move 0.3 s after the abort was asked: the outcome, not a guess, says so
    mesh["h1"].script = Script(outcome="hang", abort_takes_s=0.3, abort_too_late=True)
    accepted = await migrate(nats_client)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    await ask(nats_client, C.ABORT, AbortRequest(migration_id=accepted.migration_id),
              MigrationRecord)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, None) == (record.phase, record.error)
    assert ("vm1" in mesh["h2"].domains, "vm1" in mesh["h1"].domains) == (True, False)
    assert [] == mesh["h2"].asked(A.MIGRATION_CLEANUP)  # the guest runs there: nothing removed


async def test_abort_of_an_unknown_migration_is_not_found(coordinator, nats_client):
    reply = await ask(nats_client, C.ABORT, AbortRequest(migration_id="nope"), MigrationRecord)
    assert ErrorCode.NOT_FOUND == reply.code


async def test_offline_migration_of_a_shut_off_vm_moves_its_definition(
        coordinator, mesh, watcher, nats_client):
    mesh.storage.add("h2", f"{IMAGES}/vmoff.qcow2")  # shared-looking: a copy is not needed
    accepted = await migrate(nats_client, vm="vmoff", live=False, storage=StorageMode.SHARED)
    record = await watcher.final(accepted.migration_id)
    assert Phase.FAILED == record.phase  # the disk is not proven shared: stop before touching
    assert [] == touched(mesh)
    mesh.storage.shared_dirs.add(IMAGES)
    accepted = await migrate(nats_client, vm="vmoff", live=False)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, None) == (record.phase, record.switchover_at)
    [start] = mesh["h1"].asked(A.MIGRATION_START)
    assert (False, DomainState.SHUTOFF) == (start.live, mesh["h2"].domains["vmoff"].state)


async def test_shutdown_aborts_running_migrations_and_rolls_back(nats_server, mesh, watcher,
                                                                 nats_client):
    mesh["h1"].script = Script(outcome="hang")
    config = CoordinatorConfig(nats_url=nats_server.url, grace_s=0.2, rollback_s=5)
    stop = asyncio.Event()
    started: asyncio.Future[Coordinator] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_coordinator(config, stop, started))
    await asyncio.wait_for(started, 10)
    accepted = await migrate(nats_client)
    await watcher.until(accepted.migration_id, {Phase.MIGRATING})
    stop.set()
    await asyncio.wait_for(task, 15)
    record = await watcher.final(accepted.migration_id)
    assert (Phase.ABORTED, True) == (record.phase, "shutting down" in record.error.message)
    assert 1 == len(mesh["h2"].asked(A.MIGRATION_CLEANUP))
