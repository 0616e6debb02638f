"""Settle the disk moves an earlier coordinator left unfinished (issue #11, reconcile).

The host's agent runs a disk move to its end without the coordinator; only its report is lost.
At start-up each such record gets a :class:`StorageTakeover`, which reads the host's facts
(``migration.status``: the domain's disks as libvirt has them now, whether the agent still runs
the move, its ledger) and decides with :func:`judge_move` (pure):

- the agent never started it: ``failed``, nothing touched;
- the agent still runs it: ask again in a moment;
- every disk of the move now uses its copy: ``succeeded``;
- every disk still uses its old file: the agent cancels what is left of the copies and removes
  only its own copies (``storage.abort``), ``failed``;
- some disks moved and some not, or the VM is gone: ``failed`` needing attention, nothing touched.
"""

from __future__ import annotations

import asyncio

import structlog

from baton.coordinator.takeover import Judgement, Settler, Step, facts_text
from baton.schemas.errors import BatonError
from baton.schemas.migration import MigrationStatus, MigrationStatusRequest, Phase
from baton.schemas.storage import AgentStorageAbortRequest, StorageMoveRecord

log = structlog.get_logger(__name__)


def judge_move(record: StorageMoveRecord, status: MigrationStatus) -> Judgement:
    """What to do with the disk move ``record``, from its host's facts only (pure)."""
    if status.running_here:
        return Judgement(Step.WAIT, f"the agent of {record.host} still runs the move")
    if not status.known:
        return Judgement(Step.UNTOUCHED, f"the agent of {record.host} never started the move: "
                         "nothing was touched")
    if status.domain is None:
        return Judgement(Step.NEEDS_ATTENTION, f"{record.vm} is not on {record.host} any more")
    now = {disk.target: disk.source_path for disk in status.domain.disks}
    moved = [d.target for d in record.disks if now.get(d.target) == d.destination_path]
    stayed = [d.target for d in record.disks if now.get(d.target) == d.source_path]
    if len(moved) == len(record.disks):
        return Judgement(Step.ROLL_FORWARD, f"{record.vm} uses the copies of "
                         f"{', '.join(moved)}")
    if len(stayed) == len(record.disks):
        return Judgement(Step.ROLL_BACK, f"{record.vm} still uses the old files of "
                         f"{', '.join(stayed)}")
    return Judgement(Step.NEEDS_ATTENTION, f"{record.vm} uses the copies of "
                     f"{', '.join(moved) or 'no disk'} but not of the other disks of the move")


class StorageTakeover(Settler[StorageMoveRecord]):
    """A disk move: its host's facts, :func:`judge_move`."""

    async def _settle(self) -> None:
        record = self.record
        asked = MigrationStatusRequest(migration_id=record.migration_id, vm=record.vm)
        while True:
            try:
                status = await self._agents.migration_status(record.host, asked)
            except BatonError as exc:  # the agent away: its facts are unknown, so wait
                log.warning("takeover_waits_for_facts", error=exc.message)
                await asyncio.sleep(self._poll_s)
                continue
            judgement = judge_move(record, status)
            log.info("takeover_judged", step=judgement.step, reason=judgement.reason)
            if judgement.step is not Step.WAIT:
                break
            await asyncio.sleep(self._poll_s)
        await self._act(judgement, status)

    async def _act(self, judgement: Judgement, status: MigrationStatus) -> None:
        record, reason = self.record, judgement.reason
        if judgement.step is Step.ROLL_FORWARD:
            if self.tracker.phase == Phase.PREPARING:
                await self.tracker.transition(Phase.MIGRATING, "after a coordinator restart")
            if self.tracker.phase == Phase.MIGRATING:
                await self.tracker.transition(Phase.COMPLETING, f"after a coordinator restart: "
                                              f"{reason}")
            await self.tracker.transition(Phase.SUCCEEDED,
                                          f"settled after a coordinator restart: {reason}")
        elif judgement.step is Step.ROLL_BACK:
            try:
                ack = await self._agents.storage_abort(record.host, AgentStorageAbortRequest(
                    migration_id=record.migration_id, vm=record.vm, disks=record.disks))
                notes = ack.detail
            except BatonError as exc:
                notes = f"clean-up on {record.host} failed: {exc.message}"
            await self._fail(f"the coordinator stopped during the disk move; {reason}; rolled "
                             f"back: {notes}")
        elif judgement.step is Step.UNTOUCHED:
            await self._fail(f"the coordinator stopped before the disk move began; {reason}")
        else:
            log.error("takeover_needs_attention", reason=reason)
            await self._fail(f"needs attention: {reason}; nothing was touched, check "
                             f"{record.host}", needs_attention="true",
                             **{f"on_{record.host}": facts_text(status)})
