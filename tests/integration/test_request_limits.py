"""Oversized requests (``schemas/limits.py``) to a real agent and the real coordinator: refused with
``bad_request`` naming the field and the limit, before any work, and the service keeps serving."""

from __future__ import annotations

import msgspec
import pytest

from baton.schemas.agent import HostCaps, StorageProbeReply
from baton.schemas.codec import decode_any, encode
from baton.schemas.errors import ErrorCode, ErrorReply
from baton.schemas.migration import CleanupRequest, JobsReply, JobsRequest
from baton.schemas.subjects import AgentEndpoint, CoordinatorEndpoint, Subjects

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)
S = Subjects()


async def _ask(nc, subject: str, body: bytes, reply_type) -> object:
    msg = await nc.request(subject, body, timeout=15)
    return decode_any(msg.data, reply_type | ErrorReply)


def _refused(reply: object, words: str) -> bool:
    return isinstance(reply, ErrorReply) and ErrorCode.BAD_REQUEST == reply.code and words in reply.message


async def test_thousands_of_probe_paths_are_refused_and_the_agent_keeps_serving(
    two_agents, nats_client, tmp_path
):
    paths = [str(tmp_path / "shared" / f"disk-{i:05d}.qcow2") for i in range(5000)]
    subject = S.agent("h1", AgentEndpoint.STORAGE_PROBE)
    reply = await _ask(nats_client, subject, msgspec.json.encode({"paths": paths}), StorageProbeReply)
    assert _refused(reply, "Expected `array` of length <= 256 - at `$.paths`"), reply
    normal = await _ask(nats_client, subject, msgspec.json.encode({"paths": paths[:3]}), StorageProbeReply)
    assert [False] * 3 == [p.exists for p in normal.paths]
    assert "h1" == (await _ask(nats_client, S.agent("h1", AgentEndpoint.CAPS), b"", HostCaps)).host_id


async def test_an_oversized_cleanup_list_is_refused_before_anything_is_deleted(
    two_agents, nats_client, tmp_path
):
    victim = tmp_path / "keep.qcow2"
    victim.write_bytes(b"data")
    body = encode(CleanupRequest(migration_id="m1", vm="vm1", delete_paths=[str(victim)] * 1000))
    reply = await _ask(nats_client, S.agent("h1", AgentEndpoint.MIGRATION_CLEANUP), body, ErrorReply)
    assert _refused(reply, "length <= 64 - at `$.delete_paths`"), reply
    assert victim.exists()
    assert "h1" == (await _ask(nats_client, S.agent("h1", AgentEndpoint.CAPS), b"", HostCaps)).host_id


@pytest.mark.parametrize(
    ("endpoint", "body", "words"),
    [
        (
            CoordinatorEndpoint.MIGRATE,
            {"vm": "v" * 100_000, "destination": "h2"},
            "length <= 255 - at `$.vm`",
        ),
        (
            CoordinatorEndpoint.STORAGE_MOVE,
            {"vm": "vm1", "destination_pool": "p" * 5000},
            "length <= 255 - at `$.destination_pool`",
        ),
        (CoordinatorEndpoint.JOBS, {"limit": 100_000}, "<= 200 - at `$.limit`"),
        (CoordinatorEndpoint.JOBS, {"cursor": "9" * 1000}, "length <= 64 - at `$.cursor`"),
    ],
)
async def test_an_oversized_request_to_the_coordinator_is_refused_and_it_keeps_serving(
    coordinator, mesh, nats_client, endpoint, body, words
):
    reply = await _ask(nats_client, S.coordinator(endpoint), msgspec.json.encode(body), JobsReply)
    assert _refused(reply, words), reply
    jobs = await _ask(nats_client, S.coordinator(CoordinatorEndpoint.JOBS), encode(JobsRequest()), JobsReply)
    assert isinstance(jobs, JobsReply)
