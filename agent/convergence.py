"""What to do when a pre-copy migration stops converging (issue #12): pure, table-tested.

Pre-copy sends memory in passes; each pass re-sends what the guest dirtied during the one before.
It ends once what is left fits in the switch-over pause the downtime limit allows. A guest that
dirties memory about as fast as the link copies it keeps a steady remainder, pass after pass,
and never gets there: the migration stalls. Nova answers with downtime steps, KubeVirt with a
progress timeout; Baton's source agent, which reads libvirt's job figures every progress
interval, asks :func:`decide` after each reading:

- no stall yet (the remainder reached a new low within ``stall_s``, or fewer than two passes are
  done: the first pass, and a copy migration's disks, are not judged) -> :attr:`Kind.WAIT`;
- stalled, and the ramp has a step above the current limit -> :attr:`Kind.RAISE_DOWNTIME` to it;
  the stall clock restarts there;
- stalled with the ramp spent -> :attr:`Kind.START_POSTCOPY` when the policy switches "when
  stalled" (strategy auto with ``allow_postcopy``), else wait: the completion timeout
  (coordinator) ends it;
- a policy that switches "after the first pass" (strategy postcopy) -> :attr:`Kind.START_POSTCOPY`
  as soon as libvirt is on pass 2, whatever the remainder does.

After the post-copy switch nothing is decided any more: the destination runs the guest and pulls
the rest; :class:`Escalator` stops asking.

A longer pause is what "the migration ends" costs; ``steps_ms`` ends at what the operator allows
(``--max-downtime``, or :data:`DEFAULT_STEPS_MS` ending at 2 s). :class:`Escalator` keeps one
migration's readings and steps for the source agent's progress loop (agent/migration.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from baton.schemas.events import JobStats
from baton.schemas.migration import PostcopySwitch, StartRequest

DEFAULT_STEPS_MS = (500, 1000, 2000)
QEMU_DEFAULT_DOWNTIME_MS = 300  # QEMU's downtime-limit when nobody set one
STALL_S = 10.0


@dataclass(frozen=True)
class Reading:
    """One reading of the migration job: seconds since it started, memory bytes still to send,
    and which pass libvirt is on (1 = the first)."""

    elapsed_s: float
    remaining_bytes: int
    iteration: int


@dataclass(frozen=True)
class Ramp:
    steps_ms: tuple[int, ...] = DEFAULT_STEPS_MS
    stall_s: float = STALL_S
    postcopy: PostcopySwitch = PostcopySwitch.OFF


class Kind(StrEnum):
    WAIT = "wait"
    RAISE_DOWNTIME = "raise_downtime"
    START_POSTCOPY = "start_postcopy"


@dataclass(frozen=True)
class Action:
    kind: Kind
    downtime_ms: int | None = None
    reason: str = ""


WAIT = Action(Kind.WAIT)


def ramp_up_to(ceiling_ms: int | None,
               postcopy: PostcopySwitch = PostcopySwitch.OFF) -> Ramp:
    """The default steps, ending at ``ceiling_ms`` when the operator set one."""
    if ceiling_ms is None:
        return Ramp(postcopy=postcopy)
    return Ramp((*(s for s in DEFAULT_STEPS_MS if s < ceiling_ms), ceiling_ms),
                postcopy=postcopy)


def decide(history: Sequence[Reading], ramp: Ramp, downtime_ms: int,
           escalated_at_s: float = 0.0) -> Action:
    """The next step, from every reading so far (oldest first), the downtime limit in force and
    when it was last raised (seconds since the start)."""
    latest = history[-1] if history else None
    if ramp.postcopy is PostcopySwitch.AFTER_FIRST_PASS and latest and latest.iteration >= 2:
        return Action(Kind.START_POSTCOPY,
                      reason=f"first pass sent ({latest.remaining_bytes >> 20} MiB left at pass "
                      f"{latest.iteration}): switched to post-copy")
    judged = [r for r in history if r.iteration >= 2 and r.elapsed_s >= escalated_at_s]
    if not judged or judged[-1].elapsed_s - judged[0].elapsed_s < ramp.stall_s:
        return WAIT  # too early to tell: judged over a whole stall window, never less
    now = judged[-1].elapsed_s
    before = min(r.remaining_bytes for r in judged if r.elapsed_s <= now - ramp.stall_s)
    lately = min(r.remaining_bytes for r in judged if r.elapsed_s > now - ramp.stall_s)
    if lately < before:
        return WAIT  # a new low within the window: still converging
    stalled = f"no progress for {ramp.stall_s:g} s at pass {judged[-1].iteration} " \
        f"({lately >> 20} MiB left)"
    step = next((s for s in ramp.steps_ms if s > downtime_ms), None)
    if step is not None:
        return Action(Kind.RAISE_DOWNTIME, step,
                      f"{stalled}: downtime limit {downtime_ms} -> {step} ms")
    if ramp.postcopy is PostcopySwitch.WHEN_STALLED:
        return Action(Kind.START_POSTCOPY,
                      reason=f"{stalled} at a downtime limit of {downtime_ms} ms: switched to "
                      "post-copy")
    return WAIT


class Escalator:
    """The escalations of one migration: its readings and the steps taken, for the source
    agent's progress loop. Idle when the request asks for none (no ramp, no post-copy switch),
    and for good once the migration is in post-copy."""

    def __init__(self, request: StartRequest) -> None:
        self.enabled = request.downtime_ramp or request.postcopy is not PostcopySwitch.OFF
        ramp = ramp_up_to(request.max_downtime_ms, request.postcopy)
        self._ramp = ramp if request.downtime_ramp else Ramp((), ramp.stall_s, ramp.postcopy)
        self._limit_ms = request.max_downtime_ms or QEMU_DEFAULT_DOWNTIME_MS
        self._history: list[Reading] = []
        self._raised_at_s = 0.0
        self.escalations: list[str] = []
        self.postcopy = False  # switched
        self.memory_total_bytes: int | None = None  # the guest memory, once libvirt said

    @property
    def limit_ms(self) -> int:
        """The downtime limit in force (as set at the start, or raised since)."""
        return self._limit_ms

    def next_step(self, stats: JobStats) -> Action | None:
        self.memory_total_bytes = stats.memory_total_bytes or self.memory_total_bytes
        if not self.enabled or self.postcopy or stats.memory_remaining_bytes is None \
                or stats.time_elapsed_ms is None:
            return None
        self._history.append(Reading(stats.time_elapsed_ms / 1000,
                                     stats.memory_remaining_bytes, stats.memory_iteration or 0))
        action = decide(self._history, self._ramp, self._limit_ms, self._raised_at_s)
        return None if action.kind is Kind.WAIT else action

    def note(self, step: str) -> None:
        """A step taken outside :func:`decide` (a post-copy recovery), for the record."""
        self.escalations.append(step)

    def applied(self, step: Action) -> None:
        if step.kind is Kind.START_POSTCOPY:
            self.postcopy = True
        else:
            self._limit_ms = step.downtime_ms or self._limit_ms
            self._raised_at_s = self._history[-1].elapsed_s
        self.escalations.append(step.reason)
