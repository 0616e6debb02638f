"""Block copy jobs for storage moves (:mod:`agent.storage_move` through
:class:`agent.block_copy.BlockCopier`): start a copy, read its progress, pivot or cancel it, read
a disk's live and saved sources, and save a definition that points at the new source.

blockCopy only starts a job, and blockJobAbort (with or without pivot) returns once the job has
ended, so the short-call helper (:meth:`Connection.call`, with its deadline) fits all of them.
"""

from __future__ import annotations

import libvirt

from baton.agent import block_copy
from baton.agent.block_copy import BlockJobProgress, DiskSources
from baton.agent.libvirt import values as libvirt_values
from baton.agent.libvirt.connection import Connection
from baton.agent.libvirt.domains import lookup


async def start_copy(connection: Connection, vm: str, target: str, destination_xml: str,
                     bandwidth_bytes_s: int | None) -> None:
    def start(conn: libvirt.virConnect) -> None:
        dom = lookup(conn, vm)
        # libvirt 9.0 refuses a copy job on a persistent domain unless the job is transient;
        # it still rewrites the saved definition to the copy when the pivot succeeds.
        flags = libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB if dom.isPersistent() else 0
        params = {} if bandwidth_bytes_s is None else {
            libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: bandwidth_bytes_s}  # bytes/s here
        dom.blockCopy(target, destination_xml, params, flags)
    await connection.call(f"starting the copy of {vm} {target}", start)


async def progress(connection: Connection, vm: str, target: str) -> BlockJobProgress | None:
    """The copy job on ``target``, or None when no job runs on that disk."""
    return await connection.call(f"reading the copy job of {vm} {target}", lambda conn:
                                 libvirt_values.block_job_progress(
                                     lookup(conn, vm).blockJobInfo(target, 0)))


async def abort(connection: Connection, vm: str, target: str, pivot: bool) -> None:
    """End the job on ``target``: switch the disk to the copy (pivot) or drop the copy."""
    flags = libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT if pivot else 0
    what = "pivoting" if pivot else "cancelling the copy of"
    await connection.call(f"{what} {vm} {target}",
                          lambda conn: lookup(conn, vm).blockJobAbort(target, flags))


async def disk_sources(connection: Connection, vm: str, target: str) -> DiskSources:
    def read(conn: libvirt.virConnect) -> DiskSources:
        dom = lookup(conn, vm)
        live = dom.XMLDesc(0)
        saved = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if dom.isPersistent() else None
        return DiskSources(live=block_copy.disk_source(live, target),
                           persistent=None if saved is None else
                           block_copy.disk_source(saved, target),
                           mirror_ready=block_copy.mirror_ready(live, target))
    return await connection.call(f"reading the disks of {vm}", read)


async def define_disk_source(connection: Connection, vm: str, target: str, path: str) -> None:
    def define(conn: libvirt.virConnect) -> None:
        saved = lookup(conn, vm).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        conn.defineXML(block_copy.with_disk_source(saved, target, path))
    await connection.call(f"saving the definition of {vm}", define)
