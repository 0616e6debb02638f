"""The host's domains: lookup by name, what Baton reports about each (state, memory, disks sized
by libvirt, interfaces, migration blockers), a guest's migratable CPU, and removing a domain.

:func:`lookup` is the one way the package finds a domain by name (an unknown name is
``not_found``). Every call goes through :meth:`Connection.call` (a worker thread with a deadline).
"""

from __future__ import annotations

import contextlib
from typing import Any

import libvirt
import msgspec

from baton.agent import xmlparse
from baton.agent.hypervisor import GuestCpu
from baton.agent.libvirt import values as libvirt_values
from baton.agent.libvirt.connection import Connection
from baton.schemas.agent import DiskInfo, DomainInfo
from baton.schemas.errors import BatonError, ErrorCode


async def read(connection: Connection, names: list[str] | None,
               include_cpu_xml: bool) -> list[DomainInfo]:
    """The named domains (every one when ``names`` is None), sorted by name."""
    return await connection.call("listing domains",
                                 lambda conn: _read_domains(conn, names, include_cpu_xml))


async def guest_cpu(connection: Connection, domain: str) -> GuestCpu:
    def read_cpu(conn: libvirt.virConnect) -> GuestCpu:
        xml = lookup(conn, domain).XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        facts = xmlparse.domain_facts(xml)
        return GuestCpu(cpu_xml=facts.cpu_xml, virt_type=facts.virt_type)
    return await connection.call(f"reading the CPU of domain {domain!r}", read_cpu)


async def migratable_xml(connection: Connection, domain: str, inactive: bool) -> str:
    """The definition libvirt would send (``--migratable``), secrets included so that none is
    lost on the way; ``inactive``: the persistent one, not the running one."""
    flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
    flags |= libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return await connection.call(f"reading the definition of domain {domain!r}",
                                 lambda conn: lookup(conn, domain).XMLDesc(flags))


async def running_count(connection: Connection) -> int:
    return await connection.call("counting domains", lambda conn: conn.numOfDomains())


async def remove(connection: Connection, vm: str, uuid: str) -> bool:
    """Destroy (if running) and undefine the domain with this UUID; False when there is none.
    ``conflict`` when that UUID is another name's: the caller's facts are wrong."""
    return await connection.call(f"removing {vm}", lambda conn: _remove_domain(conn, vm, uuid))


def lookup(conn: libvirt.virConnect, name: str) -> Any:
    """The domain called ``name`` (blocking); ``not_found`` when there is none."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {name!r} on this host") from None
        raise


# --- blocking readers (worker threads) ----------------------------------------------------------


def _read_domains(conn: libvirt.virConnect, names: list[str] | None,
                  include_cpu_xml: bool) -> list[DomainInfo]:
    if names is not None:
        return [_domain_info(conn, lookup(conn, n), include_cpu_xml) for n in names]
    out = []
    for dom in conn.listAllDomains():
        try:
            out.append(_domain_info(conn, dom, include_cpu_xml))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise  # anything but "it vanished while we looked" is a real failure
    return sorted(out, key=lambda d: d.name)


# An incoming migration's domain is paused until the switch-over; running means the guest lives.
_GUEST_RUNS = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED)


def _remove_domain(conn: libvirt.virConnect, vm: str, uuid: str) -> bool:
    try:
        dom = conn.lookupByUUIDString(uuid)  # by UUID: a name can be reused, a UUID cannot
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    if dom.name() != vm:
        raise BatonError(ErrorCode.CONFLICT, f"the domain with UUID {uuid} here is "
                         f"{dom.name()!r}, not {vm!r}: not removed")
    if dom.state()[0] in _GUEST_RUNS:
        raise BatonError(ErrorCode.CONFLICT, f"{vm} is running on this host: a clean-up never "
                         "destroys a running guest (it may be the only live copy); check both "
                         "hosts")
    if dom.isActive():
        dom.destroy()
    if dom.isPersistent():
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    return True


def _domain_info(conn: libvirt.virConnect, dom: Any, include_cpu_xml: bool) -> DomainInfo:
    state, reason = dom.state()
    _s, max_kib, mem_kib, vcpus, _t = dom.info()
    flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE if include_cpu_xml else 0
    facts = xmlparse.domain_facts(dom.XMLDesc(flags))
    active = bool(dom.isActive())
    live_sizes = active and not _blockinfo_may_wait(dom, state, reason)
    return DomainInfo(
        name=dom.name(), uuid=dom.UUIDString(),
        state=libvirt_values.domain_state(state),
        state_reason=reason, active=active, persistent=bool(dom.isPersistent()),
        memory_kib=mem_kib, max_memory_kib=max_kib, vcpus=vcpus, virt_type=facts.virt_type,
        disks=[_sized_disk(conn, dom, disk, live_sizes) for disk in facts.disks],
        interfaces=facts.interfaces, cpu_xml=facts.cpu_xml if include_cpu_xml else None,
        migration_blockers=facts.migration_blockers,
    )


# A domain paused in these states is being started or receiving a migration: its job admits no
# query, and blockInfo would wait for the job's end (found in the lab: a status read hung for
# the whole copy, the destination paused with reason "migration" — libvirt's controlInfo says
# "ok" there all the same — or, in the moment before, "starting up").
_JOB_PAUSES = frozenset({libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP,
                         libvirt.VIR_DOMAIN_PAUSED_POSTCOPY,
                         libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED})


def _blockinfo_may_wait(dom: Any, state: int, reason: int) -> bool:
    """Whether a job may hold the domain so that blockInfo (which takes a query job) would wait:
    paused by a start or an incoming migration, or a job holding its control interface
    (controlInfo, read without taking the job)."""
    if state == libvirt.VIR_DOMAIN_PAUSED and reason in _JOB_PAUSES:
        return True
    try:
        control, _details, _since_ms = dom.controlInfo()
    except libvirt.libvirtError:
        return True  # cannot tell: the pool's figures are safe, a wait is not
    return bool(control != libvirt.VIR_DOMAIN_CONTROL_OK)


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
