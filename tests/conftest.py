"""Fixtures shared by every suite: a real nats-server per test and a client connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client

from tests.support.natsserver import NatsServer


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A fresh nats-server on 127.0.0.1 and a free port; ``.url`` is its client URL."""
    with NatsServer() as server:
        yield server


@pytest.fixture
async def nats_client(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A nats-py client connected to ``nats_server``, drained at teardown."""
    nc = await nats.connect(nats_server.url, name="baton-test", max_reconnect_attempts=1)
    yield nc
    if not nc.is_closed:
        await nc.drain()
