"""The only module that imports libvirt: the agent's :class:`Hypervisor` on a real connection.

Threading contract:
- libvirt's default event implementation is registered once per process, before the first
  connection, and ``virEventRunDefaultImpl`` runs forever on one daemon thread (libvirt offers no
  way to interrupt it; it dies with the process). Event callbacks run on that thread and only hand
  a finished message to the asyncio loop with ``call_soon_threadsafe``.
- Every blocking API call runs in a worker thread through :meth:`LibvirtHypervisor._call`, with a
  deadline, so a wedged libvirtd costs a ``timeout`` reply, never a frozen loop.

Connection contract: :meth:`run` keeps one connection open with keepalive (5 s x 3) and a close
callback; when the connection drops it reconnects with capped exponential backoff and registers
the event callbacks again. While it is down, calls fail fast with ``unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt
import msgspec
import structlog
from baton.agent import AGENT_VERSION, block_copy, event_names, xmlparse
from baton.agent.block_copy import BlockJobProgress, DiskSources
from baton.agent.hypervisor import CpuVerdict, EventSink, GuestCpu, HostFacts
from baton.agent.jobstats import job_stats
from baton.agent.libvirt import values as libvirt_values
from baton.agent.migration_plan import MigrationFlag, MigrationPlan
from baton.schemas.agent import (
    CpuCompatibility,
    DiskInfo,
    DomainInfo,
    Memory,
    Network,
    StoragePool,
    Versions,
)
from baton.schemas.base import utc_now
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import (
    BlockJobEvent,
    JobCompletedEvent,
    JobStats,
    LifecycleEvent,
    MigrationIterationEvent,
)

T = TypeVar("T")
log = structlog.get_logger(__name__)

CALL_TIMEOUT_S = 30.0
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_NETWORK,
}
_CONNECTION_LOST = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_SYSTEM_ERROR,
}

_MIGRATION_FLAGS = {
    MigrationFlag.LIVE: libvirt.VIR_MIGRATE_LIVE,
    MigrationFlag.PEER2PEER: libvirt.VIR_MIGRATE_PEER2PEER,
    MigrationFlag.PERSIST_DEST: libvirt.VIR_MIGRATE_PERSIST_DEST,
    MigrationFlag.UNDEFINE_SOURCE: libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
    MigrationFlag.NON_SHARED_DISK: libvirt.VIR_MIGRATE_NON_SHARED_DISK,
    MigrationFlag.AUTO_CONVERGE: libvirt.VIR_MIGRATE_AUTO_CONVERGE,
    MigrationFlag.OFFLINE: libvirt.VIR_MIGRATE_OFFLINE,
}

_event_impl_lock = threading.Lock()
_event_impl_started = False


def start_event_loop_thread() -> None:
    """Register libvirt's event implementation and run it on a thread (once per process)."""
    global _event_impl_started
    with _event_impl_lock:
        if _event_impl_started:
            return
        # libvirt-python prints every error to stderr even when caught; errors reach us as
        # exceptions, so the default handler only adds noise.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _event_impl_started = True


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def translate(exc: libvirt.libvirtError, what: str) -> BatonError:
    """A libvirt error as a wire-safe error, keeping libvirt's own message for people."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code in _NOT_FOUND:
        return BatonError(ErrorCode.NOT_FOUND, message)
    if code == libvirt.VIR_ERR_NO_SUPPORT:
        return BatonError(ErrorCode.UNSUPPORTED, f"{what}: {message}")
    if code in _CONNECTION_LOST:
        return BatonError(ErrorCode.UNAVAILABLE, f"{what}: libvirt connection failed: {message}")
    return BatonError(ErrorCode.HYPERVISOR, f"{what}: {message}")


class LibvirtHypervisor:
    """A self-healing libvirt connection for one host."""

    def __init__(self, uri: str, host_id: str, emit: EventSink) -> None:
        self._uri = uri
        self._host_id = host_id
        self._emit = emit
        self._conn: libvirt.virConnect | None = None
        self._connected = asyncio.Event()
        self._static: tuple[str, Any, Versions, list[str]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Migrations block a thread for their whole duration: keep them off the default pool
        # that short calls share.
        self._long_calls = ThreadPoolExecutor(max_workers=8, thread_name_prefix="libvirt-long")

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def raw_connection(self) -> libvirt.virConnect | None:
        """The live connection, for tests and diagnostics only (calls on it block)."""
        return self._conn

    async def wait_connected(self, within_s: float) -> bool:
        try:
            async with asyncio.timeout(within_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    # --- connection ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()  # callbacks on libvirt's thread hand events here
        start_event_loop_thread()
        delay = BACKOFF_FIRST_S
        while True:
            closed = asyncio.Event()
            try:
                conn, callback_ids = await asyncio.to_thread(self._open, closed)
            except libvirt.libvirtError as exc:
                log.warning("libvirt_connect_failed", uri=self._uri, error=exc.get_error_message(),
                            retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            delay = BACKOFF_FIRST_S
            await self._serve_connection(conn, callback_ids, closed)

    async def _serve_connection(
        self, conn: libvirt.virConnect, callback_ids: list[int], closed: asyncio.Event
    ) -> None:
        self._conn, self._static = conn, None
        self._connected.set()
        log.info("libvirt_connected", uri=self._uri)
        try:
            await closed.wait()
            log.warning("libvirt_connection_lost", uri=self._uri)
        finally:
            self._conn = None
            self._connected.clear()
            await asyncio.shield(asyncio.to_thread(_close_quietly, conn, callback_ids))

    def _open(self, closed: asyncio.Event) -> tuple[libvirt.virConnect, list[int]]:
        loop = self._loop
        assert loop is not None, "run() sets the loop before opening"
        conn = libvirt.open(self._uri)
        # Local drivers (test://, qemu:///) have neither keepalive nor a close callback: only
        # remote connections can drop under us.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(lambda *_: loop.call_soon_threadsafe(closed.set), None)
        return conn, self._register_events(conn)

    def _register_events(self, conn: libvirt.virConnect) -> list[int]:
        handlers: list[tuple[int, Callable[..., None]]] = [
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_job_completed),
            (libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, self._on_migration_iteration),
            (libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self._on_block_job),
        ]
        ids = []
        for event_id, handler in handlers:
            try:
                ids.append(conn.domainEventRegisterAny(None, event_id, handler, None))
            except libvirt.libvirtError as exc:  # the test driver lacks some event types
                log.info("libvirt_event_unsupported", event_id=event_id, error=exc.get_error_message())
        return ids

    # --- event callbacks (libvirt's event thread) ----------------------------------------------

    def _hand_over(self, build: Callable[[], Any]) -> None:
        try:
            event = build()
        except Exception:  # a bug here must not kill libvirt's event thread
            log.exception("libvirt_event_conversion_failed")
            return
        if event is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._emit, event)

    def _on_lifecycle(self, _c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
        def build() -> LifecycleEvent | None:
            named = event_names.lifecycle(event, detail)
            if named is None:
                return None
            return LifecycleEvent(host_id=self._host_id, vm=dom.name(), uuid=dom.UUIDString(),
                                  event=named[0], detail=named[1], at=utc_now())
        self._hand_over(build)

    def _on_job_completed(self, _c: Any, dom: Any, params: dict[str, Any], _o: Any) -> None:
        self._hand_over(lambda: JobCompletedEvent(
            host_id=self._host_id, vm=dom.name(), uuid=dom.UUIDString(),
            stats=job_stats(params, completed=True), at=utc_now()))

    def _on_migration_iteration(self, _c: Any, dom: Any, iteration: int, _o: Any) -> None:
        self._hand_over(lambda: MigrationIterationEvent(
            host_id=self._host_id, vm=dom.name(), uuid=dom.UUIDString(),
            iteration=iteration, at=utc_now()))

    def _on_block_job(self, _c: Any, dom: Any, disk: str, kind: int, status: int, _o: Any) -> None:
        def build() -> BlockJobEvent | None:
            named = event_names.block_job_status(status)
            if named is None:
                return None
            return BlockJobEvent(host_id=self._host_id, vm=dom.name(), uuid=dom.UUIDString(),
                                 disk=disk, job_type=event_names.block_job_type(kind),
                                 status=named, at=utc_now())
        self._hand_over(build)

    # --- calls --------------------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[libvirt.virConnect], T],
                    deadline_s: float = CALL_TIMEOUT_S) -> T:
        conn = self._require_conn()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that races with the result, leaving a cancelled poller running forever.
            async with asyncio.timeout(deadline_s):
                return await asyncio.to_thread(fn, conn)
        except libvirt.libvirtError as exc:
            raise translate(exc, what) from None
        except TimeoutError:
            raise BatonError(ErrorCode.TIMEOUT,
                             f"{what}: libvirt did not answer within {deadline_s:.0f} s") from None

    async def host_facts(self) -> HostFacts:
        return await self._call("reading host facts", self._read_host_facts)

    async def domains(self, names: list[str] | None, include_cpu_xml: bool) -> list[DomainInfo]:
        return await self._call("listing domains",
                                lambda conn: _read_domains(conn, names, include_cpu_xml))

    async def guest_cpu(self, domain: str) -> GuestCpu:
        def read(conn: libvirt.virConnect) -> GuestCpu:
            xml = _lookup(conn, domain).XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            facts = xmlparse.domain_facts(xml)
            return GuestCpu(cpu_xml=facts.cpu_xml, virt_type=facts.virt_type)
        return await self._call(f"reading the CPU of domain {domain!r}", read)

    async def compare_cpu(self, cpu_xml: str, virt_type: str | None) -> CpuVerdict:
        return await self._call("comparing CPUs",
                                lambda conn: self._compare_cpu(conn, cpu_xml, virt_type))

    async def running_domain_count(self) -> int:
        return await self._call("counting domains", lambda conn: conn.numOfDomains())

    # --- migration ----------------------------------------------------------------------------

    async def migrate(self, vm: str, plan: MigrationPlan) -> None:
        """Run ``migrateToURI3`` on a thread of its own until it returns.

        Cancelling the awaiting task aborts the libvirt job and then waits for the thread, so a
        cancelled migration never leaves a job running behind the caller's back.
        """
        flags = 0
        for flag in plan.flags:
            flags |= _MIGRATION_FLAGS[flag]

        def run(conn: libvirt.virConnect) -> None:
            _lookup(conn, vm).migrateToURI3(plan.destination_uri, dict(plan.params), flags)

        conn = self._require_conn()
        done = asyncio.get_running_loop().run_in_executor(self._long_calls, run, conn)
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            await self.abort_job(vm)
            await asyncio.wait([done])
            raise
        except libvirt.libvirtError as exc:
            raise translate(exc, f"migrating {vm}") from None

    async def job_stats(self, vm: str) -> JobStats | None:
        """Figures of the domain's running job, or None when no job runs."""
        def read(conn: libvirt.virConnect) -> JobStats | None:
            params = _lookup(conn, vm).jobStats(0)
            if params.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                return None
            return job_stats(params, completed=False)
        return await self._call(f"reading the job of {vm}", read)

    async def abort_job(self, vm: str) -> None:
        await self._call(f"aborting the job of {vm}", lambda conn: _lookup(conn, vm).abortJob())

    async def set_max_speed(self, vm: str, bandwidth_mib_s: int) -> None:
        await self._call(f"setting the bandwidth of {vm}",
                         lambda conn: _lookup(conn, vm).migrateSetMaxSpeed(bandwidth_mib_s, 0))

    async def set_max_downtime(self, vm: str, downtime_ms: int) -> None:
        await self._call(f"setting the maximum downtime of {vm}",
                         lambda conn: _lookup(conn, vm).migrateSetMaxDowntime(downtime_ms, 0))

    async def remove_domain(self, vm: str) -> bool:
        """Destroy (if running) and undefine; False when there was no such domain."""
        return await self._call(f"removing {vm}", lambda conn: _remove_domain(conn, vm))

    async def refresh_pools(self) -> None:
        def refresh(conn: libvirt.virConnect) -> None:
            for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):  # busy: it refreshes next time
                    pool.refresh(0)
        await self._call("refreshing storage pools", refresh)

    # --- block copy ---------------------------------------------------------------------------
    # Storage moves (agent.storage_move) through agent.block_copy.BlockCopier. blockCopy only
    # starts a job, and blockJobAbort (with or without pivot) returns once the job has ended, so
    # the short-call helper fits all of them.

    async def block_copy(self, vm: str, target: str, destination_xml: str,
                         bandwidth_bytes_s: int | None) -> None:
        def start(conn: libvirt.virConnect) -> None:
            dom = _lookup(conn, vm)
            # libvirt 9.0 refuses a copy job on a persistent domain unless the job is transient;
            # it still rewrites the saved definition to the copy when the pivot succeeds.
            flags = libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB if dom.isPersistent() else 0
            params = {} if bandwidth_bytes_s is None else {
                libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: bandwidth_bytes_s}  # bytes/s here
            dom.blockCopy(target, destination_xml, params, flags)
        await self._call(f"starting the copy of {vm} {target}", start)

    async def block_job_progress(self, vm: str, target: str) -> BlockJobProgress | None:
        return await self._call(f"reading the copy job of {vm} {target}", lambda conn:
                                libvirt_values.block_job_progress(
                                    _lookup(conn, vm).blockJobInfo(target, 0)))

    async def block_job_abort(self, vm: str, target: str, pivot: bool) -> None:
        flags = libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT if pivot else 0
        what = "pivoting" if pivot else "cancelling the copy of"
        await self._call(f"{what} {vm} {target}",
                         lambda conn: _lookup(conn, vm).blockJobAbort(target, flags))

    async def disk_sources(self, vm: str, target: str) -> DiskSources:
        def read(conn: libvirt.virConnect) -> DiskSources:
            dom = _lookup(conn, vm)
            live = dom.XMLDesc(0)
            saved = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if dom.isPersistent() else None
            return DiskSources(live=block_copy.disk_source(live, target),
                               persistent=None if saved is None else
                               block_copy.disk_source(saved, target),
                               mirror_ready=block_copy.mirror_ready(live, target))
        return await self._call(f"reading the disks of {vm}", read)

    async def define_disk_source(self, vm: str, target: str, path: str) -> None:
        def define(conn: libvirt.virConnect) -> None:
            saved = _lookup(conn, vm).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            conn.defineXML(block_copy.with_disk_source(saved, target, path))
        await self._call(f"saving the definition of {vm}", define)

    # --- end of block copy ----------------------------------------------------------------------

    def _require_conn(self) -> libvirt.virConnect:
        if self._conn is None:
            raise BatonError(ErrorCode.UNAVAILABLE,
                             f"libvirt at {self._uri} is not connected; the agent keeps reconnecting")
        return self._conn

    # --- blocking readers (worker threads) ----------------------------------------------------

    def _static_facts(self, conn: libvirt.virConnect) -> tuple[str, Any, Versions, list[str]]:
        """Facts that cannot change while a connection lives: read once per connection."""
        if self._static is None:
            caps = conn.getCapabilities()
            cpu = xmlparse.host_cpu(caps)
            virt_types = xmlparse.guest_virt_types(caps)
            cpu = _with_domain_cpu_models(conn, cpu, virt_types)
            versions = Versions(libvirt=libvirt_values.version(conn.getLibVersion()),
                                hypervisor=libvirt_values.version(conn.getVersion()),
                                hypervisor_type=conn.getType(), agent=AGENT_VERSION)
            self._static = (conn.getHostname(), cpu, versions, virt_types)
        return self._static

    def _read_host_facts(self, conn: libvirt.virConnect) -> HostFacts:
        hostname, cpu, versions, _ = self._static_facts(conn)
        return HostFacts(hostname=hostname, cpu=cpu, versions=versions, memory=_memory(conn),
                         networks=_networks(conn), pools=_pools(conn))

    def _compare_cpu(self, conn: libvirt.virConnect, cpu_xml: str, virt_type: str | None) -> CpuVerdict:
        _, cpu, _, virt_types = self._static_facts(conn)
        vtype = virt_type or (virt_types[0] if virt_types else None)
        result = conn.compareHypervisorCPU(None, cpu.arch, None, vtype, cpu_xml, 0)
        if result == libvirt.VIR_CPU_COMPARE_IDENTICAL:
            return CpuVerdict(CpuCompatibility.IDENTICAL, "the host CPU is identical to the guest CPU")
        if result == libvirt.VIR_CPU_COMPARE_SUPERSET:
            return CpuVerdict(CpuCompatibility.SUPERSET,
                              "the host provides every CPU feature the guest needs")
        return CpuVerdict(CpuCompatibility.INCOMPATIBLE, _incompatibility_reason(conn, cpu.arch,
                                                                                  vtype, cpu_xml))


def _incompatibility_reason(conn: libvirt.virConnect, arch: str, vtype: str | None, xml: str) -> str:
    """Ask again with FAIL_INCOMPATIBLE: libvirt then names the missing features."""
    try:
        conn.compareHypervisorCPU(None, arch, None, vtype, xml,
                                  libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)
    except libvirt.libvirtError as exc:
        return exc.get_error_message() or "the host CPU cannot run the guest CPU"
    return "the host CPU cannot run the guest CPU"


def _close_quietly(conn: libvirt.virConnect, callback_ids: list[int]) -> None:
    # Each step may fail because the connection is already gone; the next ones still run.
    for callback_id in callback_ids:
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callback_id)
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _with_domain_cpu_models(conn: libvirt.virConnect, cpu: Any, virt_types: list[str]) -> Any:
    for virt_type in virt_types:
        try:
            domcaps = conn.getDomainCapabilities(None, cpu.arch, None, virt_type, 0)
        except libvirt.libvirtError:
            continue  # unsupported driver or an accelerator that is present but unusable
        host_model, usable = xmlparse.domain_cpu_models(domcaps)
        return msgspec.structs.replace(cpu, host_model=host_model, usable_models=usable)
    return cpu


def _memory(conn: libvirt.virConnect) -> Memory:
    try:
        stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
    except libvirt.libvirtError:  # e.g. the test driver: fall back to node info
        return Memory(total_bytes=conn.getInfo()[1] * 1024 * 1024,
                      free_bytes=max(conn.getFreeMemory(), 0))
    return libvirt_values.memory_from_stats(stats)


def _networks(conn: libvirt.virConnect) -> list[Network]:
    out = []
    for net in conn.listAllNetworks():
        try:
            bridge = net.bridgeName()
        except libvirt.libvirtError:
            bridge = None  # networks of forward type hostdev/direct have no bridge
        out.append(Network(name=net.name(), active=bool(net.isActive()), bridge=bridge,
                           forward_mode=xmlparse.network_forward_mode(net.XMLDesc(0))))
    return sorted(out, key=lambda n: n.name)


def _pools(conn: libvirt.virConnect) -> list[StoragePool]:
    out = []
    for pool in conn.listAllStoragePools():
        kind, path = xmlparse.pool_type_and_path(pool.XMLDesc(0))
        _state, capacity, allocation, available = pool.info()
        out.append(StoragePool(name=pool.name(), type=kind, target_path=path,
                               active=bool(pool.isActive()), capacity_bytes=capacity,
                               allocation_bytes=allocation, available_bytes=available))
    return sorted(out, key=lambda p: p.name)


def _read_domains(conn: libvirt.virConnect, names: list[str] | None,
                  include_cpu_xml: bool) -> list[DomainInfo]:
    if names is not None:
        return [_domain_info(conn, _lookup(conn, n), include_cpu_xml) for n in names]
    out = []
    for dom in conn.listAllDomains():
        try:
            out.append(_domain_info(conn, dom, include_cpu_xml))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise  # anything but "it vanished while we looked" is a real failure
    return sorted(out, key=lambda d: d.name)


def _remove_domain(conn: libvirt.virConnect, vm: str) -> bool:
    try:
        dom = conn.lookupByName(vm)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    if dom.isActive():
        dom.destroy()
    if dom.isPersistent():
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    return True


def _lookup(conn: libvirt.virConnect, name: str) -> Any:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {name!r} on this host") from None
        raise


def _domain_info(conn: libvirt.virConnect, dom: Any, include_cpu_xml: bool) -> DomainInfo:
    state, reason = dom.state()
    _s, max_kib, mem_kib, vcpus, _t = dom.info()
    flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE if include_cpu_xml else 0
    facts = xmlparse.domain_facts(dom.XMLDesc(flags))
    active = bool(dom.isActive())
    return DomainInfo(
        name=dom.name(), uuid=dom.UUIDString(),
        state=libvirt_values.domain_state(state),
        state_reason=reason, active=active, persistent=bool(dom.isPersistent()),
        memory_kib=mem_kib, max_memory_kib=max_kib, vcpus=vcpus, virt_type=facts.virt_type,
        disks=[_sized_disk(conn, dom, disk, active) for disk in facts.disks],
        interfaces=facts.interfaces, cpu_xml=facts.cpu_xml if include_cpu_xml else None,
        migration_blockers=facts.migration_blockers,
    )


def _sized_disk(conn: libvirt.virConnect, dom: Any, disk: DiskInfo, active: bool) -> DiskInfo:
    """Fill in capacity, allocation and pool; a disk libvirt cannot size keeps zeros."""
    capacity = allocation = 0
    pool = disk.pool
    if disk.source_type in ("file", "block") and disk.source_path:
        # Not inside any pool is fine (the path still identifies the disk); an empty cdrom has
        # no block info.
        with contextlib.suppress(libvirt.libvirtError):
            vol = conn.storageVolLookupByPath(disk.source_path)
            _type, capacity, allocation = vol.info()
            pool = vol.storagePoolLookupByVolume().name()
        if active:
            with contextlib.suppress(libvirt.libvirtError):
                capacity, allocation, _physical = dom.blockInfo(disk.target)
    return msgspec.structs.replace(disk, pool=pool, capacity_bytes=capacity,
                                   allocation_bytes=allocation)
