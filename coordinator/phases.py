"""A migration's phases: the one table of allowed moves and the one ``transition()``.

The coordinator is the only writer of a :class:`MigrationRecord` (or, for a storage move, a
:class:`StorageMoveRecord`: same phases, same table). :class:`PhaseTracker` holds the
current record; ``transition()`` validates the move against :data:`MOVES`, timestamps, logs and
writes the record to the job store (coordinator/store.py: JetStream KV, so it outlives this
process) and only then publishes a :class:`PhaseEvent` (with the whole record) on
``baton.migrations.<id>.phase``.
Terminal phases absorb everything: a move out of one is ignored and logged, never raised, so a late
outcome (an abort racing a success) cannot resurrect a finished migration. A move the table does
not allow out of a live phase is a bug and raises :class:`IllegalMove`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec
import structlog

from baton.coordinator import metrics
from baton.coordinator.store import JobStore
from baton.schemas.base import utc_now
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import TERMINAL_PHASES, MigrationRecord, Phase, PhaseEvent
from baton.schemas.storage import StorageMoveRecord, StoragePhaseEvent
from baton.schemas.subjects import MigrationEvent, Subjects

log = structlog.get_logger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]

MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.QUEUED, Phase.CHECKING, Phase.FAILED, Phase.ABORTED}),
    Phase.QUEUED: frozenset({Phase.CHECKING, Phase.FAILED, Phase.ABORTED}),
    Phase.CHECKING: frozenset({Phase.PREPARING, Phase.FAILED, Phase.ABORTED}),
    Phase.PREPARING: frozenset({Phase.MIGRATING, Phase.FAILED, Phase.ABORTED}),
    Phase.MIGRATING: frozenset({Phase.COMPLETING, Phase.FAILED, Phase.ABORTED}),
    Phase.COMPLETING: frozenset({Phase.SUCCEEDED, Phase.FAILED}),
    Phase.SUCCEEDED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.ABORTED: frozenset(),
}


class IllegalMove(RuntimeError):
    """A phase move the table does not allow (a coordinator bug)."""


def is_terminal(phase: Phase) -> bool:
    return phase in TERMINAL_PHASES


def moved(record: Record, to: Phase, now: datetime, **changes: Any) -> Record:
    """The record after moving to ``to`` (pure). Raises :class:`IllegalMove`."""
    if to not in MOVES[record.phase]:
        raise IllegalMove(f"{record.phase} -> {to} is not an allowed move")
    return msgspec.structs.replace(record, phase=to, updated_at=now, **changes)


Record = TypeVar("Record", MigrationRecord, StorageMoveRecord)


def phase_event(record: Record, previous: Phase | None,
                reason: str) -> PhaseEvent | StoragePhaseEvent:
    """The event a phase change publishes: the record's own kind (a migration or a storage move)."""
    if isinstance(record, StorageMoveRecord):
        return StoragePhaseEvent(migration_id=record.migration_id, phase=record.phase,
                                 previous=previous, reason=reason, at=record.updated_at,
                                 record=record)
    return PhaseEvent(migration_id=record.migration_id, phase=record.phase, previous=previous,
                      reason=reason, at=record.updated_at, record=record)


class PhaseTracker(Generic[Record]):
    """The live record of one migration (or storage move) and the only place its phase changes."""

    def __init__(self, record: Record, subjects: Subjects, publish: Publish,
                 clock: Callable[[], datetime] = utc_now, store: JobStore | None = None) -> None:
        self._record: Record = record
        self._subjects = subjects
        self._publish = publish
        self._clock = clock
        self._store = store
        # The latest version did not reach the store (NATS away too long): the periodic
        # reconcile writes it again (Coordinator.reconcile), so a restart does not go back.
        self.unsaved = False

    @property
    def record(self) -> Record:
        return self._record

    @property
    def phase(self) -> Phase:
        return self._record.phase

    def update(self, **changes: Any) -> Record:
        """Change fields other than the phase (bandwidth in force, switch-over time, ...)."""
        self._record = msgspec.structs.replace(self._record, updated_at=self._clock(), **changes)
        return self._record

    async def announce(self) -> None:
        """Store and publish the current phase once (the first, ``pending``, event)."""
        await self._keep()
        metrics.accepted(self._record)
        await self._emit(None, "accepted")

    async def transition(self, to: Phase, reason: str = "", **changes: Any) -> bool:
        """Move to ``to``; False (and nothing changes) when the migration already finished."""
        previous = self._record.phase
        if is_terminal(previous):
            log.info("transition_ignored", phase=previous, to=to, reason=reason)
            return False
        self._record = moved(self._record, to, self._clock(), **changes)
        log.info("phase_changed", phase=to, previous=previous, reason=reason)
        metrics.moved(self._record, previous)
        await self._keep()  # stored before anyone hears of it
        await self._emit(previous, reason)
        return True

    async def save(self) -> bool:
        """Write the current version to the store again; True once it is there."""
        await self._keep()
        return not self.unsaved

    async def _keep(self) -> None:
        if self._store is None:
            return
        try:
            await self._store.put(self._record)
        except BatonError as exc:
            # Another coordinator wrote the record: it is not ours to write again.
            self.unsaved = exc.code != ErrorCode.CONFLICT
            log.error("record_not_stored", phase=self._record.phase, error=exc.message)
        except Exception as exc:  # the migration goes on; its record is not durable now
            self.unsaved = True
            log.error("record_not_stored", phase=self._record.phase, error=str(exc) or
                      type(exc).__name__)
        else:
            self.unsaved = False

    async def _emit(self, previous: Phase | None, reason: str) -> None:
        record = self._record
        event = phase_event(record, previous, reason)
        subject = self._subjects.migration(record.migration_id, MigrationEvent.PHASE)
        try:
            await self._publish(subject, encode(event))
        except Exception as exc:  # a lost event must never stop the migration itself
            log.warning("phase_event_not_published", error=type(exc).__name__)
