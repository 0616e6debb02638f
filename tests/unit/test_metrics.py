"""The Prometheus metrics: their names (the README lists them; dashboards depend on them), how a
job's phases count, and what the request wrapper records."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from baton.agent import metrics as agent_metrics
from baton.coordinator import metrics
from baton.mesh import metrics as mesh_metrics
from baton.mesh.rpc import serve
from baton.schemas.base import utc_now
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import JobStats
from baton.schemas.migration import MigrateRequest, MigrationRecord, Phase, StorageMode
from baton.schemas.storage import StorageMoveRecord, StorageMoveRequest

# Metric families (a counter's samples add "_total"; a histogram's "_bucket", "_sum", "_count").
FAMILIES = {
    "baton_requests", "baton_request_seconds",
    "baton_jobs_started", "baton_jobs_finished", "baton_job_duration_seconds",
    "baton_migration_downtime_seconds", "baton_job_bytes", "baton_jobs_active",
    "baton_jobs_queued", "baton_agent_libvirt_connected", "baton_agent_jobs_running",
}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_metric_names_are_pinned():
    registered = {mesh_metrics.REQUESTS, metrics.STARTED, agent_metrics.LIBVIRT_CONNECTED}
    assert 3 == len(registered)  # the three modules are imported: their metrics registered
    assert FAMILIES == {f.name for f in REGISTRY.collect() if f.name.startswith("baton_")}


def record(phase: Phase, seconds: float = 12, stats: JobStats | None = None) -> MigrationRecord:
    now = utc_now()
    return MigrationRecord(migration_id="m1", vm="vm1", source="h1", destination="h2",
                           phase=phase, storage=StorageMode.SHARED,
                           request=MigrateRequest(vm="vm1", destination="h2"),
                           created_at=now - timedelta(seconds=seconds), updated_at=now,
                           result=stats)


def test_a_success_counts_once_with_its_time_pause_and_bytes():
    before = (sample("baton_jobs_finished_total", kind="migration", outcome="succeeded"),
              sample("baton_migration_downtime_seconds_count"),
              sample("baton_job_bytes_total", kind="migration"),
              sample("baton_job_duration_seconds_sum", kind="migration", outcome="succeeded"))
    done = record(Phase.SUCCEEDED, stats=JobStats(operation="migration_out", downtime_ms=250,
                                                  data_processed_bytes=1000))
    metrics.moved(done, Phase.COMPLETING)
    metrics.moved(done, Phase.SUCCEEDED)  # a terminal phase absorbs: never counted twice
    after = (sample("baton_jobs_finished_total", kind="migration", outcome="succeeded"),
             sample("baton_migration_downtime_seconds_count"),
             sample("baton_job_bytes_total", kind="migration"),
             sample("baton_job_duration_seconds_sum", kind="migration", outcome="succeeded"))
    assert [1, 1, 1000] == [a - b for a, b in zip(after[:3], before[:3], strict=True)]
    assert after[3] - before[3] == pytest.approx(12, abs=0.5)


def test_a_live_phase_counts_nothing_and_a_failure_counts_without_figures():
    before = (sample("baton_jobs_finished_total", kind="migration", outcome="failed"),
              sample("baton_migration_downtime_seconds_count"))
    metrics.moved(record(Phase.MIGRATING), Phase.PREPARING)
    metrics.moved(record(Phase.FAILED, stats=JobStats(operation="migration_out",
                                                      downtime_ms=5)), Phase.MIGRATING)
    assert (1, 0) == (sample("baton_jobs_finished_total", kind="migration", outcome="failed")
                      - before[0], sample("baton_migration_downtime_seconds_count") - before[1])


def test_a_disk_move_counts_as_its_own_kind():
    now = utc_now()
    move = StorageMoveRecord(migration_id="s1", vm="vm1", host="h1", destination_pool="fast",
                             phase=Phase.PENDING,
                             request=StorageMoveRequest(vm="vm1", destination_pool="fast"),
                             created_at=now, updated_at=now)
    before = sample("baton_jobs_started_total", kind="storage_move")
    metrics.accepted(move)
    assert 1 == sample("baton_jobs_started_total", kind="storage_move") - before


class Request:
    def __init__(self, data: bytes) -> None:
        self.data, self.subject, self.replies = data, "baton.agent.h1.caps", []

    async def respond(self, body: bytes, headers=None) -> None:
        self.replies.append(body)


@pytest.mark.parametrize(("body", "raised", "outcome"), [
    (b"{}", None, "ok"), (b"{", None, "bad_request"),
    (b"{}", BatonError(ErrorCode.NOT_FOUND, "no"), "not_found"),
    (b"{}", RuntimeError("bug"), "internal")])
async def test_every_request_is_counted_and_timed_by_endpoint_and_outcome(body, raised, outcome):
    async def handle(_request: dict) -> dict:
        if raised is not None:
            raise raised
        return {}
    before = (sample("baton_requests_total", endpoint="test.ep", outcome=outcome),
              sample("baton_request_seconds_count", endpoint="test.ep"))
    await serve(Request(body), dict, handle, "test.ep")  # type: ignore[arg-type]
    assert (1, 1) == (sample("baton_requests_total", endpoint="test.ep", outcome=outcome)
                      - before[0], sample("baton_request_seconds_count", endpoint="test.ep")
                      - before[1])


def test_the_job_gauges_read_the_coordinator_when_scraped():
    running = [3]
    metrics.watch_jobs(lambda: running[0], lambda: 2)
    assert (3, 2) == (sample("baton_jobs_active"), sample("baton_jobs_queued"))
    running[0] = 1
    assert 1 == sample("baton_jobs_active")
