"""What every ``baton`` command shares: the common options, settings, exit codes and the runner
that connects to NATS, runs one command and turns any failure into one stderr line and an exit
code (see ``baton.cli.main`` for the table of exit codes).
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any, NoReturn

import click
from nats.aio.client import Client

from baton.mesh import client
from baton.mesh.access import (
    DEFAULT_NATS_URL,
    ENV_CA,
    ENV_CREDS,
    ENV_NKEY,
    ENV_URL,
    NatsAccess,
    quiet_tls_close_noise,
)
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.subjects import DEFAULT_PREFIX, Subjects, is_host_id


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2  # click's own code for usage errors
    NOT_FOUND = 3
    UNAVAILABLE = 4
    INTERNAL = 5
    FORBIDDEN = 6  # NATS refused the key, or the role may not do this


_EXIT_FOR_ERROR = {
    ErrorCode.BAD_REQUEST: ExitCode.USAGE,
    ErrorCode.NOT_FOUND: ExitCode.NOT_FOUND,
    ErrorCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    ErrorCode.TIMEOUT: ExitCode.UNAVAILABLE,
    ErrorCode.INTERNAL: ExitCode.INTERNAL,
    ErrorCode.FORBIDDEN: ExitCode.FORBIDDEN,
}

EPILOG = """\b
Environment:
  BATON_NATS        NATS server URL (default nats://127.0.0.1:4222)
  BATON_NATS_NKEY   nkey seed file (baton-keys makes one per role)
  BATON_NATS_CREDS  NATS credentials file, instead of an nkey
  BATON_NATS_CA     CA certificate of the NATS server (for tls:// URLs)
  BATON_PREFIX      subject prefix (default baton)
  BATON_DEBUG       set to 1 to print tracebacks of internal errors
\b
Exit codes:
  0 ok          1 operation failed    2 usage error
  3 not found   4 unavailable         5 internal error
  6 forbidden (NATS refused the key or the role)
"""


def exit_code_for(error: BatonError) -> ExitCode:
    return _EXIT_FOR_ERROR.get(error.code, ExitCode.FAILED)


class Settings:
    """The options every command takes."""

    def __init__(self, nats_url: str, prefix: str, output: str) -> None:
        self.nats_url = nats_url
        self.subjects = Subjects(prefix)
        self.json = output == "json"
        # The key and CA options are not parameters of every command function: they land in
        # the click context (``_remember``) and are read here.
        ctx = click.get_current_context(silent=True)
        meta = ctx.meta if ctx is not None else {}
        self.access = NatsAccess(url=nats_url, nkey_file=meta.get(_NKEY),
                                 creds_file=meta.get(_CREDS), ca_file=meta.get(_CA))


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


_NKEY, _CREDS, _CA = "baton.nats_nkey", "baton.nats_creds", "baton.nats_ca"


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta[f"baton.{param.name}"] = value or None


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--nats`` (and its key and CA), ``--prefix`` and ``-o/--output`` on every command."""
    options = [
        click.option(
            "--nats", "nats_url", envvar=ENV_URL, default=DEFAULT_NATS_URL,
            show_default=True, show_envvar=True, metavar="URL",
            help="NATS server URL (tls://... for TLS); a cluster's node URLs, comma-separated.",
        ),
        click.option(
            "--nats-nkey", envvar=ENV_NKEY, show_envvar=True, metavar="FILE", expose_value=False,
            callback=_remember, help="nkey seed file of this client's role (operator, monitor).",
        ),
        click.option(
            "--nats-creds", envvar=ENV_CREDS, show_envvar=True, metavar="FILE",
            expose_value=False, callback=_remember,
            help="NATS credentials file (JWT + seed), instead of --nats-nkey.",
        ),
        click.option(
            "--nats-ca", envvar=ENV_CA, show_envvar=True, metavar="FILE", expose_value=False,
            callback=_remember, help="CA certificate that signed the NATS server's.",
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


# --- running a command ------------------------------------------------------------------------


Action = Callable[[Client, Settings], Awaitable[None]]


def run(settings: Settings, action: Action) -> None:
    """Connect, run ``action``, disconnect; turn failures into one stderr line and an exit code."""
    quiet_tls_close_noise()
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
        nc = await client.connect(settings.access, name="baton-cli")
    except BatonError as exc:
        if exc.code is ErrorCode.UNAVAILABLE:
            exc.message += "; is nats-server running? set --nats or BATON_NATS"
        raise
    try:
        await action(nc, settings)
    finally:
        await nc.close()


def fail(message: str, code: ExitCode) -> NoReturn:
    click.echo(f"baton: {message}", err=True)
    sys.exit(code)


def no_agent_message(host: str, exc: BatonError) -> str:
    why = "nobody listens" if isinstance(exc, client.NoResponders) else "no reply in time"
    return (
        f"no agent answers for host '{host}' ({why}; is baton-agent running there? "
        "`baton hosts` lists the live ones)"
    )
