"""How the CLI shows things, without NATS: units, ages, records and escaping of agent text."""

from __future__ import annotations

import io
from datetime import timedelta

import msgspec
import pytest
from rich.console import Console

from baton.cli.migrate_render import outcome_line, report_table
from baton.cli.render import caps_view, host_record, hosts_table, human_age, human_bytes
from baton.mesh.client import AgentInfo
from baton.schemas.agent import Memory
from baton.schemas.errors import ErrorCode, ErrorReply
from baton.schemas.events import JobStats
from baton.schemas.migration import (
    Candidate,
    MigrationRecord,
    Phase,
    Placement,
    PreflightReport,
    StorageMode,
)
from tests.support.canned_agent import canned_caps, canned_status
from tests.support.samples import SAMPLE_TIME, sample


def rendered(renderable: object) -> str:
    out = io.StringIO()
    Console(width=200, file=out).print(renderable)
    return out.getvalue()


def agent(host_id: str = "h1", **changes: object) -> AgentInfo:
    info = AgentInfo(host_id=host_id, service_id="S1", protocol_version="0.1.0", cpu_model="EPYC",
                     libvirt_version="10.0.0", hypervisor_version="8.2.2",
                     status=canned_status(host_id))  # fmt: skip
    return msgspec.structs.replace(info, **changes)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (16 * 1024**3, "16.0 GiB"),
     (3 * 1024**6, "3072.0 PiB")],
)  # fmt: skip
def test_sizes_are_shown_in_binary_units(value: int, expected: str) -> None:
    assert expected == human_bytes(value)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(None, "-"), (0.25, "0.2 s"), (119, "119.0 s"), (600, "10.0 min"), (7200, "2.0 h"), (864000, "10.0 d")],
)
def test_heartbeat_ages_grow_into_larger_units(seconds: float | None, expected: str) -> None:
    assert expected == human_age(seconds)


def test_a_host_record_measures_the_heartbeat_age_against_the_given_clock() -> None:
    record = host_record(agent(), SAMPLE_TIME + timedelta(seconds=9))
    assert 10.0 == record.heartbeat_age_s
    assert (True, "0.1.0-test") == (record.libvirt_connected, record.agent_version)


def test_a_host_record_without_status_keeps_the_error() -> None:
    record = host_record(agent(status=None, status_error="timeout: late"), SAMPLE_TIME)
    assert (None, None) == (record.libvirt_connected, record.heartbeat_age_s)
    assert "timeout: late" == record.status_error
    assert "unknown (timeout: late)" in rendered(hosts_table([record]))


def test_agent_text_is_shown_literally_not_as_markup() -> None:
    record = host_record(agent(cpu_model="[bold]Weird[/bold]"), SAMPLE_TIME)
    assert "[bold]Weird[/bold]" in rendered(hosts_table([record]))


def test_caps_view_shows_reserved_memory_when_the_agent_reports_it() -> None:
    caps = msgspec.structs.replace(
        canned_caps("h1"),
        memory=Memory(total_bytes=8 * 1024**3, free_bytes=4 * 1024**3, reserved_bytes=1024**3,
                      available_bytes=3 * 1024**3),
    )  # fmt: skip
    expected = "4.0 GiB free of 8.0 GiB, 3.0 GiB available to guests (1.0 GiB reserved)"
    assert expected in rendered(caps_view(caps))


def test_a_migrations_outcome_names_its_escalations_and_a_postcopy_finish() -> None:
    record = msgspec.structs.replace(
        sample(MigrationRecord), vm="g1", source="h1", destination="h2", phase=Phase.SUCCEEDED,
        storage=StorageMode.SHARED, error=None, postcopy=True, placement=None,
        auto_choice="post-copy after the first pass: predicted ...",
        escalations=["first pass sent (40 MiB left at pass 2): switched to post-copy"],
        result=JobStats(time_elapsed_ms=12_300, downtime_ms=80, data_processed_bytes=3 << 20))
    assert ("g1: h1 -> h2 [green]succeeded[/] (12.3 s, downtime 80 ms, 3.0 MiB moved, post-copy, "
            "storage shared)\n  strategy auto chose post-copy after the first pass: predicted "
            "...\n  escalated: first pass sent (40 MiB left at pass 2): switched to "
            "post-copy") == outcome_line(record)
    plain = msgspec.structs.replace(record, postcopy=False, escalations=[], auto_choice="")
    assert "post-copy" not in outcome_line(plain) and "escalated" not in outcome_line(plain)
    assert "chose" not in outcome_line(plain)


def test_a_placed_migration_says_which_hosts_were_weighed_and_the_check_shows_the_ranking() -> None:
    chosen = Placement(chosen="h2", order="fewest warnings", candidates=[
        Candidate(host="h2", ok=True, rank=1, memory_left_bytes=3 << 30, reason="passes"),
        Candidate(host="h3", ok=False, rank=2, reason="network: no bridge br-vm on h3")])
    record = msgspec.structs.replace(
        sample(MigrationRecord), vm="g1", source="h1", destination="h2", phase=Phase.SUCCEEDED,
        error=None, escalations=[], placement=chosen)
    assert outcome_line(record).endswith("\n  placed: h2 chosen of h2, h3 (fewest warnings)")
    failed = msgspec.structs.replace(record, phase=Phase.FAILED,
                                     error=ErrorReply(code=ErrorCode.INTERNAL, message="boom"))
    assert outcome_line(failed).endswith("placed: h2 chosen of h2, h3 (fewest warnings)")
    report = msgspec.structs.replace(sample(PreflightReport), placement=chosen)
    text = rendered(report_table(report))
    assert "placement: h2 chosen" in text and "no bridge br-vm on h3" in text
    assert "3.0 GiB" in text
    none = msgspec.structs.replace(report, placement=msgspec.structs.replace(chosen, chosen=None))
    assert "no host passes every check" in rendered(report_table(none))
