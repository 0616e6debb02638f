"""What the coordinator answers: the domain logic behind each public endpoint, free of micro.

``migrate`` answers at once: it validates the options, locates the VM (asking every agent when
no source is given), refuses a VM that is already migrating, and hands the migration to a
:class:`MigrationRunner` task in the TaskGroup the caller owns. Unknown hosts answer
``not_found``; a host whose agent does not answer in time ``unavailable``.

Shutdown: :meth:`Coordinator.wind_down` stops accepting, lets running migrations finish within a
grace period, then aborts (and so rolls back) the rest and waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from baton.coordinator import drain_plan, placement, preflight, storage_checks
from baton.coordinator.agents import AgentClient, is_no_responders
from baton.coordinator.drain_plan import DrainPlan
from baton.coordinator.job_runner import RunnerDeps
from baton.coordinator.options import check_against_domain, validate_options
from baton.coordinator.phases import is_terminal
from baton.coordinator.registry import Job, JobRecord, Registry
from baton.coordinator.runner import MigrationRunner, new_record
from baton.coordinator.storage_runner import StorageMoveRunner
from baton.coordinator.storage_runner import new_record as new_storage_record
from baton.coordinator.storage_takeover import StorageTakeover
from baton.coordinator.takeover import Takeover
from baton.schemas import timeouts
from baton.schemas.agent import DomainInfo
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.limits import JOBS_PAGE_MAX_BYTES
from baton.schemas.migration import (
    AbortRequest,
    BandwidthRequest,
    CheckRequest,
    DrainItem,
    DrainReply,
    DrainRequest,
    DrainTag,
    JobsReply,
    JobsRequest,
    MigrateAccepted,
    MigrateRequest,
    MigrationRecord,
    Phase,
    Placement,
    PreflightReport,
    StorageMode,
)
from baton.schemas.storage import StorageCheckReport, StorageMoveAccepted, StorageMoveRequest

log = structlog.get_logger(__name__)
RECONCILE_S = 30.0  # between two passes of the periodic reconcile
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class Coordinator:
    def __init__(self, deps: RunnerDeps, spawn: Spawn) -> None:
        self._deps = deps
        self._agents: AgentClient = deps.agents
        self._spawn = spawn
        self.registry = Registry()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.accepting = True

    async def restore(self) -> int:
        """List the records the job store kept from before this coordinator started, and settle
        each migration or disk move an earlier coordinator left running from libvirt's facts
        (coordinator/takeover.py, coordinator/storage_takeover.py)."""
        records = await self._deps.store.load()
        self.registry.restore(records)
        for record in sorted(records, key=lambda r: r.created_at):  # the queue's order
            if not is_terminal(record.phase):
                self._settle(record)
        return len(records)

    async def reconcile(self) -> int:
        """What the periodic reconcile does (every :data:`RECONCILE_S`): write again each record
        whose latest version did not reach the store, and settle from libvirt's facts any
        unfinished record that nothing in this process drives any more (a runner that ended
        without reaching a final phase). How many records it acted on."""
        acted = 0
        for job in list(self.registry.all()):
            record = job.record
            tracker = getattr(job, "tracker", None)
            if tracker is not None and tracker.unsaved:
                saved = await tracker.save()
                log.info("record_saved_again" if saved else "record_still_unsaved",
                         migration_id=record.migration_id, phase=record.phase)
                acted += 1
            if not is_terminal(record.phase) and record.migration_id not in self._tasks:
                self._settle(record)
                acted += 1
        return acted

    async def reconcile_forever(self, every_s: float | None = None) -> None:
        while True:
            await asyncio.sleep(RECONCILE_S if every_s is None else every_s)
            try:
                await self.reconcile()
            except Exception as exc:  # one bad pass must not end the loop
                log.error("reconcile_failed", error=str(exc) or type(exc).__name__)

    def _settle(self, record: JobRecord) -> None:
        if isinstance(record, MigrationRecord) and record.phase == Phase.QUEUED:
            self._requeue(record)
            return
        takeover = (Takeover(record, self._deps) if isinstance(record, MigrationRecord)
                    else StorageTakeover(record, self._deps))
        self.registry.take_over(takeover)
        self._track(record.migration_id, self._spawn(takeover.run()))
        log.info("job_taken_over", migration_id=record.migration_id, phase=record.phase)

    def _requeue(self, record: MigrationRecord) -> None:
        """A queued migration touched no host: it waits again, in its order of arrival, and
        then runs as if this coordinator had accepted it."""
        runner = MigrationRunner(record, self._deps)
        self.registry.take_over(runner)
        self._track(record.migration_id, self._spawn(runner.run()))
        log.info("migration_requeued", migration_id=record.migration_id)

    # --- endpoints -------------------------------------------------------------------------

    async def migrate(self, request: MigrateRequest) -> MigrateAccepted | PreflightReport:
        if not self.accepting:
            raise BatonError(ErrorCode.UNAVAILABLE, "the coordinator is shutting down")
        validate_options(request)
        self.registry.refuse_if_busy(request.vm)
        source, domain = await self._locate(request.vm, request.source)
        check_against_domain(request, source, domain)
        chosen: Placement | None = None
        if request.destination is None:
            chosen, _ = await self._place(request, source)
            if chosen.chosen is None:
                raise placement.none_fits(request.vm, chosen)
            request = msgspec.structs.replace(request, destination=chosen.chosen)
        destination = _destination(request)
        with _host_errors(destination):
            await self._agents.caps(destination)
        if request.dry_run:
            return msgspec.structs.replace(await self._report(request, source), placement=chosen)
        return await self._accept(request, source, chosen)

    async def check(self, request: CheckRequest) -> PreflightReport:
        """One destination's report; without one, the report of the host placement chooses
        (or, when none passes, of the best-ranked one) with the whole ranking."""
        source, _ = await self._locate(request.vm, request.source)
        if request.destination is not None:
            return await self._report(request, source)
        chosen, reports = await self._place(request, source)
        if chosen.chosen is not None:
            report = await self._report(msgspec.structs.replace(
                request, destination=chosen.chosen), source)  # with the prediction asked for
        elif chosen.candidates and chosen.candidates[0].host in reports:
            report = reports[chosen.candidates[0].host]
        else:
            raise placement.none_fits(request.vm, chosen)
        return msgspec.structs.replace(report, placement=chosen)

    async def move_storage(self, request: StorageMoveRequest,
                           ) -> StorageMoveAccepted | StorageCheckReport:
        """Check at once (a bad request is refused before anything is copied), then accept."""
        if not self.accepting:
            raise BatonError(ErrorCode.UNAVAILABLE, "the coordinator is shutting down")
        if not request.dry_run:
            self.registry.refuse_if_busy(request.vm)
        host = request.host or await storage_checks.locate(self._agents, request.vm)
        with _host_errors(host):
            report = storage_checks.report(
                await storage_checks.gather(self._agents, request, host))
        if request.dry_run:
            return report
        if not report.ok:
            raise BatonError(ErrorCode.PRECONDITION_FAILED,
                             storage_checks.failure_summary(report.checks))
        migration_id = uuid.uuid4().hex[:12]
        await self._launch(StorageMoveRunner(
            new_storage_record(migration_id, request, host, report), self._deps))
        return StorageMoveAccepted(migration_id=migration_id, vm=request.vm, host=host,
                                   destination_pool=request.destination_pool, disks=report.disks)

    async def drain(self, request: DrainRequest) -> DrainReply:
        """Every running VM of ``request.host`` checked against every other host (among
        ``request.to``), then planned together (coordinator/drain_plan.py: biggest first,
        spread over the hosts that passed, within their memory) and handed to admission control
        in the plan's order; or, with ``abort``, the abort of the host's drain."""
        if request.abort:
            return self._abort_drain(request.host)
        if not self.accepting and not request.dry_run:
            raise BatonError(ErrorCode.UNAVAILABLE, "the coordinator is shutting down")
        if unknown := set(request.to) - set(await self._agents.discover_hosts()):
            raise BatonError(ErrorCode.NOT_FOUND, f"no agent answers for {', '.join(sorted(unknown))}"
                             " (baton hosts lists the known ones)")
        with _host_errors(request.host):
            domains = await self._agents.all_domains(request.host)
        tag = None if request.dry_run else DrainTag(drain_id=uuid.uuid4().hex[:12],
                                                     host=request.host, parallel=request.parallel)
        staying: list[DrainItem] = []
        movable: list[_Movable] = []
        for domain in sorted(domains, key=lambda d: d.name):
            found = await self._drain_candidate(request, domain)
            if isinstance(found, DrainItem):
                staying.append(found)
            else:
                movable.append(found)
        plan = self._drain_plan(request, movable)
        by_vm = {m.domain.name: m for m in movable}
        items = [await self._drain_move(request, by_vm[move.vm], move, tag) for move in plan.moves]
        items += [DrainItem(vm=vm, state=str(by_vm[vm].domain.state), reason=why)
                  for vm, why in plan.unplaced.items()]
        drain_id = None if tag is None else tag.drain_id
        log.info("drain_planned", host=request.host, drain_id=drain_id, moving=len(plan.moves),
                 staying=len(staying) + len(plan.unplaced), total_s=plan.total_s,
                 lower_bound_s=plan.lower_bound_s)
        return DrainReply(host=request.host, drain_id=drain_id, items=items + staying,
                          total_s=plan.total_s, lower_bound_s=plan.lower_bound_s)

    def _drain_plan(self, request: DrainRequest, movable: list[_Movable]) -> DrainPlan:
        """Lanes: the drain's --parallel, within the coordinator's outbound limit; rate: the
        drain's cap, or each lane's share of the host's bandwidth budget if that is lower."""
        limits = self._deps.admission.limits if self._deps.admission else None
        lanes = min(n for n in (request.parallel, limits and limits.outbound, len(movable) or 1)
                    if n)
        budget = None if limits is None or limits.host_bandwidth_mib_s is None \
            else limits.host_bandwidth_mib_s / lanes
        rates = [r for r in (request.bandwidth_mib_s, budget) if r]
        memory_left: dict[str, int | None] = {}
        for m in movable:
            for c in m.placement.candidates:
                if c.ok:
                    memory_left.setdefault(c.host, None if c.memory_left_bytes is None
                                           else c.memory_left_bytes + m.domain.memory_kib * 1024)
        return drain_plan.plan_drain(
            [drain_plan.DrainVm(m.domain.name, m.move_bytes, m.domain.memory_kib * 1024,
                                tuple(c.host for c in m.placement.candidates if c.ok))
             for m in movable], memory_left, lanes, min(rates) if rates else None,
            limits.inbound if limits else len(movable) or 1)

    async def _drain_move(self, request: DrainRequest, movable: _Movable,
                          move: drain_plan.PlannedMove, tag: DrainTag | None) -> DrainItem:
        domain, host = movable.domain, move.destination
        placed = msgspec.structs.replace(movable.placement, chosen=host)
        why = next(c.reason for c in placed.candidates if c.host == host)
        item = DrainItem(vm=domain.name, state=str(domain.state), destination=host, reason=why,
                         start_s=move.start_s, end_s=move.end_s)
        if tag is None:
            return item
        accepted = await self._accept(msgspec.structs.replace(movable.migrate, destination=host),
                                      request.host, placed, tag)
        return msgspec.structs.replace(item, migration_id=accepted.migration_id)

    async def _drain_candidate(self, request: DrainRequest,
                               domain: DomainInfo) -> DrainItem | _Movable:
        """The VM's placement when some host passes its checks, else why it stays."""
        state = str(domain.state)
        if not domain.active:
            return DrainItem(vm=domain.name, state=state, active=False,
                             reason="not running: a drain moves running guests (baton migrate "
                             "--offline moves a shut-off one)")
        if (busy := self.registry.active_for(domain.name)) is not None:
            return DrainItem(vm=domain.name, state=state, migration_id=busy.record.migration_id,
                             reason=f"already in job {busy.record.migration_id}")
        migrate = MigrateRequest(vm=domain.name, source=request.host, tls=request.tls,
                                 bandwidth_mib_s=request.bandwidth_mib_s,
                                 strategy=request.strategy, allow_postcopy=request.allow_postcopy)
        chosen, reports = await self._place(migrate, request.host, among=request.to or None)
        if chosen.chosen is None:
            return DrainItem(vm=domain.name, state=state,
                             reason=placement.none_fits(domain.name, chosen).message)
        copies = reports[chosen.chosen].storage == StorageMode.COPY
        return _Movable(domain, migrate, chosen, move_bytes(domain, copies))

    def _abort_drain(self, host: str) -> DrainReply:
        """Abort every unfinished migration a drain of ``host`` started: the queued ones end at
        once, the running ones are rolled back (those completing can no longer be aborted)."""
        items, drain_id = [], None
        for job in self.registry.active():
            record = job.record
            if not isinstance(record, MigrationRecord) or record.drain is None \
                    or record.drain.host != host:
                continue
            drain_id = record.drain.drain_id
            try:
                job.request_abort("the drain was aborted")
                reason = "abort requested"
            except BatonError as exc:
                reason = exc.message
            items.append(DrainItem(vm=record.vm, state=str(record.phase),
                                   destination=record.destination,
                                   migration_id=record.migration_id, reason=reason))
        if not items:
            raise BatonError(ErrorCode.NOT_FOUND, f"no drain of {host} has a migration left")
        return DrainReply(host=host, drain_id=drain_id, items=items)

    async def abort(self, request: AbortRequest) -> JobRecord:
        runner = self.registry.get(request.migration_id)
        runner.request_abort("requested by an operator")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeouts.ABORT_SETTLE):
                await asyncio.shield(runner.done.wait())
        return runner.record

    async def bandwidth(self, request: BandwidthRequest) -> JobRecord:
        runner = self.registry.get(request.migration_id)
        return await runner.set_bandwidth(request.bandwidth_mib_s)

    async def jobs(self, request: JobsRequest) -> JobsReply:
        """One page, newest first (one record for ``migration_id``); see :meth:`Registry.page`."""
        following: int | None = None
        if request.migration_id is not None:
            records = self.registry.records(request.migration_id)
        else:
            records, following = self.registry.page(_cursor_position(request.cursor), request.limit,
                                                    JOBS_PAGE_MAX_BYTES, request.active_only)
        return JobsReply(migrations=[r for r in records if isinstance(r, MigrationRecord)],
                         storage_moves=[r for r in records if not isinstance(r, MigrationRecord)],
                         next_cursor=None if following is None else str(following))

    # --- accepting -------------------------------------------------------------------------

    async def _accept(self, request: MigrateRequest, source: str, chosen: Placement | None,
                      drain: DrainTag | None = None) -> MigrateAccepted:
        migration_id = uuid.uuid4().hex[:12]
        record = new_record(migration_id, request, source, chosen, drain)
        await self._launch(MigrationRunner(record, self._deps))
        log.info("migration_accepted", migration_id=migration_id, vm=request.vm, source=source,
                 destination=record.destination, placed=chosen is not None)
        return MigrateAccepted(migration_id=migration_id, vm=request.vm, source=source,
                               destination=record.destination)

    async def _launch(self, runner: MigrationRunner | StorageMoveRunner) -> None:
        job: Job = runner
        migration_id = job.record.migration_id
        self.registry.add(job)  # conflict if another request for this VM won the race
        await runner.tracker.announce()
        self._track(migration_id, self._spawn(runner.run()))

    def _track(self, migration_id: str, task: asyncio.Task[None]) -> None:
        self._tasks[migration_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(migration_id, None))

    async def _report(self, request: MigrateRequest | CheckRequest,
                      source: str) -> PreflightReport:
        destination = _destination(request)
        with _host_errors(destination):
            facts = await preflight.gather(
                self._agents, request.vm, source, destination, request.live,
                request.storage, request.tls, preflight.intent_of(request, predict=True))
        return preflight.report(facts)

    async def _place(self, request: MigrateRequest | CheckRequest, source: str,
                     among: list[str] | None = None,
                     ) -> tuple[Placement, dict[str, PreflightReport]]:
        """Every other host (of ``among``, when given) checked as the destination, ranked
        (coordinator/placement.py)."""
        hosts = [h for h in await self._agents.discover_hosts() if not among or h in among]
        unfinished = [job.record for job in self.registry.active()]
        intent = preflight.intent_of(request, predict=False)  # one measurement, not one a host

        async def facts_for(host: str) -> preflight.Facts:
            with _host_errors(host):
                return await preflight.gather(self._agents, request.vm, source, host,
                                              request.live, request.storage, request.tls, intent)

        return await placement.weigh(hosts, source, facts_for,
                                     lambda host: placement.running_jobs(unfinished, host))

    async def _locate(self, vm: str, source: str | None) -> tuple[str, DomainInfo]:
        """The VM's source host and its domain there."""
        if source is not None:
            with _host_errors(source):
                return source, await self._agents.domain(source, vm)
        hosts = await self._agents.discover_hosts()
        found = await asyncio.gather(*(self._agents.domain_or_none(h, vm) for h in hosts),
                                     return_exceptions=True)
        holders = [(h, d) for h, d in zip(hosts, found, strict=True) if isinstance(d, DomainInfo)]
        return pick_source(vm, holders)

    # --- shutdown --------------------------------------------------------------------------

    async def wind_down(self, grace_s: float, rollback_s: float) -> None:
        """Queued migrations touched nothing: they stay queued, in the job store, for the next
        coordinator (coordinator/admission.py); the running ones finish or are rolled back."""
        self.accepting = False
        if self._deps.admission is not None:
            self._deps.admission.close()
        if not await self._wait_active(grace_s):
            for runner in self._in_flight():
                with contextlib.suppress(BatonError):
                    runner.request_abort("the coordinator is shutting down")
            await self._wait_active(rollback_s)
        for task in list(self._tasks.values()):
            task.cancel()  # last resort, and how the queued ones stop waiting

    def _in_flight(self) -> list[Job]:
        return [job for job in self.registry.active() if job.record.phase != Phase.QUEUED]

    async def _wait_active(self, limit_s: float) -> bool:
        waits = [r.done.wait() for r in self._in_flight()]
        if not waits:
            return True
        try:
            async with asyncio.timeout(limit_s):
                await asyncio.gather(*waits)
        except TimeoutError:
            return False
        return True


def _cursor_position(cursor: str | None) -> int | None:
    """The registry number a jobs cursor stands for (the cursor is opaque to clients)."""
    if cursor is None:
        return None
    if not cursor.isdecimal() or not cursor.isascii():
        raise BatonError(ErrorCode.BAD_REQUEST, f"invalid jobs cursor {cursor!r}: pass back a "
                         "next_cursor from an earlier jobs reply")
    return int(cursor)


@dataclass(frozen=True)
class _Movable:
    """A VM of a drain that some host can take, with its placement and what it will send."""

    domain: DomainInfo
    migrate: MigrateRequest
    placement: Placement
    move_bytes: int


def move_bytes(domain: DomainInfo, copies: bool) -> int:
    """What a migration of ``domain`` sends: its memory, plus its writable file disks when the
    storage is copied (their allocation; the copy skips what was never written)."""
    disks = sum(d.allocation_bytes or d.capacity_bytes for d in domain.disks
                if copies and d.source_type == "file" and not d.readonly and not d.shareable)
    return domain.memory_kib * 1024 + disks


def _destination(request: MigrateRequest | CheckRequest) -> str:
    if request.destination is None:  # the endpoints place the VM before they report
        raise ValueError("no destination to report on")
    return request.destination


def pick_source(vm: str, holders: list[tuple[str, DomainInfo]]) -> tuple[str, DomainInfo]:
    """The one host that holds ``vm`` (a running copy wins over an inactive definition)."""
    if not holders:
        raise BatonError(ErrorCode.NOT_FOUND, f"no host has a VM named {vm!r}")
    running = [(h, d) for h, d in holders if d.active]
    choices = running or holders
    if len(choices) > 1:
        names = ", ".join(h for h, _ in choices)
        raise BatonError(ErrorCode.BAD_REQUEST, f"{vm} is defined on {names}: say which host "
                         "to move it from (source / --from)")
    return choices[0]


@contextlib.contextmanager
def _host_errors(host: str) -> Iterator[None]:
    """Name the host in errors: no agent → ``not_found``; no answer in time → ``unavailable``."""
    try:
        yield
    except BatonError as exc:
        if is_no_responders(exc) and exc.details.get("host") == host:
            raise BatonError(ErrorCode.NOT_FOUND, f"unknown host {host!r}: no agent answers for "
                             "it (baton hosts lists the known ones)", host=host) from None
        if exc.code == ErrorCode.TIMEOUT:
            raise BatonError(ErrorCode.UNAVAILABLE, f"host {host!r} is unreachable: "
                             f"{exc.message}", host=host) from None
        raise
