"""Export JSON Schema for every public message into ``schemas/json/``.

``python -m baton.schemas.export`` rewrites the files; ``python -m baton.schemas.export --check`` exits 1
when they are stale (the test suite runs the same check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from baton.schemas import agent, events, migration, storage
from baton.schemas.errors import ErrorReply

JSON_DIR = Path(__file__).parent / "json"

PUBLIC_MESSAGES: tuple[Any, ...] = (
    ErrorReply,
    agent.CapsRequest,
    agent.HostCaps,
    agent.CpuCompareRequest,
    agent.CpuCompareReply,
    agent.CpuBaselineRequest,
    agent.CpuBaselineReply,
    agent.StorageProbeRequest,
    agent.StorageProbeReply,
    agent.DomainsRequest,
    agent.DomainsReply,
    agent.StatusRequest,
    agent.AgentStatus,
    events.LifecycleEvent,
    events.JobCompletedEvent,
    events.MigrationIterationEvent,
    events.BlockJobEvent,
    events.Heartbeat,
    migration.MigrateRequest,
    migration.MigrateAccepted,
    migration.CheckRequest,
    migration.PreflightReport,
    migration.AbortRequest,
    migration.BandwidthRequest,
    migration.JobsRequest,
    migration.JobsReply,
    migration.DrainRequest,
    migration.DrainReply,
    migration.MigrationRecord,
    migration.PhaseEvent,
    migration.ProgressEvent,
    migration.Ack,
    storage.StorageMoveRequest,
    storage.StorageMoveAccepted,
    storage.StorageCheckReport,
    storage.StorageMoveRecord,
    storage.StoragePhaseEvent,
)


def tag_of(message_type: Any) -> str:
    return str(message_type.__struct_config__.tag)


def rendered_schemas() -> dict[str, str]:
    """File name -> file text for every public message."""
    out = {}
    for message_type in PUBLIC_MESSAGES:
        schema = msgspec.json.schema(message_type)
        out[f"{tag_of(message_type)}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of files that are missing, different or no longer exported."""
    expected = rendered_schemas()
    stale = [name for name, text in expected.items() if _read(directory / name) != text]
    extra = [p.name for p in directory.glob("*.json") if p.name not in expected]
    return sorted(stale + extra)


def write(directory: Path = JSON_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    expected = rendered_schemas()
    for old in directory.glob("*.json"):
        if old.name not in expected:
            old.unlink()
    for name, text in expected.items():
        (directory / name).write_text(text)


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print("stale JSON Schema files (run python -m baton.schemas.export):", *stale, file=sys.stderr)
            return 1
        return 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
