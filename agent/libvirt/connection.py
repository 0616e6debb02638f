"""One self-healing libvirt connection, and the threads every libvirt call runs on.

Threading contract:
- libvirt's default event implementation is registered once per process, before the first
  connection, and ``virEventRunDefaultImpl`` runs forever on one daemon thread (libvirt offers no
  way to interrupt it; it dies with the process). Event callbacks run on that thread and only hand
  a finished message to the asyncio loop with ``call_soon_threadsafe`` (:mod:`.events`).
- Every blocking API call runs in a worker thread through :meth:`Connection.call`, with a
  deadline, so a wedged libvirtd costs a ``timeout`` reply, never a frozen loop. A call that lasts
  as long as a migration runs through :meth:`Connection.start_long`, on a pool of its own.

Connection contract: :meth:`Connection.run` keeps one connection open with keepalive (5 s x 3) and
a close callback; when the connection drops it reconnects with capped exponential backoff and
registers the event callbacks again. While it is down, calls fail fast with ``unavailable``.

Error contract: a ``libvirtError`` leaves this package only as a :class:`BatonError`, through
:func:`translate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import libvirt
import structlog

from baton.schemas.errors import BatonError, ErrorCode

T = TypeVar("T")
log = structlog.get_logger(__name__)

# Subscribes the event callbacks on a fresh connection; returns the ids to deregister them by.
Register = Callable[[libvirt.virConnect, asyncio.AbstractEventLoop], list[int]]

CALL_TIMEOUT_S = 30.0
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_NETWORK,
}
_CONNECTION_LOST = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_SYSTEM_ERROR,
}

_event_impl_lock = threading.Lock()
_event_impl_started = False


def start_event_loop_thread() -> None:
    """Register libvirt's event implementation and run it on a thread (once per process)."""
    global _event_impl_started
    with _event_impl_lock:
        if _event_impl_started:
            return
        # libvirt-python prints every error to stderr even when caught; errors reach us as
        # exceptions, so the default handler only adds noise.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _event_impl_started = True


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def translate(exc: libvirt.libvirtError, what: str) -> BatonError:
    """A libvirt error as a wire-safe error, keeping libvirt's own message for people."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code in _NOT_FOUND:
        return BatonError(ErrorCode.NOT_FOUND, message)
    if code == libvirt.VIR_ERR_NO_SUPPORT:
        return BatonError(ErrorCode.UNSUPPORTED, f"{what}: {message}")
    if code in _CONNECTION_LOST:
        return BatonError(ErrorCode.UNAVAILABLE, f"{what}: libvirt connection failed: {message}")
    return BatonError(ErrorCode.HYPERVISOR, f"{what}: {message}")


class Connection:
    """The libvirt connection of one host, kept open for as long as :meth:`run` runs.

    ``register`` subscribes the event callbacks on each new connection; ``on_connect`` runs on
    the loop each time a new connection is in place (to drop what was cached for the old one).
    """

    def __init__(self, uri: str, register: Register, on_connect: Callable[[], None]) -> None:
        self._uri = uri
        self._register = register
        self._on_connect = on_connect
        self._conn: libvirt.virConnect | None = None
        self._connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Migrations block a thread for their whole duration: keep them off the default pool
        # that short calls share.
        self._long_calls = ThreadPoolExecutor(max_workers=8, thread_name_prefix="libvirt-long")

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def current(self) -> libvirt.virConnect | None:
        """The live connection, or None while it is down."""
        return self._conn

    async def wait_connected(self, within_s: float) -> bool:
        try:
            async with asyncio.timeout(within_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    # --- keeping it open ----------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()  # callbacks on libvirt's thread hand events here
        start_event_loop_thread()
        delay = BACKOFF_FIRST_S
        while True:
            closed = asyncio.Event()
            try:
                conn, callback_ids = await asyncio.to_thread(self._open, closed)
            except libvirt.libvirtError as exc:
                log.warning("libvirt_connect_failed", uri=self._uri, error=exc.get_error_message(),
                            retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            delay = BACKOFF_FIRST_S
            await self._serve(conn, callback_ids, closed)

    async def _serve(self, conn: libvirt.virConnect, callback_ids: list[int],
                     closed: asyncio.Event) -> None:
        self._conn = conn
        self._on_connect()
        self._connected.set()
        log.info("libvirt_connected", uri=self._uri)
        try:
            await closed.wait()
            log.warning("libvirt_connection_lost", uri=self._uri)
        finally:
            self._conn = None
            self._connected.clear()
            await asyncio.shield(asyncio.to_thread(_close_quietly, conn, callback_ids))

    def _open(self, closed: asyncio.Event) -> tuple[libvirt.virConnect, list[int]]:
        loop = self._loop
        assert loop is not None, "run() sets the loop before opening"
        conn = libvirt.open(self._uri)
        # Local drivers (test://, qemu:///) have neither keepalive nor a close callback: only
        # remote connections can drop under us.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(lambda *_: loop.call_soon_threadsafe(closed.set), None)
        return conn, self._register(conn, loop)

    # --- calls --------------------------------------------------------------------------------

    async def call(self, what: str, fn: Callable[[libvirt.virConnect], T],
                   deadline_s: float = CALL_TIMEOUT_S) -> T:
        """``fn(conn)`` in a worker thread; libvirt errors and the deadline as BatonErrors."""
        conn = self.require()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that races with the result, leaving a cancelled poller running forever.
            async with asyncio.timeout(deadline_s):
                return await asyncio.to_thread(fn, conn)
        except libvirt.libvirtError as exc:
            raise translate(exc, what) from None
        except TimeoutError:
            raise BatonError(ErrorCode.TIMEOUT,
                             f"{what}: libvirt did not answer within {deadline_s:.0f} s") from None

    def start_long(self, fn: Callable[[libvirt.virConnect], T]) -> asyncio.Future[T]:
        """``fn(conn)`` on the long-call pool, with no deadline; the caller translates errors."""
        conn = self.require()
        return asyncio.get_running_loop().run_in_executor(self._long_calls, fn, conn)

    def require(self) -> libvirt.virConnect:
        if self._conn is None:
            raise BatonError(ErrorCode.UNAVAILABLE,
                             f"libvirt at {self._uri} is not connected; the agent keeps reconnecting")
        return self._conn


def _close_quietly(conn: libvirt.virConnect, callback_ids: list[int]) -> None:
    # Each step may fail because the connection is already gone; the next ones still run.
    for callback_id in callback_ids:
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callback_id)
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
