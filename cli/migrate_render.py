"""How migration replies and events look on a terminal (pure: data in, rich renderables out)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from baton.cli.render import human_bytes
from baton.schemas.events import JobStats, LifecycleEvent
from baton.schemas.migration import (
    CheckStatus,
    MigrationRecord,
    Phase,
    PhaseEvent,
    Placement,
    PreflightReport,
    ProgressEvent,
)
from baton.schemas.storage import StorageMoveRecord, StoragePhaseEvent

_STATUS_STYLE = {CheckStatus.PASS: "green", CheckStatus.WARN: "yellow", CheckStatus.FAIL: "red"}
_PHASE_STYLE = {Phase.SUCCEEDED: "green", Phase.FAILED: "red", Phase.ABORTED: "yellow"}


def report_table(report: PreflightReport) -> Table | Group:
    verdict = "[green]ready[/]" if report.ok else "[red]blocked[/]"
    checks = checks_table(f"{escape(report.vm)}: {report.source} -> {report.destination}, "
                          f"storage {report.storage} — {verdict}", report.checks)
    if report.placement is None:
        return checks
    return Group(placement_table(report.placement), checks)


def placement_table(placement: Placement) -> Table:
    """The hosts weighed for a VM given no destination, best first."""
    title = (f"placement: {placement.chosen} chosen" if placement.chosen
             else "placement: [red]no host passes every check[/]")
    table = Table(title=title, title_justify="left", caption=f"ranked by {placement.order}",
                  caption_justify="left")
    for column in ("rank", "host", "checks", "warnings", "jobs there", "memory left", "reason"):
        table.add_column(column, overflow="fold" if column == "reason" else "ellipsis")
    for c in placement.candidates:
        table.add_row(str(c.rank), c.host, "[green]pass[/]" if c.ok else "[red]fail[/]",
                      str(c.warnings), str(c.running_jobs),
                      "-" if c.memory_left_bytes is None else human_bytes(c.memory_left_bytes),
                      escape(c.reason))
    return table


def checks_table(title: str, checks: Sequence[Any]) -> Table:
    """Pre-flight results, one row a check; reasons come from agents, so they are escaped."""
    table = Table(title=title, title_justify="left")
    table.add_column("check")
    table.add_column("status")
    table.add_column("reason", overflow="fold")
    for check in checks:
        style = _STATUS_STYLE[check.status]
        table.add_row(check.name, f"[{style}]{check.status}[/]", escape(check.reason))
    return table


def jobs_table(records: list[MigrationRecord | StorageMoveRecord]) -> Table:
    table = Table()
    for column in ("id", "vm", "route", "phase", "storage", "updated", "error"):
        table.add_column(column, overflow="fold" if column == "error" else "ellipsis")
    for r in records:
        route, storage = (f"{r.host} -> pool {r.destination_pool}", "move") \
            if isinstance(r, StorageMoveRecord) else (f"{r.source} -> {r.destination}", str(r.storage))
        table.add_row(r.migration_id, r.vm, route, phase_text(r.phase), storage,
                      r.updated_at.strftime("%Y-%m-%d %H:%M:%S"), r.error.message if r.error else "")
    return table


def phase_text(phase: Phase) -> str:
    style = _PHASE_STYLE.get(phase)
    return f"[{style}]{phase}[/]" if style else str(phase)


def outcome_line(record: MigrationRecord) -> str:
    route = f"{record.vm}: {record.source} -> {record.destination}"
    if record.phase != Phase.SUCCEEDED:
        why = record.error.message if record.error else "no reason given"
        return f"{route} {phase_text(record.phase)}: {why}" + placed_line(record)
    stats = record.result or JobStats()
    parts = [f"{(stats.time_elapsed_ms or 0) / 1000:.1f} s"]
    if stats.downtime_ms is not None:
        parts.append(f"downtime {stats.downtime_ms} ms")
    if stats.data_processed_bytes is not None:
        parts.append(f"{human_bytes(stats.data_processed_bytes)} moved")
    if record.postcopy:
        parts.append("post-copy")
    chose = f"\n  strategy auto chose {escape(record.auto_choice)}" if record.auto_choice else ""
    steps = chose + "".join(f"\n  escalated: {escape(step)}" for step in record.escalations)
    return (f"{route} {phase_text(record.phase)} ({', '.join(parts)}, storage {record.storage})"
            + steps + placed_line(record))


def placed_line(record: MigrationRecord) -> str:
    """How the destination was chosen, when the operator gave none."""
    if record.placement is None:
        return ""
    weighed = ", ".join(c.host for c in record.placement.candidates)
    return f"\n  placed: {record.destination} chosen of {weighed} ({record.placement.order})"


def phase_line(event: PhaseEvent | StoragePhaseEvent) -> str:
    reason = f" — {event.reason}" if event.reason else ""
    return f"{_clock(event.at)} {event.migration_id} {event.record.vm} " \
           f"{event.previous or '-'} -> {phase_text(event.phase)}{reason}"


def progress_line(event: ProgressEvent) -> str:
    s = event.stats
    return (f"{_clock(event.at)} {event.migration_id} {event.phase} "
            f"{_bytes(s.data_processed_bytes)}/{_bytes(s.data_total_bytes)} "
            f"remaining {_bytes(s.data_remaining_bytes)} at {rate(s)} "
            f"iteration {s.memory_iteration if s.memory_iteration is not None else '-'} "
            f"ETA {eta_text(event.eta_s)}"
            + (f" throttle {s.auto_converge_throttle_pct}%"
               if s.auto_converge_throttle_pct else ""))


def lifecycle_line(event: LifecycleEvent) -> str:
    return f"{_clock(event.at)} {event.host_id} {event.vm} {event.event}/{event.detail}"


def rate(stats: JobStats) -> str:
    bps = (stats.memory_bps or 0) + (stats.disk_bps or 0)
    return f"{bps / 1024**2:.1f} MiB/s" if bps else "- MiB/s"


def _bytes(value: int | None) -> str:
    return "-" if value is None else human_bytes(value)


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")


class _Remaining(ProgressColumn):
    def render(self, task: Task) -> Text:
        remaining = task.fields.get("remaining")
        return Text("remaining " + ("-" if remaining is None else human_bytes(remaining)))


class _Eta(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text("ETA " + eta_text(task.fields.get("eta_s")))


def eta_text(eta_s: float | None) -> str:
    """The source's estimate of the time left: ``-`` while it has none."""
    if eta_s is None:
        return "-"
    seconds = round(eta_s)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


def progress_bar(console: Console) -> Progress:
    """Phase, bar, MiB/s, remaining bytes, the source's ETA and the elapsed time of one job."""
    return Progress(TextColumn("{task.fields[phase]:<10}"), BarColumn(),
                    TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[rate]}"),
                    _Remaining(), _Eta(), TimeElapsedColumn(), console=console)
