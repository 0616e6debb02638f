"""Migration messages: the coordinator's public API, the agents' migration endpoints, and the
events that report a migration's phases and progress.

Public (``baton.coordinator.<verb>``): migrate, check, drain, abort, bandwidth, jobs.
Events (``baton.migrations.<id>.<event>``): ``phase`` (every phase change, with the whole record),
``progress`` (at least once a second while data moves).
Agent side (``baton.agent.<host>.migration.<verb>``): prepare, start, speed, abort, cleanup; the
source agent reports on ``baton.migrations.<id>.source.<event>`` (progress, finished).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import msgspec

from baton.schemas.agent import DomainInfo
from baton.schemas.base import HostId, Message, NonNegativeInt, VmName
from baton.schemas.errors import ErrorReply
from baton.schemas.events import JobStats

# The job primitives were defined here first; importers of schemas.migration keep finding them.
from baton.schemas.job import TERMINAL_PHASES as TERMINAL_PHASES
from baton.schemas.job import BandwidthMiBs, MigrationId
from baton.schemas.job import CheckName as CheckName
from baton.schemas.job import CheckResult as CheckResult
from baton.schemas.job import CheckStatus as CheckStatus
from baton.schemas.job import Phase as Phase
from baton.schemas.limits import (
    ADDRESS_MAX,
    CURSOR_MAX,
    DELETE_PATHS_MAX,
    DISKS_MAX,
    HOSTS_MAX,
    JOBS_PAGE_DEFAULT,
    JOBS_PAGE_MAX,
    URI_MAX,
    Name,
    PathText,
)
from baton.schemas.storage import StorageMoveRecord

Percent = Annotated[int, msgspec.Meta(ge=1, le=100)]
DowntimeMs = Annotated[int, msgspec.Meta(ge=1, le=3_600_000)]
CompletionTimeoutS = Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)]
DOMAIN_UUID_PATTERN = r"^[0-9A-Fa-f]{8}(-?[0-9A-Fa-f]{4}){3}-?[0-9A-Fa-f]{12}$"
DomainUuid = Annotated[str, msgspec.Meta(pattern=DOMAIN_UUID_PATTERN)]
DiskPools = Annotated[dict[Name, Name], msgspec.Meta(max_length=DISKS_MAX)]  # disk target -> pool


class Strategy(StrEnum):
    """What the source does when pre-copy stops converging (agent/convergence.py)."""

    PRECOPY = "precopy"  # nothing: the downtime limit stays as set (the timeout may end it)
    # The default. The source measures the guest first; when the prediction says neither plain
    # pre-copy nor the downtime ramp ends the move, it starts with what does: post-copy after
    # the first pass (allow_postcopy), else auto-converge. Running, it raises the downtime limit
    # step by step (500, 1000, 2000 ms, or up to max_downtime_ms) each time the remainder makes
    # no progress for 10 s; with allow_postcopy, it switches to post-copy once the last step
    # stalls too.
    AUTO = "auto"
    AUTO_CONVERGE = "auto-converge"  # QEMU throttles the guest's vCPUs until it converges
    POSTCOPY = "postcopy"  # switch to post-copy as soon as the first pass is sent


class PostcopySwitch(StrEnum):
    """When the source switches a running migration to post-copy (``migrateStartPostCopy``).

    After the switch the guest runs on the destination and fetches the pages not yet sent from
    the source on demand: the move always ends, but it cannot be rolled back, and if the link
    fails before the last page arrives the guest stays paused on the destination until the
    migration is recovered."""

    OFF = "off"
    AFTER_FIRST_PASS = "after-first-pass"  # strategy postcopy
    WHEN_STALLED = "when-stalled"  # strategy auto with allow_postcopy: once the ramp is spent


class StorageMode(StrEnum):
    AUTO = "auto"  # shared if the destination proves it sees the disk files, else copy
    SHARED = "shared"  # disks stay where they are; only CPU and memory state move
    COPY = "copy"  # shared-nothing: local disks are copied block by block during the move


# --- public requests --------------------------------------------------------------------------


class MigrateRequest(Message, frozen=True, kw_only=True, tag="coordinator.migrate.request"):
    vm: VmName
    # None: the coordinator places the VM on the best host that passes every check (the
    # record's ``placement`` says which hosts it weighed and why it chose that one).
    destination: HostId | None = None
    source: HostId | None = None  # found by asking the agents when omitted
    live: bool = True  # false: offline move of a shut-off or paused domain's definition and disks
    storage: StorageMode = StorageMode.AUTO
    persistent: bool = True  # save the definition on the destination
    undefine_source: bool = True  # remove the definition from the source once moved
    auto_converge: bool = False
    auto_converge_initial_pct: Percent | None = None
    auto_converge_increment_pct: Percent | None = None
    bandwidth_mib_s: BandwidthMiBs | None = None
    max_downtime_ms: DowntimeMs | None = None
    # Completion timeout: a migration still copying this many seconds after it started is
    # aborted (the guest keeps running on the source) and fails with code "timeout" and the
    # figures it had reached. None: no limit.
    timeout_s: CompletionTimeoutS | None = None
    strategy: Strategy = Strategy.AUTO
    # Strategy auto may switch to post-copy once raising the downtime limit no longer helps.
    allow_postcopy: bool = False
    dry_run: bool = False  # run the checks only and answer with the report
    # Encrypt the migration stream (VIR_MIGRATE_TLS) when both hosts have QEMU TLS
    # certificates; false (`--no-tls`) sends it in the clear, which pre-flight warns about.
    tls: bool = True
    # Shared-nothing only: the destination pool every copied disk goes into (`--target-pool`),
    # and per disk target (`--disk-map vda=POOL`, which wins). A disk named in neither keeps
    # its directory, which must then be a pool on the destination too.
    target_pool: Name | None = None
    disk_pools: DiskPools = {}


class CheckRequest(Message, frozen=True, kw_only=True, tag="coordinator.check.request"):
    vm: VmName
    # None: check every other host; the report is the chosen host's, with the ranking in
    # ``placement``.
    destination: HostId | None = None
    source: HostId | None = None
    live: bool = True
    storage: StorageMode = StorageMode.AUTO
    tls: bool = True
    # The strategy the migration would run with: the report says what it risks.
    strategy: Strategy = Strategy.AUTO
    allow_postcopy: bool = False
    bandwidth_mib_s: BandwidthMiBs | None = None  # the cap: the prediction's link rate
    max_downtime_ms: DowntimeMs | None = None
    target_pool: Name | None = None  # as in MigrateRequest
    disk_pools: DiskPools = {}


class Prediction(Message, frozen=True, kw_only=True, tag="agent.migration.prediction"):
    """What the source agent expects of a live migration, from the guest's dirty rate measured
    just now (libvirt's dirty-rate calculation) and the link rate (the bandwidth cap): whether
    plain pre-copy converges, how long the move takes and how long the guest pauses, and the
    strategy that ends it. Without a link rate only the measurement is given."""

    dirty_rate_mib_s: float
    # How it was measured: memory-peek (the source agent read about a thousand sampled pages
    # with libvirt, agent/memory_sample.py), else libvirt's own calculation: dirty-ring,
    # dirty-bitmap or page-sampling
    dirty_rate_mode: str
    memory_mib: NonNegativeInt  # the guest memory the first pass goes through
    # Of it, what the first pass sends as whole pages (the rest is zero pages, sent as markers),
    # from the sampled pages; None: not sampled, all of memory is assumed.
    whole_mib: NonNegativeInt | None = None
    # The memory the guest keeps dirtying, when a second, longer measurement found fewer new
    # pages than its length would give (the guest rewrites a working set); None: not bounded
    # within the measurements, so all of memory is assumed.
    working_set_mib: NonNegativeInt | None = None
    link_mib_s: float | None = None
    converges: bool | None = None  # under plain pre-copy at the downtime limit asked for
    total_s: float | None = None  # under ``strategy``; None when it cannot be predicted
    # Of total_s, the move's fixed start (libvirt connecting, the destination's QEMU starting),
    # learned from the source's last completed moves of the kind (shared or copy).
    start_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    downtime_ms: NonNegativeInt | None = None
    # precopy: converges as asked; auto: once the downtime ramp raised the limit; postcopy:
    # only by switching (allowed); auto-converge: only by throttling the guest (not modelled)
    strategy: Strategy | None = None


class Candidate(Message, frozen=True, kw_only=True, tag="coordinator.placement.candidate"):
    """One host weighed for a VM that was given no destination."""

    host: str
    ok: bool  # passes every pre-flight check
    rank: int  # 1 is the host chosen; hosts that fail come after every host that passes
    warnings: NonNegativeInt = 0  # checks that passed with a warning
    running_jobs: NonNegativeInt = 0  # migrations and disk moves now touching the host
    memory_left_bytes: int | None = None  # available memory once the VM has arrived
    reason: str = ""  # why it fails (the failed checks), or what put it where it is


class Placement(Message, frozen=True, kw_only=True, tag="coordinator.placement"):
    """How the coordinator chose a destination: every other host that answered, ranked."""

    chosen: str | None  # None: no host passes every check
    candidates: list[Candidate] = []
    order: str = ""  # what the ranking compares, in words


class PreflightReport(Message, frozen=True, kw_only=True, tag="coordinator.check.reply"):
    vm: str
    source: str | None
    destination: str
    storage: StorageMode  # the mode a migration would use (auto resolved when possible)
    ok: bool  # no check failed
    checks: list[CheckResult] = []
    # A live migration's expected course (the convergence check says it in words); None when
    # the source could not measure (its reason is in the convergence check).
    prediction: Prediction | None = None
    placement: Placement | None = None  # the ranking, when no destination was given


class DrainRequest(Message, frozen=True, kw_only=True, tag="coordinator.drain.request"):
    """Move every running VM off ``host``: each is placed like ``migrate`` without a destination
    (among ``to`` when given) and queued under the coordinator's limits."""

    host: HostId
    to: Annotated[list[HostId], msgspec.Meta(max_length=HOSTS_MAX)] = []  # empty: any other host
    # At most this many of the drain's migrations at once (the coordinator's limits still hold).
    parallel: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    bandwidth_mib_s: BandwidthMiBs | None = None  # each migration's cap
    strategy: Strategy = Strategy.AUTO
    allow_postcopy: bool = False
    tls: bool = True
    dry_run: bool = False  # the plan only: where each VM would go, or why it cannot
    abort: bool = False  # abort the host's drain: its queued and running migrations


class DrainItem(Message, frozen=True, kw_only=True, tag="coordinator.drain.item"):
    vm: str
    state: str  # libvirt's state of the domain on the drained host
    active: bool = True  # running (or paused): the drain is to move it
    destination: str | None = None  # where placement put it; None: it does not move
    migration_id: str | None = None  # its migration (not for a dry run)
    reason: str = ""  # why it does not move (failed checks, shut off), or the placement
    # The plan's expectation, in seconds from the drain's start, at the drain's cap (None
    # without one): its bytes (memory, plus copied disks) over its lane (coordinator/drain_plan.py)
    start_s: float | None = None
    end_s: float | None = None


class DrainReply(Message, frozen=True, kw_only=True, tag="coordinator.drain.reply"):
    host: str
    drain_id: str | None = None  # None for a dry run
    items: list[DrainItem] = []  # the moving ones in the order they start, then those that stay
    total_s: float | None = None  # when the plan expects the last move to end
    lower_bound_s: float | None = None  # no plan can end sooner: all bytes over all its lanes


class DrainTag(Message, frozen=True, kw_only=True, tag="coordinator.drain.tag"):
    """The drain a migration belongs to, on its record (admission honours ``parallel``)."""

    drain_id: str
    host: str
    parallel: int | None = None


class MigrateAccepted(Message, frozen=True, kw_only=True, tag="coordinator.migrate.accepted"):
    migration_id: MigrationId
    vm: str
    source: str
    destination: str


class AbortRequest(Message, frozen=True, kw_only=True, tag="coordinator.abort.request"):
    migration_id: MigrationId


class BandwidthRequest(Message, frozen=True, kw_only=True, tag="coordinator.bandwidth.request"):
    migration_id: MigrationId
    bandwidth_mib_s: BandwidthMiBs


class JobsRequest(Message, frozen=True, kw_only=True, tag="coordinator.jobs.request"):
    """One page of the coordinator's jobs, newest first; ask again with ``cursor`` set to the
    reply's ``next_cursor`` for the next (older) page, until it is None."""

    migration_id: MigrationId | None = None  # just this one
    active_only: bool = False
    limit: Annotated[int, msgspec.Meta(ge=1, le=JOBS_PAGE_MAX)] = JOBS_PAGE_DEFAULT  # records
    cursor: Annotated[str, msgspec.Meta(max_length=CURSOR_MAX)] | None = None  # opaque


# --- records and events -----------------------------------------------------------------------


class MigrationRecord(Message, frozen=True, kw_only=True, tag="coordinator.migration"):
    migration_id: MigrationId
    vm: str
    source: str
    destination: str
    phase: Phase
    storage: StorageMode
    request: MigrateRequest
    created_at: datetime
    updated_at: datetime
    checks: list[CheckResult] = []
    bandwidth_mib_s: int | None = None  # the cap asked for (--bandwidth, baton bandwidth)
    # The cap libvirt's job runs at when the hosts' bandwidth budget holds it below
    # bandwidth_mib_s (its share, coordinator/admission.py); None: it runs at bandwidth_mib_s.
    budget_mib_s: int | None = None
    switchover_at: datetime | None = None  # when the destination resumed the guest
    result: JobStats | None = None  # the completed job's figures from the source
    error: ErrorReply | None = None
    # What the source did to make it converge (strategy auto), oldest first, each with why.
    escalations: list[str] = []
    # What strategy auto chose before starting, from the prediction, and why ("" when it did
    # not choose: another strategy, an offline move, or no prediction to choose from).
    auto_choice: str = ""
    # The source switched to post-copy: the guest runs on the destination from then on, and
    # the migration can no longer be aborted or rolled back.
    postcopy: bool = False
    prediction: Prediction | None = None  # what pre-flight expected (strategy auto measures)
    placement: Placement | None = None  # how the destination was chosen, when none was given
    drain: DrainTag | None = None  # the drain that asked for this migration


class JobsReply(Message, frozen=True, kw_only=True, tag="coordinator.jobs.reply"):
    """One page: each list newest first; ``next_cursor`` is None on the last page."""

    migrations: list[MigrationRecord] = []
    storage_moves: list[StorageMoveRecord] = []  # disk moves between pools (schemas.storage)
    next_cursor: str | None = None  # the JobsRequest.cursor of the next page


class PhaseEvent(Message, frozen=True, kw_only=True, tag="migration.phase"):
    migration_id: MigrationId
    phase: Phase
    previous: Phase | None
    reason: str = ""
    at: datetime
    record: MigrationRecord


class ProgressEvent(Message, frozen=True, kw_only=True, tag="migration.progress"):
    migration_id: MigrationId
    phase: Phase
    at: datetime
    stats: JobStats
    bandwidth_mib_s: int | None = None
    # Seconds left, from the source's latest pass figures (agent/precopy_model.py eta_s);
    # None while it cannot be told (no rate yet) or when the remainder does not shrink.
    eta_s: float | None = None


# --- agent side -------------------------------------------------------------------------------


class DiskPlan(Message, frozen=True, kw_only=True, tag="agent.disk_plan"):
    target: Name
    path: PathText  # where the copy lands on the destination
    format: Name
    capacity_bytes: NonNegativeInt
    # The disk's path on the source when the copy goes elsewhere (another pool); None: the same.
    source_path: PathText | None = None


class PrepareRequest(Message, frozen=True, kw_only=True, tag="agent.migration.prepare.request"):
    """Destination: pre-create the disks a copy will fill (their path there, the source's format
    and virtual size)."""

    migration_id: MigrationId
    vm: VmName
    disks: Annotated[list[DiskPlan], msgspec.Meta(max_length=DISKS_MAX)] = []
    # The incoming domain's UUID: the destination's agent removes a domain in a later clean-up
    # only if it arrived with this UUID (it must not be on the host when prepare runs).
    domain_uuid: DomainUuid | None = None


class PrepareReply(Message, frozen=True, kw_only=True, tag="agent.migration.prepare.reply"):
    created_paths: list[str] = []


class StartRequest(Message, frozen=True, kw_only=True, tag="agent.migration.start.request"):
    """Source: run the migration peer-to-peer to ``destination_uri``."""

    migration_id: MigrationId
    vm: VmName
    destination_uri: Annotated[str, msgspec.Meta(max_length=URI_MAX)]
    # The destination's host id: the source sends the VM only if that host's agent announces
    # exactly ``destination_uri`` (agent/peers.py).
    destination_host: HostId | None = None
    # Migration data goes to tcp://<address>.
    destination_address: Annotated[str, msgspec.Meta(max_length=ADDRESS_MAX)] | None = None
    live: bool = True
    persistent: bool = True
    undefine_source: bool = True
    # Targets to copy (shared-nothing); empty = shared storage.
    copy_disks: Annotated[list[Name], msgspec.Meta(max_length=DISKS_MAX)] = []
    # Copied disks that land at another path on the destination (another pool), by target:
    # the source sends libvirt a destination definition with these paths.
    destination_paths: Annotated[dict[Name, PathText], msgspec.Meta(max_length=DISKS_MAX)] = {}
    auto_converge: bool = False
    auto_converge_initial_pct: Percent | None = None
    auto_converge_increment_pct: Percent | None = None
    bandwidth_mib_s: BandwidthMiBs | None = None
    max_downtime_ms: DowntimeMs | None = None
    # Strategy.AUTO: when the remainder stalls, raise the downtime limit step by step, up to
    # max_downtime_ms when set (agent/convergence.py); each step is reported in the progress.
    downtime_ramp: bool = False
    postcopy: PostcopySwitch = PostcopySwitch.OFF  # VIR_MIGRATE_POSTCOPY, and when to switch
    # The dirty rate pre-flight measured: the ETA's during the first pass, before libvirt
    # reports one of its own.
    expected_dirty_rate_mib_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    expected_working_set_mib: NonNegativeInt | None = None  # pre-flight's bound, if it found one
    expected_whole_mib: NonNegativeInt | None = None  # pre-flight's whole pages of the first pass
    progress_interval_ms: Annotated[int, msgspec.Meta(ge=100, le=10_000)] = 500
    tls: bool = False  # VIR_MIGRATE_TLS: encrypt the stream (both hosts' QEMU need certificates)


class PredictRequest(Message, frozen=True, kw_only=True, tag="agent.migration.predict.request"):
    """Source: measure the running guest's dirty rate for ``measure_s`` seconds, then predict
    its migration (agent/precopy_model.py)."""

    vm: VmName
    link_mib_s: BandwidthMiBs | None = None  # the cap; None: no times in the prediction
    max_downtime_ms: DowntimeMs | None = None  # the limit asked for (QEMU's 300 ms if None)
    allow_postcopy: bool = False
    disk_bytes: NonNegativeInt = 0  # a copy migration sends these first
    # The first measurement's seconds; a second one twice as long follows (the working set).
    measure_s: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1


class StartReply(Message, frozen=True, kw_only=True, tag="agent.migration.start.reply"):
    migration_id: MigrationId


class SpeedRequest(Message, frozen=True, kw_only=True, tag="agent.migration.speed.request"):
    migration_id: MigrationId
    vm: VmName
    bandwidth_mib_s: BandwidthMiBs


class AgentAbortRequest(Message, frozen=True, kw_only=True, tag="agent.migration.abort.request"):
    migration_id: MigrationId
    vm: VmName


class CleanupRequest(Message, frozen=True, kw_only=True, tag="agent.migration.cleanup.request"):
    """Remove what a migration left on this host.

    ``remove_domain``: destroy (if running) and undefine the VM here — only ever asked of the
    host that must NOT keep it. ``delete_paths``: disk files to delete; the agent refuses any path
    that a domain still defined on this host uses.
    """

    migration_id: MigrationId
    vm: VmName
    remove_domain: bool = False
    delete_paths: Annotated[list[PathText], msgspec.Meta(max_length=DELETE_PATHS_MAX)] = []


class CleanupReply(Message, frozen=True, kw_only=True, tag="agent.migration.cleanup.reply"):
    domain_removed: bool = False
    deleted_paths: list[str] = []
    kept_paths: list[str] = []  # refused (in use) or already gone, with reasons in ``detail``
    detail: str = ""


class MigrationStatusRequest(Message, frozen=True, kw_only=True,
                             tag="agent.migration.status.request"):
    """Either side: what this host's libvirt and the agent's ledger say about a migration."""

    migration_id: MigrationId
    vm: VmName


class PathFact(Message, frozen=True, kw_only=True, tag="agent.path_fact"):
    path: str
    exists: bool


class MigrationStatus(Message, frozen=True, kw_only=True, tag="agent.migration.status.reply"):
    """Facts, read when asked: libvirt's domain of that name here and its job, and the agent's
    ledger of that migration (what it made, expects or sent away) with which files exist."""

    host_id: HostId
    migration_id: MigrationId
    vm: str
    domain: DomainInfo | None = None  # libvirt's domain of that name on this host, if any
    job: JobStats | None = None  # that domain's libvirt job now (None: no job runs)
    job_error: str | None = None  # why the job could not be read (then ``job`` says nothing)
    running_here: bool = False  # this agent runs the migration's source side now
    known: bool = False  # the agent's ledger has the migration (it prepared, started or moved)
    incoming_uuid: str | None = None  # the domain UUID prepare expects to arrive here
    sent_completed: bool = False  # libvirt reported this host's outgoing migration done
    created: list[PathFact] = []  # files this agent created for it
    sent: list[PathFact] = []  # disks this host copied away in it


class Ack(Message, frozen=True, kw_only=True, tag="ack"):
    """A request that needs no data back was carried out."""

    detail: str = ""


class SourceProgress(Message, frozen=True, kw_only=True, tag="agent.migration.progress"):
    migration_id: MigrationId
    host_id: HostId
    at: datetime
    stats: JobStats
    escalations: list[str] = []  # every step the source took so far (downtime_ramp)
    postcopy: bool = False  # the source switched the migration to post-copy
    eta_s: float | None = None  # seconds left, as ProgressEvent.eta_s


class SourceFinished(Message, frozen=True, kw_only=True, tag="agent.migration.finished"):
    """The source's migrate call returned: ``error`` is None on success."""

    migration_id: MigrationId
    host_id: HostId
    at: datetime
    stats: JobStats | None = None  # the completed job's figures
    error: ErrorReply | None = None
    aborted: bool = False  # the job was cancelled by an abort request
    # Every step the source took, to the end (a post-copy recovery comes after the last
    # progress report), and whether it switched to post-copy.
    escalations: list[str] = []
    postcopy: bool = False
