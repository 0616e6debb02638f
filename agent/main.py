"""``baton-agent``: one per hypervisor host.

Owns, in one TaskGroup: the self-healing libvirt connection, the event publisher, the heartbeat
and the micro service's request tasks. Shutdown (SIGTERM/SIGINT): stop the service (no new
requests), cancel the long-lived tasks, drain NATS, and the libvirt connection closes as its task
ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog

from baton.agent import AGENT_VERSION, metrics, storage_probe
from baton.agent.core import AgentCore
from baton.agent.identity import EXIT_HOST_TAKEN, HostTaken, refuse_if_served
from baton.agent.ledger import Ledger
from baton.agent.libvirt import LibvirtHypervisor
from baton.agent.migration import MigrationManager
from baton.agent.peers import caps_over_nats, peer_checker
from baton.agent.publisher import EventPublisher, heartbeat_loop
from baton.agent.service import remote_domain_fetcher, start_service
from baton.agent.storage_move import StorageMoveManager
from baton.mesh import access, logsetup
from baton.mesh import metrics as mesh_metrics
from baton.mesh.access import NatsAccess
from baton.mesh.daemon import announce_ready, connect_nats, run_until_signalled
from baton.schemas.events import VmEvent
from baton.schemas.subjects import DEFAULT_PREFIX, Subjects, host_id_from_hostname, is_host_id

log = structlog.get_logger(__name__)
FIRST_CONNECT_WAIT_S = 10.0
STATE_ROOT = "/var/lib/baton"


@dataclass(frozen=True)
class AgentConfig:
    host_id: str
    libvirt_uri: str
    nats_url: str
    migration_uri: str
    state_dir: str  # the ledger of what this agent made (agent/ledger.py); survives restarts
    prefix: str = DEFAULT_PREFIX
    heartbeat_interval_s: float = 5.0
    first_connect_wait_s: float = FIRST_CONNECT_WAIT_S  # then serve 'unavailable' until it connects
    reserved_memory_mib: int = 0
    nats_nkey: str | None = None  # see baton.mesh.access
    nats_creds: str | None = None
    nats_ca: str | None = None
    metrics_port: int | None = None  # Prometheus metrics over HTTP (None: not served)

    @property
    def nats(self) -> NatsAccess:
        return NatsAccess(url=self.nats_url, nkey_file=self.nats_nkey,
                          creds_file=self.nats_creds, ca_file=self.nats_ca)


def parse_args(argv: list[str] | None) -> tuple[AgentConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="baton-agent",
        description="Baton's per-host agent: answers capability queries over NATS and publishes "
        "the host's libvirt events. Run one per hypervisor host.")
    parser.add_argument("--host-id", help="subject-safe id of this host [A-Za-z0-9_-] "
                        "(default: derived from the hostname)")
    parser.add_argument("--libvirt-uri", default="qemu:///system",
                        help="libvirt connection to serve (default: %(default)s)")
    access.add_arguments(parser)
    parser.add_argument("--migration-uri", help="libvirt URI peers use to migrate to this host "
                        "(default: the --libvirt-uri)")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the agent writes down the files and domains it creates, so "
                        "clean-ups remove only those, also after a restart "
                        f"(default: {STATE_ROOT}/agent-<host id>)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="subject prefix")
    parser.add_argument("--heartbeat-interval", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--reserved-memory-mib", type=int, default=0, metavar="MIB",
                        help="memory held back for the host: not offered to incoming guests")
    mesh_metrics.add_argument(parser)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-json", action=argparse.BooleanOptionalAction, default=None,
                        help="JSON log lines (default: when stderr is not a terminal)")
    args = parser.parse_args(argv)
    host_id = args.host_id or host_id_from_hostname()
    if not is_host_id(host_id):
        parser.error(f"--host-id {host_id!r} is not subject-safe: use letters, digits, '-', '_'")
    if args.heartbeat_interval <= 0:
        parser.error("--heartbeat-interval must be positive")
    if args.reserved_memory_mib < 0:
        parser.error("--reserved-memory-mib cannot be negative")
    config = AgentConfig(host_id=host_id, libvirt_uri=args.libvirt_uri, nats_url=args.nats,
                         nats_nkey=args.nats_nkey, nats_creds=args.nats_creds,
                         nats_ca=args.nats_ca,
                         migration_uri=args.migration_uri or args.libvirt_uri,
                         state_dir=args.state_dir or f"{STATE_ROOT}/agent-{host_id}",
                         prefix=args.prefix, heartbeat_interval_s=args.heartbeat_interval,
                         reserved_memory_mib=args.reserved_memory_mib,
                         metrics_port=args.metrics_port)
    return config, args


async def run_agent(config: AgentConfig, stop: asyncio.Event,
                    started: asyncio.Future[LibvirtHypervisor] | None = None) -> None:
    """Serve until ``stop`` is set; ``started`` gets the hypervisor once requests are served."""
    structlog.contextvars.bind_contextvars(host=config.host_id)
    subjects = Subjects(config.prefix)
    nc = await connect_nats(config.nats, f"baton-agent-{config.host_id}")
    publisher = EventPublisher(nc, subjects, config.host_id)
    migrations: MigrationManager | None = None
    storage: StorageMoveManager | None = None

    def on_event(event: VmEvent) -> None:
        publisher.emit(event)
        if migrations is not None:
            migrations.observe(event)
        if storage is not None:
            storage.observe(event)

    hv = LibvirtHypervisor(config.libvirt_uri, config.host_id, on_event)
    ledger = Ledger(Path(config.state_dir))
    served: mesh_metrics.MetricsServer | None = None
    try:
        if config.metrics_port is not None:
            served = mesh_metrics.MetricsServer(config.metrics_port)
        await refuse_if_served(nc, subjects, config.host_id)  # before touching the host's state
        await asyncio.to_thread(ledger.open)
        async with asyncio.TaskGroup() as tasks:
            check_peer = peer_checker(config.host_id, caps_over_nats(nc, subjects))
            fetch_remote_domain = remote_domain_fetcher(nc, subjects)
            migrations = MigrationManager(config.host_id, hv, subjects, nc.publish, tasks,
                                          ledger, check_peer, fetch_remote_domain)
            storage = StorageMoveManager(config.host_id, hv, subjects, nc.publish, tasks, ledger)
            jobs = (migrations, storage)
            metrics.watch(lambda: hv.connected, lambda: sum(j.running_count for j in jobs))
            long_lived = [tasks.create_task(hv.run()), tasks.create_task(publisher.run())]
            if not await hv.wait_connected(config.first_connect_wait_s):
                log.warning("libvirt_not_connected_yet", uri=config.libvirt_uri)
            core = AgentCore(config.host_id, hv, config.migration_uri,
                             fetch_remote_domain, config.heartbeat_interval_s,
                             reserved_memory_bytes=config.reserved_memory_mib << 20)
            service = await start_service(nc, subjects, core, hv, migrations, tasks, storage)
            long_lived.append(tasks.create_task(heartbeat_loop(nc, subjects, core, hv)))
            long_lived.append(tasks.create_task(sweep_loop(core)))
            await announce_ready(nc)  # the server knows every endpoint before we say we serve
            log.info("agent_started", version=AGENT_VERSION, libvirt_uri=config.libvirt_uri,
                     nats=config.nats_url)
            if started is not None:
                started.set_result(hv)
            await stop.wait()
            log.info("agent_stopping")
            await service.stop()
            for task in long_lived:
                task.cancel()
    finally:
        if served is not None:
            served.close()
        with contextlib.suppress(Exception):
            await nc.drain()


async def sweep_loop(core: AgentCore, every_s: float = storage_probe.SWEEP_EVERY_S) -> None:
    """Probe tokens a dead coordinator left behind: swept at start, then every ``every_s``."""
    while True:
        try:
            await core.sweep_probe_tokens()
        except Exception as exc:  # libvirt away (no pool list): the next round sweeps
            log.warning("probe_token_sweep_failed", error=str(exc) or type(exc).__name__)
        await asyncio.sleep(every_s)


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    logsetup.configure(args.log_level, args.log_json)
    try:
        return run_until_signalled(lambda stop: run_agent(config, stop))
    except HostTaken as exc:
        log.error("agent_refused", reason=exc.message, **exc.details)
        print(f"baton-agent: {exc.message}", file=sys.stderr)
        return EXIT_HOST_TAKEN


if __name__ == "__main__":
    sys.exit(main())
