"""KvStore.put (coordinator/store.py) against a stand-in for nats-py's KeyValue whose writes fail
as a JetStream without a stream leader fails them: an unanswered write is tried again until
WRITE_WAIT_S; a conflict after such a retry is the earlier write having landed only when the
bucket holds exactly this record; any other conflict, or a bucket that cannot be read, is
another writer's."""

from __future__ import annotations

from types import SimpleNamespace

import nats.errors
import pytest
from nats.js.errors import KeyWrongLastSequenceError, NoStreamResponseError, ServiceUnavailableError

from baton.coordinator import store as store_module
from baton.coordinator.store import KvStore
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode
from tests.unit.test_job_runner import record

RECORD = record()
VALUE = encode(RECORD)


class ScriptedKv:
    """create/update answer with the next outcome of ``script``: "ok" stores the value and
    returns its revision; "lost" stores it too but the answer is lost (a timeout); "timeout",
    "503" and "no-stream" store nothing; "conflict" says another revision is there."""

    def __init__(self, *script: str, held: bytes | None = None, unreadable: bool = False) -> None:
        self.script = list(script)
        self.held, self.revision, self.unreadable = held, 0, unreadable
        self.writes: list[tuple[str, int | None]] = []  # ("create" | "update", last)
        self.reads = 0

    async def create(self, key: str, value: bytes) -> int:
        assert "m1" == key, key
        self.writes.append(("create", None))
        return self._answer(value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        assert "m1" == key, key
        self.writes.append(("update", last))
        return self._answer(value)

    def _answer(self, value: bytes) -> int:
        outcome = self.script.pop(0)
        if outcome in ("ok", "lost"):
            self.held, self.revision = value, self.revision + 1
        if outcome == "ok":
            return self.revision
        raise {"lost": nats.errors.TimeoutError(), "timeout": nats.errors.TimeoutError(),
               "503": ServiceUnavailableError(code=503), "no-stream": NoStreamResponseError(),
               "conflict": KeyWrongLastSequenceError()}[outcome]

    async def get(self, key: str) -> SimpleNamespace:
        assert "m1" == key, key
        self.reads += 1
        if self.unreadable:
            raise nats.errors.TimeoutError()
        return SimpleNamespace(value=self.held, revision=self.revision)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(store_module, "WRITE_RETRY_S", 0.001)


async def put(kv: ScriptedKv) -> KvStore:
    store = KvStore(kv)  # type: ignore[arg-type]
    await store.put(RECORD)
    return store


async def test_writes_no_leader_answered_are_tried_again_until_one_is_stored():
    kv = ScriptedKv("timeout", "503", "no-stream", "ok")
    store = await put(kv)
    assert ([("create", None)] * 4, VALUE) == (kv.writes, kv.held)
    kv.script = ["ok"]  # and the next write builds on the revision that was stored
    await store.put(RECORD)
    assert ("update", 1) == kv.writes[-1]


async def test_a_write_unanswered_past_the_wait_is_unavailable_and_says_why(monkeypatch):
    monkeypatch.setattr(store_module, "WRITE_WAIT_S", 0.05)
    kv = ScriptedKv(*["timeout"] * 10_000)
    with pytest.raises(BatonError) as caught:
        await put(kv)
    assert ErrorCode.UNAVAILABLE == caught.value.code
    assert "not stored: JetStream did not answer within 0.05 s (TimeoutError)" in str(caught.value)
    assert 1 < len(kv.writes) < 10_000  # tried again, and then gave up


async def test_a_write_whose_answer_was_lost_is_found_landed_and_not_taken_for_a_conflict():
    kv = ScriptedKv("lost", "conflict")
    store = await put(kv)
    assert (1, 1) == (kv.reads, kv.revision)
    kv.script = ["ok"]
    await store.put(RECORD)
    assert ("update", 1) == kv.writes[-1]  # the landed revision is the one built on


async def test_a_conflict_on_the_first_try_is_another_writers_even_if_it_wrote_the_same():
    kv = ScriptedKv("conflict", held=VALUE)
    with pytest.raises(BatonError) as caught:
        await put(kv)
    assert (ErrorCode.CONFLICT, 0) == (caught.value.code, kv.reads)
    assert "the stored record of m1 was changed by another writer" in str(caught.value)


async def test_a_conflict_after_a_retry_is_another_writers_when_the_bucket_holds_other_bytes():
    kv = ScriptedKv("timeout", "conflict", held=b"another coordinator's record")
    with pytest.raises(BatonError) as caught:
        await put(kv)
    assert (ErrorCode.CONFLICT, 1) == (caught.value.code, kv.reads)


async def test_a_conflict_after_a_retry_stays_a_conflict_when_the_bucket_cannot_be_read():
    kv = ScriptedKv("lost", "conflict", unreadable=True)
    with pytest.raises(BatonError) as caught:
        await put(kv)
    assert (ErrorCode.CONFLICT, 1) == (caught.value.code, kv.reads)
