"""Live migration on the source host: ``migrateToURI3`` with the plan's flags, the running job's
figures, aborting it, and the knobs (bandwidth, maximum downtime) tuned while it runs.

Resource contract: ``migrateToURI3`` blocks a thread until the migration ends, so it runs on the
connection's long-call pool (:meth:`Connection.start_long`); cancelling the awaiting task aborts
the libvirt job and then waits for that thread. Everything else is a short call with a deadline.
"""

from __future__ import annotations

import asyncio

import libvirt

from baton.agent import jobstats
from baton.agent.libvirt.connection import Connection, translate
from baton.agent.libvirt.domains import lookup
from baton.agent.migration_plan import MigrationFlag, MigrationPlan
from baton.schemas.events import JobStats

_MIGRATION_FLAGS = {
    MigrationFlag.LIVE: libvirt.VIR_MIGRATE_LIVE,
    MigrationFlag.PEER2PEER: libvirt.VIR_MIGRATE_PEER2PEER,
    MigrationFlag.PERSIST_DEST: libvirt.VIR_MIGRATE_PERSIST_DEST,
    MigrationFlag.UNDEFINE_SOURCE: libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
    MigrationFlag.NON_SHARED_DISK: libvirt.VIR_MIGRATE_NON_SHARED_DISK,
    MigrationFlag.AUTO_CONVERGE: libvirt.VIR_MIGRATE_AUTO_CONVERGE,
    MigrationFlag.OFFLINE: libvirt.VIR_MIGRATE_OFFLINE,
    MigrationFlag.TLS: libvirt.VIR_MIGRATE_TLS,
    MigrationFlag.POSTCOPY: libvirt.VIR_MIGRATE_POSTCOPY,
}


def libvirt_flags(plan: MigrationPlan) -> int:
    """The plan's flags as libvirt's ``VIR_MIGRATE_*`` bit set."""
    flags = 0
    for flag in plan.flags:
        flags |= _MIGRATION_FLAGS[flag]
    return flags


async def run(connection: Connection, vm: str, plan: MigrationPlan) -> None:
    """Run ``migrateToURI3`` on a thread of its own until it returns.

    Cancelling the awaiting task aborts the libvirt job and then waits for the thread, so a
    cancelled migration never leaves a job running behind the caller's back.
    """
    flags = libvirt_flags(plan)

    def migrate(conn: libvirt.virConnect) -> None:
        lookup(conn, vm).migrateToURI3(plan.destination_uri, dict(plan.params), flags)

    done = connection.start_long(migrate)
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        await abort_job(connection, vm)
        await asyncio.wait([done])
        raise
    except libvirt.libvirtError as exc:
        raise translate(exc, f"migrating {vm}") from None


async def job_stats(connection: Connection, vm: str) -> JobStats | None:
    """Figures of the domain's running job, or None when no job runs."""
    def read(conn: libvirt.virConnect) -> JobStats | None:
        params = lookup(conn, vm).jobStats(0)
        if params.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return jobstats.job_stats(params, completed=False)
    return await connection.call(f"reading the job of {vm}", read)


async def abort_job(connection: Connection, vm: str) -> None:
    await connection.call(f"aborting the job of {vm}", lambda conn: lookup(conn, vm).abortJob())


async def set_max_speed(connection: Connection, vm: str, bandwidth_mib_s: int) -> None:
    await connection.call(f"setting the bandwidth of {vm}",
                          lambda conn: lookup(conn, vm).migrateSetMaxSpeed(bandwidth_mib_s, 0))


async def start_postcopy(connection: Connection, vm: str) -> None:
    """Switch the running migration (started with VIR_MIGRATE_POSTCOPY) to post-copy."""
    await connection.call(f"switching the migration of {vm} to post-copy",
                          lambda conn: lookup(conn, vm).migrateStartPostCopy(0))


async def set_max_downtime(connection: Connection, vm: str, downtime_ms: int) -> None:
    await connection.call(f"setting the maximum downtime of {vm}",
                          lambda conn: lookup(conn, vm).migrateSetMaxDowntime(downtime_ms, 0))
