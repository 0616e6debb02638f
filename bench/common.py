"""What every benchmark shares: the result record, statistics, timing and the worker process.

Figures are ratios against a baseline measured in the same run (these machines are shared and
noisy); absolute times are kept in the record for information. The worker process
(:mod:`bench.worker`) hosts the far end — simulated agents and raw responders side by side — so
the measuring client never shares an event loop with what it measures.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"

# Subjects of the raw nats-py baselines: bench-only, outside every Baton prefix.
RAW_PREFIX = "benchraw"
CTL_EMIT = "benchctl.emit"
CTL_LIBVIRT = "benchctl.libvirt"
WORKER_READY_TIMEOUT_S = 600.0


def raw_subject(host: str) -> str:
    """A raw responder's own subject (one per simulated host, like ``baton.agent.<host>.caps``)."""
    return f"{RAW_PREFIX}.host.{host}"


def raw_group(size: int) -> str:
    """Broadcast subject the first ``size`` raw responders listen on (scatter-gather baseline)."""
    return f"{RAW_PREFIX}.all.{size}"


def raw_events_subject() -> str:
    return f"{RAW_PREFIX}.events"


@dataclass
class Record:
    """One benchmark's result: ``ratio`` is the headline figure, ``goal`` the target it aims at."""

    name: str
    title: str
    ratio: float
    goal: str
    met: bool
    ratios: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def growth_exponent(sizes: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares slope of log(time) over log(size): 1.0 is linear growth."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(t) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class Worker:
    """``python -m bench.worker``: started, waited for (its first stdout line), and stopped by pid."""

    def __init__(self, nats_url: str, *args: str) -> None:
        if profile := os.environ.get("BENCH_PROFILE_DIR"):
            args += ("--profile", str(Path(profile) / f"worker-{os.getpid()}-{id(self)}.prof"))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._proc = subprocess.Popen(
            [str(PYTHON if PYTHON.exists() else sys.executable), "-m", "bench.worker",
             "--nats", nats_url, *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.info: dict[str, Any] = {}

    def wait_ready(self) -> dict[str, Any]:
        """The worker's ready line (hosts, payload sizes); raises if it died first."""
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"bench worker exited with {self._proc.returncode} before ready")
        self.info = json.loads(line)
        return self.info

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
