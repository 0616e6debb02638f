"""``baton migrate|check|jobs|watch|abort|bandwidth``: the commands that drive the coordinator.

``register(group)`` adds them to the ``baton`` group (``baton.cli.main``); they share its
``--nats``/``--prefix``/``-o`` options, its connection handling and its exit codes, plus:
a migration that ends failed or aborted, and a check that fails, exit 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click
from nats.aio.client import Client

from baton.cli import migrate_render as render
from baton.cli.common import (
    EPILOG,
    ExitCode,
    Settings,
    common_options,
    fail,
    run,
)
from baton.cli.completion import complete_host, complete_migration_id, complete_vm
from baton.cli.follow import (
    AnyPhaseEvent,
    AnyRecord,
    ask,
    decode_job_event,
    emit_json,
    optional_host,
    show_report,
    start_and_follow,
)
from baton.cli.render import make_console
from baton.cli.storage_render import any_outcome_line
from baton.schemas import timeouts
from baton.schemas.codec import decode_any
from baton.schemas.events import LifecycleEvent
from baton.schemas.limits import JOBS_PAGE_MAX
from baton.schemas.migration import (
    TERMINAL_PHASES,
    AbortRequest,
    BandwidthRequest,
    CheckRequest,
    JobsReply,
    JobsRequest,
    MigrateAccepted,
    MigrateRequest,
    MigrationRecord,
    Phase,
    PreflightReport,
    ProgressEvent,
    StorageMode,
    Strategy,
)
from baton.schemas.storage import StorageMoveRecord
from baton.schemas.subjects import CoordinatorEndpoint, EventName, MigrationEvent

# --- migrate ----------------------------------------------------------------------------------


def _disk_map(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...],
              ) -> dict[str, str]:
    pools: dict[str, str] = {}
    for value in values:
        target, sep, pool = value.partition("=")
        if not (sep and target and pool):
            raise click.BadParameter(f"{value!r}: give DISK=POOL, e.g. vda=fast")
        if pools.setdefault(target, pool) != pool:
            raise click.BadParameter(f"{target} is mapped to {pools[target]} and to {pool}")
    return pools


def pool_options(command: Callable[..., None]) -> Callable[..., None]:
    """Where a shared-nothing migration puts the copies on the destination."""
    command = click.option(
        "--disk-map", "disk_pools", multiple=True, metavar="DISK=POOL", callback=_disk_map,
        help="Copy this disk (by target, e.g. vda) into POOL on the destination; repeat for "
        "more disks. Wins over --target-pool.")(command)
    return click.option(
        "--target-pool", metavar="POOL", help="Copy the local disks into this storage pool on "
        "the destination (default: a pool at the same directory as on the source).")(command)


@click.command(epilog=EPILOG)
@click.argument("vm", shell_complete=complete_vm)
@click.option("--to", "destination", callback=optional_host, metavar="HOST", shell_complete=complete_host,
              help="Destination host id (default: the coordinator checks every other host and "
              "chooses the best that passes every check; the record says why).")
@click.option("--from", "source", callback=optional_host, metavar="HOST", shell_complete=complete_host,
              help="Source host id (default: whichever host runs the VM).")
@click.option("--offline", is_flag=True, help="Move a shut-off VM's definition (and disks).")
@click.option("--copy-storage", "storage", flag_value=StorageMode.COPY.value,
              help="Copy the VM's local disks during the move (shared-nothing).")
@click.option("--shared-storage", "storage", flag_value=StorageMode.SHARED.value,
              help="Require the destination to see the disks; copy nothing.")
@click.option("--transient", is_flag=True, help="Do not save the definition on the destination.")
@click.option("--keep-source", is_flag=True, help="Keep the (inactive) definition on the source.")
@click.option("--auto-converge", is_flag=True, help="Throttle the guest's CPU if it dirties "
              "memory faster than the copy.")
@click.option("--ac-initial", type=click.IntRange(1, 100), metavar="PCT",
              help="Initial auto-converge throttle.")
@click.option("--ac-increment", type=click.IntRange(1, 100), metavar="PCT",
              help="Auto-converge throttle increment.")
@click.option("--bandwidth", type=click.IntRange(1, 1_000_000), metavar="MIB_S",
              help="Bandwidth cap in MiB/s (change it later with baton bandwidth).")
@click.option("--max-downtime", type=click.IntRange(1, 3_600_000), metavar="MS",
              help="Longest acceptable pause at the switch-over.")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 7 * 24 * 3600), metavar="SECONDS",
              help="Abort the migration if it has not completed this long after it started "
              "copying (the VM keeps running on the source; the record says how far it got).")
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]),
              default=Strategy.AUTO.value, show_default=True,
              help="auto: measure the guest first (a few seconds) and, when the remaining "
              "memory stops shrinking for 10 s, raise the downtime limit step by step (500, "
              "1000, 2000 ms, or up to --max-downtime); when the prediction (at --bandwidth) "
              "says that cannot end the move, start with what can: post-copy after the first "
              "pass with --allow-postcopy, else auto-converge. precopy: leave the downtime "
              "limit as set (the move may run until --timeout). auto-converge: let QEMU "
              "throttle the guest's vCPUs (as --auto-converge). postcopy: switch to post-copy "
              "after the first pass (always ends, but cannot be rolled back; pre-flight warns).")
@click.option("--allow-postcopy", is_flag=True, help="With --strategy auto: switch to "
              "post-copy when the last downtime step stalls too, or after the first pass when "
              "the prediction says only post-copy ends the move.")
@click.option("--no-tls", is_flag=True, help="Send guest memory and disks unencrypted even "
              "when both hosts could use TLS (pre-flight warns).")
@pool_options
@click.option("--dry-run", is_flag=True, help="Run the pre-flight checks only.")
@click.option("--detach", is_flag=True, help="Print the migration id and return at once.")
@common_options
def migrate(vm: str, destination: str | None, source: str | None, offline: bool, storage: str | None,
            transient: bool, keep_source: bool, auto_converge: bool, ac_initial: int | None,
            ac_increment: int | None, bandwidth: int | None, max_downtime: int | None,
            timeout_s: int | None, strategy: str, allow_postcopy: bool, no_tls: bool,
            target_pool: str | None, disk_pools: dict[str, str],
            dry_run: bool, detach: bool, nats_url: str, prefix: str, output: str) -> None:
    """Move VM to another host, live by default, and follow it to the end.

    The migration stream is encrypted (TLS) when QEMU on both hosts has its
    certificates; the encryption check says whether it will be.

    Shows the phase, a progress bar, MiB/s, bytes remaining and the elapsed
    time until the migration succeeds, fails or is aborted. With -o json,
    prints the final migration record. A failed or aborted migration exits 1.

    When the coordinator's limits are reached (by default 2 migrations out
    of a host, 2 into one, 5 in all) it waits in phase queued first, touching
    no host; baton abort ends it there.

    Ctrl-C while it follows: on a terminal, asks whether to abort the
    migration (the VM stays on the source), detach and leave it running, or
    go on watching; without a terminal it aborts, as virsh does. A second
    Ctrl-C after an abort detaches at once (the abort goes on).

    \b
    Examples:
      baton migrate web1 --to node2
      baton migrate web1                    # the coordinator chooses the host
      baton migrate web1 --to node3 --copy-storage --bandwidth 200
      baton migrate web1 --to node3 --copy-storage --target-pool fast
      baton migrate web1 --to node2 --auto-converge --max-downtime 500 -o json
      baton migrate web1 --to node2 --bandwidth 100 --timeout 600
      baton migrate busy1 --to node2 --bandwidth 100 --allow-postcopy
      baton migrate web1 --to node2 --strategy precopy --timeout 600
      baton migrate db1 --to node2 --offline
      baton migrate web1 --to node2 --dry-run
    """
    request = MigrateRequest(
        vm=vm, destination=destination, source=source, live=not offline,
        storage=StorageMode(storage or StorageMode.AUTO), persistent=not transient,
        undefine_source=not keep_source, auto_converge=auto_converge,
        auto_converge_initial_pct=ac_initial, auto_converge_increment_pct=ac_increment,
        bandwidth_mib_s=bandwidth, max_downtime_ms=max_downtime, timeout_s=timeout_s,
        strategy=Strategy(strategy), allow_postcopy=allow_postcopy, dry_run=dry_run,
        tls=not no_tls, target_pool=target_pool, disk_pools=disk_pools)
    settings = Settings(nats_url, prefix, output)
    run(settings, lambda nc, s: _migrate(nc, s, request, detach))


async def _migrate(nc: Client, settings: Settings, request: MigrateRequest, detach: bool) -> None:
    if request.dry_run:
        report = await ask(nc, settings, CoordinatorEndpoint.MIGRATE, request, PreflightReport,
                           timeouts.COORDINATOR_MIGRATE)
        return _show_report(settings, report)
    await start_and_follow(nc, settings, CoordinatorEndpoint.MIGRATE, request, MigrateAccepted,
                           timeouts.COORDINATOR_MIGRATE, detach=detach,
                           show_accepted=_show_accepted, outcome_line=render.outcome_line)


def _show_accepted(settings: Settings, accepted: MigrateAccepted) -> None:
    if settings.json:
        return emit_json(accepted)
    click.echo(f"{accepted.migration_id}  {accepted.vm}: {accepted.source} -> "
               f"{accepted.destination} (follow: baton watch --id {accepted.migration_id})")


# --- check ------------------------------------------------------------------------------------


@click.command(epilog=EPILOG)
@click.argument("vm", shell_complete=complete_vm)
@click.option("--to", "destination", callback=optional_host, metavar="HOST", shell_complete=complete_host,
              help="The host to judge (default: every other host, ranked).")
@click.option("--from", "source", callback=optional_host, metavar="HOST",
              shell_complete=complete_host)
@click.option("--offline", is_flag=True, help="Judge an offline move.")
@click.option("--copy-storage", "storage", flag_value=StorageMode.COPY.value)
@click.option("--shared-storage", "storage", flag_value=StorageMode.SHARED.value)
@click.option("--no-tls", is_flag=True, help="Judge an unencrypted migration stream.")
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]),
              default=Strategy.AUTO.value, show_default=True,
              help="Judge a migration with this strategy (see baton migrate --help).")
@click.option("--allow-postcopy", is_flag=True, help="Judge strategy auto allowed to switch "
              "to post-copy.")
@click.option("--bandwidth", type=click.IntRange(1, 1_000_000), metavar="MIB_S",
              help="The cap the migration would run at: with it, the prediction says whether "
              "pre-copy converges, how long the move takes and how long the guest pauses.")
@click.option("--max-downtime", type=click.IntRange(1, 3_600_000), metavar="MS",
              help="The pause the migration would accept (QEMU's 300 ms if not given).")
@pool_options
@common_options
def check(vm: str, destination: str | None, source: str | None, offline: bool, storage: str | None,
          no_tls: bool, strategy: str, allow_postcopy: bool, bandwidth: int | None,
          max_downtime: int | None, target_pool: str | None, disk_pools: dict[str, str],
          nats_url: str, prefix: str, output: str) -> None:
    """Run the pre-flight checks for moving VM to a host; change nothing.

    Storage, network, CPU, memory, the VM's state on both hosts, devices
    that block migration, the stream's encryption and how the copy will end:
    each passes, warns or fails with a reason. Exits 1 if any check fails.

    Without --to, every other host is checked and ranked: those that pass
    every check first, then by fewest warnings, fewest migrations and disk
    moves there, most memory left; the report is the first one's (the host
    baton migrate without --to would choose). Exits 1 if no host passes.

    For a running VM the source measures how fast the guest dirties its
    memory (about a second) and, given --bandwidth, predicts whether plain
    pre-copy converges, the total time, the pause, and the strategy that
    ends the move; the convergence check warns when the strategy asked for
    would not, and when post-copy would give up the way back.

    \b
    Examples:
      baton check web1 --to node2
      baton check web1                      # rank every other host
      baton check web1 --to node3 --shared-storage -o json
      baton check busy1 --to node2 --bandwidth 30 --strategy auto
    """
    request = CheckRequest(vm=vm, destination=destination, source=source, live=not offline,
                           storage=StorageMode(storage or StorageMode.AUTO), tls=not no_tls,
                           strategy=Strategy(strategy), allow_postcopy=allow_postcopy,
                           bandwidth_mib_s=bandwidth, max_downtime_ms=max_downtime,
                           target_pool=target_pool, disk_pools=disk_pools)
    run(Settings(nats_url, prefix, output), lambda nc, s: _check(nc, s, request))


async def _check(nc: Client, settings: Settings, request: CheckRequest) -> None:
    report = await ask(nc, settings, CoordinatorEndpoint.CHECK, request, PreflightReport,
                       timeouts.COORDINATOR_CHECK)
    _show_report(settings, report)


def _show_report(settings: Settings, report: PreflightReport) -> None:
    show_report(settings, report, render.report_table)


# --- jobs, abort, bandwidth -------------------------------------------------------------------


@click.command(epilog=EPILOG)
@click.option("--active", is_flag=True, help="Only migrations that have not finished.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Only the N newest jobs (default: every job the coordinator keeps).")
@common_options
def jobs(active: bool, limit: int | None, nats_url: str, prefix: str, output: str) -> None:
    """List the coordinator's migrations and disk moves (newest last).

    The coordinator answers in pages; this asks for page after page until it has them all
    (or the --limit newest)."""
    run(Settings(nats_url, prefix, output), lambda nc, s: _jobs(nc, s, active, limit))


async def _jobs(nc: Client, settings: Settings, active: bool, limit: int | None) -> None:
    migrations, moves = await fetch_jobs(nc, settings, active, limit)
    # Pages come newest first; the listing stays oldest first (each record carries its kind).
    records: list[MigrationRecord | StorageMoveRecord] = [*reversed(migrations), *reversed(moves)]
    if settings.json:
        return emit_json(records)
    make_console().print(render.jobs_table(records))


async def fetch_jobs(nc: Client, settings: Settings, active: bool, limit: int | None,
                     ) -> tuple[list[MigrationRecord], list[StorageMoveRecord]]:
    """Every page of ``jobs`` (newest first), or the ``limit`` newest records."""
    migrations: list[MigrationRecord] = []
    moves: list[StorageMoveRecord] = []
    cursor: str | None = None
    while True:
        left = JOBS_PAGE_MAX if limit is None else limit - len(migrations) - len(moves)
        reply = await ask(nc, settings, CoordinatorEndpoint.JOBS,
                          JobsRequest(active_only=active, limit=min(left, JOBS_PAGE_MAX),
                                      cursor=cursor), JobsReply, timeouts.COORDINATOR_JOBS)
        migrations += reply.migrations
        moves += reply.storage_moves
        cursor = reply.next_cursor
        if cursor is None or (limit is not None and len(migrations) + len(moves) >= limit):
            return migrations, moves


@click.command(epilog=EPILOG)
@click.argument("migration_id", metavar="ID", shell_complete=complete_migration_id)
@common_options
def abort(migration_id: str, nats_url: str, prefix: str, output: str) -> None:
    """Cancel a running migration; the VM keeps running on its source.

    Waits for the outcome and removes what the destination was prepared with.
    Exits 1 when the migration could not be aborted (it already switched over).
    """
    run(Settings(nats_url, prefix, output), lambda nc, s: _abort(nc, s, migration_id))


async def _abort(nc: Client, settings: Settings, migration_id: str) -> None:
    record = await ask(nc, settings, CoordinatorEndpoint.ABORT,
                       AbortRequest(migration_id=migration_id), AnyRecord,
                       timeouts.COORDINATOR_ABORT)
    if settings.json:
        emit_json(record)
    else:
        make_console().print(any_outcome_line(record))
    if record.phase != Phase.ABORTED:
        fail(f"{migration_id} is {record.phase}, not aborted", ExitCode.FAILED)


@click.command(epilog=EPILOG)
@click.argument("migration_id", metavar="ID", shell_complete=complete_migration_id)
@click.argument("mib_s", type=click.IntRange(1, 1_000_000), metavar="MIB_S")
@common_options
def bandwidth(migration_id: str, mib_s: int, nats_url: str, prefix: str, output: str) -> None:
    """Change the bandwidth cap of a running migration (MiB/s)."""
    run(Settings(nats_url, prefix, output), lambda nc, s: _bandwidth(nc, s, migration_id, mib_s))


async def _bandwidth(nc: Client, settings: Settings, migration_id: str, mib_s: int) -> None:
    record = await ask(nc, settings, CoordinatorEndpoint.BANDWIDTH,
                       BandwidthRequest(migration_id=migration_id, bandwidth_mib_s=mib_s),
                       AnyRecord, timeouts.COORDINATOR_BANDWIDTH)
    if settings.json:
        return emit_json(record)
    click.echo(f"{migration_id}: bandwidth cap now {record.bandwidth_mib_s} MiB/s "
               f"({record.phase})")


# --- watch ------------------------------------------------------------------------------------


@click.command(epilog=EPILOG)
@click.option("--vm", help="Only this VM's migrations, plus its lifecycle events on every host.")
@click.option("--id", "migration_id", shell_complete=complete_migration_id,
              help="Only this migration; return when it ends.")
@common_options
def watch(vm: str | None, migration_id: str | None, nats_url: str, prefix: str,
          output: str) -> None:
    """Stream migration phase and progress events (Ctrl-C to stop).

    \b
    Examples:
      baton watch
      baton watch --vm web1
      baton watch --id 3f2a9c1d0b7e -o json
    """
    run(Settings(nats_url, prefix, output), lambda nc, s: _watch(nc, s, vm, migration_id))


async def _watch(nc: Client, settings: Settings, vm: str | None,
                 migration_id: str | None) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    subjects = settings.subjects
    await nc.subscribe(subjects.migrations_filter(migration_id or "*"), cb=queue.put)
    if vm is not None:
        await nc.subscribe(subjects.events_filter(vm=vm, event=EventName.LIFECYCLE),
                           cb=queue.put)
    ids_of_vm: set[str] = set()
    while True:
        event = _watched_event(await queue.get())
        if event is None or not _wanted(event, vm, ids_of_vm):
            continue
        _print_event(settings, event)
        if migration_id and isinstance(event, AnyPhaseEvent) and event.phase in TERMINAL_PHASES:
            return


def _watched_event(msg: Any) -> AnyPhaseEvent | ProgressEvent | LifecycleEvent | None:
    tail = msg.subject.rsplit(".", 1)[-1]
    if tail == EventName.LIFECYCLE:
        return decode_any(msg.data, LifecycleEvent)
    if msg.subject.endswith(f".{MigrationEvent.SOURCE_PROGRESS}"):
        return None
    return decode_job_event(tail, msg.data)


def _wanted(event: Any, vm: str | None, ids_of_vm: set[str]) -> bool:
    if vm is None or isinstance(event, LifecycleEvent):
        return True
    if isinstance(event, AnyPhaseEvent) and event.record.vm == vm:
        ids_of_vm.add(event.migration_id)
    return event.migration_id in ids_of_vm


def _print_event(settings: Settings, event: Any) -> None:
    if settings.json:
        return emit_json(event)
    line = (render.phase_line(event) if isinstance(event, AnyPhaseEvent)
            else render.progress_line(event) if isinstance(event, ProgressEvent)
            else render.lifecycle_line(event))
    make_console().print(line)


COMMANDS = (migrate, check, jobs, watch, abort, bandwidth)


def register(group: click.Group) -> None:
    """Add the migration commands to the ``baton`` group."""
    for command in COMMANDS:
        group.add_command(command)
