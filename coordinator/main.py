"""``baton-coordinator``: the NATS micro service that runs migrations between agents.

Owns, in one TaskGroup: the micro service's request tasks and every migration's runner.
Shutdown (SIGTERM/SIGINT): stop the service (no new requests), let running migrations finish
within ``--grace`` seconds, then abort and roll back the rest (waiting up to
``SHUTDOWN_ROLLBACK``), cancel whatever still runs, and drain NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client

from baton.coordinator import metrics
from baton.coordinator.admission import (
    DEFAULT_INBOUND,
    DEFAULT_OUTBOUND,
    DEFAULT_TOTAL,
    Admission,
    Limits,
)
from baton.coordinator.agents import AgentClient
from baton.coordinator.core import Coordinator
from baton.coordinator.job_runner import RunnerDeps
from baton.coordinator.lease import CLUSTER_TTL_S, TTL_S, Lease
from baton.coordinator.service import start_service
from baton.coordinator.store import JobStore, KvStore, MemoryStore
from baton.mesh import access, logsetup
from baton.mesh import metrics as mesh_metrics
from baton.mesh.access import NatsAccess
from baton.mesh.daemon import announce_ready, connect_nats, run_until_signalled
from baton.schemas import PROTOCOL_VERSION, timeouts
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import Phase
from baton.schemas.subjects import DEFAULT_PREFIX, JOBS_BUCKET, Subjects

log = structlog.get_logger(__name__)
EXIT_NO_STORE = 3  # the record store asked for cannot be opened: nothing was started
EXIT_LEASE_LOST = 4  # another coordinator may lead now: this one stopped (restart it: a standby)


class LeaseLost(BatonError):
    """The leadership lease went to someone else (or expired) while this coordinator led."""


class StoreUnavailable(BatonError):
    """``--store jetstream`` on a NATS without JetStream, or without the role's permissions."""


@dataclass(frozen=True)
class CoordinatorConfig:
    nats_url: str
    prefix: str = DEFAULT_PREFIX
    grace_s: float = timeouts.SHUTDOWN_GRACE
    rollback_s: float = timeouts.SHUTDOWN_ROLLBACK
    nats_nkey: str | None = None  # see baton.mesh.access
    nats_creds: str | None = None
    nats_ca: str | None = None
    store: str = "memory"  # "jetstream": records in the KV bucket (the command's default)
    kv_replicas: int = 1  # copies of each bucket in a NATS cluster (3 on a 3-node cluster)
    limits: Limits = field(default_factory=Limits)  # migrations at once (coordinator/admission.py)
    metrics_port: int | None = None  # Prometheus metrics over HTTP (None: not served)

    @property
    def nats(self) -> NatsAccess:
        return NatsAccess(url=self.nats_url, nkey_file=self.nats_nkey,
                          creds_file=self.nats_creds, ca_file=self.nats_ca)


def parse_args(argv: list[str] | None) -> tuple[CoordinatorConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="baton-coordinator",
        description="Baton's coordinator: checks, negotiates and runs VM migrations between "
        "baton-agent hosts over NATS. Start one or more per NATS mesh: with --store jetstream "
        "one leads (a lease in the <prefix>-leader KV bucket) and the others stand by, taking "
        "over within seconds if it dies and settling what it left running.")
    access.add_arguments(parser)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="subject prefix")
    parser.add_argument("--grace", type=float, default=timeouts.SHUTDOWN_GRACE, metavar="SECONDS",
                        help="on SIGTERM, let running migrations finish this long before "
                        "aborting them (default: %(default)s)")
    parser.add_argument("--store", choices=("jetstream", "memory"), default="jetstream",
                        help="where migration records are kept: the JetStream KV bucket "
                        f"{JOBS_BUCKET} (<prefix>-jobs; survives restarts; needs nats-server -js) "
                        "or this "
                        "process's memory (default: %(default)s)")
    parser.add_argument("--kv-replicas", type=int, metavar="N",
                        default=os.environ.get("BATON_KV_REPLICAS", "1"),
                        help="copies JetStream keeps of the records and the lease: 3 on a "
                        "3-node NATS cluster, so losing one node loses nothing; a bucket made "
                        "with fewer is scaled up (env BATON_KV_REPLICAS; default: %(default)s)")
    for flag, env, default, what in (
            ("--max-outbound", "BATON_MAX_OUTBOUND", DEFAULT_OUTBOUND, "leaving one host"),
            ("--max-inbound", "BATON_MAX_INBOUND", DEFAULT_INBOUND, "arriving at one host"),
            ("--max-migrations", "BATON_MAX_MIGRATIONS", DEFAULT_TOTAL, "in the cluster")):
        parser.add_argument(flag, type=int, metavar="N", default=os.environ.get(env, default),
                            help=f"migrations at once {what}; more wait in phase queued, in "
                            f"order (env {env}; default: %(default)s)")
    parser.add_argument("--host-bandwidth", type=int, metavar="MIB_S",
                        default=os.environ.get("BATON_HOST_BANDWIDTH"),
                        help="each host's migration budget in MiB/s, out and in together: the "
                        "migrations touching a host share it equally, and their caps change as "
                        "migrations come and go (env BATON_HOST_BANDWIDTH; default: no budget)")
    mesh_metrics.add_argument(parser)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-json", action=argparse.BooleanOptionalAction, default=None,
                        help="JSON log lines (default: when stderr is not a terminal)")
    args = parser.parse_args(argv)
    try:
        Subjects(args.prefix)
    except ValueError as exc:
        parser.error(str(exc))
    if args.grace < 0:
        parser.error("--grace must not be negative")
    if min(args.max_outbound, args.max_inbound, args.max_migrations) < 1:
        parser.error("--max-outbound, --max-inbound and --max-migrations must be at least 1")
    if args.host_bandwidth is not None and args.host_bandwidth < 1:
        parser.error("--host-bandwidth must be at least 1 MiB/s")
    if not 1 <= args.kv_replicas <= 5:
        parser.error("--kv-replicas must be 1 to 5 (JetStream's limit), at most the cluster's "
                     "node count")
    config = CoordinatorConfig(nats_url=args.nats, prefix=args.prefix, grace_s=args.grace,
                               nats_nkey=args.nats_nkey, nats_creds=args.nats_creds,
                               nats_ca=args.nats_ca, store=args.store,
                               kv_replicas=args.kv_replicas,
                               limits=Limits(outbound=args.max_outbound, inbound=args.max_inbound,
                                             total=args.max_migrations,
                                             host_bandwidth_mib_s=args.host_bandwidth),
                               metrics_port=args.metrics_port)
    return config, args


async def run_coordinator(config: CoordinatorConfig, stop: asyncio.Event,
                          started: asyncio.Future[Coordinator] | None = None) -> None:
    """Serve until ``stop`` is set; ``started`` gets the coordinator once requests are served."""
    subjects = Subjects(config.prefix)
    nc = await connect_nats(config.nats, "baton-coordinator")
    lease: Lease | None = None
    served: mesh_metrics.MetricsServer | None = None
    try:
        if config.metrics_port is not None:
            served = mesh_metrics.MetricsServer(config.metrics_port)
        store = await open_store(nc, config.store, subjects.jobs_bucket, config.kv_replicas)
        if config.store == "jetstream":  # records shared through NATS: one leader at a time
            lease = await Lease.open(nc, subjects.leader_bucket, replicas=config.kv_replicas,
                                     ttl_s=TTL_S if config.kv_replicas == 1 else CLUSTER_TTL_S)
            if not await _lead_or_stop(lease, stop):
                return
        async with asyncio.TaskGroup() as tasks:
            if lease is not None:
                tasks.create_task(_stop_when_lost(lease, stop))
            deps = RunnerDeps(nc=nc, agents=AgentClient(nc, subjects), subjects=subjects,
                              store=store, admission=Admission(config.limits))
            coordinator = Coordinator(deps, tasks.create_task)
            metrics.watch_jobs(
                lambda: sum(j.record.phase != Phase.QUEUED for j in coordinator.registry.active()),
                lambda: sum(j.record.phase == Phase.QUEUED for j in coordinator.registry.active()))
            log.info("records_restored", count=await coordinator.restore(), store=config.store)
            reconciling = tasks.create_task(coordinator.reconcile_forever())
            service = await start_service(nc, subjects, coordinator, tasks)
            await announce_ready(nc)  # the server knows every endpoint before we say we serve
            log.info("coordinator_started", version=PROTOCOL_VERSION, nats=config.nats_url)
            if started is not None:
                started.set_result(coordinator)
            await stop.wait()
            log.info("coordinator_stopping", active=len(coordinator.registry.active()))
            await service.stop()
            reconciling.cancel()
            await coordinator.wind_down(config.grace_s, config.rollback_s)
        if lease is not None and lease.lost:
            raise LeaseLost(ErrorCode.CONFLICT, "the leadership lease was lost (another "
                            "coordinator may lead now); this one stopped")
    finally:
        if served is not None:
            served.close()
        if lease is not None and not lease.lost:
            await lease.release()
        with contextlib.suppress(Exception):
            await nc.drain()
        log.info("coordinator_stopped")


async def _lead_or_stop(lease: Lease, stop: asyncio.Event) -> bool:
    """Wait for the lease as a standby; False if told to stop first."""
    acquiring = asyncio.ensure_future(lease.acquire())
    stopping = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if acquiring in done:
        acquiring.result()  # its error, if NATS refused
        return True
    acquiring.cancel()
    return False


async def _stop_when_lost(lease: Lease, stop: asyncio.Event) -> None:
    """Renew the lease until it is lost or the coordinator stops; a lost lease stops it."""
    keeping = asyncio.ensure_future(lease.keep())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({keeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if keeping.done() and not stopping.done():
        lease.lost = True
    keeping.cancel()
    stopping.cancel()
    stop.set()


async def open_store(nc: Client, kind: str, bucket: str, replicas: int = 1) -> JobStore:
    if kind == "memory":
        return MemoryStore()
    try:
        return await KvStore.open(nc, bucket, replicas)
    except Exception as exc:
        raise StoreUnavailable(
            ErrorCode.UNAVAILABLE, f"cannot open the JetStream bucket {bucket} "
            f"({type(exc).__name__}); run nats-server with JetStream (-js) and the coordinator "
            "role's permissions, or start with --store memory (records are then lost on "
            "restart)") from None


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    logsetup.configure(args.log_level, args.log_json)
    try:
        return run_until_signalled(lambda stop: run_coordinator(config, stop))
    except StoreUnavailable as exc:
        log.error("coordinator_refused", reason=exc.message)
        print(f"baton-coordinator: {exc.message}", file=sys.stderr)
        return EXIT_NO_STORE
    except LeaseLost as exc:
        log.error("coordinator_stopped_leaderless", reason=exc.message)
        print(f"baton-coordinator: {exc.message}; start it again to stand by", file=sys.stderr)
        return EXIT_LEASE_LOST


if __name__ == "__main__":
    sys.exit(main())
