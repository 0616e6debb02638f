"""Migrations and storage moves by id, and at most one active job per VM.

The registry only indexes runners; each runner owns its record. A runner counts as active until
its ``done`` event is set. Finished migrations stay listed (``baton jobs``) up to ``keep``, oldest
dropped first. Each job gets a number as it is added (1, 2, ...): :meth:`Registry.page` lists
newest first and continues below a number, so a page boundary stays put while jobs come and go.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import MigrationRecord
from baton.schemas.storage import StorageMoveRecord

KEEP_FINISHED = 1000
JobRecord = MigrationRecord | StorageMoveRecord


class Job(Protocol):
    """What the registry needs of a runner: a live migration's or a storage move's."""

    done: asyncio.Event

    @property
    def record(self) -> JobRecord: ...

    def request_abort(self, reason: str) -> None: ...

    async def set_bandwidth(self, mib_s: int) -> JobRecord: ...


class StoredJob:
    """A record read back from the job store at start-up: listed, but run by nobody here."""

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.done = asyncio.Event()
        self.done.set()  # nothing runs it in this process

    def request_abort(self, reason: str) -> None:
        raise self._not_run_here()

    async def set_bandwidth(self, mib_s: int) -> JobRecord:
        raise self._not_run_here()

    def _not_run_here(self) -> BatonError:
        return BatonError(ErrorCode.CONFLICT, f"{self.record.migration_id} ran under an "
                          f"earlier coordinator (last phase {self.record.phase}); this one only "
                          "lists it")


class Registry:
    def __init__(self, keep: int = KEEP_FINISHED) -> None:
        self._runners: dict[str, Job] = {}  # insertion order = age
        self._numbers: dict[str, int] = {}  # migration id -> its number, in order of arrival
        self._added = 0
        self._keep = keep

    def active_for(self, vm: str) -> Job | None:
        return next((r for r in self.active() if r.record.vm == vm), None)

    def refuse_if_busy(self, vm: str) -> None:
        busy = self.active_for(vm)
        if busy is not None:
            raise BatonError(ErrorCode.CONFLICT, f"{vm} is already migrating "
                             f"({busy.record.migration_id}, {busy.record.phase})",
                             migration_id=busy.record.migration_id)

    def add(self, runner: Job) -> None:
        """Register a new migration; ``conflict`` if its VM is already migrating."""
        self.refuse_if_busy(runner.record.vm)
        self._added += 1
        self._runners[runner.record.migration_id] = runner
        self._numbers[runner.record.migration_id] = self._added
        self._forget_oldest()

    def restore(self, records: list[JobRecord]) -> None:
        """List records kept from before a restart (oldest first), below every new job."""
        for record in sorted(records, key=lambda r: r.created_at):
            if record.migration_id not in self._runners:
                self._added += 1
                self._runners[record.migration_id] = StoredJob(record)
                self._numbers[record.migration_id] = self._added
        self._forget_oldest()

    def take_over(self, job: Job) -> None:
        """Replace a restored record's entry by the job that now settles it (same place)."""
        self._runners[job.record.migration_id] = job

    def get(self, migration_id: str) -> Job:
        runner = self._runners.get(migration_id)
        if runner is None:
            raise BatonError(ErrorCode.NOT_FOUND, f"no migration {migration_id!r}")
        return runner

    def all(self) -> list[Job]:
        return list(self._runners.values())

    def active(self) -> list[Job]:
        return [r for r in self._runners.values() if not r.done.is_set()]

    def records(self, migration_id: str | None = None,
                active_only: bool = False) -> list[JobRecord]:
        if migration_id is not None:
            return [self.get(migration_id).record]
        runners = self.active() if active_only else list(self._runners.values())
        return [r.record for r in runners]

    def page(self, below: int | None, limit: int, max_bytes: int,
             active_only: bool = False) -> tuple[list[JobRecord], int | None]:
        """Up to ``limit`` records, newest first, numbered below ``below`` (None: from the newest),
        stopping before their encoded size passes ``max_bytes`` (one record at least); and the
        ``below`` of the next page, None when no older record is left."""
        taken: list[tuple[int, JobRecord]] = []
        size = 0
        for key, runner in reversed(self._runners.items()):
            number = self._numbers[key]
            if (below is not None and number >= below) or (active_only and runner.done.is_set()):
                continue
            size += len(encode(runner.record))
            if len(taken) == limit or (taken and size > max_bytes):
                return [record for _, record in taken], taken[-1][0]
            taken.append((number, runner.record))
        return [record for _, record in taken], None

    def _forget_oldest(self) -> None:
        finished = [k for k, r in self._runners.items() if r.done.is_set()]
        for key in finished[: max(0, len(finished) - self._keep)]:
            del self._runners[key]
            del self._numbers[key]
