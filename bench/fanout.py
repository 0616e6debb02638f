"""b. Pre-flight fan-out: one VM checked against N agents vs a raw scatter-gather.

"Checked against N agents" means what placement needs from every candidate destination: the
coordinator's :class:`AgentClient` asks all N agents for their caps concurrently (cached host
facts, typed replies), then the pure pre-flight checks that depend on the destination alone
(:func:`coordinator.preflight.check_network`, :func:`~coordinator.preflight.check_memory`) judge
the VM — read once, beforehand, from its source agent — against each answer. The per-VM probes
(storage token, CPU comparison) concern one chosen destination and are not part of the fan-out.

Baseline: the same N concurrent request-replies, issued with plain ``nc.request`` to a raw
responder per host that answers bytes of the caps reply's size (no decode). For information, a
broadcast scatter-gather — one publish, N replies on one inbox — is timed too. All N simulated
agents run in one worker process (real agent code on libvirt's test driver, one NATS connection
each); Baton and raw rounds alternate.
"""

from __future__ import annotations

import asyncio
import time

import nats
from nats.aio.client import Client

from baton.coordinator import preflight
from baton.coordinator.agents import AgentClient
from baton.schemas.agent import CapsRequest, DomainInfo
from baton.schemas.codec import encode
from baton.schemas.migration import CheckStatus, StorageMode
from baton.schemas.subjects import Subjects
from bench.common import Record, Worker, growth_exponent, median, ms, raw_group, raw_subject

GOAL = "N=1000 < 50 ms; <= 1.3x raw; growth exponent <= 1.1"
TIMEOUT_S = 30.0
# One process hosts every simulated agent, so with the agents' own 2 s TTL nearly every round at
# N=1000 would refresh 1000 caches through one thread pool — a cost real agents spread over N
# hosts. The fan-out is measured on warm caches; bench/README.md gives the 2 s figure too.
CAPS_TTL_S = 600.0


async def baton_round(agents: AgentClient, hosts: list[str], domain: DomainInfo,
                      source: str) -> int:
    """Caps from every host, then the destination checks; returns how many hosts were judged.

    (Most fail ``network`` here: the test domain's bridge does not exist on the bench machine.)
    """
    all_caps = await asyncio.gather(*(agents.caps(h) for h in hosts))
    fits: list[bool] = []
    for caps in all_caps:
        facts = preflight.Facts(vm=domain.name, source=source, destination=caps.host_id,
                                live=True, requested_storage=StorageMode.AUTO, domain=domain,
                                destination_caps=caps, on_destination=None)
        checks = (preflight.check_network(facts), preflight.check_memory(facts))
        fits.append(all(c.status != CheckStatus.FAIL for c in checks))
    return len(fits)


async def raw_round(nc: Client, hosts: list[str], body: bytes) -> int:
    replies = await asyncio.gather(*(nc.request(raw_subject(h), body, timeout=TIMEOUT_S)
                                     for h in hosts))
    return len(replies)


async def broadcast_round(nc: Client, size: int, body: bytes) -> int:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=size)
    try:
        await nc.publish(raw_group(size), body, reply=inbox)
        for _ in range(size):
            await sub.next_msg(timeout=TIMEOUT_S)
    finally:
        await sub.unsubscribe()
    return size


async def measure(url: str, hosts: list[str], vm: str, sizes: list[int],
                  rounds: dict[int, int]) -> dict[int, dict[str, list[float]]]:
    nc = await nats.connect(url, name="bench-fanout", pending_size=64 * 1024 * 1024)
    try:
        agents = AgentClient(nc, Subjects())
        domain = await agents.domain(hosts[0], vm)
        body = encode(CapsRequest())
        out: dict[int, dict[str, list[float]]] = {}
        for size in sizes:
            subset = hosts[:size]
            kinds = {"baton": lambda s=subset: baton_round(agents, s, domain, hosts[0]),
                     "raw": lambda s=subset: raw_round(nc, s, body),
                     "broadcast": lambda n=size: broadcast_round(nc, n, body)}
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for i in range(rounds[size] + 1):  # round 0 warms up
                order = list(kinds) if i % 2 else list(reversed(kinds))
                for kind in order:
                    start = time.perf_counter()
                    answered = await kinds[kind]()
                    if i:
                        times[kind].append(time.perf_counter() - start)
                    assert answered > 0, f"{kind}: nobody answered"
            out[size] = times
        return out
    finally:
        await nc.close()


def run(nats_url: str, quick: bool) -> Record:
    sizes = [5, 20] if quick else [10, 100, 1000]
    rounds = {5: 3, 20: 3} if quick else {10: 40, 100: 20, 1000: 10}
    started = time.monotonic()
    with Worker(nats_url, "--agents", str(max(sizes)), "--caps-ttl", str(CAPS_TTL_S),
                "--groups", *map(str, sizes)) as worker:
        info = worker.wait_ready()
        boot_s = time.monotonic() - started
        times = asyncio.run(measure(nats_url, info["hosts"], info["vm"], sizes, rounds))
    med = {n: {k: median(v) for k, v in t.items()} for n, t in times.items()}
    ratios = {f"n{n}": round(m["baton"] / m["raw"], 3) for n, m in med.items()}
    exponent = growth_exponent(sizes, [med[n]["baton"] for n in sizes])
    raw_exponent = growth_exponent(sizes, [med[n]["raw"] for n in sizes])
    top = max(sizes)
    ratio = med[top]["baton"] / med[top]["raw"]
    figures = {f"n{n}": {f"{k}_ms": ms(v) for k, v in m.items()} | {"rounds": rounds[n]}
               for n, m in med.items()}
    figures |= {"exponent_baton": round(exponent, 3), "exponent_raw": round(raw_exponent, 3),
                "payload_bytes": info["caps_bytes"], "worker_start_s": round(boot_s, 1),
                "caps_ttl_s": CAPS_TTL_S}
    return Record(name="b", title=f"pre-flight fan-out to N={','.join(map(str, sizes))} agents",
                  ratio=round(ratio, 3), goal=GOAL,
                  met=med[top]["baton"] < 0.050 and ratio <= 1.3 and exponent <= 1.1,
                  ratios=ratios | {"exponent": round(exponent, 3)}, figures=figures,
                  notes="ratio at the largest N; medians of alternating rounds")
