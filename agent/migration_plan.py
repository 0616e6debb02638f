"""How a migration request maps onto libvirt's flags and parameters (pure; the adapter applies it).

Mapping (libvirt names): live -> LIVE (a running guest keeps running while memory is copied);
live=false on a shut-off domain -> OFFLINE (definition only; PERSIST_DEST is then required);
live=false on a running or paused domain -> no LIVE flag (libvirt pauses it during the copy);
always PEER2PEER (the source daemon talks to the destination's); persistent -> PERSIST_DEST;
undefine_source -> UNDEFINE_SOURCE; copy_disks -> NON_SHARED_DISK restricted to exactly those
targets through ``migrate_disks`` (never a shared disk); auto_converge -> AUTO_CONVERGE with the
optional initial/increment throttle; a post-copy switch (``postcopy`` not off) -> POSTCOPY, which
only permits the switch (the source agent decides when; agent/convergence.py); bandwidth (MiB/s)
and the data address as parameters; copies landing at other paths (another pool) -> the
rewritten definitions as ``destination_xml`` and ``persistent_xml``.
The maximum downtime has no migration parameter in libvirt 9.0: it is set on the running job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import PostcopySwitch, StartRequest


class MigrationFlag(StrEnum):
    LIVE = "live"
    PEER2PEER = "peer2peer"
    PERSIST_DEST = "persist_dest"
    UNDEFINE_SOURCE = "undefine_source"
    NON_SHARED_DISK = "non_shared_disk"
    AUTO_CONVERGE = "auto_converge"
    OFFLINE = "offline"
    TLS = "tls"
    POSTCOPY = "postcopy"
    POSTCOPY_RESUME = "postcopy_resume"  # recover a post-copy migration whose stream failed


@dataclass(frozen=True)
class MigrationPlan:
    destination_uri: str
    flags: frozenset[MigrationFlag]
    params: dict[str, int | str | list[str]] = field(default_factory=dict)
    max_downtime_ms: int | None = None


@dataclass(frozen=True)
class Definitions:
    """The domain as the destination should define it, when that differs from the source's."""

    destination_xml: str
    persistent_xml: str | None = None  # with PERSIST_DEST; None: libvirt persists the source's


def plan_migration(request: StartRequest, domain_active: bool,
                   definitions: Definitions | None = None) -> MigrationPlan:
    offline = not domain_active
    if offline and request.live:
        raise BatonError(ErrorCode.PRECONDITION_FAILED,
                         f"{request.vm} is not running: a live migration needs a running guest; "
                         "ask for an offline migration (live=false, `baton migrate --offline`)")
    if offline and not request.persistent:
        raise BatonError(ErrorCode.BAD_REQUEST, "an offline migration moves the definition only: "
                         "it must be persistent on the destination")
    if offline and request.postcopy != PostcopySwitch.OFF:
        raise BatonError(ErrorCode.BAD_REQUEST, "post-copy moves a running guest's memory; "
                         "an offline migration has none to move")
    if offline and request.copy_disks:
        raise BatonError(ErrorCode.UNSUPPORTED, "libvirt cannot copy disks of a shut-off domain; "
                         "use shared storage, or start the VM and migrate it live with copy")
    params = _params(request, offline)
    if definitions is not None:
        params["destination_xml"] = definitions.destination_xml
        if definitions.persistent_xml is not None and request.persistent:
            params["persistent_xml"] = definitions.persistent_xml
    return MigrationPlan(destination_uri=request.destination_uri,
                         flags=_flags(request, offline), params=params,
                         max_downtime_ms=request.max_downtime_ms)


def _flags(request: StartRequest, offline: bool) -> frozenset[MigrationFlag]:
    wanted = {
        MigrationFlag.PEER2PEER: True,
        MigrationFlag.OFFLINE: offline,
        MigrationFlag.LIVE: request.live and not offline,
        MigrationFlag.PERSIST_DEST: request.persistent,
        MigrationFlag.UNDEFINE_SOURCE: request.undefine_source,
        MigrationFlag.NON_SHARED_DISK: bool(request.copy_disks),
        MigrationFlag.AUTO_CONVERGE: request.auto_converge and not offline,
        MigrationFlag.TLS: request.tls,
        MigrationFlag.POSTCOPY: request.postcopy != PostcopySwitch.OFF and not offline,
    }
    return frozenset(flag for flag, on in wanted.items() if on)


def _params(request: StartRequest, offline: bool) -> dict[str, int | str | list[str]]:
    params: dict[str, int | str | list[str]] = {}
    if request.destination_address and not offline:
        params["migrate_uri"] = f"tcp://{request.destination_address}"
    if request.bandwidth_mib_s is not None:
        params["bandwidth"] = request.bandwidth_mib_s
        if request.postcopy != PostcopySwitch.OFF:  # else post-copy runs uncapped
            params["bandwidth.postcopy"] = request.bandwidth_mib_s
    if request.copy_disks:
        params["migrate_disks"] = list(request.copy_disks)
    if request.auto_converge and request.auto_converge_initial_pct is not None:
        params["auto_converge.initial"] = request.auto_converge_initial_pct
    if request.auto_converge and request.auto_converge_increment_pct is not None:
        params["auto_converge.increment"] = request.auto_converge_increment_pct
    return params
