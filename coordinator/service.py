"""The coordinator's NATS micro service: public endpoint subjects wired to :class:`Coordinator`.

Discoverable as ``baton-coordinator`` through ``$SRV.PING|INFO|STATS``. Every endpoint is served
by :func:`baton.mesh.rpc.typed_handler` (decode → domain call → encode; typed errors become error
replies), each request in its own task of the caller's TaskGroup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.micro import ServiceConfig, add_service
from nats.micro.service import EndpointConfig, Service

from baton.coordinator.core import Coordinator
from baton.mesh.rpc import typed_handler
from baton.schemas import PROTOCOL_VERSION
from baton.schemas.migration import (
    AbortRequest,
    BandwidthRequest,
    CheckRequest,
    DrainRequest,
    JobsRequest,
    MigrateRequest,
)
from baton.schemas.storage import StorageMoveRequest
from baton.schemas.subjects import COORDINATOR_SERVICE, CoordinatorEndpoint, Subjects


async def start_service(nc: NATS, subjects: Subjects, coordinator: Coordinator,
                        tasks: asyncio.TaskGroup) -> Service:
    service = await add_service(nc, ServiceConfig(
        name=COORDINATOR_SERVICE, version=PROTOCOL_VERSION,
        description="Baton coordinator: pre-flight checks, live migrations between hosts and "
        "disk moves between storage pools",
        metadata={"prefix": subjects.prefix}))
    # Each route pairs a request type with its handler; the pairing is checked by tests, not mypy.
    routes: tuple[tuple[CoordinatorEndpoint, type[Any], Callable[[Any], Awaitable[Any]]], ...] = (
        (CoordinatorEndpoint.MIGRATE, MigrateRequest, coordinator.migrate),
        (CoordinatorEndpoint.CHECK, CheckRequest, coordinator.check),
        (CoordinatorEndpoint.ABORT, AbortRequest, coordinator.abort),
        (CoordinatorEndpoint.BANDWIDTH, BandwidthRequest, coordinator.bandwidth),
        (CoordinatorEndpoint.JOBS, JobsRequest, coordinator.jobs),
        (CoordinatorEndpoint.STORAGE_MOVE, StorageMoveRequest, coordinator.move_storage),
        (CoordinatorEndpoint.DRAIN, DrainRequest, coordinator.drain),
    )
    for endpoint, request_type, handle in routes:
        await service.add_endpoint(EndpointConfig(
            name=endpoint.value.replace(".", "-"), subject=subjects.coordinator(endpoint),
            handler=typed_handler(request_type, handle, tasks, endpoint=endpoint.value)))
    return service
