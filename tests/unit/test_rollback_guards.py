"""The coordinator's decisions that allow or refuse a destructive act, without I/O.

``source_intact`` (may the destination be cleaned?), ``confirmation_problems`` (may the source's
copied disks be deleted?), ``raise_if_late`` (when does waiting for an agent end in a failure and
so in a roll-back?), and the runner's refusal to abort — or to ask the source to abort — once
the guest has resumed on the destination. The runner is driven through a fake bus and a fake
agent client that only record what they are asked.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from baton.coordinator.completion import confirmation_problems, source_intact
from baton.coordinator.job_runner import RunnerDeps, raise_if_late
from baton.coordinator.progress import ProgressPump
from baton.coordinator.runner import MigrationRunner, new_record
from baton.schemas import timeouts
from baton.schemas.agent import DomainState as D
from baton.schemas.base import utc_now
from baton.schemas.codec import decode_any
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.events import LifecycleEvent, LifecycleKind
from baton.schemas.migration import (
    Ack,
    MigrateRequest,
    Phase,
    PhaseEvent,
    SourceFinished,
)
from baton.schemas.subjects import MigrationEvent, Subjects
from tests.integration.fake_agents import domain

S = Subjects()


def req(**options) -> MigrateRequest:
    return MigrateRequest(**({"vm": "vm1", "destination": "h2"} | options))


def transient(state: D = D.RUNNING):
    return msgspec.structs.replace(domain("vm1", state=state), persistent=False)


# --- source_intact: may the destination be cleaned? ------------------------------------------


@pytest.mark.parametrize(("before", "now", "intact"), [
    (domain("vm1"), domain("vm1"), True),
    (domain("vm1", state=D.PAUSED), domain("vm1", state=D.PAUSED), True),
    (domain("vm1", state=D.SHUTOFF), domain("vm1", state=D.SHUTOFF), True),
    (domain("vm1"), None, False),  # gone from the source: it may live on the destination
    (None, domain("vm1"), False),  # nothing known of the VM before the migration
    (domain("vm1"), domain("vm1", state=D.PAUSED), False),  # paused: maybe mid switch-over
    (domain("vm1"), domain("vm1", state=D.SHUTOFF), False),
    (domain("vm1", state=D.SHUTOFF), domain("vm1"), False),
], ids=["running", "paused", "shut-off", "gone", "unknown-before", "now-paused", "now-shut-off",
        "now-running"])
def test_the_source_is_intact_only_while_it_holds_the_vm_as_before(before, now, intact):
    assert intact == source_intact(before, now)


def test_a_domain_of_the_same_name_but_another_uuid_is_not_the_vm():
    other = msgspec.structs.replace(domain("vm1"), uuid="uuid-someone-else")
    assert False is source_intact(domain("vm1"), other)


# --- confirmation_problems: may the source's copied disks be deleted? ------------------------


@pytest.mark.parametrize(("request_", "on_destination", "on_source", "words"), [
    (req(), None, None, "vm1 is not defined on h2"),
    (req(), domain("vm1", state=D.PAUSED), None, "vm1 is paused on h2, not running"),
    (req(live=False), domain("vm1"), None, "expected it shut off"),
    (req(), transient(), None, "expected persistent"),
    (req(persistent=False), domain("vm1"), None, "expected transient"),
    (req(), domain("vm1"), domain("vm1"), "vm1 is still running on the source"),
    (req(), domain("vm1"), domain("vm1", state=D.PAUSED), "vm1 is still paused on the source"),
    (req(), domain("vm1"), domain("vm1", state=D.SHUTOFF), "expected it undefined"),
    (req(undefine_source=False), domain("vm1"), None, "expected an inactive definition kept"),
], ids=["not-on-destination", "paused-on-destination", "offline-but-running", "transient",
        "persistent", "running-on-source", "paused-on-source", "still-defined-on-source",
        "definition-lost"])
def test_each_difference_from_the_requested_outcome_is_a_problem(request_, on_destination,
                                                                 on_source, words):
    [problem] = confirmation_problems(request_, "h2", on_destination, on_source)
    assert words in problem


@pytest.mark.parametrize(("request_", "on_destination", "on_source", "source_persistent"), [
    (req(), domain("vm1"), None, True),
    (req(undefine_source=False), domain("vm1"), domain("vm1", state=D.SHUTOFF), True),
    (req(undefine_source=False), domain("vm1"), None, False),  # a transient source leaves none
    (req(live=False), domain("vm1", state=D.SHUTOFF), None, True),
    (req(persistent=False), transient(), None, True),
], ids=["moved", "definition-kept", "transient-source", "offline", "transient-destination"])
def test_the_requested_outcome_is_confirmed_without_problems(request_, on_destination, on_source,
                                                              source_persistent):
    assert [] == confirmation_problems(request_, "h2", on_destination, on_source,
                                       source_persistent)


# --- raise_if_late: when waiting for an agent becomes a failure ------------------------------


def test_an_agent_that_has_reported_its_outcome_is_never_late():
    long_ago = time.monotonic() - 10 * timeouts.ABORT_SETTLE
    assert None is raise_if_late(long_ago, 10 * timeouts.SOURCE_SILENCE_LIMIT, waiting=False)


def test_an_agent_inside_both_limits_is_not_late():
    half = timeouts.SOURCE_SILENCE_LIMIT / 2
    assert (None, None) == (raise_if_late(time.monotonic(), half, waiting=True),
                            raise_if_late(None, half, waiting=True))


@pytest.mark.parametrize(("abort_sent_ago", "silent_for", "words"), [
    (timeouts.ABORT_SETTLE + 1, 0.0, "did not confirm the abort"),
    (None, timeouts.SOURCE_SILENCE_LIMIT + 1, "said nothing for"),
], ids=["abort-unconfirmed", "silent"])
def test_an_agent_past_a_limit_is_a_timeout(abort_sent_ago, silent_for, words):
    sent_at = None if abort_sent_ago is None else time.monotonic() - abort_sent_ago
    with pytest.raises(BatonError) as caught:
        raise_if_late(sent_at, silent_for, waiting=True)
    assert (ErrorCode.TIMEOUT, True) == (caught.value.code, words in caught.value.message)


# --- the runner: no abort once the guest resumed on the destination --------------------------


class Bus:
    """The part of a NATS client a runner uses; ``on_phase`` sees every phase it publishes."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self.on_phase = lambda phase: None

    async def publish(self, subject: str, body: bytes) -> None:
        if subject.endswith(f".{MigrationEvent.PHASE}"):
            phase = decode_any(body, PhaseEvent).phase
            self.phases.append(phase)
            self.on_phase(phase)

    async def subscribe(self, subject: str, cb):
        raise AssertionError("not used by these tests")


class Agents:
    """An agent client that records what it is asked and answers at once."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.on_abort = lambda: None

    async def abort(self, host: str, request) -> Ack:
        self.asked.append(("abort", host))
        self.on_abort()
        return Ack()


def runner_in(phase: Phase) -> tuple[MigrationRunner, Bus, Agents]:
    bus, agents = Bus(), Agents()
    record = msgspec.structs.replace(new_record("m1", req(), "h1"), phase=phase)
    return MigrationRunner(record, RunnerDeps(nc=bus, agents=agents, subjects=S)), bus, agents


def resumed_on_destination(vm: str = "vm1", detail: str = "migrated") -> LifecycleEvent:
    return LifecycleEvent(host_id="h2", vm=vm, uuid=f"uuid-{vm}", event=LifecycleKind.RESUMED,
                          detail=detail, at=utc_now())


@pytest.mark.parametrize("phase", [Phase.COMPLETING, Phase.SUCCEEDED, Phase.FAILED])
def test_an_abort_is_refused_once_the_guest_resumed_or_the_job_ended(phase):
    runner, _, _ = runner_in(phase)
    with pytest.raises(BatonError) as caught:
        runner.request_abort("operator")
    assert ErrorCode.CONFLICT == caught.value.code


async def test_an_abort_requested_before_a_switch_over_seen_at_the_same_wake_is_not_sent():
    runner, bus, agents = runner_in(Phase.MIGRATING)
    finished = SourceFinished(migration_id="m1", host_id="h1", at=utc_now())
    bus.on_phase = lambda phase: phase == Phase.COMPLETING and runner._on_finished(finished)
    runner.request_abort("operator")
    runner._on_lifecycle(resumed_on_destination())
    agents.on_abort = lambda: runner._on_finished(finished)
    async with asyncio.timeout(5):
        outcome = await runner._drive(ProgressPump(runner.tracker, S, bus.publish))
    assert (finished, [Phase.COMPLETING], []) == (outcome, bus.phases, agents.asked)


@pytest.mark.parametrize("event", [resumed_on_destination(vm="vm2"),
                                   resumed_on_destination(detail="unpaused")],
                         ids=["another-vm", "not-a-migration"])
async def test_only_the_vms_resume_by_migration_counts_as_the_switch_over(event):
    runner, bus, agents = runner_in(Phase.MIGRATING)
    finished = SourceFinished(migration_id="m1", host_id="h1", at=utc_now(), aborted=True)
    bus.on_phase = agents.on_abort = lambda *_: runner._on_finished(finished)
    runner.request_abort("operator")
    runner._on_lifecycle(event)
    async with asyncio.timeout(5):
        await runner._drive(ProgressPump(runner.tracker, S, bus.publish))
    assert ([], [("abort", "h1")], None) == (bus.phases, agents.asked,
                                             runner.record.switchover_at)


async def test_an_outcome_published_for_another_migration_is_ignored():
    runner, bus, _ = runner_in(Phase.MIGRATING)
    stale = SourceFinished(migration_id="m0", host_id="h1", at=utc_now(), error=ErrorReply(
        code=ErrorCode.HYPERVISOR, message="an earlier migration of vm1 failed"))
    ours = SourceFinished(migration_id="m1", host_id="h1", at=utc_now())
    runner._on_finished(stale)
    runner._on_finished(ours)
    async with asyncio.timeout(5):
        assert ours == await runner._drive(ProgressPump(runner.tracker, S, bus.publish))
