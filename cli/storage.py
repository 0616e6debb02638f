"""``baton move-disk``: move a running VM's disks to another storage pool on its host.

Shares the ``baton`` group's options, connection handling and exit codes; follows the move with
``baton migrate``'s progress bar; ``baton abort ID`` and ``baton watch --id ID`` work on it too.
A move that ends failed or aborted, and a dry run whose checks fail, exit 1.
"""

from __future__ import annotations

import click
from nats.aio.client import Client

from baton.cli import storage_render
from baton.cli.common import EPILOG, Settings, common_options, run
from baton.cli.completion import complete_host, complete_vm
from baton.cli.follow import ask, emit_json, optional_host, show_report, start_and_follow
from baton.schemas import timeouts
from baton.schemas.storage import StorageCheckReport, StorageMoveAccepted, StorageMoveRequest
from baton.schemas.subjects import CoordinatorEndpoint


@click.command("move-disk", epilog=EPILOG)
@click.argument("vm", shell_complete=complete_vm)
@click.argument("disk", required=False)
@click.option("--to-pool", "pool", required=True, metavar="POOL",
              help="Storage pool on the VM's host to move the disk(s) into.")
@click.option("--host", callback=optional_host, metavar="HOST", shell_complete=complete_host,
              help="Host that runs the VM (default: found by asking the agents).")
@click.option("--bandwidth", type=click.IntRange(1, 1_000_000), metavar="MIB_S",
              help="Cap on each disk copy, in MiB/s.")
@click.option("--keep-source", is_flag=True, help="Keep the old file(s) after the switch.")
@click.option("--dry-run", is_flag=True, help="Run the checks only.")
@click.option("--detach", is_flag=True, help="Print the move's id and return at once.")
@common_options
def move_disk(vm: str, disk: str | None, pool: str, host: str | None, bandwidth: int | None,
              keep_source: bool, dry_run: bool, detach: bool, nats_url: str, prefix: str,
              output: str) -> None:
    """Move DISK (a target such as vda; all disks if omitted) of the running VM
    into another storage pool on the same host, without stopping the VM.

    The disk is copied while the guest keeps writing, the VM is switched to the
    copy (its saved definition too), the copy is verified, and only then is the
    old file deleted. Shows the phase, a progress bar, MiB/s and bytes remaining.
    With -o json, prints the final record. Cancel with baton abort ID before the
    switch: the VM keeps its old file and the partial copy is removed.

    \b
    Examples:
      baton move-disk web1 --to-pool fast
      baton move-disk web1 vdb --to-pool slow --bandwidth 50 --keep-source
      baton move-disk web1 --to-pool fast --dry-run
    """
    request = StorageMoveRequest(vm=vm, disk=disk, destination_pool=pool, host=host,
                                 bandwidth_mib_s=bandwidth, keep_source=keep_source,
                                 dry_run=dry_run)
    run(Settings(nats_url, prefix, output), lambda nc, s: _move_disk(nc, s, request, detach))


async def _move_disk(nc: Client, settings: Settings, request: StorageMoveRequest,
                     detach: bool) -> None:
    if request.dry_run:
        report = await ask(nc, settings, CoordinatorEndpoint.STORAGE_MOVE, request,
                           StorageCheckReport, timeouts.COORDINATOR_STORAGE_MOVE)
        return show_report(settings, report, storage_render.report_table)
    await start_and_follow(nc, settings, CoordinatorEndpoint.STORAGE_MOVE, request,
                           StorageMoveAccepted, timeouts.COORDINATOR_STORAGE_MOVE, detach=detach,
                           show_accepted=_show_accepted,
                           outcome_line=storage_render.any_outcome_line)


def _show_accepted(settings: Settings, accepted: StorageMoveAccepted) -> None:
    if settings.json:
        return emit_json(accepted)
    click.echo(storage_render.accepted_line(accepted))


def register(group: click.Group) -> None:
    group.add_command(move_disk)
