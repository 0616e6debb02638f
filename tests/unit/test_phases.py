"""The phase table and transition(): validation, timestamps, publishing, terminal absorption."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from baton.coordinator.phases import MOVES, IllegalMove, PhaseTracker, is_terminal, moved, phase_event
from baton.schemas.codec import decode_any
from baton.schemas.migration import MigrateRequest, MigrationRecord, Phase, PhaseEvent, StorageMode
from baton.schemas.storage import StorageMoveRecord, StorageMoveRequest, StoragePhaseEvent
from baton.schemas.subjects import Subjects

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def record(phase: Phase = Phase.PENDING) -> MigrationRecord:
    request = MigrateRequest(vm="vm1", destination="h2")
    return MigrationRecord(migration_id="m1", vm="vm1", source="h1", destination="h2",
                           phase=phase, storage=StorageMode.AUTO, request=request,
                           created_at=T0, updated_at=T0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def tracker(phase: Phase = Phase.PENDING) -> tuple[PhaseTracker, list[tuple[str, bytes]]]:
    sent: list[tuple[str, bytes]] = []

    async def publish(subject: str, body: bytes) -> None:
        sent.append((subject, body))

    return PhaseTracker(record(phase), Subjects(), publish, Clock()), sent


def test_every_phase_has_a_row_and_terminal_phases_lead_nowhere():
    assert set(Phase) == set(MOVES)
    assert {p for p in Phase if is_terminal(p)} == {p for p, to in MOVES.items() if not to}


def test_the_happy_path_is_allowed_in_order():
    path = [Phase.CHECKING, Phase.PREPARING, Phase.MIGRATING, Phase.COMPLETING, Phase.SUCCEEDED]
    current = record()
    for phase in path:
        current = moved(current, phase, T0)
    assert Phase.SUCCEEDED == current.phase


@pytest.mark.parametrize("phase", [Phase.PENDING, Phase.CHECKING, Phase.PREPARING,
                                   Phase.MIGRATING])
def test_abort_and_failure_are_allowed_before_the_switchover(phase):
    assert {Phase.FAILED, Phase.ABORTED} <= MOVES[phase]


def test_completing_cannot_be_aborted_only_succeed_or_fail():
    assert frozenset({Phase.SUCCEEDED, Phase.FAILED}) == MOVES[Phase.COMPLETING]


def test_a_move_the_table_does_not_allow_raises():
    with pytest.raises(IllegalMove):
        moved(record(Phase.PENDING), Phase.MIGRATING, T0)


async def test_transition_timestamps_and_publishes_the_whole_record_on_the_phase_subject():
    phases, sent = tracker()
    assert await phases.transition(Phase.CHECKING, "go")
    [(subject, body)] = sent
    event = decode_any(body, PhaseEvent)
    assert "baton.migrations.m1.phase" == subject
    assert (Phase.CHECKING, Phase.PENDING, "go") == (event.phase, event.previous, event.reason)
    assert (T0 + timedelta(seconds=1), Phase.CHECKING) == (event.at, event.record.phase)


async def test_terminal_phases_absorb_later_transitions_without_publishing():
    phases, sent = tracker(Phase.ABORTED)
    assert not await phases.transition(Phase.FAILED, "late failure")
    assert (Phase.ABORTED, []) == (phases.phase, sent)


async def test_announce_publishes_pending_with_no_previous_phase():
    phases, sent = tracker()
    await phases.announce()
    event = decode_any(sent[0][1], PhaseEvent)
    assert (Phase.PENDING, None) == (event.phase, event.previous)


async def test_a_publish_failure_does_not_stop_the_transition():
    async def broken(subject: str, body: bytes) -> None:
        raise ConnectionError("nats down")

    phases = PhaseTracker(record(), Subjects(), broken, Clock())
    assert await phases.transition(Phase.CHECKING)
    assert Phase.CHECKING == phases.phase


def test_an_illegal_move_names_both_phases():
    with pytest.raises(IllegalMove) as caught:
        moved(record(Phase.PENDING), Phase.MIGRATING, T0)
    assert "pending -> migrating is not an allowed move" == str(caught.value)


def storage_record(phase: Phase = Phase.PENDING) -> StorageMoveRecord:
    return StorageMoveRecord(migration_id="s1", vm="vm1", host="h1", destination_pool="fast",
                             phase=phase, request=StorageMoveRequest(vm="vm1", destination_pool="fast"),
                             created_at=T0, updated_at=T0)


def test_a_disk_move_publishes_its_own_event_kind_with_previous_phase_and_reason():
    event = phase_event(moved(storage_record(), Phase.CHECKING, T0), Phase.PENDING, "go")
    assert (StoragePhaseEvent, Phase.CHECKING, Phase.PENDING, "go", "s1") == (
        type(event), event.phase, event.previous, event.reason, event.record.migration_id)


async def test_announce_says_the_job_was_accepted():
    phases, sent = tracker()
    await phases.announce()
    assert "accepted" == decode_any(sent[0][1], PhaseEvent).reason


async def test_a_transition_without_a_reason_publishes_an_empty_one():
    phases, sent = tracker()
    await phases.transition(Phase.CHECKING)
    assert "" == decode_any(sent[0][1], PhaseEvent).reason


def test_update_changes_fields_and_stamps_the_time_but_not_the_phase():
    phases, _ = tracker(Phase.MIGRATING)
    updated = phases.update(bandwidth_mib_s=64)
    assert (64, T0 + timedelta(seconds=1), Phase.MIGRATING) == (
        updated.bandwidth_mib_s, updated.updated_at, phases.phase)


class OrderedStore:
    """A job store that notes each write in the same list as the publishes."""

    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log = log
        self.fail = fail

    async def put(self, record: MigrationRecord) -> None:
        if self.fail:
            raise ConnectionError("JetStream not available")
        self.log.append(f"stored {record.phase}")

    async def load(self) -> list[MigrationRecord]:
        return []


def stored_tracker(fail: bool = False) -> tuple[PhaseTracker, list[str]]:
    log: list[str] = []

    async def publish(subject: str, body: bytes) -> None:
        log.append(f"published {decode_any(body, PhaseEvent).phase}")

    return PhaseTracker(record(), Subjects(), publish, Clock(), store=OrderedStore(log, fail)), log


async def test_each_phase_is_stored_before_it_is_published():
    tracker_, log = stored_tracker()
    await tracker_.announce()
    await tracker_.transition(Phase.CHECKING)
    assert ["stored pending", "published pending", "stored checking", "published checking"] == log


async def test_a_store_that_fails_does_not_stop_the_migration_or_its_events():
    tracker_, log = stored_tracker(fail=True)
    await tracker_.announce()
    moved_on = await tracker_.transition(Phase.CHECKING)
    assert (True, Phase.CHECKING, ["published pending", "published checking"]) == (
        moved_on, tracker_.phase, log)
