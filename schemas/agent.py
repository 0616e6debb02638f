"""Requests and replies of the per-host agent's endpoints (``baton.agent.<host>.<endpoint>``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import msgspec

from baton.schemas.base import HostId, Message, NonNegativeInt, VmName
from baton.schemas.limits import (
    BASELINE_GUESTS_MAX,
    BASELINE_HOSTS_MAX,
    CPU_XML_MAX,
    DOMAIN_NAMES_MAX,
    PATH_MAX,
    PROBE_PATHS_MAX,
)

AbsolutePath = Annotated[str, msgspec.Meta(pattern=r"^/", min_length=1, max_length=PATH_MAX)]
ProbeToken = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
CpuXml = Annotated[str, msgspec.Meta(min_length=1, max_length=CPU_XML_MAX)]


# --- caps -------------------------------------------------------------------------------------


class CapsRequest(Message, frozen=True, kw_only=True, tag="agent.caps.request"):
    refresh: bool = False  # re-read host facts now instead of answering from the cache


class CpuInfo(Message, frozen=True, kw_only=True, tag="agent.cpu_info"):
    arch: str
    vendor: str
    model: str
    features: list[str] = []
    host_model: str | None = None  # what libvirt's host-model CPU expands to for guests
    usable_models: list[str] = []  # custom CPU models this host's hypervisor can run
    # The host's <cpu> element of libvirt's capabilities, as cpu.baseline takes it (None from
    # agents older than cpu.baseline).
    xml: str | None = None


class Versions(Message, frozen=True, kw_only=True, tag="agent.versions"):
    libvirt: str
    hypervisor: str  # QEMU version as libvirt reports it
    hypervisor_type: str
    agent: str


class Memory(Message, frozen=True, kw_only=True, tag="agent.memory"):
    total_bytes: NonNegativeInt
    free_bytes: NonNegativeInt  # free + reclaimable (page cache, buffers)
    reserved_bytes: NonNegativeInt = 0  # held back for the host itself (agent configuration)
    available_bytes: NonNegativeInt = 0  # what new guests may use: free minus reserved


class Bridge(Message, frozen=True, kw_only=True, tag="agent.bridge"):
    name: str
    up: bool
    mtu: NonNegativeInt


class Network(Message, frozen=True, kw_only=True, tag="agent.network"):
    name: str
    active: bool
    bridge: str | None = None
    forward_mode: str | None = None


class StoragePool(Message, frozen=True, kw_only=True, tag="agent.storage_pool"):
    name: str
    type: str
    target_path: str | None
    active: bool
    capacity_bytes: NonNegativeInt = 0
    allocation_bytes: NonNegativeInt = 0
    available_bytes: NonNegativeInt = 0


class HostCaps(Message, frozen=True, kw_only=True, tag="agent.caps.reply"):
    host_id: HostId
    hostname: str
    migration_uri: str  # the libvirt URI peers use to migrate to this host
    # QEMU on this host has migration TLS certificates (qemu.conf's x509 dir): it can send and
    # receive an encrypted migration stream (VIR_MIGRATE_TLS).
    migration_tls: bool = False
    cpu: CpuInfo
    versions: Versions
    memory: Memory
    bridges: list[Bridge] = []
    networks: list[Network] = []
    pools: list[StoragePool] = []
    collected_at: datetime


# --- cpu.compare ------------------------------------------------------------------------------


class CpuCompareRequest(Message, frozen=True, kw_only=True, tag="agent.cpu_compare.request"):
    """Give ``cpu_xml``, or ``domain`` (+ ``domain_host`` when the domain lives on another host)."""

    cpu_xml: Annotated[str, msgspec.Meta(max_length=CPU_XML_MAX)] | None = None
    domain: VmName | None = None
    domain_host: HostId | None = None


class CpuCompatibility(StrEnum):
    IDENTICAL = "identical"
    SUPERSET = "superset"  # this host offers everything the guest CPU needs, and more
    INCOMPATIBLE = "incompatible"


class CpuCompareReply(Message, frozen=True, kw_only=True, tag="agent.cpu_compare.reply"):
    host_id: HostId
    result: CpuCompatibility
    runnable: bool
    reason: str


# --- cpu.baseline -----------------------------------------------------------------------------


class CpuBaselineRequest(Message, frozen=True, kw_only=True, tag="agent.cpu_baseline.request"):
    """The baseline of ``host_cpus`` (each host's ``HostCaps.cpu.xml``), and whether it can run
    each of ``guest_cpus`` (a domain's migratable ``<cpu>``, None for a domain without one),
    answered in the same order."""

    host_cpus: Annotated[list[CpuXml], msgspec.Meta(min_length=1, max_length=BASELINE_HOSTS_MAX)]
    guest_cpus: Annotated[list[CpuXml | None], msgspec.Meta(max_length=BASELINE_GUESTS_MAX)] = []


class BaselineApi(StrEnum):
    # virConnectBaselineHypervisorCPU: what the answering host's hypervisor can provide
    HYPERVISOR = "hypervisor"
    # virConnectBaselineCPU: libvirt's CPU map only, for drivers without the former
    CPU_MAP = "cpu_map"


class BaselineCpu(Message, frozen=True, kw_only=True, tag="agent.baseline_cpu"):
    """The most capable CPU every host can provide, its features expanded by libvirt."""

    model: str
    vendor: str | None = None
    features: list[str] = []  # every feature it requires, the model's own included; sorted
    xml: str  # libvirt's guest <cpu> definition of it


class GuestCpuFit(StrEnum):
    RUNS = "runs"  # the baseline provides every feature the guest CPU requires
    DOES_NOT_RUN = "does_not_run"  # the baseline lacks a required feature, or the vendor differs
    NOT_JUDGED = "not_judged"  # no fixed CPU to judge (host-passthrough, host-model, ...)


class GuestCpuVerdict(Message, frozen=True, kw_only=True, tag="agent.guest_cpu_verdict"):
    fit: GuestCpuFit
    reason: str
    mode: str | None = None  # the guest's <cpu mode>; None for a domain without a <cpu>
    model: str | None = None
    missing_features: list[str] = []  # required by the guest, absent from the baseline; sorted


class CpuBaselineReply(Message, frozen=True, kw_only=True, tag="agent.cpu_baseline.reply"):
    host_id: HostId  # whose libvirt computed it
    computed_by: BaselineApi
    baseline: BaselineCpu
    guests: list[GuestCpuVerdict] = []  # one per request.guest_cpus, in its order


# --- storage.probe ----------------------------------------------------------------------------


class TokenAction(StrEnum):
    WRITE = "write"  # create the token file beside the path
    READ = "read"  # read the token file beside the path and compare
    REMOVE = "remove"  # delete the token file beside the path (clean-up after a probe)


class TokenOp(Message, frozen=True, kw_only=True, tag="agent.token_op"):
    """Shared-storage proof: one host writes a token beside a disk, another reads it back."""

    action: TokenAction
    beside: AbsolutePath  # the token file goes into this path's directory
    token: ProbeToken


class StorageProbeRequest(Message, frozen=True, kw_only=True, tag="agent.storage_probe.request"):
    paths: Annotated[list[AbsolutePath], msgspec.Meta(max_length=PROBE_PATHS_MAX)] = []
    token: TokenOp | None = None


class PathProbe(Message, frozen=True, kw_only=True, tag="agent.path_probe"):
    path: str
    exists: bool
    is_dir: bool = False
    readable: bool = False
    writable: bool = False
    size_bytes: NonNegativeInt = 0
    fs_free_bytes: NonNegativeInt = 0  # free bytes of the filesystem holding the path (or parent)
    fs_type: str | None = None


class TokenResult(Message, frozen=True, kw_only=True, tag="agent.token_result"):
    action: TokenAction
    token_path: str
    ok: bool  # write/remove: done; read: the file exists and holds the token
    detail: str = ""


class StorageProbeReply(Message, frozen=True, kw_only=True, tag="agent.storage_probe.reply"):
    host_id: HostId
    paths: list[PathProbe] = []
    token: TokenResult | None = None


# --- domains ----------------------------------------------------------------------------------


class DomainState(StrEnum):
    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # shutting down
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"


# libvirt's virDomainRunningReason values (a stable ABI) for a guest running on the destination
# of a post-copy migration before all its memory has arrived: in progress, and failed. Such a
# guest is not "the live copy" yet: the rest of its memory is only on the source.
RUNNING_POSTCOPY = 10
RUNNING_POSTCOPY_FAILED = 11
# virDomainPausedReason values for the source's side of the same: post-copy running (the
# source serves the pages), and failed (its stream broke; libvirt's post-copy recovery resumes).
PAUSED_POSTCOPY = 12
PAUSED_POSTCOPY_FAILED = 13


class DiskInfo(Message, frozen=True, kw_only=True, tag="agent.disk"):
    target: str  # vda, sdb, ...
    device: str  # disk, cdrom, floppy, lun
    source_type: str  # file, block, network, volume
    source_path: str | None = None
    format: str | None = None
    pool: str | None = None  # the storage pool holding the source, when one does
    capacity_bytes: NonNegativeInt = 0
    allocation_bytes: NonNegativeInt = 0
    readonly: bool = False
    shareable: bool = False


class InterfaceInfo(Message, frozen=True, kw_only=True, tag="agent.interface"):
    type: str  # bridge, network, direct, user, ...
    source: str | None = None  # bridge or network name
    mac: str | None = None
    model: str | None = None


class DomainInfo(Message, frozen=True, kw_only=True, tag="agent.domain"):
    name: str
    uuid: str
    state: DomainState
    state_reason: int = 0
    active: bool
    persistent: bool
    memory_kib: NonNegativeInt
    max_memory_kib: NonNegativeInt
    vcpus: NonNegativeInt
    virt_type: str = "unknown"  # libvirt domain type: kvm, qemu, test, ...
    disks: list[DiskInfo] = []
    interfaces: list[InterfaceInfo] = []
    cpu_xml: str | None = None  # the migratable guest CPU definition, when asked for
    migration_blockers: list[str] = []  # devices that make the domain unmigratable (hostdev, ...)


class DomainsRequest(Message, frozen=True, kw_only=True, tag="agent.domains.request"):
    # Only these (unknown names are an error); None = all.
    names: Annotated[list[VmName], msgspec.Meta(max_length=DOMAIN_NAMES_MAX)] | None = None
    include_cpu_xml: bool = False


class DomainsReply(Message, frozen=True, kw_only=True, tag="agent.domains.reply"):
    host_id: HostId
    domains: list[DomainInfo] = []


# --- status -----------------------------------------------------------------------------------


class StatusRequest(Message, frozen=True, kw_only=True, tag="agent.status.request"):
    pass


class AgentStatus(Message, frozen=True, kw_only=True, tag="agent.status.reply"):
    host_id: HostId
    agent_version: str
    started_at: datetime
    libvirt_connected: bool
    libvirt_uri: str
    last_heartbeat_at: datetime | None = None
    heartbeat_interval_s: float
