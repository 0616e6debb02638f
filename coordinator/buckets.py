"""Binding the coordinator's KV buckets (records, leadership lease), on one NATS server or a cluster.

A bucket is bound if it exists, created with the asked replicas if not. On a cluster, a bucket made
with fewer replicas than asked (it was made on one node, before the cluster grew) is scaled up:
JetStream copies it to the new peers itself. A bucket's TTL (the lease's) is set to the one asked.
A JetStream that is still electing its leaders (a cluster whose nodes have just started) answers
"temporarily unavailable" or not at all for a few seconds; binding waits for it, up to
``within_s``, instead of failing the coordinator's start.
(A request the role may not make also goes unanswered: that costs the same wait, then the error.)
"""

from __future__ import annotations

import asyncio
import dataclasses

import nats.errors
import structlog
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, NoStreamResponseError, ServiceUnavailableError
from nats.js.kv import KeyValue

log = structlog.get_logger(__name__)
WAIT_S = 30.0
RETRY_S = 0.5
# What a request to a stream that has no leader right now gets (a cluster node died, or the
# stream was just made): no answer in time, a 503, or no stream response. Waited out, not failed.
UNANSWERED = (NoStreamResponseError, ServiceUnavailableError, nats.errors.TimeoutError)
# Binding also waits for a cluster whose JetStream has not formed yet: no responders at all.
_NOT_READY = (*UNANSWERED, nats.errors.NoRespondersError)


async def open_bucket(nc: Client, config: KeyValueConfig, within_s: float = WAIT_S) -> KeyValue:
    """The bucket ``config.bucket``: bound, created, or scaled up to ``config.replicas``."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            return await _bind_or_create(nc, config)
        except _NOT_READY as exc:
            if not _server_has_jetstream(nc) or asyncio.get_running_loop().time() >= deadline:
                raise
            log.info("jetstream_not_ready", bucket=config.bucket, error=type(exc).__name__,
                     retry_in_s=RETRY_S)
            await asyncio.sleep(RETRY_S)


async def _bind_or_create(nc: Client, config: KeyValueConfig) -> KeyValue:
    js = nc.jetstream()
    try:
        kv = await js.key_value(config.bucket)
    except BucketNotFoundError:
        return await js.create_key_value(config)
    stream = f"KV_{config.bucket}"
    info = await js.stream_info(stream)
    have, kept_s = info.config.num_replicas or 1, info.config.max_age
    wanted = dataclasses.replace(info.config, num_replicas=max(have, config.replicas),
                                 max_age=config.ttl if config.ttl is not None else kept_s)
    if wanted != info.config:
        await js.update_stream(wanted)
        log.info("bucket_updated", bucket=config.bucket, replicas=wanted.num_replicas,
                 previous_replicas=have, max_age_s=wanted.max_age, previous_max_age_s=kept_s)
    return kv


def _server_has_jetstream(nc: Client) -> bool:
    """What the server said in its INFO: a server started without JetStream will not get it by
    waiting, so the caller hears so at once (measured: the refusal took the whole 30 s wait when
    this read a missing key as "yes"). nats-py keeps INFO in a private attribute; if that ever
    goes, this answers True and the wait is only longer."""
    info = getattr(nc, "_server_info", None)
    if not info:
        return True
    return bool(info.get("jetstream"))  # absent when the server runs without JetStream
