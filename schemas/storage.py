"""Storage-move messages: moving a running VM's disks to another storage pool on the same host.

Public (``baton.coordinator.storage.move``): :class:`StorageMoveRequest`, answered at once with
:class:`StorageMoveAccepted` (or, for ``dry_run``, :class:`StorageCheckReport`) or an error.
A storage move is tracked like a migration: it has a migration id, the same :class:`Phase` values
(checking → preparing → migrating (copying) → completing (pivot) → succeeded | failed | aborted),
:class:`StoragePhaseEvent` on ``baton.migrations.<id>.phase`` and the migrations'
:class:`schemas.migration.ProgressEvent` on ``baton.migrations.<id>.progress``. ``baton.coordinator
.abort`` and ``.jobs`` serve storage moves too (records in ``JobsReply.storage_moves``).

Agent side (``baton.agent.<host>.storage.move|abort``): the host's agent runs the whole
copy → ready → pivot → verify → delete sequence and reports raw figures as
:class:`schemas.migration.SourceProgress` on ``baton.migrations.<id>.source.progress``, its steps as
:class:`StorageStageEvent` on ``...storage.stage`` and the outcome, once, as
:class:`StorageMoveFinished` on ``...storage.finished``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import msgspec

from baton.schemas.base import HostId, Message, NonNegativeInt, VmName
from baton.schemas.errors import ErrorReply
from baton.schemas.events import JobStats
from baton.schemas.job import BandwidthMiBs, CheckStatus, MigrationId, Phase
from baton.schemas.limits import DISKS_MAX, NAME_MAX, Name, PathText

PoolName = Annotated[str, msgspec.Meta(min_length=1, max_length=NAME_MAX)]
DiskTarget = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class StorageStage(StrEnum):
    COPYING = "copying"  # every block copy runs; the guest still uses the old files
    READY = "ready"  # every copy mirrors in sync; the agent pivots next (no abort from here on)
    PIVOTED = "pivoted"  # the guest uses the new files; verifying them, then deleting the old


class StorageCheckName(StrEnum):
    VM = "vm"  # the VM exists on the host and runs (a block copy needs a running guest)
    DISK = "disk"  # the disk exists, is a writable file, not shared, of a format that is kept
    POOL = "pool"  # the pool exists, is active, is not where the disk is, and has room


# --- public -----------------------------------------------------------------------------------


class StorageMoveRequest(Message, frozen=True, kw_only=True, tag="coordinator.storage.move.request"):
    vm: VmName
    destination_pool: PoolName
    disk: DiskTarget | None = None  # target such as vda; None = every movable disk of the VM
    host: HostId | None = None  # found by asking the agents when omitted
    bandwidth_mib_s: BandwidthMiBs | None = None  # cap per disk copy
    keep_source: bool = False  # keep the old files after the pivot
    dry_run: bool = False  # run the checks only and answer with the report


class DiskMove(Message, frozen=True, kw_only=True, tag="storage.disk_move"):
    """One disk's move: from where, to where, in which format (the format is kept)."""

    target: Name
    source_path: PathText
    destination_path: PathText
    format: Name
    capacity_bytes: NonNegativeInt = 0  # virtual size
    allocation_bytes: NonNegativeInt = 0


class StorageCheckResult(Message, frozen=True, kw_only=True, tag="coordinator.storage.check_result"):
    name: StorageCheckName
    status: CheckStatus
    reason: str  # what was found and, for a failure, what to do about it


class StorageCheckReport(Message, frozen=True, kw_only=True, tag="coordinator.storage.check.reply"):
    vm: str
    host: str
    destination_pool: str
    ok: bool  # no check failed
    checks: list[StorageCheckResult] = []
    disks: list[DiskMove] = []  # what a move would do


class StorageMoveAccepted(Message, frozen=True, kw_only=True, tag="coordinator.storage.move.accepted"):
    migration_id: MigrationId
    vm: str
    host: str
    destination_pool: str
    disks: list[DiskMove] = []


class DiskOutcome(Message, frozen=True, kw_only=True, tag="storage.disk_outcome"):
    target: str
    path: str  # the file the VM uses now
    pivoted: bool = False
    source_deleted: bool = False
    copy_removed: bool = False  # the partial copy was deleted after an abort or failure
    detail: str = ""


class StorageMoveRecord(Message, frozen=True, kw_only=True, tag="coordinator.storage_move"):
    migration_id: MigrationId
    vm: str
    host: str
    destination_pool: str
    phase: Phase
    request: StorageMoveRequest
    created_at: datetime
    updated_at: datetime
    checks: list[StorageCheckResult] = []
    disks: list[DiskMove] = []
    bandwidth_mib_s: int | None = None
    pivoted_at: datetime | None = None  # when the agent reported every disk switched
    result: JobStats | None = None  # the copy's last figures
    outcome: list[DiskOutcome] = []  # per disk, from the agent
    error: ErrorReply | None = None


class StoragePhaseEvent(Message, frozen=True, kw_only=True, tag="storage.phase"):
    migration_id: MigrationId
    phase: Phase
    previous: Phase | None
    reason: str = ""
    at: datetime
    record: StorageMoveRecord


# --- agent side -------------------------------------------------------------------------------


class AgentStorageMoveRequest(Message, frozen=True, kw_only=True, tag="agent.storage.move.request"):
    """Copy, pivot and verify ``disks`` of a running VM on this host (answers at once)."""

    migration_id: MigrationId
    vm: VmName
    disks: Annotated[list[DiskMove], msgspec.Meta(max_length=DISKS_MAX)]
    bandwidth_mib_s: BandwidthMiBs | None = None
    keep_source: bool = False
    progress_interval_ms: Annotated[int, msgspec.Meta(ge=100, le=10_000)] = 500


class AgentStorageMoveReply(Message, frozen=True, kw_only=True, tag="agent.storage.move.reply"):
    migration_id: MigrationId


class AgentStorageAbortRequest(Message, frozen=True, kw_only=True, tag="agent.storage.abort.request"):
    """Cancel a move before its pivot. ``disks`` lets an agent that restarted (and so forgot the
    move) still cancel the copy jobs and remove the partial copies it names."""

    migration_id: MigrationId
    vm: VmName
    disks: Annotated[list[DiskMove], msgspec.Meta(max_length=DISKS_MAX)] = []


class StorageStageEvent(Message, frozen=True, kw_only=True, tag="agent.storage.stage"):
    migration_id: MigrationId
    host_id: HostId
    at: datetime
    stage: StorageStage
    detail: str = ""


class StorageMoveFinished(Message, frozen=True, kw_only=True, tag="agent.storage.finished"):
    """The agent's outcome: ``error`` is None on success."""

    migration_id: MigrationId
    host_id: HostId
    at: datetime
    stats: JobStats | None = None
    disks: list[DiskOutcome] = []
    error: ErrorReply | None = None
    aborted: bool = False
