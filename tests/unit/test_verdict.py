"""The decision for a stopped migration (coordinator/verdict.py): a table of facts, and every
combination of them checked against the invariants (never destroy the only live copy)."""

from __future__ import annotations

import itertools

import pytest

from baton.coordinator.verdict import Verdict, decide
from baton.schemas.agent import RUNNING_POSTCOPY, RUNNING_POSTCOPY_FAILED, DomainInfo, DomainState
from baton.schemas.events import JobStats
from baton.schemas.migration import MigrationStatus

UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
OTHER = "00000000-0000-0000-0000-0000000000aa"
RUNNING, PAUSED, SHUTOFF = DomainState.RUNNING, DomainState.PAUSED, DomainState.SHUTOFF


def dom(state: DomainState, uuid: str = UUID, reason: int = 0) -> DomainInfo:
    return DomainInfo(name="vm1", uuid=uuid, state=state, active=state != SHUTOFF,
                      persistent=True, memory_kib=1, max_memory_kib=1, vcpus=1,
                      state_reason=reason)


IN_POSTCOPY = dom(RUNNING, reason=RUNNING_POSTCOPY)
POSTCOPY_FAILED = dom(RUNNING, reason=RUNNING_POSTCOPY_FAILED)


def facts(host: str, domain: DomainInfo | None, *, job: bool = False, job_error: bool = False,
          running_here: bool = False, incoming: str | None = None) -> MigrationStatus:
    return MigrationStatus(host_id=host, migration_id="m1", vm="vm1", domain=domain,
                           job=JobStats(operation="migration_out") if job else None,
                           job_error="libvirt connection lost" if job_error else None,
                           running_here=running_here, known=incoming is not None,
                           incoming_uuid=incoming)


def src(domain: DomainInfo | None, **kw: object) -> MigrationStatus:
    return facts("h1", domain, **kw)  # type: ignore[arg-type]


def dst(domain: DomainInfo | None, **kw: object) -> MigrationStatus:
    return facts("h2", domain, incoming=kw.pop("incoming", UUID), **kw)  # type: ignore[arg-type]


TABLE = [
    ("source job runs", src(dom(RUNNING), job=True), dst(dom(PAUSED)), Verdict.WAIT),
    ("source agent still runs it", src(dom(RUNNING), running_here=True), dst(None), Verdict.WAIT),
    ("destination job runs", src(dom(RUNNING)), dst(dom(PAUSED), job=True), Verdict.WAIT),
    ("source job unreadable", src(dom(RUNNING), job_error=True), dst(None),
     Verdict.NEEDS_ATTENTION),
    ("destination job unreadable", src(dom(RUNNING)), dst(dom(PAUSED), job_error=True),
     Verdict.NEEDS_ATTENTION),
    ("failed early: nothing arrived", src(dom(RUNNING)), dst(None), Verdict.ROLL_BACK),
    ("failed mid-copy: paused incoming copy", src(dom(RUNNING)), dst(dom(PAUSED)),
     Verdict.ROLL_BACK),
    ("incoming copy shut off", src(dom(RUNNING)), dst(dom(SHUTOFF)), Verdict.ROLL_BACK),
    ("succeeded: runs on the destination only", src(None), dst(dom(RUNNING)),
     Verdict.ROLL_FORWARD),
    ("succeeded, source kept inactive", src(dom(SHUTOFF)), dst(dom(RUNNING)),
     Verdict.ROLL_FORWARD),
    ("succeeded, source still paused", src(dom(PAUSED)), dst(dom(RUNNING)), Verdict.ROLL_FORWARD),
    ("runs on both", src(dom(RUNNING)), dst(dom(RUNNING)), Verdict.NEEDS_ATTENTION),
    ("runs on neither", src(dom(PAUSED)), dst(dom(PAUSED)), Verdict.NEEDS_ATTENTION),
    ("defined nowhere", src(None), dst(None), Verdict.NEEDS_ATTENTION),
    ("another VM of that name on the source", src(dom(RUNNING, OTHER)), dst(dom(RUNNING)),
     Verdict.NEEDS_ATTENTION),
    ("another VM of that name on the destination", src(dom(RUNNING)),
     dst(dom(PAUSED, OTHER)), Verdict.NEEDS_ATTENTION),
    ("destination never prepared for it", src(dom(RUNNING)), dst(dom(PAUSED), incoming=None),
     Verdict.NEEDS_ATTENTION),
    # post-copy: the destination runs the guest, the rest of its memory is on the source
    ("post-copy failed: source paused", src(dom(PAUSED)), dst(POSTCOPY_FAILED),
     Verdict.NEEDS_ATTENTION),
    ("post-copy failed: source gone", src(None), dst(POSTCOPY_FAILED), Verdict.NEEDS_ATTENTION),
    ("post-copy still running, no job seen", src(dom(PAUSED)), dst(IN_POSTCOPY),
     Verdict.NEEDS_ATTENTION),
]


@pytest.mark.parametrize(("case", "source", "destination", "verdict"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_the_decision_table(case, source, destination, verdict):
    assert verdict == decide(UUID, source, destination).verdict


def test_a_decision_says_why_naming_the_hosts():
    decision = decide(UUID, src(dom(RUNNING)), dst(dom(RUNNING)))
    assert "vm1 runs on both h1 and h2" == decision.reason


DOMAINS = [None, dom(RUNNING), dom(PAUSED), dom(SHUTOFF), dom(RUNNING, OTHER), dom(PAUSED, OTHER),
           IN_POSTCOPY, POSTCOPY_FAILED]
FLAGS = [{}, {"job": True}, {"job_error": True}, {"running_here": True}]


def every_combination():
    for s_dom, d_dom, s_flags, d_flags, incoming in itertools.product(
            DOMAINS, DOMAINS, FLAGS, FLAGS, (UUID, OTHER, None)):
        yield src(s_dom, **s_flags), dst(d_dom, incoming=incoming, **d_flags)


def test_every_combination_keeps_the_invariants():
    seen = set()
    for source, destination in every_combination():
        verdict = decide(UUID, source, destination).verdict
        seen.add(verdict)
        source_runs = source.domain is not None and source.domain.state == RUNNING
        destination_runs = destination.domain is not None and destination.domain.state == RUNNING
        incomplete = destination.domain in (IN_POSTCOPY, POSTCOPY_FAILED)
        busy = any(s.job or s.running_here or s.job_error for s in (source, destination))
        strangers = any(s.domain is not None and s.domain.uuid != UUID
                        for s in (source, destination))
        # never clean the destination while the guest may live there, nor finish while it
        # lives on the source; never decide while a job runs or cannot be read
        assert not (verdict == Verdict.ROLL_BACK and (destination_runs or not source_runs))
        assert not (verdict == Verdict.ROLL_FORWARD and (source_runs or not destination_runs))
        # a destination without all its memory is never the live copy, nor to be cleaned
        assert not (incomplete and verdict in (Verdict.ROLL_BACK, Verdict.ROLL_FORWARD))
        assert not (busy and verdict in (Verdict.ROLL_BACK, Verdict.ROLL_FORWARD))
        assert not (strangers and verdict in (Verdict.ROLL_BACK, Verdict.ROLL_FORWARD))
        assert not (verdict == Verdict.ROLL_BACK and destination.domain is not None
                    and destination.incoming_uuid != UUID)
        assert not (source_runs and destination_runs and not busy
                    and verdict != Verdict.NEEDS_ATTENTION)
    assert set(Verdict) == seen


REASONS = [
    (src(dom(RUNNING), job_error=True), dst(None),
     "the libvirt job on the source (h1) cannot be read: libvirt connection lost"),
    (src(dom(RUNNING)), dst(dom(PAUSED), job_error=True),
     "the libvirt job on the destination (h2) cannot be read: libvirt connection lost"),
    (src(dom(RUNNING)), dst(dom(PAUSED), job=True),
     "a libvirt job of vm1 still runs on the destination (h2)"),
    (src(dom(RUNNING)), dst(dom(PAUSED, OTHER)),
     f"vm1 on the destination (h2) is another domain (UUID {OTHER}, not {UUID})"),
    (src(dom(RUNNING)), dst(dom(RUNNING)), "vm1 runs on both h1 and h2"),
    (src(None), dst(dom(RUNNING)), "vm1 runs on h2 only: the move happened"),
    (src(dom(PAUSED)), dst(dom(PAUSED)), "vm1 runs on neither h1 nor h2"),
    (src(dom(RUNNING)), dst(dom(PAUSED), incoming=OTHER),
     "h2 holds vm1 but did not prepare to receive it"),
    (src(dom(RUNNING)), dst(None), "vm1 runs on h1; h2 holds at most the copy it prepared"),
    (src(dom(PAUSED)), dst(POSTCOPY_FAILED),
     "vm1 runs on h2 in post-copy without all its memory, the rest only on h1: recover the "
     "migration (virsh migrate --postcopy --postcopy-resume); neither side may be removed"),
]


@pytest.mark.parametrize(("source", "destination", "reason"), REASONS)
def test_each_decision_says_why_in_words_an_operator_reads(source, destination, reason):
    """The reason goes into the record's error (baton jobs) and the logs."""
    assert reason == decide(UUID, source, destination).reason
