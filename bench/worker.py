"""The far end of benchmarks a, b and d: simulated agents and raw responders in one process.

Every simulated host runs the real agent code — :class:`LibvirtHypervisor` on a private
``test:///`` driver instance (one per connection, all from one host XML), :class:`AgentCore`,
the micro service from :func:`agent.service.start_service` and an :class:`EventPublisher` — on a
NATS connection of its own, as a real agent has. Beside it, on the same connection, a raw nats-py
responder answers ``benchraw.host.<host>`` with bytes of exactly the size of that host's caps
reply, so Baton and the baseline differ only in the code that handles a request.

With ``--events`` the first host also takes control requests: emit synthetic lifecycle events
through the agent's publisher (or raw publishes of the same size), or suspend/resume its test
domain so that real libvirt events flow. Prints one JSON line when ready; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import cProfile
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from baton.agent import core as core_module
from baton.agent.core import AgentCore
from baton.agent.ledger import Ledger
from baton.agent.libvirt import LibvirtHypervisor
from baton.agent.migration import MigrationManager
from baton.agent.peers import caps_over_nats, peer_checker
from baton.agent.publisher import EventPublisher
from baton.agent.service import remote_domain_fetcher, start_service
from baton.cli.keys import SEED_SUFFIX
from baton.mesh import logsetup
from baton.mesh.access import NatsAccess
from baton.schemas.agent import CapsRequest
from baton.schemas.base import utc_now
from baton.schemas.codec import encode
from baton.schemas.events import LifecycleEvent, LifecycleKind
from baton.schemas.subjects import Subjects
from bench.common import CTL_EMIT, CTL_LIBVIRT, raw_events_subject, raw_group, raw_subject
from tests.integration.host_xml import write_host_xml

VM = "vm1"
START_BATCH = 50


@dataclass
class SimHost:
    host_id: str
    nc: Client
    hv: LibvirtHypervisor
    publisher: EventPublisher
    caps_body: bytes


def _echo(body: bytes) -> Callable[[Msg], Awaitable[None]]:
    async def answer(msg: Msg) -> None:
        await msg.respond(body)
    return answer


@dataclass(frozen=True)
class Keys:
    """Signing in to a secured server: the keys directory (baton-keys' layout) and the CA."""

    directory: Path
    ca: Path

    def access(self, url: str, user: str) -> NatsAccess:
        return NatsAccess(url=url, nkey_file=str(self.directory / f"{user}{SEED_SUFFIX}"),
                          ca_file=str(self.ca))


async def connect(url: str, name: str, keys: Keys | None, user: str) -> Client:
    options = {} if keys is None else keys.access(url, user).connect_options()
    return await nats.connect(url, name=name, max_reconnect_attempts=1, **options)


async def start_host(url: str, host_id: str, uri: str, groups: list[int],
                     tasks: asyncio.TaskGroup, owned: list[asyncio.Task[None]],
                     keys: Keys | None = None) -> SimHost:
    """With ``keys``, the agent signs in as ``agent-<host>`` and the raw responder, on a
    connection of its own, as the bench-only user ``bench`` (the roles allow no raw subject)."""
    subjects = Subjects()
    nc = await connect(url, f"bench-{host_id}", keys, f"agent-{host_id}")
    publisher = EventPublisher(nc, subjects, host_id)
    hv = LibvirtHypervisor(uri, host_id, publisher.emit)
    owned += [tasks.create_task(hv.run()), tasks.create_task(publisher.run())]
    if not await hv.wait_connected(60):
        raise RuntimeError(f"{host_id}: test driver did not connect")
    core = AgentCore(host_id, hv, f"qemu+tcp://{host_id}/system",
                     remote_domain_fetcher(nc, subjects), heartbeat_interval_s=5.0)
    state = tempfile.mkdtemp(prefix=f"bench-{host_id}-")
    atexit.register(shutil.rmtree, state, True)  # the worker process's ledgers go with it
    ledger = Ledger(Path(state))
    ledger.open()
    migrations = MigrationManager(host_id, hv, subjects, nc.publish, tasks, ledger,
                                  peer_checker(host_id, caps_over_nats(nc, subjects)))
    await start_service(nc, subjects, core, hv, migrations, tasks)
    caps_body = encode(await core.caps(CapsRequest()))
    raw = nc if keys is None else await connect(url, f"bench-raw-{host_id}", keys, "bench")
    await raw.subscribe(raw_subject(host_id), cb=_echo(caps_body))
    for size in groups:
        await raw.subscribe(raw_group(size), cb=_echo(caps_body))
    await raw.flush()
    return SimHost(host_id, nc, hv, publisher, caps_body)


def synthetic_event(host: str) -> LifecycleEvent:
    return LifecycleEvent(host_id=host, vm=VM, uuid="6695eb01-f6a4-8304-79aa-97f2502e193f",
                          event=LifecycleKind.SUSPENDED, detail="paused", at=utc_now())


def raw_event(size: int) -> bytes:
    """A raw event of ``size`` bytes that starts with its send time (epoch seconds)."""
    return f"{time.time():.6f}".encode().ljust(size, b" ")


async def emit_many(send: Callable[[], Awaitable[None] | None], count: int, rate: float) -> None:
    """``count`` sends at ``rate`` per second (0: as fast as the loop goes, yielding now and then)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(count):
        if rate:
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        elif i % 64 == 0:
            await asyncio.sleep(0)
        pending = send()
        if pending is not None:
            await pending


async def serve_control(host: SimHost, tasks: asyncio.TaskGroup) -> None:
    event_size = len(encode(synthetic_event(host.host_id)))
    raw = raw_events_subject()

    async def on_emit(msg: Msg) -> None:
        ask = json.loads(msg.data)
        if ask["kind"] == "baton":
            def send() -> Awaitable[None] | None:
                host.publisher.emit(synthetic_event(host.host_id))
                return None
        else:
            def send() -> Awaitable[None] | None:
                return host.nc.publish(raw, raw_event(event_size))
        await msg.respond(b"{}")
        tasks.create_task(emit_many(send, ask["count"], ask["rate"]))

    async def on_libvirt(msg: Msg) -> None:
        ask = json.loads(msg.data)
        tasks.create_task(_lifecycle_cycles(host, msg, ask["cycles"], ask["gap_ms"] / 1000))

    await host.nc.subscribe(CTL_EMIT, cb=on_emit)
    await host.nc.subscribe(CTL_LIBVIRT, cb=on_libvirt)


async def _lifecycle_cycles(host: SimHost, msg: Msg, cycles: int, gap_s: float) -> None:
    """Suspend and resume the test domain; answer with the wall time just before each call."""
    conn = host.hv.raw_connection
    assert conn is not None
    dom = await asyncio.to_thread(conn.lookupByName, VM)
    started: list[float] = []
    for _ in range(cycles):
        for call in (dom.suspend, dom.resume):
            started.append(time.time())
            await asyncio.to_thread(call)
            await asyncio.sleep(gap_s)
    await msg.respond(json.dumps({"started": started}).encode())


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ids = [f"bh{i:04d}" for i in range(args.agents)]
    groups = sorted(set(args.groups))
    keys = None if args.keys is None else Keys(args.keys, args.ca)
    with tempfile.TemporaryDirectory(prefix="baton-bench-") as tmp:
        uri = write_host_xml(Path(tmp), "bench", [VM])
        owned: list[asyncio.Task[None]] = []
        async with asyncio.TaskGroup() as tasks:
            hosts: list[SimHost] = []
            for first in range(0, len(ids), START_BATCH):
                hosts += await asyncio.gather(*(
                    start_host(args.nats, h, uri, [g for g in groups if i < g], tasks, owned,
                               keys)
                    for i, h in enumerate(ids[first:first + START_BATCH], start=first)))
            if args.events:
                await serve_control(hosts[0], tasks)
                await hosts[0].nc.flush()
            print(json.dumps({"hosts": ids, "caps_bytes": len(hosts[0].caps_body),
                              "vm": VM}), flush=True)
            await stop.wait()
            for task in owned:
                task.cancel()
            for host in hosts:
                await host.nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.worker", description=__doc__)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--keys", type=Path, metavar="DIR",
                        help="sign in with the keys in DIR (baton-keys' layout; needs --ca)")
    parser.add_argument("--ca", type=Path, metavar="FILE", help="the server's CA (TLS)")
    parser.add_argument("--groups", type=int, nargs="*", default=[],
                        help="broadcast group sizes to join (host i joins every size > i)")
    parser.add_argument("--events", action="store_true", help="serve the event controls")
    parser.add_argument("--caps-ttl", type=float, metavar="S",
                        help="override agent.core.CAPS_TTL_S (harness knob; see bench/README.md)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the run to FILE")
    args = parser.parse_args(argv)
    if args.caps_ttl is not None:
        core_module.CAPS_TTL_S = args.caps_ttl
    logsetup.configure("warning", json=True)  # stderr; stdout carries the ready line
    if args.profile is None:
        asyncio.run(run(args))
        return 0
    profiler = cProfile.Profile()
    profiler.runcall(asyncio.run, run(args))
    profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
