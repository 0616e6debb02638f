"""The guest's memory dirty rate, measured by libvirt (``virsh domdirtyrate-calc``), and the
guest's pages read one by one for Baton's own sample (agent/memory_sample.py).

Modes, best first: dirty-ring (KVM with the dirty ring on: exact), dirty-bitmap (KVM's dirty log:
exact, but under TCG it reads 0, so only a KVM guest is asked), page-sampling (QEMU hashes a
sample of pages: works everywhere, reads somewhat low). The calculation runs in QEMU for the
given seconds; the result is read back from the domain's dirtyrate statistics.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Sequence
from xml.etree import ElementTree

import libvirt

from baton.agent.hypervisor import DirtyRate
from baton.agent.libvirt.connection import Connection
from baton.agent.libvirt.domains import lookup
from baton.schemas.errors import BatonError, ErrorCode

_RING = ("dirty-ring", libvirt.VIR_DOMAIN_DIRTYRATE_MODE_DIRTY_RING)
_BITMAP = ("dirty-bitmap", libvirt.VIR_DOMAIN_DIRTYRATE_MODE_DIRTY_BITMAP)
_SAMPLING = ("page-sampling", libvirt.VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING)
_READ_EVERY_S = 0.2
_LATE_S = 5.0  # QEMU ends the calculation a little after its period
_PAGE = 4096
_PAGES_PER_CALL = 128  # one worker-thread call reads this many (about 0.15 s under TCG)
_ZERO = bytes(_PAGE)
_X86 = ("x86_64", "i686")


def modes_for(domain_type: str | None) -> list[tuple[str, int]]:
    """The modes to try, best first, for a domain of this virtualization type."""
    return [_RING, _BITMAP, _SAMPLING] if domain_type == "kvm" else [_RING, _SAMPLING]


async def measure(connection: Connection, vm: str, seconds: int) -> DirtyRate:
    def start(conn: libvirt.virConnect) -> str:
        domain = lookup(conn, vm)
        kind = ElementTree.fromstring(domain.XMLDesc(0)).get("type")
        *better, last = modes_for(kind)
        for name, flag in better:
            try:
                domain.startDirtyRateCalc(seconds, flag)
                return name
            except libvirt.libvirtError:
                continue  # not supported here (dirty ring off, not KVM): the next mode
        domain.startDirtyRateCalc(seconds, last[1])
        return last[0]

    def read(conn: libvirt.virConnect) -> dict[str, int | str]:
        [(_, stats)] = conn.domainListGetStats([lookup(conn, vm)],
                                               libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
        return stats

    mode = await connection.call(f"measuring the dirty rate of {vm}", start)
    await asyncio.sleep(seconds)
    deadline = asyncio.get_running_loop().time() + _LATE_S
    while True:
        stats = await connection.call(f"reading the dirty rate of {vm}", read)
        if stats.get("dirtyrate.calc_status") == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED \
                and "dirtyrate.megabytes_per_second" in stats:
            return DirtyRate(float(stats["dirtyrate.megabytes_per_second"]), mode)
        if asyncio.get_running_loop().time() > deadline:
            raise BatonError(ErrorCode.HYPERVISOR, f"the dirty rate of {vm} was not measured "
                             f"within {seconds + _LATE_S:.0f} s (status "
                             f"{stats.get('dirtyrate.calc_status')})")
        await asyncio.sleep(_READ_EVERY_S)


async def page_digests(connection: Connection, vm: str, pages: Sequence[int]) -> list[bytes]:
    """An 8-byte digest of each guest-physical page (b"" for an all-zero page), read with
    virDomainMemoryPeek; the page's bytes never leave the worker thread."""
    def read(conn: libvirt.virConnect, chunk: Sequence[int]) -> list[bytes]:
        domain = lookup(conn, vm)
        digests = []
        for page in chunk:
            data = domain.memoryPeek(page * _PAGE, _PAGE, libvirt.VIR_MEMORY_PHYSICAL)
            digests.append(b"" if data == _ZERO else
                           hashlib.blake2b(data, digest_size=8).digest())
        return digests

    def arch(conn: libvirt.virConnect) -> str | None:
        os_type = ElementTree.fromstring(lookup(conn, vm).XMLDesc(0)).find("os/type")
        return None if os_type is None else os_type.get("arch")

    # The sampled page numbers assume x86's guest-physical layout (agent/memory_sample.py);
    # elsewhere RAM starts higher up, and libvirt's own calculation measures instead.
    found_arch = await connection.call(f"reading the architecture of {vm}", arch)
    if found_arch not in _X86:
        raise BatonError(ErrorCode.UNSUPPORTED, f"{vm} is a {found_arch} guest: only x86 guests' "
                         "memory is sampled")
    found: list[bytes] = []
    for start in range(0, len(pages), _PAGES_PER_CALL):
        found += await connection.call(f"reading the memory of {vm}",
                                       functools.partial(read, chunk=pages[start:start + _PAGES_PER_CALL]))
    return found
