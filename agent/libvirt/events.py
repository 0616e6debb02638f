"""libvirt's domain events (lifecycle, job completed, migration iteration, block job) as Baton
events, handed from libvirt's event thread to the agent's ``emit`` on the asyncio loop.

Threading contract: the callbacks run on libvirt's event thread (:mod:`.connection`); they only
build the message and hand it to the loop with ``call_soon_threadsafe``. A failing conversion is
logged and dropped: it must never kill that thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import libvirt
import structlog

from baton.agent import event_names
from baton.agent.hypervisor import EventSink
from baton.agent.jobstats import job_stats
from baton.schemas.base import utc_now
from baton.schemas.events import (
    BlockJobEvent,
    JobCompletedEvent,
    LifecycleEvent,
    MigrationIterationEvent,
)

log = structlog.get_logger(__name__)


class DomainEvents:
    """The event callbacks of one host; :meth:`register` subscribes them on each new connection."""

    def __init__(self, host_id: str, emit: EventSink) -> None:
        self._host_id = host_id
        self._emit = emit
        self._loop: asyncio.AbstractEventLoop | None = None

    def register(self, conn: libvirt.virConnect, loop: asyncio.AbstractEventLoop) -> list[int]:
        """Subscribe every callback the driver supports; the ids deregister them."""
        self._loop = loop
        handlers: list[tuple[int, Callable[..., None]]] = [
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_job_completed),
            (libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, self._on_migration_iteration),
            (libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self._on_block_job),
        ]
        ids = []
        for event_id, handler in handlers:
            try:
                ids.append(conn.domainEventRegisterAny(None, event_id, handler, None))
            except libvirt.libvirtError as exc:  # the test driver lacks some event types
                log.info("libvirt_event_unsupported", event_id=event_id, error=exc.get_error_message())
        return ids

    # --- callbacks (libvirt's event thread) ---------------------------------------------------

    def _hand_over(self, build: Callable[[], Any]) -> None:
        try:
            event = build()
        except Exception:  # a bug here must not kill libvirt's event thread
            log.exception("libvirt_event_conversion_failed")
            return
        if event is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._emit, event)

    def _on_lifecycle(self, _c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
        def build() -> LifecycleEvent | None:
            named = event_names.lifecycle(event, detail)
            if named is None:
                return None
            return LifecycleEvent(host_id=self._host_id, vm=dom.name(), uuid=dom.UUIDString(),
                                  event=named[0], detail=named[1], at=utc_now())
        self._hand_over(build)

    def _on_job_completed(self, _c: Any, dom: Any, params: dict[str, Any], _o: Any) -> None:
        self._hand_over(lambda: JobCompletedEvent(
            host_id=self._host_id, vm=dom.name(), uuid=dom.UUIDString(),
            stats=job_stats(params, completed=True), at=utc_now()))

    def _on_migration_iteration(self, _c: Any, dom: Any, iteration: int, _o: Any) -> None:
        self._hand_over(lambda: MigrationIterationEvent(
            host_id=self._host_id, vm=dom.name(), uuid=dom.UUIDString(),
            iteration=iteration, at=utc_now()))

    def _on_block_job(self, _c: Any, dom: Any, disk: str, kind: int, status: int, _o: Any) -> None:
        def build() -> BlockJobEvent | None:
            named = event_names.block_job_status(status)
            if named is None:
                return None
            return BlockJobEvent(host_id=self._host_id, vm=dom.name(), uuid=dom.UUIDString(),
                                 disk=disk, job_type=event_names.block_job_type(kind),
                                 status=named, at=utc_now())
        self._hand_over(build)
