"""a. Capability query latency: ``baton.agent.<host>.caps`` vs a raw request-reply echo.

Baton side: :meth:`coordinator.agents.AgentClient.caps` — encode the request, the agent's micro
endpoint, :meth:`AgentCore.caps` from its 2 s cache, encode, and the typed decode of the reply.
Baseline: ``nc.request`` of the same request bytes to a plain nats-py subscription in the same
worker process that answers pre-encoded bytes of the caps reply's exact size. Requests are
sequential (one in flight), in alternating blocks of Baton and raw on one connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import nats

from baton.coordinator.agents import AgentClient
from baton.schemas.agent import CapsRequest
from baton.schemas.codec import encode
from baton.schemas.subjects import Subjects
from bench.common import Record, Worker, ms, percentile, raw_subject

GOAL = "p50 ratio <= 1.10, p99 ratio <= 1.25"


async def _block(call: Callable[[], Awaitable[object]], count: int, into: list[float]) -> None:
    for _ in range(count):
        start = time.perf_counter()
        await call()
        into.append(time.perf_counter() - start)


async def measure(url: str, host: str, rounds: int, block: int) -> dict[str, list[float]]:
    nc = await nats.connect(url, name="bench-caps")
    try:
        agents = AgentClient(nc, Subjects())
        body = encode(CapsRequest())
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "baton": lambda: agents.caps(host),
            "raw": lambda: nc.request(raw_subject(host), body, timeout=10),
        }
        samples: dict[str, list[float]] = {"baton": [], "raw": []}
        for name, call in calls.items():  # warm-up, not recorded
            await _block(call, block, [])
            del name
        for i in range(rounds):
            order = ("baton", "raw") if i % 2 == 0 else ("raw", "baton")
            for name in order:
                await _block(calls[name], block, samples[name])
        return samples
    finally:
        await nc.close()


def run(nats_url: str, quick: bool) -> Record:
    rounds, block = (2, 25) if quick else (30, 100)
    with Worker(nats_url, "--agents", "1") as worker:
        info = worker.wait_ready()
        samples = asyncio.run(measure(nats_url, info["hosts"][0], rounds, block))
    figs = {side: {"p50_ms": ms(percentile(s, 50)), "p99_ms": ms(percentile(s, 99)),
                   "mean_ms": ms(sum(s) / len(s)), "n": len(s)} for side, s in samples.items()}
    p50 = percentile(samples["baton"], 50) / percentile(samples["raw"], 50)
    p99 = percentile(samples["baton"], 99) / percentile(samples["raw"], 99)
    return Record(name="a", title="caps query latency", ratio=round(p50, 3), goal=GOAL,
                  met=p50 <= 1.10 and p99 <= 1.25,
                  ratios={"p50": round(p50, 3), "p99": round(p99, 3)},
                  figures={**figs, "payload_bytes": info["caps_bytes"]})
