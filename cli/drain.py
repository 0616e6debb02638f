"""``baton drain HOST``: move every running VM off a host, with a bar per VM and a summary.

The coordinator plans the drain (each VM placed like ``baton migrate`` without ``--to``, among
``--to`` hosts when given) and queues the migrations under its limits and ``--parallel``; this
command shows the plan, follows every migration to its end and sums up. A VM that cannot move
is listed with the checks it fails; the others move anyway. Exit 0 only when every running VM
left the host. Ctrl-C asks (on a terminal) whether to abort the drain or detach, as
``baton migrate`` does; without a terminal it aborts the drain.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import click
from nats.aio.client import Client
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from baton.cli import migrate_render as render
from baton.cli.common import EPILOG, ExitCode, Settings, check_host, common_options, run
from baton.cli.completion import complete_host
from baton.cli.follow import (
    INTERRUPT_POLL_S,
    RECHECK_AFTER_S,
    AnyPhaseEvent,
    ask,
    decode_job_event,
    emit_json,
)
from baton.cli.interrupt import Choice, Interrupts, catching_ctrl_c
from baton.cli.render import make_console
from baton.schemas import timeouts
from baton.schemas.migration import (
    TERMINAL_PHASES,
    DrainItem,
    DrainReply,
    DrainRequest,
    JobsReply,
    JobsRequest,
    MigrationRecord,
    Phase,
    ProgressEvent,
    Strategy,
)
from baton.schemas.subjects import CoordinatorEndpoint


def plan_table(reply: DrainReply, title: str) -> Table:
    """The plan in start order; with a cap, when each move is expected (from the drain's start)
    and the whole drain against its lower bound (coordinator/drain_plan.py)."""
    timed = reply.total_s is not None
    if timed:
        title += (f" — expected {reply.total_s:g} s, no plan under {reply.lower_bound_s:g} s "
                  "(all bytes over all lanes)")
    table = Table(title=title, title_justify="left")
    columns = ("vm", "state", "to", *(("expected",) if timed else ()), "migration", "reason")
    for column in columns:
        table.add_column(column, overflow="fold" if column == "reason" else "ellipsis")
    for item in reply.items:
        when = (f"{item.start_s:g}-{item.end_s:g} s",) if timed and item.start_s is not None \
            else ("-",) if timed else ()
        table.add_row(escape(item.vm), item.state, item.destination or "[red]stays[/]", *when,
                      item.migration_id or "-", escape(item.reason))
    return table


def summary_table(host: str, items: Iterable[DrainItem],
                  records: dict[str, MigrationRecord]) -> Table:
    table = Table(title=f"drain of {host}", title_justify="left")
    for column in ("vm", "outcome", "now on", "detail"):
        table.add_column(column, overflow="fold" if column == "detail" else "ellipsis")
    for item in items:
        record = records.get(item.migration_id or "")
        if record is None:
            table.add_row(escape(item.vm), "[yellow]not moved[/]", host, escape(item.reason))
            continue
        moved = record.phase == Phase.SUCCEEDED
        table.add_row(escape(item.vm), render.phase_text(record.phase),
                      record.destination if moved else record.source,
                      escape(record.error.message) if record.error else "")
    return table


def drained(reply: DrainReply, records: dict[str, MigrationRecord]) -> bool:
    """Every running VM of the host left it (a shut-off one is not the drain's to move)."""
    return all(item.migration_id is not None and item.migration_id in records
               and records[item.migration_id].phase == Phase.SUCCEEDED
               for item in reply.items if item.active)


@click.command(epilog=EPILOG)
@click.argument("host", callback=check_host, shell_complete=complete_host)
@click.option("--to", "to", multiple=True, callback=lambda c, p, v: [check_host(c, p, h) for h in v],
              metavar="HOST", help="Only these destinations (repeat; default: any other host).")
@click.option("--parallel", type=click.IntRange(1, 64), metavar="N",
              help="At most N of the drain's migrations at once (the coordinator's own limits, "
              "2 out of a host by default, still hold).")
@click.option("--bandwidth", type=click.IntRange(1, 1_000_000), metavar="MIB_S",
              help="Each migration's bandwidth cap.")
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]),
              default=Strategy.AUTO.value, show_default=True,
              help="Each migration's strategy (see baton migrate --help).")
@click.option("--allow-postcopy", is_flag=True, help="With --strategy auto (see baton migrate).")
@click.option("--no-tls", is_flag=True, help="Send guest memory unencrypted (pre-flight warns).")
@click.option("--dry-run", is_flag=True, help="Show where each VM would go, move nothing.")
@click.option("--abort", "abort", is_flag=True, help="Abort the host's drain: queued migrations "
              "end at once, running ones are rolled back.")
@click.option("--detach", is_flag=True, help="Print the plan and return at once.")
@common_options
def drain(host: str, to: list[str], parallel: int | None, bandwidth: int | None, strategy: str,
          allow_postcopy: bool, no_tls: bool, dry_run: bool, abort: bool, detach: bool,
          nats_url: str, prefix: str, output: str) -> None:
    """Move every running VM off HOST (for maintenance) and follow them to the end.

    Each VM is placed like baton migrate without --to: every other host (or
    each --to host) is checked and the best that passes is chosen, counting
    the drain's own migrations as they are queued, so they spread. The
    migrations wait in phase queued under the coordinator's limits and
    --parallel, survive a coordinator restart, and show a bar each. A VM no
    host can take stays, with its failed checks; the rest move anyway. A
    shut-off VM is listed and left (baton migrate --offline moves it).
    Exits 0 when every running VM left HOST, 1 otherwise.

    \b
    Examples:
      baton drain node1 --dry-run
      baton drain node1 --parallel 2
      baton drain node1 --to node2 --to node3 --bandwidth 200
      baton drain node1 --abort
    """
    request = DrainRequest(host=host, to=list(to), parallel=parallel, bandwidth_mib_s=bandwidth,
                           strategy=Strategy(strategy), allow_postcopy=allow_postcopy,
                           tls=not no_tls, dry_run=dry_run, abort=abort)
    run(Settings(nats_url, prefix, output), lambda nc, s: _drain(nc, s, request, detach))


async def _drain(nc: Client, settings: Settings, request: DrainRequest, detach: bool) -> None:
    events = await nc.subscribe(settings.subjects.migrations_filter())  # before: miss nothing
    try:
        reply: DrainReply = await ask(nc, settings, CoordinatorEndpoint.DRAIN, request,
                                      DrainReply, timeouts.COORDINATOR_DRAIN)
        moving = {i.migration_id: i.vm for i in reply.items if i.migration_id and i.destination}
        if settings.json and (request.dry_run or request.abort or detach):
            emit_json(reply)
        elif not settings.json:
            title = ("abort of the drain of " if request.abort else "drain plan for ") + reply.host
            make_console().print(plan_table(reply, title))
        if request.dry_run:
            if any(i.destination is None and i.active for i in reply.items):
                raise SystemExit(ExitCode.FAILED)
            return
        if request.abort or detach or not moving:
            return
        with catching_ctrl_c() as interrupts:
            records = await _follow_all(nc, settings, events, request.host, moving, interrupts)
    finally:
        await events.unsubscribe()
    if settings.json:
        emit_json(JobsReply(migrations=list(records.values())))
    else:
        make_console().print(summary_table(reply.host, reply.items, records))
    if not drained(reply, records):
        raise SystemExit(ExitCode.FAILED)


def _bars(console: object) -> Progress:
    return Progress(TextColumn("{task.description:<16}"), TextColumn("{task.fields[phase]:<10}"),
                    BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    console=console)  # type: ignore[arg-type]


async def _follow_all(nc: Client, settings: Settings, events: object, host: str,
                      moving: dict[str, str], interrupts: Interrupts | None,
                      ) -> dict[str, MigrationRecord]:
    """Every migration of the drain to a terminal phase, a bar each."""
    finished: dict[str, MigrationRecord] = {}
    console = make_console(stderr=True)
    with _bars(console) as bars:
        tasks: dict[str, TaskID] = {
            mid: bars.add_task(vm, total=None, phase=Phase.PENDING, rate="- MiB/s")
            for mid, vm in moving.items()}
        quiet_since = time.monotonic()
        while len(finished) < len(moving):
            if interrupts is not None and interrupts.pending:
                bars.stop()
                choice = await interrupts.decide()
                bars.start()
                if choice is Choice.DETACH:
                    console.print(f"detached; the drain of {host} goes on (baton jobs --active)")
                    raise SystemExit(ExitCode.OK)
                if choice is Choice.ABORT:
                    interrupts.abort_requested = True
                    console.print(f"aborting the drain of {host} (Ctrl-C again to detach)")
                    await ask(nc, settings, CoordinatorEndpoint.DRAIN,
                              DrainRequest(host=host, abort=True), DrainReply,
                              timeouts.COORDINATOR_DRAIN)
            try:
                msg = await events.next_msg(timeout=INTERRUPT_POLL_S)  # type: ignore[attr-defined]
            except TimeoutError:
                if time.monotonic() - quiet_since >= RECHECK_AFTER_S:
                    quiet_since = time.monotonic()
                    await _recheck(nc, settings, moving, finished)
                continue
            quiet_since = time.monotonic()
            prefix, _, rest = msg.subject.removeprefix(f"{settings.subjects.prefix}.migrations.") \
                .partition(".")
            if prefix not in tasks:
                continue
            event = decode_job_event(rest, msg.data)
            if isinstance(event, AnyPhaseEvent):
                bars.update(tasks[prefix], phase=event.phase)
                if event.phase in TERMINAL_PHASES and isinstance(event.record, MigrationRecord):
                    finished[prefix] = event.record
                    if event.phase == Phase.SUCCEEDED:
                        bars.update(tasks[prefix], completed=1, total=1)
            elif isinstance(event, ProgressEvent):
                stats = event.stats
                done, left = stats.data_processed_bytes or 0, stats.data_remaining_bytes
                bars.update(tasks[prefix], phase=event.phase, completed=done,
                            total=None if left is None else done + left,
                            rate=render.rate(stats))
    return finished


async def _recheck(nc: Client, settings: Settings, moving: dict[str, str],
                   finished: dict[str, MigrationRecord]) -> None:
    """No event for a while: ask the coordinator for the records not yet seen ending."""
    for migration_id in set(moving) - set(finished):
        reply = await ask(nc, settings, CoordinatorEndpoint.JOBS,
                          JobsRequest(migration_id=migration_id), JobsReply,
                          timeouts.COORDINATOR_JOBS)
        for record in reply.migrations:
            if record.phase in TERMINAL_PHASES:
                finished[migration_id] = record


def register(group: click.Group) -> None:
    group.add_command(drain)
