"""``baton completion bash|zsh|fish``: the shell's completion script (click's own), and the live
completions it asks for: host ids, VM names and migration ids read from the running system.

A completer asks NATS (as the environment configures the CLI: BATON_NATS and its key and CA
variables, BATON_PREFIX) with a short deadline, and offers nothing rather than an error or a
hang when NATS or an agent does not answer: a Tab press must never block the shell.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import click
from click.shell_completion import CompletionItem, get_completion_class
from nats.aio.client import Client

from baton.cli.common import EPILOG
from baton.mesh import client
from baton.mesh.access import NatsAccess, from_environment, quiet_tls_close_noise
from baton.schemas.agent import DomainsReply, DomainsRequest
from baton.schemas.migration import JobsReply, JobsRequest
from baton.schemas.subjects import DEFAULT_PREFIX, AgentEndpoint, CoordinatorEndpoint, Subjects

COMPLETE_WITHIN_S = 2.0  # a Tab press waits this long at most
PROG = "baton"
COMPLETE_VAR = "_BATON_COMPLETE"


@click.command(epilog=EPILOG)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL.

    Completes commands and options, and live from the running system: host
    ids (--to, --from, --host, drain, caps), VM names (migrate, check,
    move-disk) and migration ids (abort, bandwidth, watch --id), asking NATS
    as the environment says (BATON_NATS, BATON_NATS_NKEY, ...) for at most
    2 s, offering nothing when it cannot.

    \b
    Examples:
      eval "$(baton completion bash)"          # this shell
      baton completion bash > /etc/bash_completion.d/baton
      baton completion zsh > "${fpath[1]}/_baton"
    """
    root = click.get_current_context().find_root().command  # the whole command tree
    script = get_completion_class(shell)
    assert script is not None  # the Choice lists only shells click supports
    click.echo(script(root, {}, PROG, COMPLETE_VAR).source())


def _access() -> tuple[NatsAccess, Subjects]:
    return from_environment(), Subjects(os.environ.get("BATON_PREFIX", DEFAULT_PREFIX))


def _live(fetch: Callable[[Client, Subjects], Awaitable[list[str]]],
          incomplete: str) -> list[CompletionItem]:
    """``fetch``'s names that start with ``incomplete``; none when anything goes wrong."""
    async def ask() -> list[str]:
        access, subjects = _access()
        async with asyncio.timeout(COMPLETE_WITHIN_S):
            nc = await client.connect(access, name="baton-completion")
            try:
                return await fetch(nc, subjects)
            finally:
                await nc.close()
    quiet_tls_close_noise()  # asyncio's note on closing a TLS connection is no completion
    try:
        names = asyncio.run(ask())
    except Exception:  # no NATS, no agent, no permission: nothing to offer, never an error
        return []
    return [CompletionItem(n) for n in sorted(set(names)) if n.startswith(incomplete)]


async def _hosts(nc: Client, subjects: Subjects) -> list[str]:
    return [a.host_id for a in await client.discover_agents(nc, prefix=subjects.prefix)]


async def _vms(nc: Client, subjects: Subjects) -> list[str]:
    hosts = await _hosts(nc, subjects)
    replies = await asyncio.gather(*(client.request(
        nc, subjects.agent(h, AgentEndpoint.DOMAINS), DomainsRequest(), DomainsReply,
        COMPLETE_WITHIN_S) for h in hosts), return_exceptions=True)
    return [d.name for r in replies if isinstance(r, DomainsReply) for d in r.domains]


async def _migration_ids(nc: Client, subjects: Subjects) -> list[str]:
    reply = await client.request(nc, subjects.coordinator(CoordinatorEndpoint.JOBS),
                                 JobsRequest(active_only=True), JobsReply, COMPLETE_WITHIN_S)
    return [r.migration_id for r in reply.migrations] + [
        r.migration_id for r in reply.storage_moves]


def complete_host(_ctx: click.Context, _param: click.Parameter, incomplete: str,
                  ) -> list[CompletionItem]:
    return _live(_hosts, incomplete)


def complete_vm(_ctx: click.Context, _param: click.Parameter, incomplete: str,
                ) -> list[CompletionItem]:
    return _live(_vms, incomplete)


def complete_migration_id(_ctx: click.Context, _param: click.Parameter, incomplete: str,
                          ) -> list[CompletionItem]:
    return _live(_migration_ids, incomplete)


def register(group: click.Group) -> None:
    group.add_command(completion)
