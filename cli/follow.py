"""What the job-starting commands (``baton migrate``, ``baton move-disk``) share: asking the
coordinator, printing JSON, the pre-flight report, and following a job with a progress bar to
its outcome (a job that ends failed or aborted, or a report with a failed check, exits 1).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import click
from nats.aio.client import Client

from baton.cli import migrate_render as render
from baton.cli.common import ExitCode, Settings, check_host
from baton.cli.interrupt import Choice, Detached, Interrupts, catching_ctrl_c
from baton.cli.render import make_console
from baton.mesh import client
from baton.schemas import codec, timeouts
from baton.schemas.codec import decode_any
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    TERMINAL_PHASES,
    AbortRequest,
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
INTERRUPT_POLL_S = 0.25  # how soon a Ctrl-C is acted on while no event arrives


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
        with catching_ctrl_c() as interrupts:
            record = await follow(nc, settings, events, accepted, interrupts)
    except Detached:
        click.echo(f"baton: detached; {accepted.vm}'s job goes on (follow: baton watch --id "
                   f"{accepted.migration_id})", err=True)
        return show_accepted(settings, accepted)
    finally:
        await events.unsubscribe()
    if settings.json:
        emit_json(record)
    else:
        make_console().print(outcome_line(record))
    if record.phase != Phase.SUCCEEDED:
        raise SystemExit(ExitCode.FAILED)


async def follow(nc: Client, settings: Settings, events: Any, accepted: AnyAccepted,
                 interrupts: Interrupts | None = None) -> AnyRecord:
    """Draw the progress bar from this job's events until a terminal phase; between events, act
    on Ctrl-C (cli/interrupt.py)."""
    console = make_console(stderr=True)
    aborts: set[asyncio.Task[None]] = set()
    try:
        return await _follow(nc, settings, events, accepted, interrupts, console, aborts)
    finally:
        for pending in aborts:  # the outcome is in: an abort reply still due says nothing new
            pending.cancel()


async def _follow(nc: Client, settings: Settings, events: Any, accepted: AnyAccepted,
                  interrupts: Interrupts | None, console: Any,
                  aborts: set[asyncio.Task[None]]) -> AnyRecord:
    with render.progress_bar(console) as bar:
        task = bar.add_task(accepted.vm, total=None, phase=Phase.PENDING, rate="- MiB/s",
                            remaining=None, eta_s=None)
        quiet_since = time.monotonic()
        while True:
            if interrupts is not None and interrupts.pending:
                bar.stop()  # the question, if any, is not drawn over
                choice = await interrupts.decide()
                bar.start()
                if choice is Choice.DETACH:
                    raise Detached
                if choice is Choice.ABORT:
                    interrupts.abort_requested = True
                    aborts.add(asyncio.create_task(_abort(nc, settings, accepted, interrupts,
                                                          console)))
            try:
                msg = await events.next_msg(timeout=INTERRUPT_POLL_S)
            except TimeoutError:
                if time.monotonic() - quiet_since < RECHECK_AFTER_S:
                    continue
                quiet_since = time.monotonic()
                record = await _record(nc, settings, accepted.migration_id)
                if record.phase in TERMINAL_PHASES:
                    return record
                continue
            quiet_since = time.monotonic()
            event = _migration_event(msg, accepted.migration_id)
            if isinstance(event, AnyPhaseEvent):
                bar.update(task, phase=event.phase)
                if event.phase == Phase.SUCCEEDED:
                    bar.update(task, completed=bar.tasks[0].total or 0, remaining=0, eta_s=0)
                if event.phase in TERMINAL_PHASES:
                    return event.record
            elif isinstance(event, ProgressEvent):
                _show_progress(bar, task, event)


async def _abort(nc: Client, settings: Settings, accepted: AnyAccepted, interrupts: Interrupts,
                 console: Any) -> None:
    """Ask the coordinator to abort; the follow loop sees the outcome in the job's events."""
    console.print(f"aborting {accepted.migration_id} (Ctrl-C again to detach)")
    try:
        await ask(nc, settings, CoordinatorEndpoint.ABORT,
                  AbortRequest(migration_id=accepted.migration_id), AnyRecord,
                  timeouts.COORDINATOR_ABORT)
    except BatonError as exc:  # too late (the guest already runs there), gone, ...
        interrupts.abort_requested = False
        console.print(f"[yellow]the abort was refused: {exc.message}[/]")


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
