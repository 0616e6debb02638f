"""Turning a request and its pre-flight facts into what each agent is asked to do (pure).

For ``copy`` the destination pre-creates exactly the VM's local disks (same format and virtual
size; same path, or in the pool the request names) and the source copies exactly those targets —
never a disk on shared storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from baton.coordinator.options import auto_choice
from baton.coordinator.preflight import Facts, migration_tls, resolved_storage
from baton.schemas.migration import (
    DiskPlan,
    MigrateRequest,
    PostcopySwitch,
    PrepareRequest,
    StartRequest,
    StorageMode,
    Strategy,
)

DEFAULT_FORMAT = "raw"
PROGRESS_INTERVAL_MS = 500


@dataclass(frozen=True)
class MigrationPlan:
    storage: StorageMode
    destination_uri: str
    disks: list[DiskPlan] = field(default_factory=list)  # to pre-create and copy
    tls: bool = False  # encrypt the migration stream (VIR_MIGRATE_TLS)
    dirty_rate_mib_s: float | None = None  # pre-flight's measurement, for the source's ETA
    working_set_mib: int | None = None
    whole_mib: int | None = None  # what the first pass sends as whole pages, pre-flight found
    # When the source switches to post-copy, whether QEMU throttles the guest (auto-converge),
    # and why, as strategy auto chose them from the prediction (:func:`auto_choice`)
    postcopy: PostcopySwitch = PostcopySwitch.OFF
    auto_converge: bool = False
    auto_choice: str = ""

    @property
    def copy_targets(self) -> list[str]:
        return [d.target for d in self.disks]

    @property
    def copy_paths(self) -> list[str]:
        """The copied disks' paths on the source."""
        return [d.source_path or d.path for d in self.disks]

    @property
    def destination_paths(self) -> dict[str, str]:
        """Copied disks that land elsewhere on the destination, by target."""
        return {d.target: d.path for d in self.disks if d.source_path}


def make_plan(facts: Facts) -> MigrationPlan:
    storage = resolved_storage(facts)
    disks = []
    if storage == StorageMode.COPY:
        disks = [DiskPlan(target=d.disk.target, path=d.destination_path,
                          format=d.disk.format or DEFAULT_FORMAT,
                          capacity_bytes=d.disk.capacity_bytes,
                          source_path=d.path if d.landing else None)
                 for d in facts.disks if d.copyable]
    measured = facts.prediction
    intent = facts.intent
    choice = auto_choice(intent.strategy, intent.postcopy, measured)
    return MigrationPlan(storage=storage, destination_uri=facts.destination_caps.migration_uri,
                         disks=disks, tls=migration_tls(facts),
                         dirty_rate_mib_s=measured.dirty_rate_mib_s if measured else None,
                         working_set_mib=measured.working_set_mib if measured else None,
                         whole_mib=measured.whole_mib if measured else None,
                         postcopy=choice.postcopy, auto_converge=choice.auto_converge,
                         auto_choice=choice.reason)


def host_of(uri: str) -> str | None:
    """The host part of a libvirt URI (``qemu+tcp://10.77.0.2/system`` -> ``10.77.0.2``)."""
    return urlsplit(uri).hostname


def prepare_request(migration_id: str, vm: str, plan: MigrationPlan,
                    domain_uuid: str | None) -> PrepareRequest:
    return PrepareRequest(migration_id=migration_id, vm=vm, disks=plan.disks,
                          domain_uuid=domain_uuid)


def start_request(migration_id: str, request: MigrateRequest, plan: MigrationPlan,
                  bandwidth_mib_s: int | None) -> StartRequest:
    return StartRequest(
        migration_id=migration_id, vm=request.vm, destination_uri=plan.destination_uri,
        destination_host=request.destination, destination_address=host_of(plan.destination_uri),
        live=request.live,
        persistent=request.persistent, undefine_source=request.undefine_source,
        copy_disks=plan.copy_targets, destination_paths=plan.destination_paths,
        auto_converge=(request.auto_converge or request.strategy == Strategy.AUTO_CONVERGE
                       or plan.auto_converge),
        auto_converge_initial_pct=request.auto_converge_initial_pct,
        auto_converge_increment_pct=request.auto_converge_increment_pct,
        bandwidth_mib_s=bandwidth_mib_s, max_downtime_ms=request.max_downtime_ms,
        downtime_ramp=request.strategy == Strategy.AUTO,
        postcopy=plan.postcopy,
        expected_dirty_rate_mib_s=plan.dirty_rate_mib_s,
        expected_working_set_mib=plan.working_set_mib,
        expected_whole_mib=plan.whole_mib,
        progress_interval_ms=PROGRESS_INTERVAL_MS, tls=plan.tls)
