"""What to do with a migration that stopped, decided from both hosts' facts only (pure).

Input: the VM's UUID and each agent's ``migration.status`` (libvirt's domain and job there, the
agent's ledger). Output: one :class:`Verdict` and the reason, for people and logs.

- ``wait``: a libvirt job of that VM still runs on either host; nothing is decided yet.
- ``roll_forward``: the guest runs on the destination and not on the source: finish the move
  (undefine the source if asked, delete the copied source disks).
- ``roll_back``: the guest runs on the source; the destination holds at most the domain it
  prepared to receive (same UUID), paused or shut off: clean the destination.
- ``needs_attention``: the facts contradict or cannot be read (the guest runs on both hosts or on
  neither, another domain wears the name, a job cannot be read), or the destination runs it in a
  post-copy that has not brought all its memory: touch nothing, report both.

Only live migrations are judged here; an offline move is never half-done in libvirt (one
definition call) and keeps its existing confirmation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from baton.schemas.agent import (
    RUNNING_POSTCOPY,
    RUNNING_POSTCOPY_FAILED,
    DomainInfo,
    DomainState,
)
from baton.schemas.migration import MigrationStatus


class Verdict(StrEnum):
    WAIT = "wait"
    ROLL_FORWARD = "roll_forward"
    ROLL_BACK = "roll_back"
    NEEDS_ATTENTION = "needs_attention"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str


def _runs(domain: DomainInfo | None) -> bool:
    return domain is not None and domain.state == DomainState.RUNNING


def _incomplete_postcopy(domain: DomainInfo | None) -> bool:
    """Running on the destination of a post-copy migration without all its memory yet."""
    return domain is not None and domain.state == DomainState.RUNNING \
        and domain.state_reason in (RUNNING_POSTCOPY, RUNNING_POSTCOPY_FAILED)


def _unreadable(side: str, status: MigrationStatus) -> Decision | None:
    if status.job_error is not None:
        return Decision(Verdict.NEEDS_ATTENTION, f"the libvirt job on {side} ({status.host_id}) "
                        f"cannot be read: {status.job_error}")
    if status.job is not None or status.running_here:
        return Decision(Verdict.WAIT, f"a libvirt job of {status.vm} still runs on {side} "
                        f"({status.host_id})")
    return None


def _stranger(side: str, status: MigrationStatus, uuid: str) -> Decision | None:
    domain = status.domain
    if domain is not None and domain.uuid != uuid:
        return Decision(Verdict.NEEDS_ATTENTION, f"{status.vm} on {side} ({status.host_id}) is "
                        f"another domain (UUID {domain.uuid}, not {uuid})")
    return None


def decide(uuid: str, source: MigrationStatus, destination: MigrationStatus) -> Decision:
    """The verdict for a live migration of the domain ``uuid`` that is no longer followed."""
    for side, status in (("the source", source), ("the destination", destination)):
        if (found := _unreadable(side, status) or _stranger(side, status, uuid)) is not None:
            return found
    if _incomplete_postcopy(destination.domain):
        return Decision(Verdict.NEEDS_ATTENTION, f"{source.vm} runs on {destination.host_id} in "
                        "post-copy without all its memory, the rest only on "
                        f"{source.host_id}: recover the migration (virsh migrate --postcopy "
                        "--postcopy-resume); neither side may be removed")
    on_source, on_destination = _runs(source.domain), _runs(destination.domain)
    if on_source and on_destination:
        return Decision(Verdict.NEEDS_ATTENTION, f"{source.vm} runs on both {source.host_id} "
                        f"and {destination.host_id}")
    if on_destination:
        return Decision(Verdict.ROLL_FORWARD, f"{source.vm} runs on {destination.host_id} "
                        "only: the move happened")
    if not on_source:
        return Decision(Verdict.NEEDS_ATTENTION, f"{source.vm} runs on neither "
                        f"{source.host_id} nor {destination.host_id}")
    if destination.domain is not None and destination.incoming_uuid != uuid:
        return Decision(Verdict.NEEDS_ATTENTION, f"{destination.host_id} holds {source.vm} "
                        "but did not prepare to receive it")
    return Decision(Verdict.ROLL_BACK, f"{source.vm} runs on {source.host_id}; "
                    f"{destination.host_id} holds at most the copy it prepared")
