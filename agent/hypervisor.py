"""What the agent needs from a hypervisor: the port the libvirt adapter (and test fakes) implement.

Every method is a coroutine that never blocks the event loop. Failures are raised as
:class:`schemas.errors.BatonError` with a wire-safe code: ``unavailable`` while the connection is
down, ``not_found`` for an unknown domain, ``unsupported`` when the driver cannot do it,
``hypervisor`` with libvirt's own message otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from baton.agent.migration_plan import MigrationPlan
from baton.schemas.agent import (
    BaselineApi,
    CpuCompatibility,
    CpuInfo,
    DomainInfo,
    Memory,
    Network,
    StoragePool,
    Versions,
)
from baton.schemas.events import JobStats, VmEvent

EventSink = Callable[[VmEvent], None]


@dataclass(frozen=True)
class HostFacts:
    """What libvirt tells about the host (bridges and paths come from the host itself)."""

    hostname: str
    cpu: CpuInfo
    versions: Versions
    memory: Memory
    networks: list[Network] = field(default_factory=list)
    pools: list[StoragePool] = field(default_factory=list)
    host_uuid: str | None = None  # libvirt's host UUID: tells hosts apart whatever their names


@dataclass(frozen=True)
class DirtyRate:
    """How fast a guest dirties its memory, and how libvirt measured it."""

    mib_s: float
    mode: str  # dirty-ring, dirty-bitmap or page-sampling


@dataclass(frozen=True)
class CpuVerdict:
    result: CpuCompatibility
    reason: str


@dataclass(frozen=True)
class BaselineResult:
    """libvirt's baseline of some CPUs, every feature listed (``EXPAND_FEATURES``)."""

    cpu_xml: str  # a guest <cpu> definition
    api: BaselineApi  # which libvirt call computed it


@dataclass(frozen=True)
class GuestCpu:
    """A domain's migratable CPU definition (None: the domain uses the hypervisor's default)."""

    cpu_xml: str | None
    virt_type: str


class Hypervisor(Protocol):
    @property
    def uri(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    async def run(self) -> None:
        """Keep a connection open for as long as the task lives: connect, watch, reconnect."""

    async def wait_connected(self, within_s: float) -> bool: ...

    async def host_facts(self) -> HostFacts: ...

    async def domains(self, names: list[str] | None, include_cpu_xml: bool) -> list[DomainInfo]: ...

    async def guest_cpu(self, domain: str) -> GuestCpu: ...

    async def migratable_xml(self, vm: str, inactive: bool) -> str:
        """The definition a migration sends (running, or with ``inactive`` the persistent one)."""

    async def compare_cpu(self, cpu_xml: str, virt_type: str | None) -> CpuVerdict: ...

    async def baseline_cpu(self, cpu_xmls: list[str]) -> BaselineResult:
        """The most capable CPU all of ``cpu_xmls`` (host-style ``<cpu>``s with ``<arch>``) can
        provide, features expanded: ``baselineHypervisorCPU``, or ``baselineCPU`` on a driver
        without it; ``hypervisor`` when libvirt refuses the CPUs (no or unknown model, vendors
        that differ)."""

    async def running_domain_count(self) -> int: ...

    async def migrate(self, vm: str, plan: MigrationPlan) -> None:
        """Until libvirt's migrate call returns; cancelling aborts the job first."""

    async def job_stats(self, vm: str) -> JobStats | None: ...

    async def abort_job(self, vm: str) -> None: ...

    async def set_max_speed(self, vm: str, bandwidth_mib_s: int, postcopy: bool = False) -> None:
        """The pre-copy cap, or with ``postcopy`` the post-copy phase's."""

    async def set_max_downtime(self, vm: str, downtime_ms: int) -> None: ...

    async def start_postcopy(self, vm: str) -> None: ...

    async def dirty_rate(self, vm: str, seconds: int) -> DirtyRate:
        """Measured over ``seconds`` (the call lasts that long)."""

    async def page_digests(self, vm: str, pages: Sequence[int]) -> list[bytes]:
        """A short digest of each guest-physical page (by number: address / 4 KiB), ``b""``
        for an all-zero page; ``unsupported`` where the driver cannot read guest memory."""

    async def remove_domain(self, vm: str, uuid: str) -> bool:
        """Destroy (if paused) and undefine the domain with this UUID, only if it is called
        ``vm``; False when no domain has that UUID; ``conflict`` if the guest runs."""

    async def refresh_pools(self) -> None: ...
