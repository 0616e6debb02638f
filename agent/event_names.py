"""libvirt's event enums as names (pure tables, so agent/libvirt/ stays the only libvirt importer).

Values follow libvirt's ``virDomainEventType`` and per-type detail enums, the block job status and
type enums, and ``virDomainJobOperation``; an unknown value (from a newer libvirt) becomes
``"unknown_<n>"`` rather than failing.
"""

from __future__ import annotations

from baton.schemas.events import BlockJobStatus, LifecycleKind

LIFECYCLE: tuple[LifecycleKind, ...] = (
    LifecycleKind.DEFINED,
    LifecycleKind.UNDEFINED,
    LifecycleKind.STARTED,
    LifecycleKind.SUSPENDED,
    LifecycleKind.RESUMED,
    LifecycleKind.STOPPED,
    LifecycleKind.SHUTDOWN,
    LifecycleKind.PMSUSPENDED,
    LifecycleKind.CRASHED,
)

_DETAILS: dict[LifecycleKind, tuple[str, ...]] = {
    LifecycleKind.DEFINED: ("added", "updated", "renamed", "from_snapshot"),
    LifecycleKind.UNDEFINED: ("removed", "renamed"),
    LifecycleKind.STARTED: ("booted", "migrated", "restored", "from_snapshot", "wakeup"),
    LifecycleKind.SUSPENDED: (
        "paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot",
        "api_error", "postcopy", "postcopy_failed",
    ),
    LifecycleKind.RESUMED: ("unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed"),
    LifecycleKind.STOPPED: (
        "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot",
    ),
    LifecycleKind.SHUTDOWN: ("finished", "guest", "host"),
    LifecycleKind.PMSUSPENDED: ("memory", "disk"),
    LifecycleKind.CRASHED: ("panicked", "crashloaded"),
}

_BLOCK_JOB_STATUS = (
    BlockJobStatus.COMPLETED,
    BlockJobStatus.FAILED,
    BlockJobStatus.CANCELED,
    BlockJobStatus.READY,
)
_BLOCK_JOB_TYPE = ("unknown", "pull", "copy", "commit", "active_commit", "backup")
_JOB_OPERATION = (
    "unknown", "start", "save", "restore", "migration_in", "migration_out",
    "snapshot", "snapshot_revert", "dump", "backup", "snapshot_delete",
)


def lifecycle(event: int, detail: int) -> tuple[LifecycleKind, str] | None:
    """(kind, detail name) for a lifecycle event, or None for an event type we do not know."""
    if not 0 <= event < len(LIFECYCLE):
        return None
    kind = LIFECYCLE[event]
    return kind, _name(_DETAILS[kind], detail)


def block_job_status(status: int) -> BlockJobStatus | None:
    return _BLOCK_JOB_STATUS[status] if 0 <= status < len(_BLOCK_JOB_STATUS) else None


def block_job_type(job_type: int) -> str:
    return _name(_BLOCK_JOB_TYPE, job_type)


def job_operation(operation: int) -> str:
    return _name(_JOB_OPERATION, operation)


def _name(names: tuple[str, ...], value: int) -> str:
    return names[value] if 0 <= value < len(names) else f"unknown_{value}"
