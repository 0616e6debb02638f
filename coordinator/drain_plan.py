"""The plan of a drain (pure): which host takes each VM, in which order they leave, and when each
is expected to start and end.

Every VM of the drained host leaves through the same host's link, ``lanes`` at a time (the
drain's ``--parallel``, or the coordinator's outbound limit), each at ``rate_mib_s`` (its cap, or
its share of the host's bandwidth budget). The lower bound of the whole drain is therefore the
larger of all its bytes over all its lanes and its largest VM over one lane; a plan ends close to
it when the big VMs go first and the small ones fill the gaps (longest first: Graham's list
scheduling, within 4/3 of the best order), while no destination takes more than ``inbound`` at
once.

Destinations come from the pre-flight: a VM goes only to a host that passed every check for it
(``candidates``, best first). Among those the plan takes the one that has received the fewest
bytes so far in this plan and still has the VM's memory left after what the plan already put
there, so the VMs spread and no host is filled past its memory by the drain's own moves.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass(frozen=True)
class DrainVm:
    name: str
    move_bytes: int  # what the migration sends: memory, plus the disks it copies
    memory_bytes: int  # what it needs on the destination
    candidates: tuple[str, ...]  # hosts that passed every check for it, best first


@dataclass(frozen=True)
class PlannedMove:
    vm: str
    destination: str
    start_s: float | None  # from the drain's start; None without a rate to predict with
    end_s: float | None


@dataclass(frozen=True)
class DrainPlan:
    moves: list[PlannedMove] = field(default_factory=list)  # in the order they should start
    unplaced: dict[str, str] = field(default_factory=dict)  # VM -> why no candidate can take it
    total_s: float | None = None  # when the last move is expected to end
    lower_bound_s: float | None = None  # no order and no placement can end sooner


def plan_drain(vms: Iterable[DrainVm], memory_left: dict[str, int | None], lanes: int,
               rate_mib_s: float | None, inbound: int) -> DrainPlan:
    """``memory_left``: each host's memory free for guests now (None: unknown, not limited)."""
    ordered = sorted(vms, key=lambda v: (-v.move_bytes, v.name))
    room = dict(memory_left)
    received: dict[str, int] = {}
    placed: list[tuple[DrainVm, str]] = []
    unplaced: dict[str, str] = {}
    for vm in ordered:
        fitting = [h for h in vm.candidates if _fits(room.get(h), vm.memory_bytes)]
        if not fitting:
            unplaced[vm.name] = (f"the hosts that pass its checks ({', '.join(vm.candidates)}) "
                                 "have no memory left for it once the drain's earlier VMs arrive"
                                 if vm.candidates else "no host passes its checks")
            continue
        rank = {h: i for i, h in enumerate(vm.candidates)}
        host = min(fitting, key=lambda h: (received.get(h, 0), rank[h]))
        received[host] = received.get(host, 0) + vm.move_bytes
        if room.get(host) is not None:
            room[host] = int(room[host] or 0) - vm.memory_bytes
        placed.append((vm, host))
    if rate_mib_s is None or rate_mib_s <= 0:
        return DrainPlan([PlannedMove(vm.name, host, None, None) for vm, host in placed],
                         unplaced)
    moves = schedule(placed, max(1, lanes), rate_mib_s * MIB, max(1, inbound))
    sizes = [vm.move_bytes for vm, _ in placed]
    lower = max(sum(sizes) / (max(1, lanes) * rate_mib_s * MIB),
                max(sizes, default=0) / (rate_mib_s * MIB))
    total = max((m.end_s or 0.0 for m in moves), default=0.0)
    return DrainPlan(moves, unplaced, round(total, 3), round(lower, 3))


def _fits(left: int | None, need: int) -> bool:
    return left is None or left >= need


def schedule(placed: list[tuple[DrainVm, str]], lanes: int, rate_bps: float,
              inbound: int) -> list[PlannedMove]:
    """List scheduling in the given (longest first) order: each move starts as soon as a lane
    is free and its destination takes fewer than ``inbound``; moves run at ``rate_bps``."""
    free_lanes = [0.0] * lanes  # when each lane is next free
    arriving: dict[str, list[float]] = {}  # destination -> end times of moves into it
    moves = []
    for vm, host in placed:
        start = heapq.heappop(free_lanes)
        ends = sorted(arriving.get(host, []))
        running = [e for e in ends if e > start]
        if len(running) >= inbound:
            start = running[len(running) - inbound]  # when enough of them have ended
        end = start + vm.move_bytes / rate_bps
        heapq.heappush(free_lanes, end)
        arriving.setdefault(host, []).append(end)
        moves.append(PlannedMove(vm.name, host, round(start, 3), round(end, 3)))
    return sorted(moves, key=lambda m: (m.start_s or 0.0, m.vm))
