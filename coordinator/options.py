"""Which option combinations a migration request may ask for (pure).

These run before a migration is accepted and answer ``bad_request`` with a message that says
what to change. Facts only the agents know (is the VM running?) are judged by
:func:`check_against_domain` once the source has been asked.
"""

from __future__ import annotations

from baton.schemas.agent import DomainInfo
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import MigrateRequest, PostcopySwitch, Strategy


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
    if not request.live and request.strategy != Strategy.PRECOPY:
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
