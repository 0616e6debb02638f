"""Settling a migration an earlier coordinator left running: the judgement table (pure)."""

from __future__ import annotations

import pytest

from baton.coordinator.takeover import Step, facts_text, judge
from baton.schemas.agent import DomainInfo, DomainState
from baton.schemas.base import utc_now
from baton.schemas.events import JobStats
from baton.schemas.migration import (
    MigrateRequest,
    MigrationRecord,
    MigrationStatus,
    Phase,
    StorageMode,
)

UUID = "11111111-2222-3333-4444-555555555555"
OTHER = "99999999-2222-3333-4444-555555555555"


def record(live: bool = True, undefine_source: bool = True) -> MigrationRecord:
    now = utc_now()
    return MigrationRecord(migration_id="m1", vm="vm1", source="h1", destination="h2",
                           phase=Phase.MIGRATING, storage=StorageMode.COPY,
                           request=MigrateRequest(vm="vm1", destination="h2", live=live,
                                                  undefine_source=undefine_source),
                           created_at=now, updated_at=now)


def domain(state: DomainState, uuid: str = UUID, persistent: bool = True) -> DomainInfo:
    return DomainInfo(name="vm1", uuid=uuid, state=state, active=state != DomainState.SHUTOFF,
                      persistent=persistent, memory_kib=1, max_memory_kib=1, vcpus=1)


def status(host: str, dom: DomainInfo | None = None, *, known: bool = True,
           incoming: str | None = None, job: bool = False) -> MigrationStatus:
    return MigrationStatus(host_id=host, migration_id="m1", vm="vm1", domain=dom, known=known,
                           incoming_uuid=incoming,
                           job=JobStats(operation="migration_out") if job else None)


RUNNING, PAUSED, OFF = DomainState.RUNNING, DomainState.PAUSED, DomainState.SHUTOFF

TABLE = [
    # (source facts, destination facts, step)
    ("nothing-touched", status("h1", domain(RUNNING), known=False),
     status("h2", known=False), Step.UNTOUCHED),
    ("started-but-never-prepared", status("h1", domain(RUNNING)),
     status("h2", known=False), Step.NEEDS_ATTENTION),
    ("prepared-only", status("h1", domain(RUNNING), known=False),
     status("h2", incoming=UUID), Step.ROLL_BACK),
    ("job-still-runs", status("h1", domain(RUNNING), job=True),
     status("h2", domain(PAUSED), incoming=UUID), Step.WAIT),
    ("landed", status("h1"), status("h2", domain(RUNNING), incoming=UUID), Step.ROLL_FORWARD),
    ("landed-source-kept-inactive", status("h1", domain(OFF)),
     status("h2", domain(RUNNING), incoming=UUID), Step.ROLL_FORWARD),
    ("failed-incoming-paused", status("h1", domain(RUNNING)),
     status("h2", domain(PAUSED), incoming=UUID), Step.ROLL_BACK),
    ("runs-twice", status("h1", domain(RUNNING)),
     status("h2", domain(RUNNING), incoming=UUID), Step.NEEDS_ATTENTION),
    ("runs-nowhere", status("h1", domain(OFF)),
     status("h2", domain(PAUSED), incoming=UUID), Step.NEEDS_ATTENTION),
    ("a-stranger-on-the-destination", status("h1", domain(RUNNING)),
     status("h2", domain(PAUSED, OTHER), incoming=UUID), Step.NEEDS_ATTENTION),
]


@pytest.mark.parametrize(("source", "destination", "step"), [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_a_live_migration_is_judged_from_both_hosts_facts(source, destination, step):
    assert step == judge(record(), source, destination).step


def test_the_untouched_judgement_names_both_hosts():
    judgement = judge(record(), status("h1", known=False), status("h2", known=False))
    assert "neither h1 nor h2 had been asked to act" in judgement.reason


def test_an_offline_move_that_is_defined_as_asked_is_rolled_forward():
    judgement = judge(record(live=False), status("h1"),
                      status("h2", domain(OFF), incoming=UUID))
    assert (Step.ROLL_FORWARD, "vm1 is defined on h2 as asked") == (judgement.step,
                                                                   judgement.reason)


def test_an_offline_move_still_running_is_waited_for():
    source = status("h1", domain(OFF), job=True)
    assert Step.WAIT == judge(record(live=False), source, status("h2", incoming=UUID)).step


def test_an_offline_move_not_done_needs_attention_and_says_why():
    judgement = judge(record(live=False), status("h1", domain(OFF)), status("h2", incoming=UUID))
    assert Step.NEEDS_ATTENTION == judgement.step
    assert "vm1 is not defined on h2" in judgement.reason


def test_facts_text_says_what_each_host_holds():
    assert f"running (UUID {UUID}); a job runs; ledger knows it" == facts_text(
        status("h1", domain(RUNNING), job=True))
    assert "no domain; no job; ledger does not know it" == facts_text(status("h2", known=False))


def test_an_offline_move_is_done_though_the_source_kept_no_definition_it_was_not_asked_to():
    """A transient source leaves nothing behind whatever undefine_source says: the source's
    definition is not demanded (judge cannot know whether it was persistent)."""
    judgement = judge(record(live=False, undefine_source=False), status("h1"),
                      status("h2", domain(OFF), incoming=UUID))
    assert Step.ROLL_FORWARD == judgement.step


def test_an_offline_move_whose_source_is_still_defined_against_the_request_needs_attention():
    judgement = judge(record(live=False), status("h1", domain(OFF)),
                      status("h2", domain(OFF), incoming=UUID))
    assert (Step.NEEDS_ATTENTION, "vm1 is still defined on the source; expected it undefined") \
        == (judgement.step, judgement.reason)


def test_the_reasons_of_judgements_without_a_verdict():
    assert "h1 knows the migration but h2 never prepared to receive vm1" == judge(
        record(), status("h1", domain(RUNNING)), status("h2", known=False)).reason
    assert "the offline move still runs on h1" == judge(
        record(live=False), status("h1", domain(OFF), job=True), status("h2", incoming=UUID)).reason
    two = judge(record(live=False), status("h1", domain(OFF)), status("h2", incoming=UUID))
    assert ("vm1 is not defined on h2; vm1 is still defined on the source; expected it "
            "undefined") == two.reason
