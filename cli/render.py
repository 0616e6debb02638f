"""How the ``baton`` CLI shows things: rich tables for people, JSON records for scripts.

Pure functions of their inputs (the clock is a parameter), so tests need neither NATS nor a TTY.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table

from baton.mesh.client import AgentInfo
from baton.schemas.agent import HostCaps, Memory

_MISSING = "-"
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


class HostRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``baton hosts``; also its JSON record."""

    host_id: str
    cpu_model: str | None
    libvirt_version: str | None
    hypervisor_version: str | None
    libvirt_connected: bool | None  # None: the status request failed
    last_heartbeat_at: datetime | None
    heartbeat_age_s: float | None
    agent_version: str | None  # from the status reply
    protocol_version: str
    service_id: str
    status_error: str | None


def host_record(agent: AgentInfo, now: datetime) -> HostRecord:
    status = agent.status
    last = status.last_heartbeat_at if status else None
    return HostRecord(
        host_id=agent.host_id,
        cpu_model=agent.cpu_model,
        libvirt_version=agent.libvirt_version,
        hypervisor_version=agent.hypervisor_version,
        libvirt_connected=status.libvirt_connected if status else None,
        last_heartbeat_at=last,
        heartbeat_age_s=round((now - last).total_seconds(), 1) if last else None,
        agent_version=status.agent_version if status else None,
        protocol_version=agent.protocol_version,
        service_id=agent.service_id,
        status_error=agent.status_error,
    )


def hosts_json(records: list[HostRecord]) -> str:
    return msgspec.json.encode(records).decode()


def hosts_table(records: list[HostRecord]) -> Table:
    table = Table(title="Baton agents")
    for header in ("host", "CPU model", "libvirt", "QEMU", "libvirt connected", "heartbeat age"):
        table.add_column(header)
    table.add_column("agent")
    for record in records:
        table.add_row(
            record.host_id,
            _text(record.cpu_model),
            _text(record.libvirt_version),
            _text(record.hypervisor_version),
            _connected(record),
            human_age(record.heartbeat_age_s),
            _text(record.agent_version),
        )
    return table


def _connected(record: HostRecord) -> str:
    if record.libvirt_connected is None:
        return f"[yellow]unknown[/] ({_text(record.status_error)})"
    return "[green]yes[/]" if record.libvirt_connected else "[red]no[/]"


def human_bytes(value: int) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, one decimal, bytes stay whole."""
    size = float(value)
    for unit in _BINARY_UNITS:
        if abs(size) < 1024 or unit == _BINARY_UNITS[-1]:
            return f"{value} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float | None) -> str:
    """Heartbeat age: seconds while fresh, then minutes, hours, days (a stale agent stands out)."""
    if seconds is None:
        return _MISSING
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds / 86400:.1f} d"


def caps_view(caps: HostCaps) -> RenderableType:
    return Group(
        f"[bold]{caps.host_id}[/] ({_text(caps.hostname)}), "
        f"collected {caps.collected_at:%Y-%m-%d %H:%M:%S %Z}",
        _facts_grid(caps),
        _bridges_table(caps),
        _networks_table(caps),
        _pools_table(caps),
    )


def _facts_grid(caps: HostCaps) -> Table:
    cpu, versions, memory = caps.cpu, caps.versions, caps.memory
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("CPU", _text(f"{cpu.arch} {cpu.vendor} {cpu.model}, {len(cpu.features)} features"))
    grid.add_row("host-model", _text(cpu.host_model))
    grid.add_row("usable models", _text(", ".join(cpu.usable_models)))
    grid.add_row("libvirt", _text(versions.libvirt))
    grid.add_row("hypervisor", _text(f"{versions.hypervisor_type} {versions.hypervisor}"))
    grid.add_row("agent", _text(versions.agent))
    grid.add_row("memory", _memory(memory))
    grid.add_row("migration URI", _text(caps.migration_uri))
    return grid


def _memory(memory: Memory) -> str:
    text = f"{human_bytes(memory.free_bytes)} free of {human_bytes(memory.total_bytes)}"
    if memory.reserved_bytes or memory.available_bytes:
        reserved = human_bytes(memory.reserved_bytes)
        text += f", {human_bytes(memory.available_bytes)} available to guests ({reserved} reserved)"
    return text


def _bridges_table(caps: HostCaps) -> Table:
    table = Table(title="Bridges")
    for header in ("name", "state", "MTU"):
        table.add_column(header)
    for bridge in caps.bridges:
        table.add_row(_text(bridge.name), _up(bridge.up, "up", "down"), str(bridge.mtu))
    if not caps.bridges:
        table.caption = "(none)"
    return table


def _networks_table(caps: HostCaps) -> Table:
    table = Table(title="libvirt networks")
    for header in ("name", "active", "bridge", "forward"):
        table.add_column(header)
    for net in caps.networks:
        table.add_row(_text(net.name), _up(net.active), _text(net.bridge), _text(net.forward_mode))
    if not caps.networks:
        table.caption = "(none)"
    return table


def _pools_table(caps: HostCaps) -> Table:
    table = Table(title="Storage pools")
    for header in ("name", "type", "path", "capacity", "available", "active"):
        table.add_column(header, overflow="fold")
    for pool in caps.pools:
        table.add_row(
            _text(pool.name),
            _text(pool.type),
            _text(pool.target_path),
            human_bytes(pool.capacity_bytes),
            human_bytes(pool.available_bytes),
            _up(pool.active),
        )
    return table


def _text(value: str | None) -> str:
    """Agent-supplied text, shown literally (a '[' in a name must not become rich markup)."""
    return escape(value) if value else _MISSING


def _up(flag: bool, yes: str = "yes", no: str = "no") -> str:
    return f"[green]{yes}[/]" if flag else f"[red]{no}[/]"


def make_console(*, stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (so CliRunner's capture sees it)."""
    return Console(stderr=stderr, highlight=False)
