"""The bookkeeping the agent's long jobs share (a migration's source side, a storage move): at
most one job per id and per VM, each run in a task of the service's TaskGroup and forgotten once
it has ended, its reports published on the job's subjects (``baton.migrations.<id>.…``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Generic, TypeVar

import structlog

from baton.schemas.base import utc_now
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import JobStats
from baton.schemas.migration import SourceProgress
from baton.schemas.subjects import MigrationEvent, Subjects

log = structlog.get_logger(__name__)
Publish = Callable[[str, bytes], Awaitable[None]]
JobT = TypeVar("JobT")


class RunningJobs(Generic[JobT]):
    """The jobs running on this host, by migration id; a subclass runs them."""

    KIND: ClassVar[str]  # "migration", "storage move": for messages
    VM_BUSY: ClassVar[str]  # why a VM cannot start a second job, after its name

    def __init__(self, host_id: str, subjects: Subjects, publish: Publish,
                 tasks: asyncio.TaskGroup) -> None:
        self._host_id = host_id
        self._subjects = subjects
        self._publish = publish
        self._tasks = tasks
        self._running: dict[str, JobT] = {}

    @property
    def running_count(self) -> int:
        return len(self._running)

    def runs(self, migration_id: str, vm: str) -> bool:
        """This agent runs job ``migration_id`` of ``vm`` now."""
        job = self._running.get(migration_id)
        return job is not None and _vm_of(job) == vm

    def _refuse_if_busy(self, migration_id: str, vm: str) -> None:
        if migration_id in self._running:
            raise BatonError(ErrorCode.CONFLICT, f"{self.KIND} {migration_id} already runs")
        if any(_vm_of(job) == vm for job in self._running.values()):
            raise BatonError(ErrorCode.CONFLICT, f"{vm} {self.VM_BUSY}")

    def _launch(self, migration_id: str, job: JobT, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for ``job`` in the service's TaskGroup; forget the job when it ends."""
        self._running[migration_id] = job
        self._tasks.create_task(self._forget_after(migration_id, work))

    async def _forget_after(self, migration_id: str, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        finally:
            del self._running[migration_id]

    async def _send(self, migration_id: str, event: MigrationEvent, message: object) -> None:
        await self._publish(self._subjects.agent_report(self._host_id, migration_id, event),
                            encode(message))

    async def _send_progress(self, migration_id: str, stats: JobStats,
                             escalations: list[str] | None = None,
                             postcopy: bool = False, eta_s: float | None = None) -> None:
        await self._send(migration_id, MigrationEvent.SOURCE_PROGRESS, SourceProgress(
            migration_id=migration_id, host_id=self._host_id, at=utc_now(), stats=stats,
            escalations=escalations or [], postcopy=postcopy, eta_s=eta_s))


def _vm_of(job: Any) -> str:
    return job.request.vm


def crashed(event: str, migration_id: str, doing: str) -> BatonError:
    """Log the exception being handled; a bug must not take the agent's TaskGroup down."""
    log.exception(event, migration_id=migration_id)
    return BatonError(ErrorCode.INTERNAL, f"the agent failed while {doing}; its log has the "
                      "details")

