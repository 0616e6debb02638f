"""What every long-running job Baton tracks shares: its id, its phases and its pre-flight checks.

Live migrations (:mod:`schemas.migration`) and storage moves (:mod:`schemas.storage`) use the same
phase values; for a storage move ``preparing`` is the agent starting the copy, ``migrating`` the
copy itself, ``completing`` the pivot onto the new files and their verification.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

from baton.schemas.base import Message

MIGRATION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # also names files (agent/ledger.py)
MigrationId = Annotated[str, msgspec.Meta(pattern=MIGRATION_ID_PATTERN)]
BandwidthMiBs = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class Phase(StrEnum):
    PENDING = "pending"  # accepted, not started
    # Waiting for a slot under the coordinator's limits (migrations per source, per destination,
    # in the cluster); nothing touched yet, abortable. Storage moves never queue.
    QUEUED = "queued"
    CHECKING = "checking"  # pre-flight checks run; nothing touched yet
    PREPARING = "preparing"  # destination prepares (pre-creates disks for a copy)
    MIGRATING = "migrating"  # libvirt moves state (and disks); the guest runs on the source
    COMPLETING = "completing"  # guest resumed on the destination; confirming and cleaning up
    SUCCEEDED = "succeeded"  # running on the destination, confirmed from both sides
    FAILED = "failed"  # stopped by an error; the guest still runs on the source
    ABORTED = "aborted"  # cancelled on request; the guest still runs on the source


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED})


class CheckStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


class CheckName(StrEnum):
    HOSTS = "hosts"  # source and destination are different, live hosts
    VM = "vm"  # the VM exists on the source, not on the destination, in a movable state
    STORAGE = "storage"
    NETWORK = "network"
    CPU = "cpu"
    MEMORY = "memory"
    DEVICES = "devices"  # no device that blocks migration
    ENCRYPTION = "encryption"  # the migration stream is TLS (a warning when it is not)
    CONVERGENCE = "convergence"  # how the copy will end: pre-copy, or post-copy (a warning)


class CheckResult(Message, frozen=True, kw_only=True, tag="coordinator.check_result"):
    name: CheckName
    status: CheckStatus
    reason: str  # what was found and, for a failure, what to do about it
