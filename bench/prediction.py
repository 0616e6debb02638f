"""g: prediction and ETA error (lab; issue #12).

For guests dirtying 4, 16 and 32 MiB/s of a 32 MiB working set (128 MiB guests, measured once
they have run a few seconds), behind a 48 MiB/s cap, on shared storage and with a copied 64 MiB
local disk: ``baton check --bandwidth`` gives the source's prediction (the guest's sampled pages
read through libvirt, agent/memory_sample.py; the model, agent/precopy_model.py); the guest
is then moved at that cap with strategy auto (which measures again before it starts, so the
source's ETA knows the dirty rate from the first pass; none of these guests stalls, so it runs as
plain pre-copy), and the prediction is compared with the completed job's elapsed time:
error = |predicted - measured| / measured. While it runs, every progress
event's ETA is compared with the real remainder (completed elapsed - the event's elapsed) at the
events nearest 25, 50 and 75 % of the run; that is judged on the run long enough for it (2 MiB/s
behind 8 MiB/s, about 20 s): in a 3 s run the remainder is within a progress interval or two.
The prediction's total includes the move's fixed start, which the source learns from its last
completed moves (agent/start_cost.py; the first case has only its prior): each run shows the
start predicted and the one libvirt's figures give for that move (elapsed - bytes / cap).
Goal (the issue's): every error within 25 %.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import nats
from nats.aio.client import Client

from baton.agent.start_cost import observed_start_s
from baton.schemas.codec import decode_any, encode
from baton.schemas.migration import (
    TERMINAL_PHASES,
    CheckRequest,
    MigrateAccepted,
    MigrateRequest,
    MigrationRecord,
    Phase,
    PhaseEvent,
    PreflightReport,
    ProgressEvent,
    StorageMode,
    Strategy,
)
from baton.schemas.subjects import CoordinatorEndpoint, Subjects
from bench.common import Record
from bench.lab import MIGRATE_TIMEOUT_S, lab_stack

GOAL_G = "|predicted - measured| / measured <= 0.25 (total time and ETA)"
CAP_MIB_S = 48
FRACTIONS = (0.25, 0.5, 0.75)
ETA_JUDGED_FROM_S = 10.0  # the ETA of a shorter run is within a progress interval or two
# A guest is measured once it has run a few seconds, as a VM someone moves has: in the first
# seconds after GUEST-READY the guest's kernel still dirties pages of its own (a 2 MiB/s guest
# read 4.9 MiB/s at once, then 2.0 and 2.4).
SETTLED_SEQ = 3


async def _predicted(nc: Client, vm: str, storage: StorageMode, cap: int) -> dict[str, Any]:
    reply = await nc.request(Subjects().coordinator(CoordinatorEndpoint.CHECK), encode(
        CheckRequest(vm=vm, destination="h2", source="h1", storage=storage,
                     bandwidth_mib_s=cap)), timeout=60)
    report = decode_any(reply.data, PreflightReport)
    if report.prediction is None:
        raise RuntimeError(f"no prediction for {vm}: {report.checks}")
    return {"dirty_rate_mib_s": report.prediction.dirty_rate_mib_s,
            "whole_mib": report.prediction.whole_mib,
            "predicted_s": report.prediction.total_s,
            "predicted_start_s": report.prediction.start_s,
            "predicted_strategy": report.prediction.strategy}


async def _moved(nc: Client, vm: str, storage: StorageMode, cap: int,
                 ) -> tuple[MigrationRecord, list[ProgressEvent]]:
    """Strategy auto at the cap; the final record and every progress event, in order."""
    subjects = Subjects()
    sub = await nc.subscribe(subjects.migrations_filter())
    progress: list[ProgressEvent] = []
    try:
        reply = await nc.request(subjects.coordinator(CoordinatorEndpoint.MIGRATE), encode(
            MigrateRequest(vm=vm, source="h1", destination="h2", storage=storage,
                           bandwidth_mib_s=cap, strategy=Strategy.AUTO)), timeout=60)
        accepted = decode_any(reply.data, MigrateAccepted)
        async with asyncio.timeout(MIGRATE_TIMEOUT_S):
            while True:
                msg = await sub.next_msg(timeout=MIGRATE_TIMEOUT_S)
                if f".{accepted.migration_id}." not in msg.subject:
                    continue
                if msg.subject.endswith(".progress"):
                    progress.append(decode_any(msg.data, ProgressEvent))
                    continue
                event = decode_any(msg.data, PhaseEvent)
                if event.phase in TERMINAL_PHASES:
                    return event.record, progress
    finally:
        await sub.unsubscribe()


def error(predicted: float | None, measured: float) -> float | None:
    return None if predicted is None or measured <= 0 else \
        round(abs(predicted - measured) / measured, 3)


def eta_errors(progress: list[ProgressEvent], total_s: float) -> dict[str, float | None]:
    """The ETA error at the events nearest each fraction of the run (None: no ETA given)."""
    timed = [(e.stats.time_elapsed_ms / 1000, e.eta_s) for e in progress
             if e.stats.time_elapsed_ms is not None and e.phase == Phase.MIGRATING]
    errors: dict[str, float | None] = {}
    for fraction in FRACTIONS:
        if not timed:
            errors[f"{int(fraction * 100)}%"] = None
            continue
        at, eta = min(timed, key=lambda t: abs(t[0] - fraction * total_s))
        errors[f"{int(fraction * 100)}%"] = error(eta, total_s - at)
    return errors


async def _case(access: Any, vm: str, storage: StorageMode, cap: int) -> dict[str, Any]:
    nc = await nats.connect(access.url, name="bench-prediction", **access.connect_options())
    try:
        predicted = await _predicted(nc, vm, storage, cap)
        record, progress = await _moved(nc, vm, storage, cap)
    finally:
        await nc.close()
    stats = record.result
    if record.phase != Phase.SUCCEEDED or stats is None or not stats.time_elapsed_ms:
        raise RuntimeError(f"migration of {vm} {record.phase}: {record.error}")
    measured = stats.time_elapsed_ms / 1000
    start = observed_start_s(stats, cap)  # what the source learns from this move
    return predicted | {"measured_s": measured, "error": error(predicted["predicted_s"], measured),
                        "measured_start_s": None if start is None else round(start, 2),
                        "eta_errors": eta_errors(progress, measured),
                        "passes": stats.memory_iteration, "storage": str(storage)}


def run_g(quick: bool) -> Record:
    # (guest dirty MiB/s, storage, cap MiB/s); the last, at a low cap, runs long enough for its
    # ETA to be judged
    cases = [(16, StorageMode.SHARED, CAP_MIB_S)] if quick else \
        [(rate, storage, CAP_MIB_S) for storage in (StorageMode.SHARED, StorageMode.COPY)
         for rate in (4, 16, 32)] + [(2, StorageMode.SHARED, 8)]
    runs = []
    with lab_stack() as (lab, access):
        for rate, storage, cap in cases:
            vm = f"bg-{uuid.uuid4().hex[:6]}"
            lab.guest(vm, "h1", memory_mib=128, dirty_mb=32, dirty_rate_mib_s=rate,
                      storage="shared" if storage == StorageMode.SHARED else "local",
                      disk_mib=64)
            try:
                lab.wait_alive_past(vm, SETTLED_SEQ)
                runs.append({"guest_dirty_mib_s": rate, "cap_mib_s": cap}
                            | asyncio.run(_case(access, vm, storage, cap)))
            finally:
                lab.guest_rm(vm)
    errors = [r["error"] for r in runs] + [e for r in runs if r["measured_s"] >= ETA_JUDGED_FROM_S
                                           for e in r["eta_errors"].values()]
    worst = max((e if e is not None else float("inf")) for e in errors)
    return Record(name="g", title="prediction and ETA error (lab)", ratio=round(worst, 3),
                  goal=GOAL_G, met=worst <= 0.25,
                  ratios={f"{r['storage']}_{r['guest_dirty_mib_s']}_at_{r['cap_mib_s']}":
                          r["error"] if r["error"] is not None else -1 for r in runs},
                  figures={"runs": runs},
                  notes=f"ratio = the worst error (inf: nothing predicted; -1 in ratios: none); "
                  f"ETA judged on runs of {ETA_JUDGED_FROM_S:g} s or more")
