"""KvStore.load (coordinator/store.py) does not take an empty key listing for an empty bucket
when the bucket's stream holds messages: it reads again. A stand-in for nats-py's KeyValue."""

from __future__ import annotations

from types import SimpleNamespace

import nats.errors
import pytest
from nats.js.errors import NoKeysError

from baton.coordinator import store as store_module
from baton.coordinator.store import KvStore
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode
from tests.unit.test_job_runner import record


class FlakyListing:
    """keys() says "no keys" ``misses`` times, then lists the one record it holds."""

    def __init__(self, misses: int) -> None:
        self.misses = misses

    async def keys(self) -> list[str]:
        if self.misses:
            self.misses -= 1
            raise NoKeysError()
        return ["m1"]

    async def get(self, key: str) -> SimpleNamespace:
        return SimpleNamespace(value=encode(record()), revision=7)


async def holds(count: int):
    async def messages() -> int:
        return count
    return messages


async def test_an_empty_listing_of_a_bucket_that_holds_records_is_read_again(monkeypatch):
    monkeypatch.setattr(store_module, "WRITE_RETRY_S", 0.01)
    loaded = await KvStore(FlakyListing(misses=2), await holds(1)).load()  # type: ignore[arg-type]
    assert ["m1"] == [r.migration_id for r in loaded]


async def test_an_empty_bucket_loads_as_no_records():
    assert [] == await KvStore(FlakyListing(misses=99), await holds(0)).load()  # type: ignore[arg-type]


class Unanswered:
    """A bucket whose stream has no leader: every listing goes unanswered."""

    async def keys(self) -> list[str]:
        raise nats.errors.TimeoutError()


async def test_records_unreadable_past_the_wait_are_unavailable_and_say_why(monkeypatch):
    monkeypatch.setattr(store_module, "WRITE_RETRY_S", 0.001)
    monkeypatch.setattr(store_module, "WRITE_WAIT_S", 0.05)
    with pytest.raises(BatonError) as caught:
        await KvStore(Unanswered()).load()  # type: ignore[arg-type]
    assert (ErrorCode.UNAVAILABLE, "the records could not be read: JetStream did not answer "
            "within 0.05 s (TimeoutError)") == (caught.value.code, caught.value.message)
