"""``bench/run``: run the benchmarks, print ratios side by side, optionally write JSON.

a, b and d start their own nats-server on 127.0.0.1 (a free port) and a worker process; f plans
a simulated drain in this process; c, e and g need the lab (root; see :mod:`bench.lab` and
:mod:`bench.prediction`). Each record: ``name``, ``ratio`` (Baton / baseline, achieved / cap for
e, the worst error for g, the plan / its lower bound for f), ``goal``, ``met``, and the raw
figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Record
from tests.support.natsserver import NatsServer

LOCAL = ("a", "b", "d", "f")
LAB = ("c", "e", "g")


def _local(name: str) -> Callable[[bool], Record]:
    def run(quick: bool) -> Record:
        from bench import caps, drain, events, fanout
        if name == "f":  # pure: no server
            return drain.run_f(quick)
        module = {"a": caps, "b": fanout, "d": events}[name]
        with NatsServer() as server:
            return module.run(server.url, quick)
    return run


def _lab(name: str) -> Callable[[bool], Record]:
    def run(quick: bool) -> Record:
        from bench import lab, prediction
        return {"c": lab.run_c, "e": lab.run_e, "g": prediction.run_g}[name](quick)
    return run


def _line(record: Record, seconds: float) -> str:
    ratios = "  ".join(f"{k}={v:g}" for k, v in record.ratios.items())
    verdict = "meets goal" if record.met else "MISSES goal"
    return (f"{record.name}  {record.title:<42} ratio {record.ratio:>7.3f}  [{ratios}]  "
            f"goal: {record.goal}  -> {verdict}  ({seconds:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke mode: seconds, not minutes")
    parser.add_argument("--only", action="append", choices=LOCAL + LAB, metavar="NAME",
                        help="run only this benchmark (a..g); repeatable")
    parser.add_argument("--out", type=Path, help="write the records as JSON to this file")
    parser.add_argument("--figures", action="store_true", help="print the raw figures too")
    args = parser.parse_args(argv)
    records = []
    for name in args.only or list(LOCAL + LAB):
        started = time.monotonic()
        record = (_local(name) if name in LOCAL else _lab(name))(args.quick)
        print(_line(record, time.monotonic() - started), flush=True)
        if args.figures:
            print("   " + json.dumps(record.figures), flush=True)
        records.append(record.to_json())
    if args.out is not None:
        args.out.write_text(json.dumps({"quick": args.quick, "records": records}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
