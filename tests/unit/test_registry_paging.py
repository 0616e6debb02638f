"""The registry's pages: newest first, cut by count and by encoded bytes, and a page boundary that
stays put while jobs are added and old ones forgotten."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec

from baton.coordinator.registry import JobRecord, Registry
from baton.schemas.codec import encode
from baton.schemas.migration import MigrationRecord
from tests.support.samples import sample


@dataclass
class _Job:
    record: JobRecord
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def request_abort(self, reason: str) -> None: ...

    async def set_bandwidth(self, mib_s: int) -> JobRecord:
        return self.record


def _job(name: str, finished: bool = True) -> _Job:
    job = _Job(msgspec.structs.replace(sample(MigrationRecord), migration_id=name, vm=name))
    if finished:
        job.done.set()
    return job


def _ids(records: list[JobRecord]) -> list[str]:
    return [r.migration_id for r in records]


def _filled(count: int, keep: int = 100) -> Registry:
    registry = Registry(keep=keep)
    for number in range(count):
        registry.add(_job(f"j{number}"))
    return registry


def test_pages_run_newest_first_and_the_last_has_no_cursor() -> None:
    registry = _filled(5)
    first, below = registry.page(None, 2, 1 << 20)
    second, below2 = registry.page(below, 2, 1 << 20)
    third, below3 = registry.page(below2, 2, 1 << 20)
    assert (["j4", "j3"], ["j2", "j1"], ["j0"], None) == (_ids(first), _ids(second), _ids(third), below3)


def test_a_page_that_ends_exactly_at_the_oldest_has_no_cursor() -> None:
    records, below = _filled(2).page(None, 2, 1 << 20)
    assert (["j1", "j0"], None) == (_ids(records), below)


def test_a_page_stops_before_its_records_pass_the_byte_budget() -> None:
    registry = _filled(5)
    one = len(encode(registry.records("j4")[0]))
    records, below = registry.page(None, 5, one * 2 + one // 2)
    assert (["j4", "j3"], True) == (_ids(records), below is not None)


def test_a_record_larger_than_the_budget_still_makes_a_page_of_one() -> None:
    records, below = _filled(3).page(None, 5, 10)
    assert (["j2"], True) == (_ids(records), below is not None)


def test_new_and_forgotten_jobs_do_not_move_a_page_boundary() -> None:
    registry = _filled(4, keep=4)
    first, below = registry.page(None, 2, 1 << 20)
    registry.add(_job("new1"))  # keep=4: j0 is forgotten
    registry.add(_job("new2"))  # and j1
    rest, end = registry.page(below, 2, 1 << 20)
    assert (["j3", "j2"], [], None) == (_ids(first), _ids(rest), end)


def test_active_only_pages_skip_finished_jobs() -> None:
    registry = _filled(3)
    registry.add(_job("running", finished=False))
    assert ["running"] == _ids(registry.page(None, 5, 1 << 20, active_only=True)[0])
