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
    6  forbidden (NATS refused the key, or the role may not do this; an agent refused harm)
"""

from __future__ import annotations

from datetime import UTC, datetime

import click
from nats.aio.client import Client

from baton.cli import baseline as cli_baseline
from baton.cli import completion as cli_completion
from baton.cli import drain as cli_drain
from baton.cli import migrate as cli_migrate
from baton.cli import render as cli_render
from baton.cli import storage as cli_storage
from baton.cli import vms as cli_vms
from baton.cli.common import EPILOG, Settings, check_host, common_options, no_agent_message, run
from baton.cli.completion import complete_host
from baton.mesh import client
from baton.schemas import codec, timeouts
from baton.schemas.agent import CapsRequest, HostCaps
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.subjects import AgentEndpoint


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="baton-vm", prog_name="baton")
def cli() -> None:
    """Baton moves running libvirt VMs between hosts over a NATS agent mesh.

    hosts and caps ask the baton-agent on each host; the migration commands ask
    the baton-coordinator. Both are reached through NATS.
    """


def main() -> None:
    """Console-script entry point (``baton``)."""
    cli_migrate.register(cli)
    cli_storage.register(cli)
    cli_vms.register(cli)
    cli_drain.register(cli)
    cli_completion.register(cli)
    cli(prog_name="baton")


# --- commands ---------------------------------------------------------------------------------


@cli.command(epilog=EPILOG)
@click.option("--baseline", is_flag=True,
              help="Show the hosts' CPU baseline and which guests' CPUs it can run.")
@common_options
def hosts(baseline: bool, nats_url: str, prefix: str, output: str) -> None:
    """List the live agents and their hosts.

    Asks every baton-agent on NATS for its service info, then each one for its
    status, and shows host id, CPU model, libvirt and QEMU versions, whether the
    agent holds a libvirt connection, and the age of its last heartbeat.

    With --baseline, shows the cluster's CPU baseline instead: the most capable
    CPU every host can provide, as libvirt computes it (baselineHypervisorCPU
    over the hosts' CPUs, on the first host's agent), its model, vendor and
    features, each host's CPU model, and for every VM on every host whether the
    baseline can run its CPU, and why: runs, does not run (the features it
    lacks), or not judged (host-passthrough, maximum and host-model CPUs have no
    fixed definition to judge). A host that does not answer is named on stderr
    and left out; the exit code is 0 whatever the verdicts.

    \b
    Examples:
      baton hosts
      baton hosts -o json | jq '.[].host_id'
      BATON_NATS=nats://10.0.0.1:4222 baton hosts
      baton hosts --baseline
      baton hosts --baseline -o json | jq '.baseline.model'
      baton hosts --baseline -o json | jq -r '.vms[] | select(.fit != "runs") | .vm'
    """
    run(Settings(nats_url, prefix, output), lambda nc, s: _hosts(nc, s, baseline))


async def _hosts(nc: Client, settings: Settings, baseline: bool = False) -> None:
    agents = await client.discover_agents(nc, prefix=settings.subjects.prefix)
    if not agents:
        raise BatonError(
            ErrorCode.NOT_FOUND,
            f"no baton agents answer on NATS at {settings.nats_url} under prefix "
            f"'{settings.subjects.prefix}' (is baton-agent running on the hosts?)",
        )
    if baseline:
        await cli_baseline.show_baseline(nc, settings, sorted(a.host_id for a in agents))
        return
    agents = await client.with_status(nc, agents, settings.subjects.prefix)
    now = datetime.now(UTC)
    records = [cli_render.host_record(agent, now) for agent in agents]
    if settings.json:
        click.echo(cli_render.hosts_json(records))
    else:
        cli_render.make_console().print(cli_render.hosts_table(records))


@cli.command(epilog=EPILOG)
@click.argument("host", callback=check_host, shell_complete=complete_host)
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


if __name__ == "__main__":
    main()
