"""Leadership: one coordinator serves at a time, a standby takes over when it dies.

The lease is the key ``leader`` in a JetStream KV bucket (``<prefix>-leader``) whose entries
expire after :data:`TTL_S` (the bucket's max age). A coordinator becomes the leader by creating
the key (a create fails while it exists), then renews it every :data:`RENEW_S` with an update on
the revision it last wrote. A standby tries to create it every :data:`RETRY_S`: once the leader
stops renewing (killed, cut off) the entry expires and the standby gets in, within
``TTL_S + RETRY_S``; a leader that stops cleanly deletes the key, so its standby starts at once.

A renewal that fails (another coordinator wrote the key, or NATS was away past the TTL) means the
lease may belong to someone else now: :meth:`Lease.keep` returns and the coordinator stops before
it could act beside a new leader. The records' compare-and-set (coordinator/store.py) catches a
late write of the old leader all the same. One exception, proven rather than assumed: when the
entry expired but the bucket's stream holds no write since this holder's last one, nobody took
the lease in between, and the holder takes it again.

On a NATS cluster (``--kv-replicas`` > 1) the lease lasts :data:`CLUSTER_TTL_S`: when a node dies,
the streams it led elect a new leader in 4 to 9 s (nats-server's raft election timeout), and no
renewal lands meanwhile. A 6 s lease would cost the coordinator its leadership at every such
election; 12 s outlasts it, at the price of a standby taking over in up to 13 s instead of 7.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import (
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from baton.coordinator.buckets import UNANSWERED, open_bucket

log = structlog.get_logger(__name__)
KEY = "leader"
TTL_S = 6.0
CLUSTER_TTL_S = 12.0
RENEW_S = 2.0
RETRY_S = 1.0


class Lease:
    def __init__(self, kv: KeyValue, holder: str | None = None, ttl_s: float = TTL_S,
                 stream_last_seq: Callable[[], Awaitable[int]] | None = None) -> None:
        self._kv = kv
        self._ttl_s = ttl_s
        self._stream_last_seq = stream_last_seq  # the bucket's newest write, for reclaiming
        self.holder = holder or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._revision: int | None = None
        self._renewed_at = time.monotonic()
        self.lost = False  # set by whoever saw keep() return: the lease is not ours to release

    @classmethod
    async def open(cls, nc: Client, bucket: str, holder: str | None = None,
                   ttl_s: float = TTL_S, replicas: int = 1) -> Lease:
        kv = await open_bucket(nc, KeyValueConfig(
            bucket=bucket, history=1, ttl=ttl_s, replicas=replicas,
            description="which Baton coordinator leads (a lease renewed every few seconds)"))

        async def stream_last_seq() -> int:
            return int((await nc.jetstream().stream_info(f"KV_{bucket}")).state.last_seq)
        return cls(kv, holder, ttl_s, stream_last_seq)

    async def try_acquire(self) -> bool:
        """Become the leader if nobody holds the lease now."""
        try:
            self._revision = await self._kv.create(KEY, self.holder.encode())
        except KeyWrongLastSequenceError:
            return False
        self._renewed_at = time.monotonic()
        return True

    async def leader(self) -> str | None:
        """Who holds the lease now (None: nobody)."""
        with contextlib.suppress(Exception):
            entry = await self._kv.get(KEY)
            return entry.value.decode() if entry.value else None
        return None

    async def acquire(self) -> None:
        """Wait until this coordinator holds the lease."""
        waiting_logged = False
        while not await self._try_acquire_quietly():
            if not waiting_logged:
                log.info("coordinator_standby", leader=await self.leader(), holder=self.holder)
                waiting_logged = True
            await asyncio.sleep(RETRY_S)
        log.info("coordinator_leads", holder=self.holder)

    async def _try_acquire_quietly(self) -> bool:
        """try_acquire, with a JetStream briefly unanswering (a cluster electing a stream leader
        after a node died) counted as "not yet", not as a reason for the standby to die."""
        try:
            return await self.try_acquire()
        except UNANSWERED as exc:
            log.warning("lease_not_acquired", error=type(exc).__name__)
            return False

    async def renew(self) -> bool:
        """Renew the lease; False when it may belong to someone else now: another holder wrote
        it, or no renewal made it for TTL_S (the entry may have expired meanwhile)."""
        try:
            self._revision = await self._kv.update(KEY, self.holder.encode(), last=self._revision)
        except KeyWrongLastSequenceError:
            return await self._reclaim_if_untouched()
        except Exception as exc:  # NATS away for a moment: the next renewal may still make it
            log.warning("lease_not_renewed", error=str(exc) or type(exc).__name__)
            return time.monotonic() - self._renewed_at < self._ttl_s
        self._renewed_at = time.monotonic()
        return True

    async def _reclaim_if_untouched(self) -> bool:
        """After a renewal found the key changed: take the lease again only if the stream's newest
        write is still this holder's (the entry expired, nobody wrote since); else it is lost."""
        if self._stream_last_seq is None:
            return False
        try:
            if await self._stream_last_seq() != self._revision:
                return False  # someone wrote the key after us: theirs now
            self._revision = await self._kv.create(KEY, self.holder.encode())
        except Exception as exc:  # a create that lost a race, or NATS away: not ours
            log.warning("lease_not_reclaimed", error=str(exc) or type(exc).__name__)
            return False
        self._renewed_at = time.monotonic()
        log.warning("lease_reclaimed", holder=self.holder,
                    why="it expired while NATS could not take renewals; nobody took it since")
        return True

    async def keep(self) -> None:
        """Renew until the lease is lost (then return: the caller stops) or the task is cancelled."""
        while True:
            await asyncio.sleep(RENEW_S)
            if not await self.renew():
                log.error("lease_lost", holder=self.holder)
                return

    async def release(self) -> None:
        """Give the lease up at once (a clean stop): a standby need not wait for the TTL."""
        with contextlib.suppress(Exception):
            await self._kv.delete(KEY, last=self._revision)
