"""A VM given no destination: the real coordinator over NATS checks every other host and picks
the best that passes (scripted fake agents: h2 is a good destination, h3 lacks the bridge)."""

from __future__ import annotations

import msgspec
import pytest

from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.migration import (
    CheckRequest,
    MigrateAccepted,
    MigrateRequest,
    Phase,
    PreflightReport,
)
from baton.schemas.subjects import CoordinatorEndpoint as C
from baton.schemas.subjects import Subjects
from tests.integration.coordinator_fixtures import ask, touched
from tests.integration.fake_agents import domain

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)
S = Subjects()


async def test_check_without_a_destination_ranks_every_other_host(coordinator, nats_client):
    report = await ask(nats_client, C.CHECK, CheckRequest(vm="vm1"), PreflightReport)
    assert isinstance(report, PreflightReport), report
    placement = report.placement
    assert (True, "h2", "h2") == (report.ok, report.destination, placement.chosen)
    assert [("h2", True, 1), ("h3", False, 2)] == [
        (c.host, c.ok, c.rank) for c in placement.candidates]
    assert "network" in placement.candidates[1].reason  # h3 lacks the bridge br0
    assert placement.candidates[0].memory_left_bytes == 7 * 1024**3  # 8 GiB free, 1 GiB VM


async def test_migrate_without_a_destination_moves_to_the_host_that_passes(
        coordinator, mesh, watcher, nats_client):
    accepted = await ask(nats_client, C.MIGRATE, MigrateRequest(vm="vm1"), MigrateAccepted)
    assert isinstance(accepted, MigrateAccepted), accepted
    record = await watcher.final(accepted.migration_id)
    assert (Phase.SUCCEEDED, "h2", "h2") == (record.phase, accepted.destination,
                                             record.destination)
    assert ("h2", ["h2", "h3"]) == (record.placement.chosen,
                                    [c.host for c in record.placement.candidates])
    assert "vm1" in mesh["h2"].domains and "vm1" not in mesh["h1"].domains


async def test_a_host_with_more_memory_left_wins_among_hosts_that_pass(
        coordinator, mesh, nats_client):
    caps = mesh["h3"].caps_reply
    mesh["h3"].caps_reply = msgspec.structs.replace(caps, bridges=mesh["h2"].caps_reply.bridges,
                                                    memory=msgspec.structs.replace(
                                                        caps.memory, available_bytes=12 * 1024**3))
    report = await ask(nats_client, C.CHECK, CheckRequest(vm="vm1"), PreflightReport)
    assert ["h3", "h2"] == [c.host for c in report.placement.candidates if c.ok]


async def test_no_host_passes_so_the_migration_is_refused_before_anything_is_touched(
        coordinator, mesh, nats_client):
    mesh["h1"].domains["vm1"] = domain("vm1", memory_gib=64)  # more than any host has free
    refused = await ask(nats_client, C.MIGRATE, MigrateRequest(vm="vm1"), MigrateAccepted)
    assert isinstance(refused, ErrorReply), refused
    assert ErrorCode.PRECONDITION_FAILED == refused.code
    assert "no host can take vm1" in refused.message
    assert "h2: pre-flight failed — memory" in refused.message and "h3:" in refused.message
    report = await ask(nats_client, C.CHECK, CheckRequest(vm="vm1"), PreflightReport)
    assert (False, None) == (report.ok, report.placement.chosen)
    assert [] == touched(mesh) and "vm1" in mesh["h1"].domains


async def test_an_unreachable_host_is_a_failing_candidate_not_an_error(
        coordinator, mesh, nats_client):
    mesh["h3"].caps_error = BatonError(ErrorCode.HYPERVISOR, "cannot reach libvirt")
    report = await ask(nats_client, C.CHECK, CheckRequest(vm="vm1"), PreflightReport)
    assert isinstance(report, PreflightReport), report
    assert ("h2", False) == (report.placement.chosen, report.placement.candidates[1].ok)
    assert report.placement.candidates[1].reason.startswith("not checked:")
