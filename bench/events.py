"""d. Event fan-out: agent event -> NATS -> subscriber, vs raw nats-py pub/sub of the same size.

Two parts, both against one simulated agent in the worker process:

- Synthetic (ratios): the worker builds :class:`LifecycleEvent` messages and hands them to the
  agent's real :class:`EventPublisher` (``emit`` -> bounded queue -> subject -> encode ->
  publish), exactly where the libvirt adapter hands real events; the baseline publishes raw
  payloads of the same size that carry their send time. This process subscribes to both and
  decodes Baton's events with the typed decoder a monitor would use. Throughput: a burst, as
  fast as the worker's loop goes, timed from the first event's send time to the last arrival.
  Latency: events paced at 1000/s, arrival time minus send time (same clock, one machine).
- Real libvirt (information): the test driver's domain is suspended and resumed; latency is from
  just before the libvirt call to the subscriber's arrival, so it includes the call itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from baton.schemas.codec import decode_any
from baton.schemas.events import LifecycleEvent
from baton.schemas.subjects import EventName, Subjects
from bench.common import (
    CTL_EMIT,
    CTL_LIBVIRT,
    Record,
    Worker,
    median,
    ms,
    percentile,
    raw_events_subject,
)

GOAL = "throughput >= 0.5x raw; p99 < 5 ms at 1000 events/s"
RATE = 1000.0


class Sink:
    """Counts arrivals on one subject and keeps each event's latency and the last arrival."""

    def __init__(self, decode_sent: Callable[[bytes], float]) -> None:
        self._sent_at = decode_sent
        self.latencies: list[float] = []
        self.arrivals: list[float] = []
        self.first_sent = 0.0
        self.last_arrival = 0.0
        self.expected = 0
        self.done = asyncio.Event()

    def reset(self, expected: int) -> None:
        self.latencies, self.arrivals, self.expected = [], [], expected
        self.done.clear()

    async def on_msg(self, msg: Msg) -> None:
        now = time.time()
        sent = self._sent_at(msg.data)
        if not self.latencies:
            self.first_sent = sent
        self.latencies.append(now - sent)
        self.arrivals.append(now)
        self.last_arrival = now
        if len(self.latencies) >= self.expected:
            self.done.set()


def _baton_sent(data: bytes) -> float:
    return decode_any(data, LifecycleEvent).at.timestamp()


def _raw_sent(data: bytes) -> float:
    return float(data[:20])


async def _burst(nc: Client, sink: Sink, kind: str, count: int, rate: float) -> Sink:
    sink.reset(count)
    await nc.request(CTL_EMIT, json.dumps({"kind": kind, "count": count, "rate": rate}).encode(),
                     timeout=10)
    await asyncio.wait_for(sink.done.wait(), timeout=60 + count / 1000)
    return sink


async def measure(url: str, host: str, vm: str, count: int, paced: int, reps: int,
                  cycles: int) -> dict[str, object]:
    nc = await nats.connect(url, name="bench-events", pending_size=64 * 1024 * 1024)
    try:
        sinks = {"baton": Sink(_baton_sent), "raw": Sink(_raw_sent)}
        await nc.subscribe(Subjects().events(host, vm, EventName.LIFECYCLE),
                           cb=sinks["baton"].on_msg, pending_msgs_limit=10 * count)
        await nc.subscribe(raw_events_subject(), cb=sinks["raw"].on_msg,
                           pending_msgs_limit=10 * count)
        await nc.flush()
        tput: dict[str, list[float]] = {"baton": [], "raw": []}
        lat: dict[str, list[float]] = {"baton": [], "raw": []}
        for i in range(reps + 1):  # rep 0 warms up
            for kind in ("baton", "raw") if i % 2 else ("raw", "baton"):
                sink = await _burst(nc, sinks[kind], kind, count, 0)
                if i:
                    tput[kind].append(count / (sink.last_arrival - sink.first_sent))
                sink = await _burst(nc, sinks[kind], kind, paced, RATE)
                if i:
                    lat[kind] += sink.latencies
        real = await _libvirt_latencies(nc, sinks["baton"], cycles)
        return {"tput": tput, "lat": lat, "real": real}
    finally:
        await nc.close()


async def _libvirt_latencies(nc: Client, sink: Sink, cycles: int) -> list[float]:
    sink.reset(2 * cycles)
    reply = await nc.request(CTL_LIBVIRT, json.dumps({"cycles": cycles, "gap_ms": 5}).encode(),
                             timeout=60 + cycles)
    await asyncio.wait_for(sink.done.wait(), timeout=30)
    started = json.loads(reply.data)["started"]
    return [a - s for a, s in zip(sink.arrivals, started, strict=True)]


def run(nats_url: str, quick: bool) -> Record:
    count, paced, reps, cycles = (300, 100, 1, 10) if quick else (20_000, 3000, 3, 200)
    with Worker(nats_url, "--agents", "1", "--events") as worker:
        info = worker.wait_ready()
        got = asyncio.run(measure(nats_url, info["hosts"][0], info["vm"], count, paced, reps,
                                  cycles))
    tput, lat, real = got["tput"], got["lat"], got["real"]
    assert isinstance(tput, dict) and isinstance(lat, dict) and isinstance(real, list)
    ratio = median(tput["baton"]) / median(tput["raw"])
    p99 = percentile(lat["baton"], 99)
    figures = {k: {"events_per_s": round(median(tput[k])), "p50_ms_at_1000_s": ms(percentile(lat[k], 50)),
                   "p99_ms_at_1000_s": ms(percentile(lat[k], 99))} for k in ("baton", "raw")}
    figures["libvirt_test_driver"] = {"p50_ms": ms(percentile(real, 50)),
                                      "p99_ms": ms(percentile(real, 99)), "events": len(real)}
    figures |= {"burst_events": count, "paced_events": paced, "reps": reps}
    return Record(name="d", title="event fan-out", ratio=round(ratio, 3), goal=GOAL,
                  met=ratio >= 0.5 and p99 < 0.005,
                  ratios={"throughput": round(ratio, 3),
                          "p99_at_1000_s": round(p99 / percentile(lat["raw"], 99), 3)},
                  figures=figures,
                  notes="synthetic LifecycleEvents through the agent's EventPublisher; "
                  "libvirt_test_driver = suspend/resume -> subscriber, call included")
