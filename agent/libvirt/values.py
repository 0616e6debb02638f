"""libvirt's plain return values as Baton's types (pure, so agent/libvirt/ stays the only package
that imports libvirt): domain states, version numbers, memory statistics, block job positions.
"""

from __future__ import annotations

from typing import Any

from baton.agent.block_copy import BlockJobProgress
from baton.schemas.agent import DomainState, Memory

# Indexed by libvirt's virDomainState value.
DOMAIN_STATES = (
    DomainState.NOSTATE,
    DomainState.RUNNING,
    DomainState.BLOCKED,
    DomainState.PAUSED,
    DomainState.SHUTDOWN,
    DomainState.SHUTOFF,
    DomainState.CRASHED,
    DomainState.PMSUSPENDED,
)


def domain_state(value: int) -> DomainState:
    """A virDomainState; a value a newer libvirt added is ``nostate``."""
    return DOMAIN_STATES[value] if 0 <= value < len(DOMAIN_STATES) else DomainState.NOSTATE


def version(number: int) -> str:
    """libvirt's packed version number (major * 1,000,000 + minor * 1,000 + micro) as text."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def memory_from_stats(stats: dict[str, int]) -> Memory:
    """Node memory stats (KiB, all cells) as total and the memory a new guest can get."""
    # Page cache and buffers are reclaimable: what a new guest can get is free + cached + buffers
    # (nodeinfo's total covers NUMA node 0 only on some machines; memory stats cover all cells).
    free_kib = stats.get("free", 0) + stats.get("cached", 0) + stats.get("buffers", 0)
    return Memory(total_bytes=stats.get("total", 0) * 1024, free_bytes=free_kib * 1024)


def block_job_progress(info: dict[str, Any]) -> BlockJobProgress | None:
    """``virDomainGetBlockJobInfo``'s dict; an empty one means no job runs on that disk."""
    if not info:
        return None
    return BlockJobProgress(cur_bytes=info.get("cur", 0), end_bytes=info.get("end", 0),
                            bandwidth_mib_s=info.get("bandwidth", 0))
