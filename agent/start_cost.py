"""The fixed start of this host's outgoing moves (issue #12): the seconds a live migration spends
before and around its data, which the pre-copy model (agent/precopy_model.py) does not price.

libvirt connects to the destination, which starts its QEMU (and, for a copy, its NBD server and
the disks' mirrors) before a byte of memory flows; the switch-over then hands the devices across.
In the lab that is 0.2-0.7 s of a 2-5 s move at 48 MiB/s: unpriced, a short move's prediction
came out a tenth to a third under the measured time. It depends on the hosts, so it is learned
from this host's completed moves: a move capped at C that sent B bytes in T seconds spent
``T - B / C`` on everything but sending (the pause's bytes included in B, as the model prices
them). Shared and copy moves are learned apart (a copy starts more). The median of the last few
stands, so one slow start does not move the next prediction by itself.

Pure except for the little state it keeps; the agent's migration manager feeds it, its predictor
reads it.
"""

from __future__ import annotations

import statistics
from collections import deque

from baton.agent.precopy_model import MIB
from baton.schemas.events import JobStats

PRIOR_S = 0.3  # before this host completed a move of the kind: what the lab measures
MOST_S = 3.0  # a longer "start" is something else (a host under load): not learned
KEPT = 5  # completed moves whose start counts
# A move that sent at less than this share of its cap on average was not held by the cap (the
# guest or the host was slower): its time says nothing about the start.
CAPPED_SHARE = 0.5


def observed_start_s(stats: JobStats, cap_mib_s: int) -> float | None:
    """The seconds a completed move capped at ``cap_mib_s`` spent on anything but sending:
    its elapsed time less its bytes (memory and disks) at the cap. None when a figure is
    missing, or the move did not run at its cap."""
    if stats.time_elapsed_ms is None or cap_mib_s <= 0:
        return None
    sent = stats.data_processed_bytes
    if sent is None:
        if stats.memory_processed_bytes is None:
            return None
        sent = stats.memory_processed_bytes + (stats.disk_processed_bytes or 0)
    elapsed_s = stats.time_elapsed_ms / 1000
    cap_bps = cap_mib_s * MIB
    if elapsed_s <= 0 or sent / elapsed_s < CAPPED_SHARE * cap_bps:
        return None
    start_s = elapsed_s - sent / cap_bps
    return start_s if 0 <= start_s <= MOST_S else None


class StartCost:
    """The start learned from this host's last completed moves, shared and copy apart."""

    def __init__(self) -> None:
        self._seen: dict[bool, deque[float]] = {False: deque(maxlen=KEPT),
                                                True: deque(maxlen=KEPT)}

    def seconds(self, copy: bool) -> float:
        """The start a move of this kind is expected to take."""
        seen = self._seen[copy]
        return statistics.median(seen) if seen else PRIOR_S

    def observe(self, copy: bool, stats: JobStats, cap_mib_s: int | None) -> None:
        """Learn from a move that completed at one cap throughout (``cap_mib_s``; None: it had
        none, or the cap changed while it ran, and nothing is learned)."""
        if cap_mib_s is None:
            return
        start_s = observed_start_s(stats, cap_mib_s)
        if start_s is not None:
            self._seen[copy].append(start_s)
