"""Where job records are kept: a JetStream key-value bucket, so they outlive the coordinator.

Every phase change is written here before its event goes out (``PhaseTracker``), as a
compare-and-set on the revision this coordinator last wrote: a second writer of the same record
(another coordinator) is noticed, never silently overwritten. On start the coordinator reads the
bucket back, so ``baton jobs`` lists what ran before a restart. :class:`MemoryStore` keeps them
in this process only (``--store memory``: tests, or a NATS without JetStream).
"""

from __future__ import annotations

from typing import Protocol

import msgspec
import structlog
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from baton.schemas.codec import encode
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import MigrationRecord
from baton.schemas.storage import StorageMoveRecord
from baton.schemas.subjects import JOBS_BUCKET

log = structlog.get_logger(__name__)
JobRecord = MigrationRecord | StorageMoveRecord
_decoder = msgspec.json.Decoder(JobRecord)


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


class KvStore:
    """The jobs bucket (``baton-jobs``; created if missing; per job id, the latest record)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._revisions: dict[str, int] = {}  # job id -> revision this coordinator last wrote

    @classmethod
    async def open(cls, nc: Client, bucket: str = JOBS_BUCKET, replicas: int = 1) -> KvStore:
        js = nc.jetstream()
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(bucket=bucket, history=1, replicas=replicas,
                                           description="Baton's migration and disk-move records")
        return cls(kv)

    async def put(self, record: JobRecord) -> None:
        key, value = record.migration_id, encode(record)
        last = self._revisions.get(key)
        try:
            if last is None:
                revision = await self._kv.create(key, value)
            else:
                revision = await self._kv.update(key, value, last=last)
        except KeyWrongLastSequenceError:
            raise BatonError(ErrorCode.CONFLICT, f"the stored record of {key} was changed by "
                             "another writer; this coordinator no longer owns it") from None
        self._revisions[key] = revision

    async def load(self) -> list[JobRecord]:
        try:
            keys = await self._kv.keys()
        except NoKeysError:
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
