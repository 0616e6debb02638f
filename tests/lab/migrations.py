"""Driving Baton migrations in lab tests through the real ``baton`` CLI, and reading the outcome
back from the records (the checks of what really happened use virsh, consoles and disks)."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.lab.labctl import Lab, LabError
from tests.lab.stack import BatonStack

MIB = 1024 * 1024


def migrate(stack: BatonStack, vm: str, *options: str, timeout: float = 600) -> tuple[int, dict[str, Any]]:
    """``baton migrate VM OPTIONS -o json``: (exit code, final record)."""
    proc = stack.baton("migrate", vm, *options, "-o", "json", check=False, timeout=timeout)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"baton migrate -> {proc.returncode}: {proc.stdout}{proc.stderr}") from None


def start(stack: BatonStack, vm: str, *options: str) -> str:
    """``baton migrate --detach``: the migration id."""
    proc = stack.baton("migrate", vm, *options, "--detach", "-o", "json")
    return str(json.loads(proc.stdout)["migration_id"])


def record(stack: BatonStack, migration_id: str) -> dict[str, Any]:
    jobs = json.loads(stack.baton("jobs", "-o", "json").stdout)
    rows = jobs["migrations"] if isinstance(jobs, dict) else jobs
    return next(r for r in rows if r["migration_id"] == migration_id)


def wait_phase(stack: BatonStack, migration_id: str, phases: set[str], timeout: float = 300,
               ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = record(stack, migration_id)
        if current["phase"] in phases:
            return current
        time.sleep(0.5)
    raise AssertionError(f"migration {migration_id} never reached {phases}: {current['phase']}")


def final(stack: BatonStack, migration_id: str, timeout: float = 300) -> dict[str, Any]:
    return wait_phase(stack, migration_id, {"succeeded", "failed", "aborted"}, timeout)


def memory_rate_mib_s(rec: dict[str, Any]) -> float:
    """Achieved memory copy rate of a finished migration, from the completed job's figures."""
    result = rec["result"]
    return result["memory_processed_bytes"] / MIB / (result["time_elapsed_ms"] / 1000)


def check(rec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in rec["checks"] if c["name"] == name)


_UNITS = {"B": 1, "bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def processed_bytes(lab: Lab, host: str, vm: str) -> int:
    """What libvirt's own job on ``host`` has moved so far (``virsh domjobinfo``'s "Data
    processed"; 0 while there is no job)."""
    value, _, unit = lab.jobinfo(host, vm).get("Data processed", "0 B").partition(" ")
    return int(float(value) * _UNITS[unit.strip()])


def wait_copied(lab: Lab, host: str, vm: str, at_least: int, timeout: float = 120) -> None:
    """Until libvirt's job on ``host`` has moved ``at_least`` more bytes than it had when asked:
    a copy shown under way by libvirt's figures, not slept on."""
    start = processed_bytes(lab, host, vm)
    lab._poll(lambda: processed_bytes(lab, host, vm) >= start + at_least, timeout,
              f"libvirt's job for {vm} on {host} to move {at_least >> 20} MiB more")


def throttle_pct(lab: Lab, vm: str, host: str = "h1") -> int | None:
    """libvirt's auto-converge throttle on ``host`` for the running job; None once the job is
    gone."""
    try:
        info = lab.jobinfo(host, vm)
    except LabError:
        return None
    if not info:
        return None
    return int(info.get("Auto converge throttle", "0").split()[0])
