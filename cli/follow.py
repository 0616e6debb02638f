"""What the job-starting commands (``baton migrate``, ``baton move-disk``) share: asking the
coordinator, printing JSON, the pre-flight report, and following a job with a progress bar to
its outcome (a job that ends failed or aborted, or a report with a failed check, exits 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from nats.aio.client import Client

from baton.cli import migrate_render as render
from baton.cli.common import ExitCode, Settings, check_host
from baton.cli.render import make_console
from baton.mesh import client
from baton.schemas import codec, timeouts
from baton.schemas.codec import decode_any
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    TERMINAL_PHASES,
    JobsReply,
    JobsRequest,
    MigrateAccepted,
    MigrationRecord,
    Phase,
    PhaseEvent,
    ProgressEvent,
)
from baton.schemas.storage import StorageMoveAccepted, StorageMoveRecord, StoragePhaseEvent
from baton.schemas.subjects import CoordinatorEndpoint, MigrationEvent

AnyPhaseEvent = PhaseEvent | StoragePhaseEvent  # a migration's or a storage move's
AnyRecord = MigrationRecord | StorageMoveRecord
AnyAccepted = MigrateAccepted | StorageMoveAccepted

RECHECK_AFTER_S = 15.0  # no event for this long: ask the coordinator for the record


def optional_host(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else check_host(ctx, param, value)


async def ask(nc: Client, settings: Settings, endpoint: CoordinatorEndpoint, message: Any,
              reply_type: Any, timeout_s: float) -> Any:
    """One request to the coordinator; no coordinator at all is ``unavailable`` (exit 4)."""
    try:
        return await client.request(nc, settings.subjects.coordinator(endpoint), message,
                                    reply_type, timeout_s)
    except (client.NoResponders, client.NoReply) as exc:
        raise BatonError(ErrorCode.UNAVAILABLE, f"the coordinator does not answer ({exc.message});"
                         " is baton-coordinator running?") from None


def emit_json(message: Any) -> None:
    click.echo(codec.encode(message).decode())


def show_report(settings: Settings, report: Any, table: Callable[[Any], Any]) -> None:
    """A pre-flight report as JSON or as ``table(report)``; a failed check exits 1."""
    if settings.json:
        emit_json(report)
    else:
        make_console().print(table(report))
    if not report.ok:
        raise SystemExit(ExitCode.FAILED)


async def start_and_follow(nc: Client, settings: Settings, endpoint: CoordinatorEndpoint,
                           request: Any, accepted_type: type[AnyAccepted], timeout_s: float, *,
                           detach: bool, show_accepted: Callable[[Settings, Any], None],
                           outcome_line: Callable[[Any], Any]) -> None:
    """Start a job and follow it to its outcome (or, detached, just say it started)."""
    events = await nc.subscribe(settings.subjects.migrations_filter())  # before: miss nothing
    try:
        accepted = await ask(nc, settings, endpoint, request, accepted_type, timeout_s)
        if detach:
            return show_accepted(settings, accepted)
        record = await follow(nc, settings, events, accepted)
    finally:
        await events.unsubscribe()
    if settings.json:
        emit_json(record)
    else:
        make_console().print(outcome_line(record))
    if record.phase != Phase.SUCCEEDED:
        raise SystemExit(ExitCode.FAILED)


async def follow(nc: Client, settings: Settings, events: Any, accepted: AnyAccepted) -> AnyRecord:
    """Draw the progress bar from this job's events until a terminal phase."""
    console = make_console(stderr=True)
    with render.progress_bar(console) as bar:
        task = bar.add_task(accepted.vm, total=None, phase=Phase.PENDING, rate="- MiB/s",
                            remaining=None, eta_s=None)
        while True:
            try:
                msg = await events.next_msg(timeout=RECHECK_AFTER_S)
            except TimeoutError:
                record = await _record(nc, settings, accepted.migration_id)
                if record.phase in TERMINAL_PHASES:
                    return record
                continue
            event = _migration_event(msg, accepted.migration_id)
            if isinstance(event, AnyPhaseEvent):
                bar.update(task, phase=event.phase)
                if event.phase == Phase.SUCCEEDED:
                    bar.update(task, completed=bar.tasks[0].total or 0, remaining=0, eta_s=0)
                if event.phase in TERMINAL_PHASES:
                    return event.record
            elif isinstance(event, ProgressEvent):
                _show_progress(bar, task, event)


def _show_progress(bar: Any, task: Any, event: ProgressEvent) -> None:
    stats = event.stats
    done, left = stats.data_processed_bytes or 0, stats.data_remaining_bytes
    # Dirty pages are sent again each iteration, so processed outgrows the guest's size:
    # measure against processed + remaining, which only ends at the end.
    bar.update(task, phase=event.phase, completed=done,
               total=None if left is None else done + left, rate=render.rate(stats),
               remaining=left, eta_s=event.eta_s)


def _migration_event(msg: Any, migration_id: str) -> AnyPhaseEvent | ProgressEvent | None:
    """This migration's phase or progress event; None for anything else on the wildcard."""
    _, _, event = msg.subject.partition(f".{migration_id}.")
    return decode_job_event(event, msg.data) if event else None


def decode_job_event(event: str, data: bytes) -> AnyPhaseEvent | ProgressEvent | None:
    """A job's phase or progress event by the last subject token; None for any other event."""
    if event == MigrationEvent.PHASE:
        return decode_any(data, AnyPhaseEvent)
    if event == MigrationEvent.PROGRESS:
        return decode_any(data, ProgressEvent)
    return None


async def _record(nc: Client, settings: Settings, migration_id: str) -> AnyRecord:
    reply = await ask(nc, settings, CoordinatorEndpoint.JOBS,
                      JobsRequest(migration_id=migration_id), JobsReply, timeouts.COORDINATOR_JOBS)
    return [*reply.migrations, *reply.storage_moves][0]
