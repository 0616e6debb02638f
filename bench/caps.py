"""a. Capability query latency: ``baton.agent.<host>.caps`` vs a raw request-reply echo.

Baton side: :meth:`coordinator.agents.AgentClient.caps` — encode the request, the agent's micro
endpoint, :meth:`AgentCore.caps` from its 2 s cache, encode, and the typed decode of the reply.
Baseline: ``nc.request`` of the same request bytes to a plain nats-py subscription in the same
worker process that answers pre-encoded bytes of the caps reply's exact size. Requests are
sequential (one in flight), in alternating blocks of Baton and raw.

Secured, as Baton runs by default: a nats-server with TLS and nkeys enforcing Baton's roles; the
agent signs in as ``agent-<host>``, the caller as ``operator``; the raw responder and its caller
as a bench-only user allowed the raw subjects (the roles allow none), over the same TLS. The same
measurement on a plain server (no TLS, no auth) is reported beside it: the cost of security.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from baton.coordinator.agents import AgentClient
from baton.mesh.access import quiet_tls_close_noise
from baton.schemas.agent import CapsRequest
from baton.schemas.codec import encode
from baton.schemas.subjects import Subjects
from bench.common import RAW_PREFIX, Record, Worker, median, ms, percentile, raw_subject
from bench.worker import Keys, connect
from tests.support.secured import start_secured_nats

WORKER_HOST = "bh0000"  # the worker's first simulated host (bench/worker.py)

GOAL = "p50 ratio <= 1.10, p99 ratio <= 1.25"


async def _block(call: Callable[[], Awaitable[object]], count: int, into: list[float]) -> None:
    for _ in range(count):
        start = time.perf_counter()
        await call()
        into.append(time.perf_counter() - start)


BENCH_USER = ("bench", {"publish": {"allow": [f"{RAW_PREFIX}.>", "_INBOX.>"]},
                        "subscribe": {"allow": [f"{RAW_PREFIX}.>", "_INBOX.>"]}})


async def measure(url: str, host: str, rounds: int, block: int,
                  keys: Keys | None = None) -> dict[str, list[float]]:
    nc = await connect(url, "bench-caps", keys, "operator")
    raw_nc = nc if keys is None else await connect(url, "bench-caps-raw", keys, "bench")
    try:
        agents = AgentClient(nc, Subjects())
        body = encode(CapsRequest())
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "baton": lambda: agents.caps(host),
            "raw": lambda: raw_nc.request(raw_subject(host), body, timeout=10),
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
        if raw_nc is not nc:
            await raw_nc.close()


def _measured(nats_url: str, rounds: int, block: int,
              keys: Keys | None) -> tuple[dict[str, list[float]], dict[str, Any]]:
    extra = [] if keys is None else ["--keys", str(keys.directory), "--ca", str(keys.ca)]
    with Worker(nats_url, "--agents", "1", *extra) as worker:
        info = worker.wait_ready()
        return asyncio.run(measure(nats_url, info["hosts"][0], rounds, block, keys)), info


def _figures(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {side: {"p50_ms": ms(percentile(s, 50)), "p99_ms": ms(percentile(s, 99)),
                   "mean_ms": ms(sum(s) / len(s)), "n": len(s)} for side, s in samples.items()}


def _secured_session(rounds: int, block: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """One measurement on a fresh secured server and worker."""
    with tempfile.TemporaryDirectory(prefix="bench-a-") as tmp:
        secured = start_secured_nats(Path(tmp), [WORKER_HOST], extra_users=[BENCH_USER])
        try:
            assert secured.ca is not None
            return _measured(secured.url, rounds, block, Keys(secured.keys, secured.ca))
        finally:
            secured.stop()


def _ratio(samples: dict[str, list[float]], pct: float) -> float:
    return percentile(samples["baton"], pct) / percentile(samples["raw"], pct)


def run(nats_url: str, quick: bool) -> Record:
    """Secured (the ratio) and on ``nats_url``, a plain server (the cost of security).

    The ratio is the median over independent sessions (a fresh server and worker each): on this
    machine one session's p50 ratio moves by about 4 % from one to the next, more than the margin
    it is judged by, while the blocks inside a session agree."""
    rounds, block, sessions = (2, 25, 1) if quick else (30, 100, 5)
    quiet_tls_close_noise()  # asyncio's warning when a TLS peer closes: noise, not a finding
    measured = [_secured_session(rounds, block) for _ in range(sessions)]
    plain, _ = _measured(nats_url, rounds, block, None)
    p50s = [_ratio(samples, 50) for samples, _ in measured]
    p99s = [_ratio(samples, 99) for samples, _ in measured]
    p50, p99 = median(p50s), median(p99s)
    pooled = {side: [t for samples, _ in measured for t in samples[side]] for side in ("baton", "raw")}
    security = percentile(pooled["baton"], 50) / percentile(plain["baton"], 50)
    return Record(name="a", title="caps query latency (auth+TLS)", ratio=round(p50, 3), goal=GOAL,
                  met=p50 <= 1.10 and p99 <= 1.25,
                  ratios={"p50": round(p50, 3), "p99": round(p99, 3),
                          "secured/plain p50": round(security, 3)},
                  figures={**_figures(pooled), "plain": _figures(plain),
                           "session_p50_ratios": [round(r, 3) for r in p50s],
                           "session_p99_ratios": [round(r, 3) for r in p99s],
                           "payload_bytes": measured[0][1]["caps_bytes"]})
