"""What every Baton daemon (agent, coordinator) does the same way: reach NATS patiently and run
until SIGTERM or SIGINT asks it to stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

import nats
import nats.errors
import structlog

from baton.mesh.access import NatsAccess

log = structlog.get_logger(__name__)
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0


async def connect_nats(access: NatsAccess, name: str) -> nats.NATS:
    """Connect, retrying with backoff: a daemon may start before the NATS server does.

    Once connected, nats-py reconnects by itself forever (``max_reconnect_attempts=-1``).
    A key the server refuses is retried too (the server's config may be on its way), each
    refusal logged; a missing or unreadable key file fails at once (``BatonError``).
    """
    options = access.connect_options()
    delay = BACKOFF_FIRST_S

    async def on_error(exc: Exception) -> None:
        # Permission violations do not close the connection: log them, they mean a wrong role.
        log.warning("nats_error", error=str(exc) or type(exc).__name__)

    while True:
        nc = nats.NATS()
        try:
            await nc.connect(access.servers, name=name, max_reconnect_attempts=-1,
                             reconnect_time_wait=1, connect_timeout=2, error_cb=on_error,
                             **options)
            return nc
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            await close_quietly(nc)  # do not leak a half-open (TLS) transport per attempt
            log.warning("nats_connect_failed", url=access.url,
                        error=str(exc) or type(exc).__name__, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


async def close_quietly(nc: nats.NATS, within_s: float = 1.0) -> None:
    """Close a client whose connect failed. nats-py's close can wait forever on a connection
    that never finished its handshake (a refused TLS certificate), hence the bound."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(within_s):
            await nc.close()


def run_until_signalled(serve: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``serve(stop)`` on a fresh event loop; SIGTERM/SIGINT set ``stop``. Exit code 0."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)
        return 0

    return asyncio.run(main())


async def announce_ready(nc: nats.NATS) -> None:
    """Return once the server has every subscription this client made so far.

    One ``flush()`` is not enough with nats-py 2.16: it writes its PING straight to the socket
    while SUB commands may still wait in the client's pending buffer, so the PONG can come back
    before the server has seen them (clients then get 'no responders' from a service that
    claims to be up). The first flush wakes the flusher; the second PING follows the SUBs.
    """
    await nc.flush()
    await nc.flush()
