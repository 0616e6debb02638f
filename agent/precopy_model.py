"""A model of QEMU pre-copy live migration: how long it takes and whether it ends. Pure (stdlib,
no I/O), table-tested.

What can be known before a migration starts (memory size, dirty rate, link rate) says which
strategy it will need, and a running one's latest job figures say how long it has left; both come
from one model, :func:`simulate`, with L the link rate and D the dirty rate (bytes/s):

- a copy migration first sends its disks: ``disk_bytes / L`` (disk writes meanwhile ignored);
- pass 1 sends ``memory_bytes`` (or, mid-pass, ``remaining_bytes``) in ``t_1 = sent / L``; a
  zero page crosses as a marker, so when the whole pages are known (``first_pass_bytes``) pass 1
  sends those only;
- pass k re-sends what the guest dirtied during pass k-1: ``r = min(D * t_(k-1), cap)``, the cap
  being the guest's working set (``working_set_bytes``, else all of ``memory_bytes``): a guest
  cannot dirty more memory than it touches;
- after a pass, the switch-over happens once ``r / L <= downtime limit``; the pause sends ``r``,
  so the downtime is ``r / L`` and the total ``disk / L + sum(t_k) + r / L``;
- it does not converge if the remainder stops shrinking (``r_k >= r_(k-1)``, r_0 being what
  pass 1 sent: D >= L, once capped) or after :data:`MAX_PASSES` passes.

Why so simple: the switch-over test is QEMU's own (what is left against bandwidth x downtime
limit), and the inputs are single readings of rates that move; a finer model would be false
precision. A mid-pass reading gives ``remaining_bytes`` and how long the pass has run
(``pass_elapsed_s``): the guest dirtied memory all that time, and the next pass re-sends it.

:func:`predict` names the strategy a migration needs, mirroring the source agent's stall detector
(agent/convergence.py): plain pre-copy at the limit asked for; else the downtime ramp, whose k-th
raised step comes after k stall windows of :data:`STALL_S` without progress; else post-copy when
allowed; else only auto-converge (throttling the guest) ends it. Post-copy is modelled as a switch
after the first pass followed by one more full send of memory (pages pulled on demand plus the
background push move each page once at most): ``(disk + 2 * memory) / L``, with a pause of
:data:`POSTCOPY_SWITCH_MS`. The ramp's stall windows before a "when stalled" switch are not
counted: the figure is the "after the first pass" one.

:func:`eta_s` is the time left of a running migration. libvirt reports the dirty rate in pages/s:
:func:`pages_to_bytes`. :func:`simulate` and :func:`predict` raise ``ValueError`` for a link rate
that is not positive; :func:`eta_s` answers None instead (the rate is not known yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

MIB = 1 << 20
MAX_PASSES = 30
STALL_S = 10.0  # the stall detector's window (agent/convergence.py): no progress for so long
DEFAULT_RAMP_MS = (500, 1000, 2000)  # the stall detector's default downtime steps
QEMU_DEFAULT_DOWNTIME_MS = 300  # QEMU's downtime-limit when nobody set one
POSTCOPY_SWITCH_MS = 50  # the pause of the post-copy switch: device state, no memory


@dataclass(frozen=True)
class Outcome:
    """Whether pre-copy ends, its total seconds and switch-over pause (None when it does not end),
    and how many passes it makes (the pause not counted)."""

    converges: bool
    total_s: float | None
    downtime_ms: int | None
    passes: int


class Strategy(StrEnum):
    PRECOPY = "precopy"  # converges at the downtime limit asked for
    DOWNTIME_RAMP = "downtime-ramp"  # converges once the stall detector raised the limit
    POSTCOPY = "postcopy"  # does not converge: switched to post-copy after the first pass
    AUTO_CONVERGE = "auto-converge"  # does not converge: only throttling the guest ends it


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """``converges`` is under plain pre-copy at the limit asked for; the times are those of
    ``strategy`` (None for auto-converge, whose throttling the model does not cover)."""

    converges: bool
    total_s: float | None
    downtime_ms: int | None
    strategy: Strategy
    dirty_rate_mib_s: float
    link_mib_s: float


def pages_to_bytes(pages_s: float, page_size: int = 4096) -> float:
    """libvirt's dirty rate (pages/s) in bytes/s."""
    return pages_s * page_size


def simulate(memory_bytes: int, dirty_bps: float, link_bps: float, downtime_ms: int, *,
             disk_bytes: int = 0, working_set_bytes: int | None = None,
             remaining_bytes: int | None = None, pass_elapsed_s: float = 0.0,
             first_pass_bytes: int | None = None) -> Outcome:
    """Pre-copy pass by pass, as the module docstring says. ``pass_elapsed_s``: how long the
    current pass (the one ``remaining_bytes`` is left of) has run already; the guest dirtied
    memory all that time too, and the pass was that much longer. ``first_pass_bytes``: what a
    first pass from the start sends as whole pages (its zero pages cost nothing); whether the
    remainder shrinks is still judged against all of memory, which that pass went through."""
    if link_bps <= 0:
        raise ValueError(f"link rate must be positive, got {link_bps} bytes/s")
    cap = memory_bytes if working_set_bytes is None else working_set_bytes
    sent: float = memory_bytes if remaining_bytes is None else remaining_bytes
    whole = sent + link_bps * pass_elapsed_s  # the current pass from its start
    if remaining_bytes is None and first_pass_bytes is not None:
        sent = min(first_pass_bytes, memory_bytes)
    elapsed_s = disk_bytes / link_bps
    for passes in range(1, MAX_PASSES + 1):
        pass_s = sent / link_bps
        elapsed_s += pass_s
        left = min(dirty_bps * (pass_s + pass_elapsed_s), cap)
        pause_s = left / link_bps
        if pause_s <= downtime_ms / 1000:
            return Outcome(True, elapsed_s + pause_s, round(pause_s * 1000), passes)
        if left >= whole:
            return Outcome(False, None, None, passes)  # stopped shrinking: D >= L
        sent = whole = left
        pass_elapsed_s = 0.0
    return Outcome(False, None, None, MAX_PASSES)


def predict(memory_bytes: int, dirty_bps: float, link_bps: float, *,
            downtime_ms: int = QEMU_DEFAULT_DOWNTIME_MS,
            ramp_ms: Sequence[int] = DEFAULT_RAMP_MS, allow_postcopy: bool = False,
            disk_bytes: int = 0, working_set_bytes: int | None = None,
            first_pass_bytes: int | None = None) -> Prediction:
    """The strategy a migration needs, and its total time and pause under it."""
    def prediction(strategy: Strategy, total_s: float | None, pause_ms: int | None) -> Prediction:
        return Prediction(converges=strategy is Strategy.PRECOPY, total_s=total_s,
                          downtime_ms=pause_ms, strategy=strategy,
                          dirty_rate_mib_s=dirty_bps / MIB, link_mib_s=link_bps / MIB)

    plain = simulate(memory_bytes, dirty_bps, link_bps, downtime_ms, disk_bytes=disk_bytes,
                     working_set_bytes=working_set_bytes, first_pass_bytes=first_pass_bytes)
    if plain.converges:
        return prediction(Strategy.PRECOPY, plain.total_s, plain.downtime_ms)
    raised = (step for step in ramp_ms if step > downtime_ms)  # as the stall detector steps
    for count, step in enumerate(raised, start=1):
        ramped = simulate(memory_bytes, dirty_bps, link_bps, step, disk_bytes=disk_bytes,
                          working_set_bytes=working_set_bytes,
                          first_pass_bytes=first_pass_bytes)
        if ramped.total_s is not None:  # converges at this step
            return prediction(Strategy.DOWNTIME_RAMP, ramped.total_s + count * STALL_S,
                              ramped.downtime_ms)
    if allow_postcopy:
        return prediction(Strategy.POSTCOPY, (disk_bytes + 2 * memory_bytes) / link_bps,
                          POSTCOPY_SWITCH_MS)
    return prediction(Strategy.AUTO_CONVERGE, None, None)


def eta_s(memory_total_bytes: int, memory_remaining_bytes: int, dirty_bps: float,
          link_bps: float | None, downtime_ms: int, *, disk_remaining_bytes: int = 0,
          pass_elapsed_s: float = 0.0, working_set_bytes: int | None = None) -> float | None:
    """Seconds left of a running migration, from its latest job figures (the memory left is
    that of the current pass, which has run ``pass_elapsed_s``); None when it will not converge
    or the link rate is not known."""
    if link_bps is None or link_bps <= 0:
        return None
    return simulate(memory_total_bytes, dirty_bps, link_bps, downtime_ms,
                    disk_bytes=disk_remaining_bytes, working_set_bytes=working_set_bytes,
                    remaining_bytes=memory_remaining_bytes,
                    pass_elapsed_s=pass_elapsed_s).total_s
