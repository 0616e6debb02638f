"""Events agents publish for monitoring subscribers.

``baton.events.<host>.<vm>.<event>`` carries one of the VM event types below; ``baton.hosts.<host>
.heartbeat`` carries :class:`Heartbeat`. Subscribers of ``baton.events.>`` decode with
:data:`VmEvent` (a tagged union) — new event kinds get new tags, so decode per subject where
forward compatibility matters.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from baton.schemas.base import HostId, Message, NonNegativeInt


class LifecycleKind(StrEnum):
    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    STOPPED = "stopped"
    SHUTDOWN = "shutdown"
    PMSUSPENDED = "pmsuspended"
    CRASHED = "crashed"


class LifecycleEvent(Message, frozen=True, kw_only=True, tag="event.lifecycle"):
    host_id: HostId
    vm: str
    uuid: str
    event: LifecycleKind
    detail: str  # libvirt's detail for this event, e.g. "booted", "migrated", "destroyed"
    at: datetime


class JobStats(Message, frozen=True, kw_only=True, tag="event.job_stats"):
    """A libvirt job's figures (``virDomainGetJobStats``); absent values stay None."""

    operation: str | None = None  # migration_out, migration_in, save, ...
    time_elapsed_ms: NonNegativeInt | None = None
    downtime_ms: NonNegativeInt | None = None
    data_total_bytes: NonNegativeInt | None = None
    data_processed_bytes: NonNegativeInt | None = None
    data_remaining_bytes: NonNegativeInt | None = None
    memory_total_bytes: NonNegativeInt | None = None
    memory_processed_bytes: NonNegativeInt | None = None
    memory_remaining_bytes: NonNegativeInt | None = None
    memory_dirty_rate_pages_s: NonNegativeInt | None = None
    memory_bps: NonNegativeInt | None = None
    memory_iteration: NonNegativeInt | None = None
    # Pages sent as "all one byte" (zero pages: a marker, not 4 KiB), and bytes of whole pages
    # sent: together they say how much of the memory left will really cross the link.
    memory_constant_pages: NonNegativeInt | None = None
    memory_normal_bytes: NonNegativeInt | None = None
    disk_total_bytes: NonNegativeInt | None = None
    disk_processed_bytes: NonNegativeInt | None = None
    disk_remaining_bytes: NonNegativeInt | None = None
    disk_bps: NonNegativeInt | None = None
    auto_converge_throttle_pct: NonNegativeInt | None = None
    expected_downtime_ms: NonNegativeInt | None = None
    error_message: str | None = None


class JobCompletedEvent(Message, frozen=True, kw_only=True, tag="event.job_completed"):
    host_id: HostId
    vm: str
    uuid: str
    stats: JobStats
    at: datetime


class MigrationIterationEvent(Message, frozen=True, kw_only=True, tag="event.migration_iteration"):
    host_id: HostId
    vm: str
    uuid: str
    iteration: NonNegativeInt
    at: datetime


class BlockJobStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    READY = "ready"  # a mirror (copy) reached sync and waits for pivot or abort


class BlockJobEvent(Message, frozen=True, kw_only=True, tag="event.block_job"):
    host_id: HostId
    vm: str
    uuid: str
    disk: str  # target (vda) or path, as libvirt reported it
    job_type: str  # pull, copy, commit, active_commit, backup, unknown
    status: BlockJobStatus
    at: datetime


class Heartbeat(Message, frozen=True, kw_only=True, tag="event.heartbeat"):
    host_id: HostId
    seq: NonNegativeInt
    at: datetime
    interval_s: float
    libvirt_connected: bool
    domains_running: NonNegativeInt = 0


VmEvent = LifecycleEvent | JobCompletedEvent | MigrationIterationEvent | BlockJobEvent
