"""tests.support.natsserver: a real server on a free port, ready when started, reaped when stopped."""

from __future__ import annotations

import nats
import pytest

from tests.support.natsserver import NatsServer, NatsServerError


async def test_a_started_server_accepts_clients_on_the_requested_address() -> None:
    with NatsServer(host="127.0.0.1") as server:
        assert server.url.startswith("nats://127.0.0.1:")
        nc = await nats.connect(server.url)
        await nc.close()


def test_stopping_reaps_the_process_and_removes_the_scratch_directory() -> None:
    server = NatsServer().start()
    process, workdir = server._process, server.workdir
    assert process is not None and workdir is not None and workdir.exists()
    server.stop()
    assert process.returncode is not None
    assert not workdir.exists()


def test_two_servers_get_different_ports() -> None:
    with NatsServer() as first, NatsServer() as second:
        assert first.url != second.url


def test_a_server_that_cannot_start_raises_with_its_output_and_leaks_nothing() -> None:
    server = NatsServer(extra_args=["--no-such-flag"])
    with pytest.raises(NatsServerError, match="exited with"):
        server.start()
    assert (None, None) == (server._process, server.workdir)


async def test_jetstream_can_be_enabled() -> None:
    with NatsServer(jetstream=True) as server:
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().account_info()
        finally:
            await nc.close()
        assert 0 == info.streams
