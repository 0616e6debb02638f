"""Where job records are kept: a JetStream key-value bucket, so they outlive the coordinator.

Every phase change is written here before its event goes out (``PhaseTracker``), as a
compare-and-set on the revision this coordinator last wrote: a second writer of the same record
(another coordinator) is noticed, never silently overwritten. On start the coordinator reads the
bucket back, so ``baton jobs`` lists what ran before a restart. :class:`MemoryStore` keeps them
in this process only (``--store memory``: tests, or a NATS without JetStream).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec
import structlog
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from baton.coordinator.buckets import UNANSWERED, open_bucket
from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import MigrationRecord
from baton.schemas.storage import StorageMoveRecord
from baton.schemas.subjects import JOBS_BUCKET

log = structlog.get_logger(__name__)
JobRecord = MigrationRecord | StorageMoveRecord
_decoder = msgspec.json.Decoder(JobRecord)
WRITE_WAIT_S = 15.0
WRITE_RETRY_S = 0.5


class JobStore(Protocol):
    async def put(self, record: JobRecord) -> None: ...

    async def load(self) -> list[JobRecord]: ...


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[str, JobRecord] = {}

    async def put(self, record: JobRecord) -> None:
        self.records[record.migration_id] = record

    async def load(self) -> list[JobRecord]:
        return list(self.records.values())


class KeysMissed(Exception):
    """The key listing came back empty from a bucket whose stream holds messages: read again."""


class KvStore:
    """The jobs bucket (``baton-jobs``; created if missing; per job id, the latest record)."""

    def __init__(self, kv: KeyValue,
                 stream_messages: Callable[[], Awaitable[int]] | None = None) -> None:
        self._kv = kv
        self._stream_messages = stream_messages  # how many messages the bucket's stream holds
        self._revisions: dict[str, int] = {}  # job id -> revision this coordinator last wrote

    @classmethod
    async def open(cls, nc: Client, bucket: str = JOBS_BUCKET, replicas: int = 1) -> KvStore:
        kv = await open_bucket(nc, KeyValueConfig(
            bucket=bucket, history=1, replicas=replicas,
            description="Baton's migration and disk-move records"))
        js = nc.jetstream()

        async def stream_messages() -> int:
            info = await js.stream_info(f"KV_{bucket}")
            return info.state.messages

        # without the count, an empty key listing would be taken for an empty bucket
        return cls(kv, stream_messages)

    async def put(self, record: JobRecord) -> None:
        """Write ``record`` on the revision this coordinator last wrote (CONFLICT if another
        writer came between). A JetStream briefly without a stream leader (a cluster node just
        died) is waited for up to :data:`WRITE_WAIT_S`, then ``unavailable``."""
        key, value = record.migration_id, encode(record)
        loop = asyncio.get_running_loop()
        deadline, retried = loop.time() + WRITE_WAIT_S, False
        while True:
            try:
                revision = await self._write(key, value)
                break
            except KeyWrongLastSequenceError:
                # A write that timed out may have landed all the same: then this is it.
                landed = await self._landed(key, value) if retried else None
                if landed is not None:
                    revision = landed
                    break
                raise BatonError(ErrorCode.CONFLICT, f"the stored record of {key} was changed by "
                                 "another writer; this coordinator no longer owns it") from None
            except UNANSWERED as exc:
                if loop.time() >= deadline:
                    raise BatonError(ErrorCode.UNAVAILABLE, f"the record of {key} was not "
                                     f"stored: JetStream did not answer within {WRITE_WAIT_S:g} s "
                                     f"({type(exc).__name__})") from None
                retried = True
                log.warning("record_write_retried", key=key, error=type(exc).__name__)
                await asyncio.sleep(WRITE_RETRY_S)
        self._revisions[key] = revision

    async def _write(self, key: str, value: bytes) -> int:
        last = self._revisions.get(key)
        if last is None:
            return await self._kv.create(key, value)
        return await self._kv.update(key, value, last=last)

    async def _landed(self, key: str, value: bytes) -> int | None:
        """The revision of ``key`` if it holds exactly ``value`` now, else None."""
        try:
            entry = await self._kv.get(key)
        except Exception:  # cannot tell: a conflict it stays
            return None
        return entry.revision if entry.value == value else None

    async def load(self) -> list[JobRecord]:
        """Every record in the bucket; a stream electing its leader is waited for, as in put."""
        deadline = asyncio.get_running_loop().time() + WRITE_WAIT_S
        while True:
            try:
                return await self._load_once()
            except (*UNANSWERED, KeysMissed) as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise BatonError(ErrorCode.UNAVAILABLE, "the records could not be read: "
                                     f"JetStream did not answer within {WRITE_WAIT_S:g} s "
                                     f"({type(exc).__name__})") from None
                log.warning("records_read_retried", error=type(exc).__name__)
                await asyncio.sleep(WRITE_RETRY_S)

    async def _load_once(self) -> list[JobRecord]:
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            # Seen once in a CI rehearsal: a restarted coordinator listed no key of a bucket
            # holding 32 records, and so settled none of them. The stream's count decides.
            if self._stream_messages is not None and await self._stream_messages() > 0:
                raise KeysMissed() from None
            return []
        records = []
        for key in keys:
            entry = await self._kv.get(key)
            if entry.value is None:
                continue
            try:
                records.append(_decoder.decode(entry.value))
            except msgspec.ValidationError as exc:  # a record from another version: skip it
                log.warning("stored_record_unreadable", key=key, error=str(exc))
                continue
            self._revisions[key] = entry.revision or 0
        return records
