"""Settle the migrations an earlier coordinator left unfinished (issue #11, reconcile).

A coordinator that dies (``kill -9``, a lost host) leaves records in a running phase while libvirt
carries on without it: the VM may land on the destination, stay on the source, or the job may
still run. At start-up each such record gets a :class:`Takeover`, which decides from both hosts'
libvirt facts only (``migration.status``; :func:`judge`, pure) and then acts once:

- nothing touched (neither agent knows the migration): ``failed``; the VM never left the source.
- ``wait``: a libvirt job of the VM still runs on either host: ask again in a moment.
- ``roll_forward``: the guest runs on the destination only: ``completing``, confirm it, delete
  the source's copied disks (the source agent's ledger decides which), ``succeeded``.
- ``roll_back``: the guest runs on the source; the destination holds at most what it prepared:
  clean that (the agent removes only its own), ``failed``.
- ``needs_attention``: the facts contradict: touch nothing, ``failed`` with both hosts' facts.

An agent that does not answer is asked again until it does: the record stays in its phase, never
guessed. Disk moves between pools are not settled here yet: they stay listed in their phase.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic

import structlog

from baton.coordinator.agents import AgentClient
from baton.coordinator.completion import confirmation_problems
from baton.coordinator.job_runner import RunnerDeps
from baton.coordinator.phases import PhaseTracker, Record
from baton.coordinator.verdict import Verdict, decide
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    CleanupRequest,
    MigrationRecord,
    MigrationStatus,
    MigrationStatusRequest,
    Phase,
)

log = structlog.get_logger(__name__)
POLL_S = 2.0  # between two readings of both hosts' facts while a job runs or an agent is away


class Step(StrEnum):
    UNTOUCHED = "untouched"
    WAIT = Verdict.WAIT.value
    ROLL_FORWARD = Verdict.ROLL_FORWARD.value
    ROLL_BACK = Verdict.ROLL_BACK.value
    NEEDS_ATTENTION = Verdict.NEEDS_ATTENTION.value


@dataclass(frozen=True)
class Judgement:
    step: Step
    reason: str


def judge(record: MigrationRecord, source: MigrationStatus,
          destination: MigrationStatus) -> Judgement:
    """What to do with ``record``, from both hosts' facts only (pure)."""
    if not source.known and not destination.known:
        return Judgement(Step.UNTOUCHED, f"neither {record.source} nor {record.destination} "
                         "had been asked to act: nothing was touched")
    uuid = destination.incoming_uuid
    if uuid is None:
        return Judgement(Step.NEEDS_ATTENTION, f"{record.source} knows the migration but "
                         f"{record.destination} never prepared to receive {record.vm}")
    if not record.request.live:  # an offline move is one libvirt call: done or not
        if source.job is not None or source.running_here:
            return Judgement(Step.WAIT, f"the offline move still runs on {record.source}")
        problems = confirmation_problems(record.request, record.destination, destination.domain,
                                         source.domain, source_persistent=False)
        if not problems:
            return Judgement(Step.ROLL_FORWARD, f"{record.vm} is defined on "
                             f"{record.destination} as asked")
        return Judgement(Step.NEEDS_ATTENTION, "; ".join(problems))
    decision = decide(uuid, source, destination)
    return Judgement(Step(decision.verdict.value), decision.reason)


def facts_text(status: MigrationStatus) -> str:
    """One line of a host's facts for the record's error details."""
    domain = status.domain
    held = "no domain" if domain is None else f"{domain.state} (UUID {domain.uuid})"
    job = "a job runs" if status.job is not None or status.running_here else "no job"
    return f"{held}; {job}; ledger {'knows' if status.known else 'does not know'} it"


class Settler(Generic[Record]):
    """A record left in a running phase, settled from libvirt's facts (a registry Job); the
    subclass reads the facts and acts (``_settle``)."""

    def __init__(self, record: Record, deps: RunnerDeps) -> None:
        self.tracker: PhaseTracker[Record] = PhaseTracker(
            record, deps.subjects, deps.nc.publish, store=deps.store)
        self._agents: AgentClient = deps.agents
        self._poll_s = POLL_S  # read when made: tests shorten it
        self.done = asyncio.Event()

    @property
    def record(self) -> Record:
        return self.tracker.record

    def request_abort(self, reason: str) -> None:
        raise self._busy()

    async def set_bandwidth(self, mib_s: int) -> Record:
        raise self._busy()

    def _busy(self) -> BatonError:
        return BatonError(ErrorCode.CONFLICT, f"{self.record.migration_id} is being settled "
                          "from libvirt's facts after a coordinator restart; wait for its "
                          "outcome (baton watch)")

    async def run(self) -> None:
        record = self.record
        with structlog.contextvars.bound_contextvars(migration_id=record.migration_id,
                                                     vm=record.vm):
            try:
                await self._settle()
            except Exception:  # a bug: the record stays in its phase for the next coordinator
                log.exception("takeover_crashed")
            finally:
                self.done.set()

    async def _settle(self) -> None:
        raise NotImplementedError

    async def _fail(self, message: str, **details: str) -> None:
        error = BatonError(ErrorCode.UNAVAILABLE, message, **details).to_reply()
        await self.tracker.transition(Phase.FAILED, message, error=error)


class Takeover(Settler[MigrationRecord]):
    """A migration: both hosts' facts, :func:`judge`."""

    async def _settle(self) -> None:
        record = self.record
        asked = MigrationStatusRequest(migration_id=record.migration_id, vm=record.vm)
        while True:
            try:
                source, destination = await asyncio.gather(
                    self._agents.migration_status(record.source, asked),
                    self._agents.migration_status(record.destination, asked))
            except BatonError as exc:  # an agent away: its facts are unknown, so wait
                log.warning("takeover_waits_for_facts", error=exc.message)
                await asyncio.sleep(self._poll_s)
                continue
            judgement = judge(record, source, destination)
            log.info("takeover_judged", step=judgement.step, reason=judgement.reason)
            if judgement.step is not Step.WAIT:
                break
            await asyncio.sleep(self._poll_s)
        acts = {Step.UNTOUCHED: self._untouched, Step.ROLL_FORWARD: self._roll_forward,
                Step.ROLL_BACK: self._roll_back, Step.NEEDS_ATTENTION: self._needs_attention}
        await acts[judgement.step](judgement.reason, source, destination)

    async def _untouched(self, reason: str, _source: MigrationStatus,
                         _destination: MigrationStatus) -> None:
        await self._fail(f"the coordinator stopped before the migration began; {reason}")

    async def _roll_forward(self, reason: str, source: MigrationStatus,
                            _destination: MigrationStatus) -> None:
        record = self.record
        if self.tracker.phase == Phase.PREPARING:
            await self.tracker.transition(Phase.MIGRATING, "after a coordinator restart")
        if self.tracker.phase == Phase.MIGRATING:
            await self.tracker.transition(Phase.COMPLETING, f"after a coordinator restart: {reason}")
        notes = ""
        sent = [fact.path for fact in source.sent if fact.exists]
        if record.request.undefine_source and sent:
            notes = await self._cleanup(record.source, CleanupRequest(
                migration_id=record.migration_id, vm=record.vm, delete_paths=sent))
        await self.tracker.transition(Phase.SUCCEEDED, "settled after a coordinator restart: "
                                      f"{reason}{'; ' + notes if notes else ''}")

    async def _roll_back(self, reason: str, _source: MigrationStatus,
                         destination: MigrationStatus) -> None:
        record = self.record
        notes = await self._cleanup(record.destination, CleanupRequest(
            migration_id=record.migration_id, vm=record.vm, remove_domain=True,
            delete_paths=[fact.path for fact in destination.created]))
        await self._fail(f"the coordinator stopped during the migration; {reason}; rolled back"
                         f"{': ' + notes if notes else ''}")

    async def _needs_attention(self, reason: str, source: MigrationStatus,
                               destination: MigrationStatus) -> None:
        record = self.record
        log.error("takeover_needs_attention", reason=reason)
        await self._fail(f"needs attention: {reason}; nothing was touched, check both hosts",
                         needs_attention="true", **{
                             f"on_{record.source}": facts_text(source),
                             f"on_{record.destination}": facts_text(destination)})

    async def _cleanup(self, host: str, request: CleanupRequest) -> str:
        """Ask ``host`` to clean up; what it kept or why it could not, for the record."""
        try:
            reply = await self._agents.cleanup(host, request)
        except BatonError as exc:
            log.error("takeover_cleanup_failed", host=host, error=exc.message)
            return f"clean-up on {host} failed: {exc.message}"
        log.info("takeover_cleaned", host=host, removed=reply.domain_removed,
                 deleted=reply.deleted_paths, kept=reply.kept_paths)
        return f"{host} kept {', '.join(reply.kept_paths)}: {reply.detail}" if reply.kept_paths \
            else reply.detail

