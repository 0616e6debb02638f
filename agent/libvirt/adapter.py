"""The agent's :class:`~baton.agent.hypervisor.Hypervisor` on a real libvirt connection.

:class:`LibvirtHypervisor` only wires the package together and delegates; each module owns one
part of the boundary:

- :mod:`.connection`: the connection (keepalive, close callback, reconnect with backoff), the
  worker threads every call runs on, libvirt's event thread, and libvirtError -> BatonError.
  The threading and connection contracts are written there.
- :mod:`.events`: domain events handed from libvirt's event thread to ``emit``.
- :mod:`.host`: host facts, CPU comparison and baseline; :mod:`.domains`: domain facts and removal;
  :mod:`.migrate`: migrateToURI3 and its job; :mod:`.blockjobs`: block copies for storage moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from baton.agent.block_copy import BlockJobProgress, DiskSources
from baton.agent.hypervisor import (
    BaselineResult,
    CpuVerdict,
    DirtyRate,
    EventSink,
    GuestCpu,
    HostFacts,
)
from baton.agent.libvirt import blockjobs, dirtyrate, domains, host, migrate
from baton.agent.libvirt.connection import Connection
from baton.agent.libvirt.events import DomainEvents
from baton.agent.migration_plan import MigrationPlan
from baton.schemas.agent import DomainInfo
from baton.schemas.events import JobStats

if TYPE_CHECKING:
    import libvirt


class LibvirtHypervisor:
    """A self-healing libvirt connection for one host."""

    def __init__(self, uri: str, host_id: str, emit: EventSink) -> None:
        self._host = host.HostReader()
        self._events = DomainEvents(host_id, emit)
        self._connection = Connection(uri, register=self._events.register,
                                      on_connect=self._host.forget)

    @property
    def uri(self) -> str:
        return self._connection.uri

    @property
    def connected(self) -> bool:
        return self._connection.current is not None

    @property
    def raw_connection(self) -> libvirt.virConnect | None:
        """The live connection, for tests and diagnostics only (calls on it block)."""
        return self._connection.current

    async def wait_connected(self, within_s: float) -> bool:
        return await self._connection.wait_connected(within_s)

    async def run(self) -> None:
        await self._connection.run()

    # --- host and domains ---------------------------------------------------------------------

    async def host_facts(self) -> HostFacts:
        return await self._host.facts(self._connection)

    async def domains(self, names: list[str] | None, include_cpu_xml: bool) -> list[DomainInfo]:
        return await domains.read(self._connection, names, include_cpu_xml)

    async def guest_cpu(self, domain: str) -> GuestCpu:
        return await domains.guest_cpu(self._connection, domain)

    async def migratable_xml(self, vm: str, inactive: bool) -> str:
        return await domains.migratable_xml(self._connection, vm, inactive)

    async def compare_cpu(self, cpu_xml: str, virt_type: str | None) -> CpuVerdict:
        return await self._host.compare_cpu(self._connection, cpu_xml, virt_type)

    async def baseline_cpu(self, cpu_xmls: list[str]) -> BaselineResult:
        return await self._host.baseline_cpu(self._connection, cpu_xmls)

    async def running_domain_count(self) -> int:
        return await domains.running_count(self._connection)

    async def remove_domain(self, vm: str, uuid: str) -> bool:
        """Destroy (if paused) and undefine; False when there was no such domain; never a
        running guest (``conflict``)."""
        return await domains.remove(self._connection, vm, uuid)

    async def refresh_pools(self) -> None:
        await host.refresh_pools(self._connection)

    # --- migration ----------------------------------------------------------------------------

    async def migrate(self, vm: str, plan: MigrationPlan) -> None:
        """Until migrateToURI3 returns; cancelling aborts the libvirt job, then waits for it."""
        await migrate.run(self._connection, vm, plan)

    async def job_stats(self, vm: str) -> JobStats | None:
        """Figures of the domain's running job, or None when no job runs."""
        return await migrate.job_stats(self._connection, vm)

    async def abort_job(self, vm: str) -> None:
        await migrate.abort_job(self._connection, vm)

    async def set_max_speed(self, vm: str, bandwidth_mib_s: int, postcopy: bool = False) -> None:
        await migrate.set_max_speed(self._connection, vm, bandwidth_mib_s, postcopy)

    async def set_max_downtime(self, vm: str, downtime_ms: int) -> None:
        await migrate.set_max_downtime(self._connection, vm, downtime_ms)

    async def start_postcopy(self, vm: str) -> None:
        await migrate.start_postcopy(self._connection, vm)

    async def dirty_rate(self, vm: str, seconds: int) -> DirtyRate:
        return await dirtyrate.measure(self._connection, vm, seconds)

    async def page_digests(self, vm: str, pages: Sequence[int]) -> list[bytes]:
        return await dirtyrate.page_digests(self._connection, vm, pages)

    # --- block copy (agent.block_copy.BlockCopier) --------------------------------------------

    async def block_copy(self, vm: str, target: str, destination_xml: str,
                         bandwidth_bytes_s: int | None) -> None:
        await blockjobs.start_copy(self._connection, vm, target, destination_xml, bandwidth_bytes_s)

    async def block_job_progress(self, vm: str, target: str) -> BlockJobProgress | None:
        return await blockjobs.progress(self._connection, vm, target)

    async def block_job_abort(self, vm: str, target: str, pivot: bool) -> None:
        await blockjobs.abort(self._connection, vm, target, pivot)

    async def disk_sources(self, vm: str, target: str) -> DiskSources:
        return await blockjobs.disk_sources(self._connection, vm, target)

    async def define_disk_source(self, vm: str, target: str, path: str) -> None:
        await blockjobs.define_disk_source(self._connection, vm, target, path)
