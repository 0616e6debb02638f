"""The coordinator's Prometheus metrics: jobs started and finished by kind and outcome, how long
they took, the guests' pause, the bytes moved, and the jobs running and queued now.

Recorded by the phase tracker (coordinator/phases.py) as each record moves, so every path to an
outcome counts once: a job's first stored phase starts it, its terminal phase finishes it. The
running and queued gauges read the coordinator's registry when scraped.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from baton.schemas.migration import TERMINAL_PHASES, MigrationRecord, Phase
from baton.schemas.storage import StorageMoveRecord

STARTED = Counter("baton_jobs_started", "Migrations and disk moves accepted, by kind", ["kind"])
FINISHED = Counter("baton_jobs_finished", "Migrations and disk moves ended, by kind and outcome "
                   "(succeeded, failed, aborted)", ["kind", "outcome"])
DURATION = Histogram("baton_job_duration_seconds", "From acceptance to the end, by kind and "
                     "outcome", ["kind", "outcome"],
                     buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf")))
DOWNTIME = Histogram("baton_migration_downtime_seconds", "The guest's pause at the switch-over "
                     "of a migration that succeeded (libvirt's figure)",
                     buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, float("inf")))
BYTES = Counter("baton_job_bytes", "Bytes libvirt moved for jobs that succeeded, by kind",
                ["kind"])
ACTIVE = Gauge("baton_jobs_active", "Migrations and disk moves under way (not queued)")
QUEUED = Gauge("baton_jobs_queued", "Migrations waiting for a slot (admission control)")

Record = MigrationRecord | StorageMoveRecord


def kind(record: Record) -> str:
    return "storage_move" if isinstance(record, StorageMoveRecord) else "migration"


def accepted(record: Record) -> None:
    STARTED.labels(kind(record)).inc()


def moved(record: Record, previous: Phase) -> None:
    """A record's phase changed: a terminal phase ends the job once."""
    if record.phase not in TERMINAL_PHASES or previous in TERMINAL_PHASES:
        return
    what, outcome = kind(record), str(record.phase)
    FINISHED.labels(what, outcome).inc()
    DURATION.labels(what, outcome).observe(
        max(0.0, (record.updated_at - record.created_at).total_seconds()))
    if record.phase != Phase.SUCCEEDED or record.result is None:
        return
    if record.result.data_processed_bytes is not None:
        BYTES.labels(what).inc(record.result.data_processed_bytes)
    if record.result.downtime_ms is not None:
        DOWNTIME.observe(record.result.downtime_ms / 1000)


def watch_jobs(active: Callable[[], int], queued: Callable[[], int]) -> None:
    """The gauges read these when scraped."""
    ACTIVE.set_function(active)
    QUEUED.set_function(queued)
