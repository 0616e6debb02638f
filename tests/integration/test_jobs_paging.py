"""``baton.coordinator.jobs`` in pages: a coordinator keeping 2,000 job records answers every page
under the NATS max payload, the cursor walks each record exactly once, old clients get the first
page, and ``baton jobs`` still lists them all, oldest first."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec
import pytest
import structlog
from click.testing import CliRunner

from baton.cli.main import cli
from baton.cli.migrate import register
from baton.coordinator.core import Coordinator
from baton.coordinator.registry import JobRecord, Registry
from baton.schemas import limits
from baton.schemas.codec import decode_any, decode_reply, encode
from baton.schemas.errors import ErrorCode, ErrorReply
from baton.schemas.migration import JobsReply, JobsRequest, MigrationRecord, Phase
from baton.schemas.storage import StorageMoveRecord
from baton.schemas.subjects import CoordinatorEndpoint, Subjects
from tests.support.samples import sample

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)
S = Subjects()
KEPT = 2000
# ~5 KiB a record: 200 of them (one full page) would pass 1 MiB, so the byte budget must cut.
LONG_ERROR = "libvirt said no " * 320

if "jobs" not in cli.commands:  # baton.cli.main.main registers the commands at run time
    register(cli)


@dataclass
class Finished:
    """A job that ended: what the registry needs of a runner."""

    record: JobRecord
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.done.set()

    def request_abort(self, reason: str) -> None:
        raise AssertionError("a finished job is never aborted")

    async def set_bandwidth(self, mib_s: int) -> JobRecord:
        raise AssertionError("a finished job has no bandwidth")


def _record(number: int) -> JobRecord:
    error = ErrorReply(code=ErrorCode.HYPERVISOR, message=LONG_ERROR)
    changes = {
        "migration_id": f"job-{number:04d}",
        "vm": f"vm{number}",
        "phase": Phase.FAILED,
        "error": error,
    }
    kind = StorageMoveRecord if number % 4 == 0 else MigrationRecord
    return msgspec.structs.replace(sample(kind), **changes)


@pytest.fixture
def kept(coordinator: Coordinator) -> list[str]:
    """2,000 finished jobs in the coordinator's registry, oldest first; their ids."""
    coordinator.registry = Registry(keep=KEPT)
    for number in range(KEPT):
        coordinator.registry.add(Finished(_record(number)))
    return [f"job-{number:04d}" for number in range(KEPT)]


@pytest.fixture(autouse=True)
def logs_beside_the_cli_output() -> Iterator[None]:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.__stderr__))
    yield
    structlog.reset_defaults()


async def _page(nc, body: bytes) -> tuple[JobsReply, int]:
    msg = await nc.request(S.coordinator(CoordinatorEndpoint.JOBS), body, timeout=15)
    return decode_reply(msg.data, JobsReply), len(msg.data)


def _ids(reply: JobsReply) -> list[str]:
    return sorted(
        (r.migration_id for r in [*reply.migrations, *reply.storage_moves]), reverse=True
    )  # newest first, as the page lists them


@pytest.mark.parametrize("limit", [limits.JOBS_PAGE_MAX, 37])
async def test_walking_the_cursor_returns_every_record_once_each_page_under_max_payload(
    kept, nats_client, limit
):
    walked: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        reply, size = await _page(nats_client, encode(JobsRequest(limit=limit, cursor=cursor)))
        walked += _ids(reply)
        sizes.append(size)
        cursor = reply.next_cursor
        if cursor is None:
            break
    assert list(reversed(kept)) == walked  # each once, newest first
    assert max(sizes) < nats_client.max_payload


async def test_a_full_page_of_large_records_is_cut_by_bytes_not_by_count(kept, nats_client):
    reply, size = await _page(nats_client, encode(JobsRequest(limit=limits.JOBS_PAGE_MAX)))
    assert 0 < len(_ids(reply)) < limits.JOBS_PAGE_MAX
    assert size <= limits.JOBS_PAGE_MAX_BYTES + 1024 and reply.next_cursor is not None


async def test_a_request_without_paging_fields_gets_the_first_page_and_a_cursor(kept, nats_client):
    reply, _ = await _page(nats_client, b"")
    assert list(reversed(kept))[: limits.JOBS_PAGE_DEFAULT] == _ids(reply)
    assert reply.next_cursor is not None


async def test_a_cursor_that_no_reply_handed_out_is_a_bad_request(coordinator, nats_client):
    msg = await nats_client.request(
        S.coordinator(CoordinatorEndpoint.JOBS), encode(JobsRequest(cursor="job-0001")), timeout=15
    )
    error = decode_any(msg.data, ErrorReply)
    assert (ErrorCode.BAD_REQUEST, True) == (error.code, "cursor" in error.message)


async def test_baton_jobs_fetches_every_page_and_lists_oldest_first(nats_server, kept):
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["jobs", "-o", "json", "--nats", nats_server.url]
    )
    assert 0 == result.exit_code, (result.output, result.exception)
    records = json.loads(result.stdout)
    migrations = [i for i in kept if int(i[4:]) % 4]
    moves = [i for i in kept if int(i[4:]) % 4 == 0]
    assert (0, migrations + moves) == (result.exit_code, [r["migration_id"] for r in records])


async def test_baton_jobs_limit_lists_only_the_newest(nats_server, kept):
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["jobs", "--limit", "5", "-o", "json", "--nats", nats_server.url]
    )
    listed = {r["migration_id"] for r in json.loads(result.stdout)}
    assert (0, set(kept[-5:])) == (result.exit_code, listed)
