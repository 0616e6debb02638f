"""Choosing a destination when the operator gives none.

Every other host that has an agent is checked exactly as an explicit ``--to`` would be (the same
pre-flight, so placement can never pick a host the migration itself would refuse). The hosts that
pass are ranked by :func:`rank` (pure): the fewest warnings first (a warning is a risk the
operator would otherwise have to accept), then the fewest migrations and disk moves already
touching the host (they share its link and CPU), then the most memory left once the VM has
arrived, then the host id, so the same facts always give the same choice. The hosts that fail
come last, each with its failed checks, so a refusal says what to fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from baton.coordinator import preflight
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.job import CheckStatus
from baton.schemas.migration import Candidate, MigrationRecord, Placement, PreflightReport
from baton.schemas.storage import StorageMoveRecord

ORDER = ("hosts that pass every check, then: fewest warnings, fewest migrations and disk moves "
         "touching the host, most memory left once the VM has arrived, host id")


@dataclass(frozen=True)
class Standing:
    """What the ranking reads of one candidate."""

    host: str
    ok: bool
    warnings: int = 0
    running_jobs: int = 0
    memory_left_bytes: int | None = None
    reason: str = ""  # why it fails


def rank(standings: Iterable[Standing]) -> list[Standing]:
    """Best first (see the module's docstring for the order)."""
    return sorted(standings, key=lambda s: (not s.ok, s.warnings, s.running_jobs,
                                            -(s.memory_left_bytes or 0), s.host))


def placement_of(standings: Iterable[Standing]) -> Placement:
    ranked = rank(standings)
    chosen = ranked[0].host if ranked and ranked[0].ok else None
    return Placement(chosen=chosen, order=ORDER, candidates=[
        Candidate(host=s.host, ok=s.ok, rank=i, warnings=s.warnings, running_jobs=s.running_jobs,
                  memory_left_bytes=s.memory_left_bytes, reason=s.reason or _standing_text(s))
        for i, s in enumerate(ranked, start=1)])


def _standing_text(s: Standing) -> str:
    memory = ("memory left unknown" if s.memory_left_bytes is None
              else f"{s.memory_left_bytes / 1024**3:.1f} GiB left after the move")
    return f"passes ({s.warnings} warning(s), {s.running_jobs} job(s) running there, {memory})"


def none_fits(vm: str, placement: Placement) -> BatonError:
    """The refusal when no host passes: each host with what failed there."""
    if not placement.candidates:
        return BatonError(ErrorCode.PRECONDITION_FAILED, f"no other host has an agent to take {vm}")
    failures = "; ".join(f"{c.host}: {c.reason}" for c in placement.candidates)
    return BatonError(ErrorCode.PRECONDITION_FAILED, f"no host can take {vm} — {failures}",
                      candidates=",".join(c.host for c in placement.candidates))


def running_jobs(records: Iterable[MigrationRecord | StorageMoveRecord], host: str) -> int:
    """How many of ``records`` (the unfinished ones) touch ``host``."""
    return sum(1 for r in records
               if (isinstance(r, MigrationRecord) and host in (r.source, r.destination))
               or (isinstance(r, StorageMoveRecord) and r.host == host))


def standing_of(facts: preflight.Facts, report: PreflightReport, running: int) -> Standing:
    needed = facts.domain.memory_kib * 1024
    return Standing(host=facts.destination, ok=report.ok,
                    warnings=sum(1 for c in report.checks if c.status == CheckStatus.WARN),
                    running_jobs=running,
                    memory_left_bytes=facts.destination_caps.memory.available_bytes - needed,
                    reason="" if report.ok else preflight.failure_summary(report.checks))


async def weigh(candidates: Iterable[str], source: str,
                gather: Callable[[str], Awaitable[preflight.Facts]],
                running: Callable[[str], int]) -> tuple[Placement, dict[str, PreflightReport]]:
    """Check every candidate but the source at once (``gather`` reads one destination's facts);
    a host that cannot be checked (no answer, an error) is a candidate that fails with that
    error. Returns the placement and each checked host's report."""
    hosts = [h for h in candidates if h != source]
    found = await asyncio.gather(*(gather(h) for h in hosts), return_exceptions=True)
    standings, reports = [], {}
    for host, facts in zip(hosts, found, strict=True):
        if isinstance(facts, BatonError):
            standings.append(Standing(host=host, ok=False, reason=f"not checked: {facts.message}"))
            continue
        if isinstance(facts, BaseException):
            raise facts
        reports[host] = preflight.report(facts)
        standings.append(standing_of(facts, reports[host], running(host)))
    return placement_of(standings), reports
