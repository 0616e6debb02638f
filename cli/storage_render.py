"""How storage-move replies and records look on a terminal (pure: data in, rich renderables out).

The progress bar and the phase lines are the migrations' own (:mod:`baton.cli.migrate_render`);
only what names a move differently (host and pool instead of source and destination) is here.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from baton.cli.migrate_render import checks_table, phase_text
from baton.cli.migrate_render import outcome_line as migration_outcome_line
from baton.cli.render import human_bytes
from baton.schemas.migration import MigrationRecord, Phase
from baton.schemas.storage import StorageCheckReport, StorageMoveAccepted, StorageMoveRecord


def route(record: StorageMoveRecord) -> str:
    targets = ", ".join(d.target for d in record.disks) or "disks"
    return f"{record.vm} {targets}: {record.host} -> pool {record.destination_pool}"


def accepted_line(accepted: StorageMoveAccepted) -> str:
    moves = "; ".join(f"{d.target} {d.source_path} -> {d.destination_path}" for d in accepted.disks)
    return (f"{accepted.migration_id}  {accepted.vm} on {accepted.host}: {moves} "
            f"(follow: baton watch --id {accepted.migration_id})")


def outcome_line(record: StorageMoveRecord) -> str:
    if record.phase != Phase.SUCCEEDED:
        why = record.error.message if record.error else "no reason given"
        return f"{escape(route(record))} {phase_text(record.phase)}: {escape(why)}"
    seconds = (record.updated_at - record.created_at).total_seconds()
    copied = record.result.data_processed_bytes if record.result else None
    parts = [f"{seconds:.1f} s"]
    if copied is not None:
        parts.append(f"{human_bytes(copied)} copied")
    parts.append("old files kept" if record.request.keep_source else "old files deleted")
    return f"{escape(route(record))} {phase_text(record.phase)} ({', '.join(parts)})"


def any_outcome_line(record: MigrationRecord | StorageMoveRecord) -> str:
    """One line for either kind of job (``baton abort`` answers with either)."""
    if isinstance(record, StorageMoveRecord):
        return outcome_line(record)
    return migration_outcome_line(record)


def report_table(report: StorageCheckReport) -> Table:
    verdict = "[green]ready[/]" if report.ok else "[red]blocked[/]"
    return checks_table(f"{escape(report.vm)} on {report.host} -> pool "
                        f"{escape(report.destination_pool)} — {verdict}", report.checks)
