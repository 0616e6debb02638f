"""One storage move, from ``pending`` to a terminal phase, with the migrations' phases:

pending → checking (read-only pre-flight on the VM's host) → preparing (the agent validates and
starts the block copies) → migrating (copying; the guest still uses the old files) → completing
(every copy in sync: the agent pivots, confirms both definitions, verifies the new files and
deletes the old ones) → succeeded. A failed check stops before anything is touched. Abort or
failure before the pivot: the agent cancels the copies and removes them; the VM keeps its old
files. Once the agent reports the copies ready, an abort is refused (the pivot is the switch-over).

The agent reports on ``baton.migrations.<id>.source.progress`` (relayed at least once a second
as ``progress``), ``.storage.stage`` and ``.storage.finished``. Subscription callbacks only store
what arrived and wake the runner; the waiting is :class:`coordinator.job_runner.JobRunner`'s.
"""

from __future__ import annotations

import structlog
from nats.aio.msg import Msg

from baton.coordinator import storage_checks
from baton.coordinator.job_runner import Aborted, Callback, JobRunner, RunnerDeps, decoded
from baton.coordinator.progress import ProgressPump
from baton.schemas.base import utc_now
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.job import Phase
from baton.schemas.storage import (
    AgentStorageAbortRequest,
    AgentStorageMoveRequest,
    StorageCheckReport,
    StorageMoveFinished,
    StorageMoveRecord,
    StorageMoveRequest,
    StorageStage,
    StorageStageEvent,
)
from baton.schemas.subjects import MigrationEvent

log = structlog.get_logger(__name__)
PROGRESS_INTERVAL_MS = 500

# The phase each step the agent reports stands for (the copy is "migrating" data; from the moment
# every copy is in sync the agent switches the VM over, which is "completing").
STAGE_PHASES = {
    StorageStage.COPYING: Phase.MIGRATING,
    StorageStage.READY: Phase.COMPLETING,
    StorageStage.PIVOTED: Phase.COMPLETING,
}


def phase_for_stage(stage: StorageStage | None, current: Phase) -> Phase | None:
    """The phase to move to when the agent reports ``stage`` (None: stay)."""
    target = STAGE_PHASES.get(stage) if stage is not None else None
    if current == Phase.MIGRATING and target == Phase.COMPLETING:
        return target
    return None


def new_record(migration_id: str, request: StorageMoveRequest, host: str,
               report: StorageCheckReport) -> StorageMoveRecord:
    now = utc_now()
    return StorageMoveRecord(migration_id=migration_id, vm=request.vm, host=host,
                             destination_pool=request.destination_pool, phase=Phase.PENDING,
                             request=request, created_at=now, updated_at=now,
                             checks=report.checks, disks=report.disks,
                             bandwidth_mib_s=request.bandwidth_mib_s)


class StorageMoveRunner(JobRunner[StorageMoveRecord, StorageMoveFinished]):
    KIND = "storage move"
    TOO_LATE_TO_ABORT = ("the copies are in sync and the VM is being switched to them; the move "
                         "can no longer be aborted")
    CANCELLED = "the coordinator stopped during the move"
    STOPPED_EVENT = "storage_move_stopped"
    FINISHED_TYPE = StorageMoveFinished
    FINISHED_EVENT = MigrationEvent.STORAGE_FINISHED

    def __init__(self, record: StorageMoveRecord, deps: RunnerDeps) -> None:
        super().__init__(record, deps)
        self._stage: StorageStage | None = None

    async def set_bandwidth(self, mib_s: int) -> StorageMoveRecord:
        raise BatonError(ErrorCode.UNSUPPORTED, "a storage move's bandwidth is set when it "
                         "starts: abort it and move again with --bandwidth")

    # --- the run ---------------------------------------------------------------------------

    async def _run(self) -> None:
        await self.tracker.transition(Phase.CHECKING)
        await self._check()
        self._raise_if_aborted()
        await self.tracker.transition(Phase.PREPARING, f"asking {self.record.host} to copy")
        finished = await self._follow_agent_job()
        await self._complete(finished)

    async def _check(self) -> None:
        """Again at the start: the host may have changed since the request was accepted."""
        facts = await storage_checks.gather(self._agents, self.record.request, self.record.host)
        report = storage_checks.report(facts)
        self.tracker.update(checks=report.checks, disks=report.disks)
        if not report.ok:
            raise BatonError(ErrorCode.PRECONDITION_FAILED,
                             storage_checks.failure_summary(report.checks))

    async def _start_agent_job(self) -> str:
        record = self.record
        await self._agents.storage_move(record.host, AgentStorageMoveRequest(
            migration_id=record.migration_id, vm=record.vm, disks=record.disks,
            bandwidth_mib_s=record.bandwidth_mib_s, keep_source=record.request.keep_source,
            progress_interval_ms=PROGRESS_INTERVAL_MS))
        return ("copying " + ", ".join(d.target for d in record.disks)
                + f" into pool {record.destination_pool}")

    async def _on_wake(self) -> None:
        to = phase_for_stage(self._stage, self.tracker.phase)
        if to is not None:
            await self.tracker.transition(to, "copies in sync: switching the VM to them")

    async def _ask_agent_to_abort(self) -> None:
        record = self.record
        try:
            await self._agents.storage_abort(record.host, AgentStorageAbortRequest(
                migration_id=record.migration_id, vm=record.vm, disks=record.disks))
        except BatonError as exc:  # e.g. conflict: the agent already pivots; its outcome follows
            log.warning("abort_not_delivered", error=str(exc))

    # --- completion ------------------------------------------------------------------------

    async def _complete(self, finished: StorageMoveFinished) -> None:
        self.tracker.update(result=finished.stats, outcome=finished.disks)
        if finished.aborted:
            raise Aborted()
        if finished.error is not None:
            raise BatonError.from_reply(finished.error)
        await self._enter_completing("the agent finished the move")  # the stage events went missing
        await self._confirm()
        kept = self.record.request.keep_source
        await self.tracker.transition(Phase.SUCCEEDED, "the VM uses the new files; old files "
                                      + ("kept" if kept else "deleted"), pivoted_at=finished.at)
        log.info("storage_move_completed")

    async def _confirm(self) -> None:
        """Ask the agent once more, independently of its report: every disk uses its copy."""
        domain = await self._agents.domain(self.record.host, self.record.vm)
        now = {d.target: d.source_path for d in domain.disks}
        wrong = [f"{m.target} uses {now.get(m.target)}" for m in self.record.disks
                 if now.get(m.target) != m.destination_path]
        if wrong:
            raise BatonError(ErrorCode.HYPERVISOR, "the agent reported the move done, but "
                             + "; ".join(wrong), stage="confirm")

    # --- failure and abort -----------------------------------------------------------------

    def _abort_error(self) -> BatonError:
        return BatonError(ErrorCode.CONFLICT, f"aborted: {self._abort_reason or 'by the agent'}"
                          "; the VM keeps its old files")

    async def _after_stop(self, error: BatonError) -> ErrorReply:
        if self._finished is not None:
            self.tracker.update(outcome=self._finished.disks)
        return error.to_reply()

    # --- subscriptions ---------------------------------------------------------------------

    async def _subscriptions(self, pump: ProgressPump) -> list[tuple[str, Callback]]:
        migration_id = self.record.migration_id

        async def on_stage(msg: Msg) -> None:
            pump.heard()
            stage = decoded(msg, StorageStageEvent)
            if stage is not None and stage.migration_id == migration_id:
                self._stage = stage.stage
                self._wake.set()

        report, host = self._deps.subjects.agent_report, self.record.host
        return [(report(host, migration_id, event), cb) for event, cb in (
            (MigrationEvent.SOURCE_PROGRESS, self._progress_callback(pump)),
            (MigrationEvent.STORAGE_STAGE, on_stage),
            (self.FINISHED_EVENT, self._finished_callback(pump)))]
