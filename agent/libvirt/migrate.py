"""Live migration on the source host: ``migrateToURI3`` with the plan's flags, the running job's
figures, aborting it, and the knobs (bandwidth, maximum downtime) tuned while it runs.

Resource contract: ``migrateToURI3`` blocks a thread until the migration ends, so it runs on the
connection's long-call pool (:meth:`Connection.start_long`); cancelling the awaiting task aborts
the libvirt job and then waits for that thread, at most :data:`AFTER_ABORT_WAIT_S` (a post-copy
resume was seen to block past any abort: the agent goes on, the thread is left to libvirt).
Everything else is a short call with a deadline.
"""

from __future__ import annotations

import asyncio

import libvirt
import structlog

from baton.agent import jobstats
from baton.agent.libvirt.connection import Connection, translate
from baton.agent.libvirt.domains import lookup
from baton.agent.migration_plan import MigrationFlag, MigrationPlan
from baton.schemas.errors import BatonError
from baton.schemas.events import JobStats

log = structlog.get_logger(__name__)
AFTER_ABORT_WAIT_S = 30.0  # for libvirt's migrate call to return once its job was aborted

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
    MigrationFlag.POSTCOPY_RESUME: libvirt.VIR_MIGRATE_POSTCOPY_RESUME,
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
        await _abort_for_cancel(connection, vm, MigrationFlag.POSTCOPY in plan.flags)
        await asyncio.wait([done], timeout=AFTER_ABORT_WAIT_S)
        if not done.done():  # the agent must not hang with it; the thread is left to libvirt
            log.error("migrate_call_outlived_abort", vm=vm, waited_s=AFTER_ABORT_WAIT_S)
        raise
    except libvirt.libvirtError as exc:
        raise translate(exc, f"migrating {vm}") from None


async def _abort_for_cancel(connection: Connection, vm: str, postcopy: bool) -> None:
    """Abort the job; one in post-copy refuses a plain abort and takes the post-copy one
    (VIR_DOMAIN_ABORT_JOB_POSTCOPY), which pauses it for a later recovery, losing nothing."""
    try:
        await abort_job(connection, vm)
    except BatonError as exc:
        if not postcopy:
            log.warning("migration_abort_failed", vm=vm, error=exc.message)
            return
        try:
            await abort_job(connection, vm, postcopy=True)
        except BatonError as again:
            log.warning("migration_abort_failed", vm=vm, error=again.message)


async def job_stats(connection: Connection, vm: str) -> JobStats | None:
    """Figures of the domain's running job, or None when no job runs."""
    def read(conn: libvirt.virConnect) -> JobStats | None:
        params = lookup(conn, vm).jobStats(0)
        if params.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return jobstats.job_stats(params, completed=False)
    return await connection.call(f"reading the job of {vm}", read)


async def abort_job(connection: Connection, vm: str, postcopy: bool = False) -> None:
    if postcopy:
        await connection.call(f"interrupting the post-copy migration of {vm}",
                              lambda conn: lookup(conn, vm).abortJobFlags(
                                  libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY))
        return
    await connection.call(f"aborting the job of {vm}", lambda conn: lookup(conn, vm).abortJob())


async def set_max_speed(connection: Connection, vm: str, bandwidth_mib_s: int,
                        postcopy: bool = False) -> None:
    """The pre-copy cap, or with ``postcopy`` the post-copy phase's (libvirt keeps two)."""
    flags = libvirt.VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY if postcopy else 0
    await connection.call(f"setting the bandwidth of {vm}",
                          lambda conn: lookup(conn, vm).migrateSetMaxSpeed(bandwidth_mib_s, flags))


async def start_postcopy(connection: Connection, vm: str) -> None:
    """Switch the running migration (started with VIR_MIGRATE_POSTCOPY) to post-copy."""
    await connection.call(f"switching the migration of {vm} to post-copy",
                          lambda conn: lookup(conn, vm).migrateStartPostCopy(0))


async def set_max_downtime(connection: Connection, vm: str, downtime_ms: int) -> None:
    await connection.call(f"setting the maximum downtime of {vm}",
                          lambda conn: lookup(conn, vm).migrateSetMaxDowntime(downtime_ms, 0))
