"""``baton vms``: every VM the agents know, where it is defined and where it runs.

Asks each host's agent for its domains at once (the agents' read-only ``domains`` endpoint, open
to the operator role). A host that does not answer is named on stderr and the others are still
listed; a VM that libvirt reports running on two hosts at once, which Baton never does, is
flagged and makes the command exit 1, so a monitoring script can rely on it.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import click
import msgspec
from nats.aio.client import Client
from rich.markup import escape
from rich.table import Table

from baton.cli.common import EPILOG, ExitCode, Settings, common_options, no_agent_message, run
from baton.cli.completion import complete_host
from baton.cli.follow import optional_host
from baton.cli.render import human_bytes, make_console
from baton.mesh import client
from baton.schemas import timeouts
from baton.schemas.agent import DomainInfo, DomainsReply, DomainsRequest, DomainState
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.subjects import AgentEndpoint


class VmRow(msgspec.Struct, frozen=True, kw_only=True):
    """One domain on one host, as ``-o json`` prints it."""

    vm: str
    host: str
    uuid: str
    state: str
    persistent: bool
    memory_bytes: int
    vcpus: int
    disks: list[str]


def rows_of(replies: dict[str, list[DomainInfo]]) -> list[VmRow]:
    """One row a domain and host, by VM name then host."""
    rows = [VmRow(vm=d.name, host=host, uuid=d.uuid, state=str(d.state), persistent=d.persistent,
                  memory_bytes=d.memory_kib * 1024, vcpus=d.vcpus,
                  disks=[disk.source_path or disk.target for disk in d.disks])
            for host, domains in replies.items() for d in domains]
    return sorted(rows, key=lambda r: (r.vm, r.host))


def running_twice(rows: list[VmRow]) -> dict[str, list[str]]:
    """VMs (by UUID, named) that libvirt reports running on more than one host."""
    hosts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row.state == DomainState.RUNNING:
            hosts[(row.uuid, row.vm)].append(row.host)
    return {vm: where for (_, vm), where in hosts.items() if len(where) > 1}


def vms_table(rows: list[VmRow], twice: dict[str, list[str]]) -> Table:
    table = Table()
    for column in ("vm", "host", "state", "memory", "vcpus", "definition", "disks"):
        table.add_column(column, overflow="fold" if column == "disks" else "ellipsis")
    for r in rows:
        state = f"[red]{r.state} (also on {', '.join(h for h in twice[r.vm] if h != r.host)})[/]" \
            if r.vm in twice and r.state == DomainState.RUNNING else r.state
        table.add_row(escape(r.vm), r.host, state, human_bytes(r.memory_bytes), str(r.vcpus),
                      "persistent" if r.persistent else "transient",
                      escape(", ".join(r.disks)) or "-")
    return table


@click.command(epilog=EPILOG)
@click.option("--host", callback=optional_host, metavar="HOST", shell_complete=complete_host,
              help="Only the VMs defined on this host.")
@common_options
def vms(host: str | None, nats_url: str, prefix: str, output: str) -> None:
    """List the VMs on every host: state, memory, vCPUs, disks and where each runs.

    A VM defined on several hosts (an inactive definition kept by --keep-source,
    say) has a row for each. A VM that libvirt reports running on two hosts at
    once is flagged in red and the command exits 1. A host whose agent does not
    answer is named on stderr; the others are still listed.

    \b
    Examples:
      baton vms
      baton vms --host node1
      baton vms -o json | jq '.vms[] | select(.state == "running") | .vm'
    """
    run(Settings(nats_url, prefix, output), lambda nc, s: _vms(nc, s, host))


async def _vms(nc: Client, settings: Settings, only: str | None) -> None:
    hosts = [only] if only else sorted(
        a.host_id for a in await client.discover_agents(nc, prefix=settings.subjects.prefix))
    if not hosts:
        raise BatonError(ErrorCode.NOT_FOUND, "no baton agents answer on NATS (is baton-agent "
                         "running on the hosts?)")
    answers = await asyncio.gather(*(_domains(nc, settings, h) for h in hosts),
                                   return_exceptions=True)
    replies: dict[str, list[DomainInfo]] = {}
    unanswered: dict[str, str] = {}
    for host, answer in zip(hosts, answers, strict=True):
        if isinstance(answer, (client.NoResponders, client.NoReply)):
            answer.message = no_agent_message(host, answer)
        if isinstance(answer, BatonError) and only:
            raise answer  # the one host asked for: its error is the answer (and the exit code)
        if isinstance(answer, BatonError):
            unanswered[host] = answer.message
        elif isinstance(answer, BaseException):
            raise answer
        else:
            replies[host] = answer
    rows = rows_of(replies)
    twice = running_twice(rows)
    if settings.json:
        click.echo(json.dumps({"vms": msgspec.to_builtins(rows), "unanswered": unanswered,
                               "running_on_two_hosts": twice}, indent=2))
    else:
        make_console().print(vms_table(rows, twice))
    for host, why in unanswered.items():
        click.echo(f"baton: {host} did not answer: {why}", err=True)
    if twice:
        click.echo("baton: running on two hosts at once: " + "; ".join(
            f"{vm} on {', '.join(where)}" for vm, where in twice.items()), err=True)
        raise SystemExit(ExitCode.FAILED)


async def _domains(nc: Client, settings: Settings, host: str) -> list[DomainInfo]:
    reply = await client.request(nc, settings.subjects.agent(host, AgentEndpoint.DOMAINS),
                                 DomainsRequest(), DomainsReply, timeouts.AGENT_DOMAINS)
    return reply.domains


def register(group: click.Group) -> None:
    group.add_command(vms)
