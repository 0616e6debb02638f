"""Admission control: how many migrations run at once, and the queue of those that wait.

Ten copies started together share one link and finish no sooner than one after another, each
holding its guest in pre-copy the whole time; so the coordinator lets at most ``outbound``
migrations leave a host, ``inbound`` arrive at one, and ``total`` run in the cluster (KubeVirt's
defaults: 2, 2, 5). A migration beyond them waits in phase ``queued`` (written to the job store
like every phase), touching no host, and can be aborted there.

The rule is :func:`admissible` (pure): in order of arrival, each waiting migration starts if it
fits beside those running and those admitted before it in the same pass. A migration blocked by
its own hosts does not hold up a later one between other hosts (the cluster's limit still
counts everyone). :class:`Admission` keeps the running and waiting tickets of this coordinator
and wakes the waiting runners when a slot frees. Disk moves between pools of one host are not
counted. Migrations a restarted coordinator settles from libvirt's facts (coordinator/takeover.py)
do not hold slots: they only finish what was already running.

Bandwidth budget (``host_bandwidth_mib_s``): each host's migration traffic, out and in together,
is held to the budget by :func:`shares` (pure): a running migration gets an equal share of the
budget of each of its two hosts (split among the migrations touching that host), the smaller
of the two, and never more than its own cap. Each change of the running set re-shares, and
:class:`Admission` tells every runner whose share changed (it sets the cap on libvirt's job).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace

DEFAULT_OUTBOUND = 2
DEFAULT_INBOUND = 2
DEFAULT_TOTAL = 5


@dataclass(frozen=True)
class Limits:
    outbound: int = DEFAULT_OUTBOUND  # migrations leaving one host
    inbound: int = DEFAULT_INBOUND  # migrations arriving at one host
    total: int = DEFAULT_TOTAL  # migrations in the cluster
    host_bandwidth_mib_s: int | None = None  # each host's budget, shared by its migrations

    def __post_init__(self) -> None:
        budget = self.host_bandwidth_mib_s
        if min(self.outbound, self.inbound, self.total) < 1 or (budget is not None and budget < 1):
            raise ValueError(f"every migration limit must be at least 1: {self}")


@dataclass(frozen=True)
class Ticket:
    migration_id: str
    source: str
    destination: str
    order: int = 0  # arrival: lower goes first
    group: str | None = None  # a drain: at most ``group_limit`` of its migrations at once
    group_limit: int | None = None
    cap_mib_s: int | None = None  # the migration's own cap (--bandwidth); None: uncapped


def shares(running: Iterable[Ticket], budget_mib_s: int | None) -> dict[str, int | None]:
    """Each running migration's cap: its own, or under a budget an equal share of each of its
    hosts' budget (split among the migrations touching that host), whichever is smallest."""
    running = list(running)
    touching: dict[str, int] = {}
    for ticket in running:
        for host in {ticket.source, ticket.destination}:
            touching[host] = touching.get(host, 0) + 1
    caps: dict[str, int | None] = {}
    for ticket in running:
        if budget_mib_s is None:
            caps[ticket.migration_id] = ticket.cap_mib_s
            continue
        crowd = max(touching[ticket.source], touching[ticket.destination])
        share = max(1, budget_mib_s // crowd)
        caps[ticket.migration_id] = share if ticket.cap_mib_s is None \
            else min(share, ticket.cap_mib_s)
    return caps


def admissible(waiting: Iterable[Ticket], running: Iterable[Ticket],
               limits: Limits) -> list[Ticket]:
    """The waiting tickets that may start now, in order of arrival."""
    running = list(running)
    out, into, total = _counts(running)
    groups = _group_counts(running)
    admitted = []
    for ticket in sorted(waiting, key=lambda t: t.order):
        if total >= limits.total:
            break
        if out.get(ticket.source, 0) >= limits.outbound \
                or into.get(ticket.destination, 0) >= limits.inbound or _group_full(ticket, groups):
            continue
        admitted.append(ticket)
        out[ticket.source] = out.get(ticket.source, 0) + 1
        into[ticket.destination] = into.get(ticket.destination, 0) + 1
        if ticket.group is not None:
            groups[ticket.group] = groups.get(ticket.group, 0) + 1
        total += 1
    return admitted


def _group_counts(running: Iterable[Ticket]) -> dict[str, int]:
    groups: dict[str, int] = {}
    for ticket in running:
        if ticket.group is not None:
            groups[ticket.group] = groups.get(ticket.group, 0) + 1
    return groups


def _group_full(ticket: Ticket, groups: dict[str, int]) -> bool:
    return (ticket.group is not None and ticket.group_limit is not None
            and groups.get(ticket.group, 0) >= ticket.group_limit)


def why_waiting(ticket: Ticket, running: Iterable[Ticket], limits: Limits) -> str:
    """The limit that holds ``ticket`` back, in words (for the ``queued`` phase's reason)."""
    running = list(running)
    out, into, total = _counts(running)
    if total >= limits.total:
        return f"{total} migrations run in the cluster (limit {limits.total})"
    if _group_full(ticket, _group_counts(running)):
        return f"{ticket.group_limit} of its drain's migrations run (--parallel {ticket.group_limit})"
    if out.get(ticket.source, 0) >= limits.outbound:
        return f"{out[ticket.source]} migrations leave {ticket.source} (limit {limits.outbound})"
    if into.get(ticket.destination, 0) >= limits.inbound:
        return (f"{into[ticket.destination]} migrations arrive at {ticket.destination} "
                f"(limit {limits.inbound})")
    return "earlier requests wait for the same slots"


def _counts(running: Iterable[Ticket]) -> tuple[dict[str, int], dict[str, int], int]:
    out: dict[str, int] = {}
    into: dict[str, int] = {}
    total = 0
    for ticket in running:
        out[ticket.source] = out.get(ticket.source, 0) + 1
        into[ticket.destination] = into.get(ticket.destination, 0) + 1
        total += 1
    return out, into, total


@dataclass
class Admission:
    """This coordinator's running and waiting migrations (in memory; the records are durable)."""

    limits: Limits = field(default_factory=Limits)
    _running: dict[str, Ticket] = field(default_factory=dict)
    _waiting: dict[str, tuple[Ticket, Callable[[], None]]] = field(default_factory=dict)
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)
    _closed: bool = False  # shutting down: nothing more starts; the queue waits for the next
    _caps: dict[str, int | None] = field(default_factory=dict)  # the running ones', as shared
    _on_cap: dict[str, Callable[[int | None], None]] = field(default_factory=dict)

    def close(self) -> None:
        self._closed = True

    def ticket(self, migration_id: str, source: str, destination: str,
               group: str | None = None, group_limit: int | None = None,
               cap_mib_s: int | None = None) -> Ticket:
        return Ticket(migration_id, source, destination, next(self._arrivals), group, group_limit,
                      cap_mib_s)

    def try_admit(self, ticket: Ticket, wake: Callable[[], None],
                  on_cap: Callable[[int | None], None] | None = None) -> bool:
        """Admit ``ticket`` if the rule lets it start now; else (re)register it as waiting, to
        be woken by ``wake`` when a slot frees. Once admitted, ``on_cap`` hears each change of
        its cap under the bandwidth budget (not the one its admission itself sets: see cap)."""
        waiting = [t for t, _ in self._waiting.values()]
        if ticket.migration_id not in self._waiting:
            waiting.append(ticket)
        if not self._closed and ticket in admissible(waiting, self._running.values(),
                                                     self.limits):
            self._waiting.pop(ticket.migration_id, None)
            self._running[ticket.migration_id] = ticket
            self._reshare()
            if on_cap is not None:
                self._on_cap[ticket.migration_id] = on_cap
            return True
        self._waiting[ticket.migration_id] = (ticket, wake)
        return False

    def why_waiting(self, ticket: Ticket) -> str:
        if self._closed:
            return "the coordinator is shutting down; the next one starts it"
        return why_waiting(ticket, self._running.values(), self.limits)

    def leave(self, migration_id: str) -> None:
        """A migration ended (or stopped waiting): free its slot and wake every waiting one."""
        freed = self._running.pop(migration_id, None) is not None
        self._waiting.pop(migration_id, None)
        self._on_cap.pop(migration_id, None)
        if freed:
            self._reshare()
            for _, wake in list(self._waiting.values()):
                wake()

    def cap(self, migration_id: str) -> int | None:
        """A running migration's cap now: its own, or its share of the budget if smaller."""
        return self._caps.get(migration_id)

    def share(self, migration_id: str) -> int | None:
        """A running migration's share of the budget whatever its own cap (None: no budget)."""
        ticket = self._running.get(migration_id)
        if ticket is None or self.limits.host_bandwidth_mib_s is None:
            return None
        return shares([*[t for t in self._running.values() if t is not ticket],
                       replace(ticket, cap_mib_s=None)],
                      self.limits.host_bandwidth_mib_s)[migration_id]

    def set_own_cap(self, migration_id: str, cap_mib_s: int) -> None:
        """The operator changed a running migration's cap: every share is worked out again."""
        ticket = self._running.get(migration_id)
        if ticket is not None:
            self._running[migration_id] = replace(ticket, cap_mib_s=cap_mib_s)
            self._reshare()

    def _reshare(self) -> None:
        before, self._caps = self._caps, shares(self._running.values(),
                                                self.limits.host_bandwidth_mib_s)
        for migration_id, cap in self._caps.items():
            if migration_id in before and before[migration_id] != cap \
                    and migration_id in self._on_cap:
                self._on_cap[migration_id](cap)

    @contextlib.asynccontextmanager
    async def held(self, migration_id: str) -> AsyncIterator[None]:
        """Release the slot (or the place in the queue) however the block ends."""
        try:
            yield
        finally:
            self.leave(migration_id)

    @property
    def running(self) -> list[Ticket]:
        return list(self._running.values())

    @property
    def waiting(self) -> list[Ticket]:
        return sorted((t for t, _ in self._waiting.values()), key=lambda t: t.order)
