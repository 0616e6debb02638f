"""Which option combinations a migration request may ask for (pure).

These run before a migration is accepted and answer ``bad_request`` with a message that says
what to change. Facts only the agents know (is the VM running?) are judged by
:func:`check_against_domain` once the source has been asked. What the source does when pre-copy
stops converging follows from the strategy (:func:`postcopy_switch`), and for strategy auto from
the prediction too (:func:`auto_choice`).
"""

from __future__ import annotations

from dataclasses import dataclass

from baton.schemas.agent import DomainInfo
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import MigrateRequest, PostcopySwitch, Prediction, Strategy


def option_problems(request: MigrateRequest) -> list[str]:
    """Every problem with the request's own options; empty when the combination is valid."""
    problems = []
    if request.source is not None and request.source == request.destination:
        problems.append(f"source and destination are both {request.destination!r}")
    if not request.live and not request.persistent:
        problems.append("an offline migration moves the VM's definition, so it cannot be "
                        "transient: drop --transient (persistent=false) or migrate live")
    pct_given = (request.auto_converge_initial_pct is not None
                 or request.auto_converge_increment_pct is not None)
    throttled = request.auto_converge or request.strategy == Strategy.AUTO_CONVERGE
    if pct_given and not throttled:
        problems.append("auto-converge percentages need auto_converge=true (--auto-converge)")
    if not request.live and request.auto_converge:
        problems.append("auto-converge throttles a running guest; it means nothing offline")
    if not request.live and request.max_downtime_ms is not None:
        problems.append("max downtime applies to a live migration only")
    if request.allow_postcopy and request.strategy != Strategy.AUTO:
        problems.append(f"allow_postcopy (--allow-postcopy) lets strategy auto switch to "
                        f"post-copy; with strategy {request.strategy} it means nothing (use "
                        "--strategy auto, or --strategy postcopy to switch after the first pass)")
    if not request.live and request.strategy not in (Strategy.PRECOPY, Strategy.AUTO):
        problems.append(f"strategy {request.strategy} is about memory copied while the guest "
                        "runs; an offline migration has none (drop --strategy)")
    return problems


def postcopy_switch(strategy: Strategy, allow_postcopy: bool) -> PostcopySwitch:
    """When the source switches to post-copy, for a request's strategy."""
    if strategy == Strategy.POSTCOPY:
        return PostcopySwitch.AFTER_FIRST_PASS
    if strategy == Strategy.AUTO and allow_postcopy:
        return PostcopySwitch.WHEN_STALLED
    return PostcopySwitch.OFF


@dataclass(frozen=True)
class Choice:
    postcopy: PostcopySwitch
    auto_converge: bool = False
    reason: str = ""


def auto_choice(strategy: Strategy, postcopy: PostcopySwitch,
                prediction: Prediction | None) -> Choice:
    """What strategy auto starts with, from the source's prediction. The ramp is armed either
    way; what the prediction adds is the end the ramp would not reach: when neither plain
    pre-copy nor raising the downtime limit ends the move, waiting out the ramp's stall windows
    first only costs time (10 s each), so the source switches to post-copy right after the first
    pass when allowed, else has QEMU throttle the guest from the start (auto-converge, which
    throttles only while the guest dirties faster than the copy). Any other strategy, or no
    prediction of the strategy (no link rate), keeps ``postcopy`` as asked."""
    if strategy is not Strategy.AUTO or prediction is None or prediction.strategy is None:
        return Choice(postcopy)
    said = (f"predicted at {prediction.link_mib_s:g} MiB/s for a guest dirtying "
            f"{prediction.dirty_rate_mib_s:.1f} MiB/s")
    if prediction.strategy is Strategy.PRECOPY:
        return Choice(postcopy, reason=f"pre-copy: {said}, it converges at the downtime limit "
                      f"asked for in {prediction.total_s:.1f} s with a "
                      f"{prediction.downtime_ms} ms pause")
    if prediction.strategy is Strategy.AUTO:
        return Choice(postcopy, reason=f"pre-copy with the downtime ramp: {said}, it converges "
                      f"once the limit is raised, in {prediction.total_s:.1f} s with a "
                      f"{prediction.downtime_ms} ms pause")
    stuck = f"{said}, neither pre-copy nor raising the downtime limit ends it"
    if prediction.strategy is Strategy.POSTCOPY and postcopy is not PostcopySwitch.OFF:
        return Choice(PostcopySwitch.AFTER_FIRST_PASS,
                      reason=f"post-copy after the first pass: {stuck}")
    return Choice(postcopy, auto_converge=True,
                  reason=f"auto-converge from the start: {stuck} (--allow-postcopy would let it "
                  "switch to post-copy instead)")


def validate_options(request: MigrateRequest) -> None:
    problems = option_problems(request)
    if problems:
        raise BatonError(ErrorCode.BAD_REQUEST, "invalid options: " + "; ".join(problems))


def check_against_domain(request: MigrateRequest, source: str, domain: DomainInfo) -> None:
    """The options that depend on the VM's state on its source host."""
    if source == request.destination:
        raise BatonError(ErrorCode.BAD_REQUEST,
                         f"{request.vm} already lives on {source}: choose another destination")
    if not request.live and domain.active:
        raise BatonError(ErrorCode.BAD_REQUEST,
                         f"{request.vm} is {domain.state} on {source}: an offline migration "
                         "needs it shut off (shut it down, or migrate live)")
    if request.live and not domain.active:
        raise BatonError(ErrorCode.BAD_REQUEST,
                         f"{request.vm} is {domain.state} on {source}: a live migration needs it "
                         "running (start it, or migrate offline with --offline)")
