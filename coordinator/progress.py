"""Relaying the source agent's job statistics as :class:`ProgressEvent`, at least once a second.

The subscription callback only hands a :class:`SourceProgress` to :meth:`ProgressPump.offer`
(synchronous, never blocks); :meth:`ProgressPump.run` publishes each new figure at once and, when
the agent is silent, re-publishes the last figures with a fresh timestamp every
``PROGRESS_MAX_GAP`` seconds so a watcher always sees liveness. Stale reports (another migration
id) are dropped. ``silent_for()`` tells the runner how long the source agent has said nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

import structlog

from baton.coordinator.phases import PhaseTracker, Publish
from baton.schemas import timeouts
from baton.schemas.base import utc_now
from baton.schemas.codec import encode
from baton.schemas.events import JobStats
from baton.schemas.migration import MigrationRecord, Phase, ProgressEvent, SourceProgress
from baton.schemas.subjects import MigrationEvent, Subjects

log = structlog.get_logger(__name__)


def progress_event(migration_id: str, phase: Phase, stats: JobStats, at: datetime,
                   bandwidth_mib_s: int | None, eta_s: float | None = None) -> ProgressEvent:
    return ProgressEvent(migration_id=migration_id, phase=phase, at=at, stats=stats,
                         bandwidth_mib_s=bandwidth_mib_s, eta_s=eta_s)


def note_source_steps(tracker: PhaseTracker, escalations: list[str], postcopy: bool) -> None:
    """What the source did to end the migration (its progress, or its outcome for the steps
    after the last progress report) into the record; a post-copy switch is never undone."""
    record = tracker.record
    assert isinstance(record, MigrationRecord)
    if escalations != record.escalations:
        for step in escalations[len(record.escalations):]:
            log.info("source_escalated", step=step)
        tracker.update(escalations=list(escalations))
    if postcopy and not record.postcopy:
        log.warning("source_in_postcopy", note="no abort or roll-back from here on")
        tracker.update(postcopy=True)


class ProgressPump:
    def __init__(self, tracker: PhaseTracker, subjects: Subjects, publish: Publish,
                 max_gap: float = timeouts.PROGRESS_MAX_GAP,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._tracker = tracker
        self._subject = subjects.migration(tracker.record.migration_id, MigrationEvent.PROGRESS)
        self._publish = publish
        self._max_gap = max_gap
        self._clock = clock
        self._fresh = asyncio.Event()
        self._heard_at = time.monotonic()
        self.latest = JobStats()
        self.latest_eta_s: float | None = None
        self.published = 0

    def offer(self, progress: SourceProgress) -> None:
        if progress.migration_id != self._tracker.record.migration_id:
            log.info("stale_progress_dropped", from_migration=progress.migration_id)
            return
        self.latest = progress.stats
        self.latest_eta_s = progress.eta_s
        if isinstance(self._tracker.record, MigrationRecord):
            note_source_steps(self._tracker, progress.escalations, progress.postcopy)
        self.heard()
        self._fresh.set()

    def heard(self) -> None:
        """The source agent said something (progress or otherwise)."""
        self._heard_at = time.monotonic()

    def silent_for(self) -> float:
        return time.monotonic() - self._heard_at

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._max_gap):
                    await self._fresh.wait()
            except TimeoutError:
                pass
            self._fresh.clear()
            await self.publish_latest()

    async def publish_latest(self) -> None:
        record = self._tracker.record
        event = progress_event(record.migration_id, record.phase, self.latest, self._clock(),
                               record.bandwidth_mib_s, self.latest_eta_s)
        try:
            await self._publish(self._subject, encode(event))
            self.published += 1
        except Exception as exc:  # a lost progress figure must never stop the migration
            log.warning("progress_event_not_published", error=type(exc).__name__)
