"""c and e: benchmarks on the lab (real libvirt + QEMU under TCG; root; ``deploy/lab``).

The lab is named by ``BATON_LAB_PREFIX`` (default ``bn``). If it is already up and healthy with
its Baton stack (``deploy/lab up 2`` starts nats-server, agents and coordinator) it is used and
left up; otherwise it is brought up here and taken down afterwards.

c. End-to-end migration overhead: one shared-storage guest moved back and forth between h1 and h2,
   alternately by Baton (``baton.coordinator.migrate`` from this process, timed from the request
   to the ``succeeded`` phase, i.e. confirmed on both hosts) and by plain ``virsh migrate --live
   --p2p --persistent --undefinesource --tls --bandwidth B --migrateuri tcp://DEST`` (timed
   around the virsh process, run from the root namespace against the source's libvirt URI, TLS
   like Baton's default stream). Order ABBA, so both kinds move in both directions.
e. Bandwidth fidelity: per cap (8, 32, 128 MiB/s), a shared-nothing Baton migration and a plain
   ``virsh migrate --copy-storage-all --tls --bandwidth CAP`` of a fresh guest each, whose local
   disk is sized so the copy takes several seconds (the NBD mirror copies the whole virtual size
   at the cap). Both are rated the same way from the destination's own completed libvirt job
   (disk capacity + memory processed over its elapsed time): the ratio Baton / virsh is the
   figure. Baton's own achieved / cap (data processed / time elapsed from the migration record's
   ``result``) is kept beside it. Then, at 32 MiB/s, Baton's ``move-disk`` and a plain
   ``virsh blockcopy --bandwidth`` of a fresh local disk each, both rated the same way from
   libvirt: sampling ``blockjob --bytes`` while the copy runs, achieved = bytes copied / time
   between the first and the last sample taken before the copy was ready.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import nats
from nats.aio.client import Client

from baton.mesh.access import NatsAccess
from baton.schemas.codec import decode_any, encode
from baton.schemas.migration import (
    TERMINAL_PHASES,
    MigrateAccepted,
    MigrateRequest,
    MigrationRecord,
    Phase,
    PhaseEvent,
    StorageMode,
    Strategy,
)
from baton.schemas.storage import (
    StorageMoveAccepted,
    StorageMoveRecord,
    StorageMoveRequest,
    StoragePhaseEvent,
)
from baton.schemas.subjects import CoordinatorEndpoint, Subjects
from bench.common import Record, median
from tests.lab.labctl import Lab

GOAL_C = "ratio <= 1.05; overhead < 0.3 s"
GOAL_E = ("Baton / virsh at the same cap >= 0.97: migrate, and move-disk / blockcopy "
          "(achieved / cap beside them)")
MIB = 1024 * 1024
MIGRATE_TIMEOUT_S = 300.0


@contextmanager
def lab_stack() -> Iterator[tuple[Lab, NatsAccess]]:
    """The lab and how the operator reaches its NATS (auth and TLS on, as deployed); brought up
    (and down again) here unless already up."""
    lab = Lab(os.environ.get("BATON_LAB_PREFIX", "bn"))
    owned = not lab.healthy(2)
    if owned:
        lab.up(2, baton=True)
    try:
        env = lab.env()
        yield lab, NatsAccess(url=env["BATON_NATS"], nkey_file=env.get("BATON_NATS_NKEY"),
                              ca_file=env.get("BATON_NATS_CA"))
    finally:
        if owned:
            lab.down()


async def _until_terminal(nc: Client, endpoint: CoordinatorEndpoint, request: Any,
                          accepted_type: type[Any], event_type: type[Any]) -> Any:
    """Ask the coordinator for a job and wait for its terminal phase; the final record."""
    subjects = Subjects()
    sub = await nc.subscribe(subjects.migrations_filter(event="phase"))
    try:
        reply = await nc.request(subjects.coordinator(endpoint), encode(request), timeout=60)
        accepted = decode_any(reply.data, accepted_type)
        async with asyncio.timeout(MIGRATE_TIMEOUT_S):
            while True:
                msg = await sub.next_msg(timeout=MIGRATE_TIMEOUT_S)
                head = msgspec.json.decode(msg.data)  # migrations' and disk moves' events share it
                if head.get("migration_id") == accepted.migration_id and \
                        head.get("phase") in TERMINAL_PHASES:
                    return decode_any(msg.data, event_type).record
    finally:
        await sub.unsubscribe()


async def baton_migrate(nc: Client, request: MigrateRequest) -> MigrationRecord:
    """Ask the coordinator for a migration and wait for a terminal phase; the final record."""
    record: MigrationRecord = await _until_terminal(nc, CoordinatorEndpoint.MIGRATE, request,
                                                    MigrateAccepted, PhaseEvent)
    return record


def virsh_migrate(lab: Lab, vm: str, source: str, destination: str, bandwidth: int,
                  copy_storage: bool = False) -> None:
    dest_ip = lab.ip(destination)
    # --tls: the same encrypted stream Baton asks for by default (VIR_MIGRATE_TLS).
    copy = ["--copy-storage-all"] if copy_storage else []
    subprocess.run(["virsh", "-c", lab.uri(source), "migrate", "--live", "--p2p", "--persistent",
                    "--undefinesource", "--tls", *copy, "--bandwidth", str(bandwidth),
                    "--migrateuri", f"tcp://{dest_ip}", vm, lab.uri(destination)],
                   check=True, capture_output=True, timeout=MIGRATE_TIMEOUT_S)


async def _overhead_runs(lab: Lab, access: NatsAccess, vm: str, pairs: int, bandwidth: int,
                         ) -> dict[str, list[float]]:
    nc = await nats.connect(access.url, name="bench-migrate", **access.connect_options())
    times: dict[str, list[float]] = {"baton": [], "virsh": []}
    where = "h1"
    try:
        for i in range(2 * pairs):
            kind = ("baton", "virsh", "virsh", "baton")[i % 4]
            there = "h2" if where == "h1" else "h1"
            start = time.perf_counter()
            if kind == "baton":
                # strategy precopy: what virsh does; auto's measurement first is not overhead
                record = await baton_migrate(nc, MigrateRequest(
                    vm=vm, source=where, destination=there, bandwidth_mib_s=bandwidth,
                    strategy=Strategy.PRECOPY))
                if record.phase != Phase.SUCCEEDED:
                    raise RuntimeError(f"Baton migration {record.phase}: {record.error}")
            else:
                await asyncio.to_thread(virsh_migrate, lab, vm, where, there, bandwidth)
            times[kind].append(time.perf_counter() - start)
            where = there
            await asyncio.to_thread(lab.wait_domstate, there, vm, "running", 60)
            await asyncio.sleep(1.0)  # let the source's QEMU teardown settle
    finally:
        await nc.close()
    return times


def run_c(quick: bool) -> Record:
    pairs, bandwidth = (1, 64) if quick else (4, 64)
    vm = f"bc-{uuid.uuid4().hex[:6]}"
    with lab_stack() as (lab, access):
        lab.guest(vm, "h1", memory_mib=128, dirty_mb=16, dirty_rate_mib_s=8, storage="shared")
        try:
            times = asyncio.run(_overhead_runs(lab, access, vm, pairs, bandwidth))
        finally:
            lab.guest_rm(vm)
    baton, virsh = median(times["baton"]), median(times["virsh"])
    ratio = baton / virsh
    return Record(name="c", title="end-to-end migration overhead (lab)", ratio=round(ratio, 3),
                  goal=GOAL_C, met=ratio <= 1.05 and baton - virsh < 0.3,
                  ratios={"median": round(ratio, 3)},
                  figures={"baton_s": [round(t, 3) for t in times["baton"]],
                           "virsh_s": [round(t, 3) for t in times["virsh"]],
                           "baton_median_s": round(baton, 3), "virsh_median_s": round(virsh, 3),
                           "overhead_s": round(baton - virsh, 3), "bandwidth_mib_s": bandwidth,
                           "guest": "128 MiB, 16 MiB dirtied at 8 MiB/s, shared qcow2"},
                  notes="ABBA order, h1<->h2; Baton = request to confirmed 'succeeded'")


# --- e ---------------------------------------------------------------------------------------


_UNITS = {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}


def libvirt_completed_job(lab: Lab, host: str, vm: str) -> tuple[float, float]:
    """(memory processed in bytes, time elapsed in ms) from ``virsh domjobinfo --completed``:
    libvirt's own record of the finished migration, kept by the destination too."""
    rows = dict(line.split(":", 1) for line in
                lab.virsh(host, "domjobinfo", "--completed", vm).splitlines() if ":" in line)
    amount, unit = rows["Memory processed"].split()
    return float(amount) * _UNITS[unit], float(rows["Time elapsed"].split()[0])


def libvirt_rate(lab: Lab, host: str, vm: str, job: tuple[float, float] | None = None) -> float:
    """MiB/s of a finished shared-nothing migration as libvirt saw it on the destination: the
    disks' capacity (the mirror copies all of it) plus the memory processed, over the incoming
    job's elapsed time (from prepare, so the disk copy counts). The same reading for Baton and
    for virsh, so their ratio is fair. ``job``: the completed job already read (reading it
    clears it)."""
    memory, elapsed_ms = job or libvirt_completed_job(lab, host, vm)
    disks = sum(int(line.split()[1]) for line in
                lab.virsh(host, "domblkinfo", vm, "--all").splitlines()[2:] if line.strip())
    return round((disks + memory) / MIB / (elapsed_ms / 1000), 2)


def deviation_pct(baton: float, libvirt: float) -> float:
    return round(abs(baton - libvirt) / libvirt * 100, 2) if libvirt else 0.0


async def _capped_copy(lab: Lab, access: NatsAccess, vm: str, cap: int) -> dict[str, float]:
    nc = await nats.connect(access.url, name="bench-bandwidth", **access.connect_options())
    try:
        record = await baton_migrate(nc, MigrateRequest(
            vm=vm, source="h1", destination="h2", storage=StorageMode.COPY, bandwidth_mib_s=cap,
            strategy=Strategy.PRECOPY))  # as virsh: the copy rate, nothing chosen for it
    finally:
        await nc.close()
    stats = record.result
    if record.phase != Phase.SUCCEEDED or stats is None or not stats.time_elapsed_ms:
        raise RuntimeError(f"capped migration {record.phase}: {record.error}")
    data = stats.data_processed_bytes or ((stats.memory_processed_bytes or 0)
                                          + (stats.disk_processed_bytes or 0))
    rate = data / MIB / (stats.time_elapsed_ms / 1000)
    # Baton's figures against libvirt's own (the destination's completed job), never themselves.
    libvirt_memory, libvirt_ms = await asyncio.to_thread(libvirt_completed_job, lab, "h2", vm)
    return {"cap_mib_s": cap, "achieved_mib_s": round(rate, 2), "ratio": round(rate / cap, 3),
            "libvirt_mib_s": await asyncio.to_thread(libvirt_rate, lab, "h2", vm,
                                                     (libvirt_memory, libvirt_ms)),
            "data_mib": round(data / MIB, 1), "elapsed_s": stats.time_elapsed_ms / 1000,
            "memory_vs_libvirt_pct": deviation_pct(stats.memory_processed_bytes or 0, libvirt_memory),
            "elapsed_vs_libvirt_pct": deviation_pct(stats.time_elapsed_ms, libvirt_ms)}


def _blockjob_bytes(lab: Lab, vm: str) -> tuple[int, int] | None:
    """(copied, total) bytes of the running block job, None when there is none."""
    proc = lab.run("virsh", "h1", "blockjob", vm, "vda", "--raw", check=False)
    text = proc.stdout + proc.stderr
    cur, end = re.search(r"cur=(\d+)", text), re.search(r"end=(\d+)", text)
    return (int(cur.group(1)), int(end.group(1))) if cur and end else None


def _sample_block_job(lab: Lab, vm: str) -> list[tuple[float, int, int]]:
    """(time, copied, total) of vda's block job, sampled from libvirt until it is ready or
    gone (Baton pivots, and so ends it, as soon as the copy is ready)."""
    samples: list[tuple[float, int, int]] = []
    deadline = time.monotonic() + MIGRATE_TIMEOUT_S
    while True:
        before = time.monotonic()
        got = _blockjob_bytes(lab, vm)
        stamp = (before + time.monotonic()) / 2
        if got is None and not samples:
            if before > deadline:
                raise RuntimeError(f"no block job of {vm} appeared")
            continue  # not started yet
        if got is None or (got[0] >= got[1] > 0):
            return samples
        samples.append((stamp, *got))


def _block_rate(samples: list[tuple[float, int, int]], cap: int, what: str) -> dict[str, float]:
    """achieved = bytes copied / time between the first and the last sample with bytes moving."""
    moving = [s for s in samples if s[1] > 0]
    if len(moving) < 2:
        raise RuntimeError(f"{what} finished before two samples: {samples}")
    (t0, b0, _), (t1, b1, total) = moving[0], moving[-1]
    rate = (b1 - b0) / MIB / (t1 - t0)
    return {"cap_mib_s": cap, "achieved_mib_s": round(rate, 2), "ratio": round(rate / cap, 3),
            "disk_mib": round(total / MIB, 1), "window_s": round(t1 - t0, 2),
            "samples": len(moving)}


def _blockcopy(lab: Lab, vm: str, cap: int) -> dict[str, float]:
    target = f"/var/lib/libvirt/pools/fast/{vm}-copy.qcow2"
    lab.virsh("h1", "blockcopy", vm, "vda", target, "--transient-job", "--bandwidth", str(cap))
    try:
        samples = _sample_block_job(lab, vm)
    finally:
        lab.virsh("h1", "blockjob", vm, "vda", "--abort", check=False)
        lab.exec("h1", "rm", "-f", target, check=False)
    return _block_rate(samples, cap, "blockcopy")


async def baton_move_disk(nc: Client, request: StorageMoveRequest) -> StorageMoveRecord:
    """Ask the coordinator for a disk move and wait for a terminal phase; the final record."""
    record: StorageMoveRecord = await _until_terminal(
        nc, CoordinatorEndpoint.STORAGE_MOVE, request, StorageMoveAccepted, StoragePhaseEvent)
    return record


async def _move_disk(lab: Lab, access: NatsAccess, vm: str, cap: int) -> dict[str, float]:
    """Baton's ``move-disk`` into pool fast at ``cap``, rated from libvirt's block job exactly
    as the blockcopy is (sampled while Baton's copy runs, never from Baton's own figures)."""
    nc = await nats.connect(access.url, name="bench-move-disk", **access.connect_options())
    try:
        move = asyncio.create_task(baton_move_disk(nc, StorageMoveRequest(
            vm=vm, destination_pool="fast", host="h1", bandwidth_mib_s=cap)))
        samples = await asyncio.to_thread(_sample_block_job, lab, vm)
        record = await move
    finally:
        await nc.close()
    if record.phase != Phase.SUCCEEDED:
        raise RuntimeError(f"move-disk {record.phase}: {record.error}")
    return _block_rate(samples, cap, "move-disk")


def _disk_copies(lab: Lab, access: NatsAccess, cap: int, seconds: int) -> dict[str, float]:
    """Baton's move-disk and virsh blockcopy at the same cap, each on a fresh guest with a local
    disk that takes ``seconds`` at the cap."""
    rates: dict[str, dict[str, float]] = {}
    for kind in ("move-disk", "blockcopy"):
        vm = f"bb-{uuid.uuid4().hex[:6]}"
        lab.guest(vm, "h1", memory_mib=128, dirty_mb=8, dirty_rate_mib_s=1, storage="local",
                  disk_mib=cap * seconds)
        try:
            rates[kind] = (asyncio.run(_move_disk(lab, access, vm, cap)) if kind == "move-disk"
                           else _blockcopy(lab, vm, cap))
        finally:
            lab.guest_rm(vm)
    block, moved = rates["blockcopy"], rates["move-disk"]
    return block | {"move_disk_mib_s": moved["achieved_mib_s"], "move_disk_ratio": moved["ratio"],
                    "move_disk_vs_blockcopy": round(moved["achieved_mib_s"] / block["achieved_mib_s"], 3)}


def run_e(quick: bool) -> Record:
    caps, seconds = ([128], 2) if quick else ([8, 32, 128], 8)
    runs: list[dict[str, float]] = []
    with lab_stack() as (lab, access):
        for i, cap in enumerate(caps):
            # Baton and virsh alternate who goes first, so neither always meets a warmer host.
            order = ("baton", "virsh") if i % 2 == 0 else ("virsh", "baton")
            rates = {kind: _one_capped_copy(lab, access, kind, cap, seconds) for kind in order}
            baton, virsh = rates["baton"], rates["virsh"]
            runs.append(baton | {"virsh_libvirt_mib_s": virsh["libvirt_mib_s"],
                                 "vs_virsh": round(baton["libvirt_mib_s"] / virsh["libvirt_mib_s"], 3)})
        cap = 32
        block = _disk_copies(lab, access, cap, seconds)
    worst = min(*(r["vs_virsh"] for r in runs), block["move_disk_vs_blockcopy"])
    return Record(name="e", title="bandwidth fidelity (lab)", ratio=worst, goal=GOAL_E,
                  met=worst >= 0.97,  # achieved / cap is the second figure, not the goal
                  ratios={f"vs_virsh_{int(r['cap_mib_s'])}": r["vs_virsh"] for r in runs}
                  | {f"migrate_{int(r['cap_mib_s'])}": r["ratio"] for r in runs}
                  | {f"blockcopy_{cap}": block["ratio"], f"move_disk_{cap}": block["move_disk_ratio"],
                     f"move_disk_vs_blockcopy_{cap}": block["move_disk_vs_blockcopy"]},
                  figures={"migrations": runs, "blockcopy": block,
                           "max_deviation_from_libvirt_pct": max(
                               max(r["memory_vs_libvirt_pct"], r["elapsed_vs_libvirt_pct"]) for r in runs)},
                  notes="ratio = the worst of Baton / virsh migrate at the same cap (both rated from "
                        "the destination's libvirt job) and Baton move-disk / virsh blockcopy (both "
                        "rated from libvirt's block job); migrate_N = Baton's own achieved / cap")


def _one_capped_copy(lab: Lab, access: NatsAccess, kind: str, cap: int, seconds: int,
                     ) -> dict[str, float]:
    vm = f"be-{uuid.uuid4().hex[:6]}"
    lab.guest(vm, "h1", memory_mib=128, dirty_mb=8, dirty_rate_mib_s=1, storage="local",
              disk_mib=max(32, cap * seconds))
    try:
        if kind == "baton":
            return asyncio.run(_capped_copy(lab, access, vm, cap))
        virsh_migrate(lab, vm, "h1", "h2", cap, copy_storage=True)
        return {"cap_mib_s": cap, "libvirt_mib_s": libvirt_rate(lab, "h2", vm)}
    finally:
        lab.guest_rm(vm)
