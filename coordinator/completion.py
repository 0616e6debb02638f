"""Judging a migration's outcome from both hosts' answers (pure).

Success is confirmed from both sides: the destination runs the VM (or holds it shut off, for an
offline move) and keeps it persistent exactly when asked; the source no longer has it when
``undefine_source``, else keeps it defined and inactive. Roll-back is only safe while the source
still holds the VM as it did before the migration.
"""

from __future__ import annotations

from baton.schemas.agent import DomainInfo, DomainState
from baton.schemas.migration import MigrateRequest


def confirmation_problems(request: MigrateRequest, destination: str,
                          on_destination: DomainInfo | None,
                          on_source: DomainInfo | None, source_persistent: bool = True,
                          ) -> list[str]:
    """What still differs from the requested outcome; empty when it is confirmed.

    A transient source VM leaves nothing behind on the source whatever ``undefine_source`` says.
    """
    return (_destination_problems(request, destination, on_destination)
            + _source_problems(request, on_source, source_persistent))


def _destination_problems(request: MigrateRequest, destination: str,
                          vm: DomainInfo | None) -> list[str]:
    if vm is None:
        return [f"{request.vm} is not defined on {destination}"]
    problems = []
    if request.live and vm.state != DomainState.RUNNING:
        problems.append(f"{request.vm} is {vm.state} on {destination}, not running")
    if not request.live and vm.active:
        problems.append(f"{request.vm} is {vm.state} on {destination}; expected it shut off")
    if request.persistent and not vm.persistent:
        problems.append(f"{request.vm} is transient on {destination}; expected persistent")
    if not request.persistent and vm.persistent:
        problems.append(f"{request.vm} is persistent on {destination}; expected transient")
    return problems


def _source_problems(request: MigrateRequest, vm: DomainInfo | None,
                     source_persistent: bool) -> list[str]:
    if vm is None:
        return [] if request.undefine_source or not source_persistent else [
            f"{request.vm} is gone from the source; expected an inactive definition kept"]
    if vm.active:
        return [f"{request.vm} is still {vm.state} on the source"]
    if request.undefine_source:
        return [f"{request.vm} is still defined on the source; expected it undefined"]
    return []


def source_intact(before: DomainInfo | None, now: DomainInfo | None) -> bool:
    """The source still holds the VM as before the migration (so the destination may be cleaned)."""
    if before is None or now is None or now.uuid != before.uuid:  # same name, another VM: not ours
        return False
    if before.active:  # running as before (libvirt resumes the source after a failed move)
        return now.active and now.state == before.state
    return not now.active
