"""Migration messages: the coordinator's public API, the agents' migration endpoints, and the
events that report a migration's phases and progress.

Public (``baton.coordinator.<verb>``): migrate, check, abort, bandwidth, jobs.
Events (``baton.migrations.<id>.<event>``): ``phase`` (every phase change, with the whole record),
``progress`` (at least once a second while data moves).
Agent side (``baton.agent.<host>.migration.<verb>``): prepare, start, speed, abort, cleanup; the
source agent reports on ``baton.migrations.<id>.source.<event>`` (progress, finished).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import msgspec

from baton.schemas.base import HostId, Message, NonNegativeInt, VmName
from baton.schemas.errors import ErrorReply
from baton.schemas.events import JobStats

# The job primitives were defined here first; importers of schemas.migration keep finding them.
from baton.schemas.job import TERMINAL_PHASES as TERMINAL_PHASES
from baton.schemas.job import BandwidthMiBs, MigrationId
from baton.schemas.job import CheckName as CheckName
from baton.schemas.job import CheckResult as CheckResult
from baton.schemas.job import CheckStatus as CheckStatus
from baton.schemas.job import Phase as Phase
from baton.schemas.storage import StorageMoveRecord

Percent = Annotated[int, msgspec.Meta(ge=1, le=100)]
DowntimeMs = Annotated[int, msgspec.Meta(ge=1, le=3_600_000)]


class StorageMode(StrEnum):
    AUTO = "auto"  # shared if the destination proves it sees the disk files, else copy
    SHARED = "shared"  # disks stay where they are; only CPU and memory state move
    COPY = "copy"  # shared-nothing: local disks are copied block by block during the move


# --- public requests --------------------------------------------------------------------------


class MigrateRequest(Message, frozen=True, kw_only=True, tag="coordinator.migrate.request"):
    vm: VmName
    destination: HostId
    source: HostId | None = None  # found by asking the agents when omitted
    live: bool = True  # false: offline move of a shut-off or paused domain's definition and disks
    storage: StorageMode = StorageMode.AUTO
    persistent: bool = True  # save the definition on the destination
    undefine_source: bool = True  # remove the definition from the source once moved
    auto_converge: bool = False
    auto_converge_initial_pct: Percent | None = None
    auto_converge_increment_pct: Percent | None = None
    bandwidth_mib_s: BandwidthMiBs | None = None
    max_downtime_ms: DowntimeMs | None = None
    dry_run: bool = False  # run the checks only and answer with the report
    # Encrypt the migration stream (VIR_MIGRATE_TLS) when both hosts have QEMU TLS
    # certificates; false (`--no-tls`) sends it in the clear, which pre-flight warns about.
    tls: bool = True


class CheckRequest(Message, frozen=True, kw_only=True, tag="coordinator.check.request"):
    vm: VmName
    destination: HostId
    source: HostId | None = None
    live: bool = True
    storage: StorageMode = StorageMode.AUTO
    tls: bool = True


class PreflightReport(Message, frozen=True, kw_only=True, tag="coordinator.check.reply"):
    vm: str
    source: str | None
    destination: str
    storage: StorageMode  # the mode a migration would use (auto resolved when possible)
    ok: bool  # no check failed
    checks: list[CheckResult] = []


class MigrateAccepted(Message, frozen=True, kw_only=True, tag="coordinator.migrate.accepted"):
    migration_id: MigrationId
    vm: str
    source: str
    destination: str


class AbortRequest(Message, frozen=True, kw_only=True, tag="coordinator.abort.request"):
    migration_id: MigrationId


class BandwidthRequest(Message, frozen=True, kw_only=True, tag="coordinator.bandwidth.request"):
    migration_id: MigrationId
    bandwidth_mib_s: BandwidthMiBs


class JobsRequest(Message, frozen=True, kw_only=True, tag="coordinator.jobs.request"):
    migration_id: MigrationId | None = None  # just this one
    active_only: bool = False


# --- records and events -----------------------------------------------------------------------


class MigrationRecord(Message, frozen=True, kw_only=True, tag="coordinator.migration"):
    migration_id: MigrationId
    vm: str
    source: str
    destination: str
    phase: Phase
    storage: StorageMode
    request: MigrateRequest
    created_at: datetime
    updated_at: datetime
    checks: list[CheckResult] = []
    bandwidth_mib_s: int | None = None  # the cap in force now
    switchover_at: datetime | None = None  # when the destination resumed the guest
    result: JobStats | None = None  # the completed job's figures from the source
    error: ErrorReply | None = None


class JobsReply(Message, frozen=True, kw_only=True, tag="coordinator.jobs.reply"):
    migrations: list[MigrationRecord] = []
    storage_moves: list[StorageMoveRecord] = []  # disk moves between pools (schemas.storage)


class PhaseEvent(Message, frozen=True, kw_only=True, tag="migration.phase"):
    migration_id: MigrationId
    phase: Phase
    previous: Phase | None
    reason: str = ""
    at: datetime
    record: MigrationRecord


class ProgressEvent(Message, frozen=True, kw_only=True, tag="migration.progress"):
    migration_id: MigrationId
    phase: Phase
    at: datetime
    stats: JobStats
    bandwidth_mib_s: int | None = None


# --- agent side -------------------------------------------------------------------------------


class DiskPlan(Message, frozen=True, kw_only=True, tag="agent.disk_plan"):
    target: str
    path: str
    format: str
    capacity_bytes: NonNegativeInt


class PrepareRequest(Message, frozen=True, kw_only=True, tag="agent.migration.prepare.request"):
    """Destination: pre-create the disks a copy will fill (same path, format and virtual size)."""

    migration_id: MigrationId
    vm: VmName
    disks: list[DiskPlan] = []


class PrepareReply(Message, frozen=True, kw_only=True, tag="agent.migration.prepare.reply"):
    created_paths: list[str] = []


class StartRequest(Message, frozen=True, kw_only=True, tag="agent.migration.start.request"):
    """Source: run the migration peer-to-peer to ``destination_uri``."""

    migration_id: MigrationId
    vm: VmName
    destination_uri: str
    # The destination's host id: the source sends the VM only if that host's agent announces
    # exactly ``destination_uri`` (agent/peers.py).
    destination_host: HostId | None = None
    destination_address: str | None = None  # migration data goes to tcp://<address>
    live: bool = True
    persistent: bool = True
    undefine_source: bool = True
    copy_disks: list[str] = []  # targets to copy (shared-nothing); empty = shared storage
    auto_converge: bool = False
    auto_converge_initial_pct: Percent | None = None
    auto_converge_increment_pct: Percent | None = None
    bandwidth_mib_s: BandwidthMiBs | None = None
    max_downtime_ms: DowntimeMs | None = None
    progress_interval_ms: Annotated[int, msgspec.Meta(ge=100, le=10_000)] = 500
    tls: bool = False  # VIR_MIGRATE_TLS: encrypt the stream (both hosts' QEMU need certificates)


class StartReply(Message, frozen=True, kw_only=True, tag="agent.migration.start.reply"):
    migration_id: MigrationId


class SpeedRequest(Message, frozen=True, kw_only=True, tag="agent.migration.speed.request"):
    migration_id: MigrationId
    vm: VmName
    bandwidth_mib_s: BandwidthMiBs


class AgentAbortRequest(Message, frozen=True, kw_only=True, tag="agent.migration.abort.request"):
    migration_id: MigrationId
    vm: VmName


class CleanupRequest(Message, frozen=True, kw_only=True, tag="agent.migration.cleanup.request"):
    """Remove what a migration left on this host.

    ``remove_domain``: destroy (if running) and undefine the VM here — only ever asked of the
    host that must NOT keep it. ``delete_paths``: disk files to delete; the agent refuses any path
    that a domain still defined on this host uses.
    """

    migration_id: MigrationId
    vm: VmName
    remove_domain: bool = False
    delete_paths: list[str] = []


class CleanupReply(Message, frozen=True, kw_only=True, tag="agent.migration.cleanup.reply"):
    domain_removed: bool = False
    deleted_paths: list[str] = []
    kept_paths: list[str] = []  # refused (in use) or already gone, with reasons in ``detail``
    detail: str = ""


class Ack(Message, frozen=True, kw_only=True, tag="ack"):
    """A request that needs no data back was carried out."""

    detail: str = ""


class SourceProgress(Message, frozen=True, kw_only=True, tag="agent.migration.progress"):
    migration_id: MigrationId
    host_id: HostId
    at: datetime
    stats: JobStats


class SourceFinished(Message, frozen=True, kw_only=True, tag="agent.migration.finished"):
    """The source's migrate call returned: ``error`` is None on success."""

    migration_id: MigrationId
    host_id: HostId
    at: datetime
    stats: JobStats | None = None  # the completed job's figures
    error: ErrorReply | None = None
    aborted: bool = False  # the job was cancelled by an abort request
