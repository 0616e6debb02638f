"""``baton``: the operator's command line for Baton.

Talks to the agents over NATS (``--nats`` / ``BATON_NATS``) under a subject prefix (``--prefix`` /
``BATON_PREFIX``). Output is a table for people or JSON for scripts (``-o json``, on stdout);
errors go to stderr as one line. Exit codes (also in ``baton --help``):

    0  ok
    1  the operation failed (refused: conflict, precondition, unsupported, hypervisor; a migration
       or check that failed)
    2  usage error (bad option or argument; an agent answered ``bad_request``)
    3  not found (no agents at all, no agent for that host, unknown VM/pool/path)
    4  unavailable (NATS unreachable, an agent did not answer in time, libvirt down)
    5  internal error (a bug: an agent answered ``internal`` or sent a reply that does not decode)
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, NoReturn

import click
from baton.cli import render as cli_render
from baton.mesh import client
from baton.schemas import codec, timeouts
from baton.schemas.agent import CapsRequest, HostCaps
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.subjects import DEFAULT_PREFIX, AgentEndpoint, Subjects, is_host_id
from nats.aio.client import Client

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2  # click's own code for usage errors
    NOT_FOUND = 3
    UNAVAILABLE = 4
    INTERNAL = 5


_EXIT_FOR_ERROR = {
    ErrorCode.BAD_REQUEST: ExitCode.USAGE,
    ErrorCode.NOT_FOUND: ExitCode.NOT_FOUND,
    ErrorCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    ErrorCode.TIMEOUT: ExitCode.UNAVAILABLE,
    ErrorCode.INTERNAL: ExitCode.INTERNAL,
}

EPILOG = """\b
Environment:
  BATON_NATS    NATS server URL (default nats://127.0.0.1:4222)
  BATON_PREFIX  subject prefix (default baton)
  BATON_DEBUG   set to 1 to print tracebacks of internal errors
\b
Exit codes:
  0 ok          1 operation failed    2 usage error
  3 not found   4 unavailable         5 internal error
"""


def exit_code_for(error: BatonError) -> ExitCode:
    return _EXIT_FOR_ERROR.get(error.code, ExitCode.FAILED)


class Settings:
    """The options every command takes."""

    def __init__(self, nats_url: str, prefix: str, output: str) -> None:
        self.nats_url = nats_url
        self.subjects = Subjects(prefix)
        self.json = output == "json"


def _check_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        Subjects(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def check_host(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not is_host_id(value):
        raise click.BadParameter(f"{value!r} is not a host id (letters, digits, '-', '_')")
    return value


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--nats``, ``--prefix`` and ``-o/--output`` on every command."""
    options = [
        click.option(
            "--nats", "nats_url", envvar="BATON_NATS", default=DEFAULT_NATS_URL,
            show_default=True, show_envvar=True, metavar="URL", help="NATS server URL.",
        ),
        click.option(
            "--prefix", envvar="BATON_PREFIX", default=DEFAULT_PREFIX, show_default=True,
            show_envvar=True, callback=_check_prefix, help="Subject prefix of this Baton.",
        ),
        click.option(
            "-o", "--output", type=click.Choice(["table", "json"]), default="table",
            show_default=True, help="table for people, json for scripts.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="baton-vm", prog_name="baton")
def cli() -> None:
    """Baton moves running libvirt VMs between hosts over a NATS agent mesh.

    hosts and caps ask the baton-agent on each host; the migration commands ask
    the baton-coordinator. Both are reached through NATS.
    """


def main() -> None:
    """Console-script entry point (``baton``)."""
    # Imported here, not at the top: these build on this module's options and runner.
    from baton.cli import migrate as cli_migrate
    from baton.cli import storage as cli_storage

    cli_migrate.register(cli)
    cli_storage.register(cli)
    cli(prog_name="baton")


# --- running a command ------------------------------------------------------------------------


Action = Callable[[Client, Settings], Awaitable[None]]


def run(settings: Settings, action: Action) -> None:
    """Connect, run ``action``, disconnect; turn failures into one stderr line and an exit code."""
    try:
        asyncio.run(_connected(settings, action))
    except BatonError as exc:
        fail(exc.message, exit_code_for(exc))
    except Exception as exc:
        if os.environ.get("BATON_DEBUG"):
            traceback.print_exc()
        fail(f"internal error: {type(exc).__name__}: {exc}", ExitCode.INTERNAL)


async def _connected(settings: Settings, action: Action) -> None:
    try:
        nc = await client.connect(settings.nats_url, name="baton-cli")
    except BatonError as exc:
        exc.message += "; is nats-server running? set --nats or BATON_NATS"
        raise
    try:
        await action(nc, settings)
    finally:
        await nc.close()


def fail(message: str, code: ExitCode) -> NoReturn:
    click.echo(f"baton: {message}", err=True)
    sys.exit(code)


# --- commands ---------------------------------------------------------------------------------


@cli.command(epilog=EPILOG)
@common_options
def hosts(nats_url: str, prefix: str, output: str) -> None:
    """List the live agents and their hosts.

    Asks every baton-agent on NATS for its service info, then each one for its
    status, and shows host id, CPU model, libvirt and QEMU versions, whether the
    agent holds a libvirt connection, and the age of its last heartbeat.

    \b
    Examples:
      baton hosts
      baton hosts -o json | jq '.[].host_id'
      BATON_NATS=nats://10.0.0.1:4222 baton hosts
    """
    run(Settings(nats_url, prefix, output), _hosts)


async def _hosts(nc: Client, settings: Settings) -> None:
    agents = await client.discover_agents(nc, prefix=settings.subjects.prefix)
    if not agents:
        raise BatonError(
            ErrorCode.NOT_FOUND,
            f"no baton agents answer on NATS at {settings.nats_url} under prefix "
            f"'{settings.subjects.prefix}' (is baton-agent running on the hosts?)",
        )
    agents = await client.with_status(nc, agents, settings.subjects.prefix)
    now = datetime.now(UTC)
    records = [cli_render.host_record(agent, now) for agent in agents]
    if settings.json:
        click.echo(cli_render.hosts_json(records))
    else:
        cli_render.make_console().print(cli_render.hosts_table(records))


@cli.command(epilog=EPILOG)
@click.argument("host", callback=check_host)
@click.option("--refresh", is_flag=True, help="Make the agent re-read host facts now.")
@common_options
def caps(host: str, refresh: bool, nats_url: str, prefix: str, output: str) -> None:
    """Show the capabilities of HOST.

    CPU (arch, vendor, model, host-model, features), libvirt/QEMU versions,
    memory, bridges, libvirt networks, storage pools and the migration URI.
    With -o json, prints the agent's HostCaps reply as JSON.

    \b
    Examples:
      baton caps node1
      baton caps node1 -o json | jq .cpu.features
    """
    run(Settings(nats_url, prefix, output), lambda nc, s: _caps(nc, s, host, refresh))


async def _caps(nc: Client, settings: Settings, host: str, refresh: bool) -> None:
    subject = settings.subjects.agent(host, AgentEndpoint.CAPS)
    try:
        reply = await client.request(
            nc, subject, CapsRequest(refresh=refresh), HostCaps, timeouts.AGENT_CAPS
        )
    except (client.NoResponders, client.NoReply) as exc:
        exc.message = no_agent_message(host, exc)
        raise
    except BatonError as exc:
        exc.message = f"agent on '{host}' answered {exc.code}: {exc.message}"
        raise
    if settings.json:
        click.echo(codec.encode(reply).decode())
    else:
        cli_render.make_console().print(cli_render.caps_view(reply))


def no_agent_message(host: str, exc: BatonError) -> str:
    why = "nobody listens" if isinstance(exc, client.NoResponders) else "no reply in time"
    return (
        f"no agent answers for host '{host}' ({why}; is baton-agent running there? "
        "`baton hosts` lists the live ones)"
    )


if __name__ == "__main__":
    main()
