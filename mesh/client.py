"""The client side of NATS for every process: connect, typed request/reply, agent discovery.

Error contract: every failure leaves here as :class:`schemas.errors.BatonError` with a code callers
can act on — ``unavailable`` (NATS unreachable or the connection dropped), ``not_found`` (nobody
subscribes to the subject: the agent is not running), ``timeout`` (a subscriber did not answer in
time), ``forbidden`` (the server refused this client's key, or its role the subject), the
agent's own code when it answered with an ``ErrorReply``, and ``internal`` for a reply that does
not decode. Every request takes an explicit timeout (see ``schemas/timeouts.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import weakref
from collections.abc import Iterator
from typing import Any, TypeVar

import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import ERROR_HEADER

from baton.mesh.access import NatsAccess
from baton.mesh.daemon import close_quietly
from baton.schemas import codec, timeouts
from baton.schemas.agent import AgentStatus, StatusRequest
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.subjects import (
    AGENT_SERVICE,
    DEFAULT_PREFIX,
    AgentEndpoint,
    Subjects,
    micro_discovery,
)

T = TypeVar("T")

# Seconds to open the TCP connection and finish the NATS handshake.
CONNECT_TIMEOUT_S = 2.0
# The server's status reply when a request has no subscriber (nats-py keeps these private).
_STATUS_HEADER = "Status"
_NO_RESPONDERS = "503"
# Agent INFO metadata keys (set by the agent's nats.micro service).
META_HOST_ID = "host_id"
META_LIBVIRT_VERSION = "libvirt_version"
META_HYPERVISOR_VERSION = "hypervisor_version"
META_CPU_MODEL = "cpu_model"
META_LIBVIRT_HOST_UUID = "libvirt_host_uuid"  # the host libvirt runs on (capabilities XML)


class NoResponders(BatonError):
    """Nobody subscribes to the subject (``not_found``): the addressed agent is not running."""

    def __init__(self, subject: str) -> None:
        super().__init__(ErrorCode.NOT_FOUND, f"no responders on {subject}", subject=subject)
        self.subject = subject


class NoReply(BatonError):
    """A subscriber exists but did not answer within the deadline (``timeout``)."""

    def __init__(self, subject: str, timeout_s: float) -> None:
        message = f"no reply on {subject} within {timeout_s:g} s"
        super().__init__(ErrorCode.TIMEOUT, message, subject=subject)
        self.subject = subject


async def connect(access: NatsAccess | str, *, name: str = "baton",
                  timeout_s: float = CONNECT_TIMEOUT_S) -> Client:
    """Connect (two quick tries per server URL); ``unavailable`` names the cause. A dropped
    connection is tried again once on each server, then closed: a CLI follows a migration across
    the loss of one cluster node, and never hangs on a dead NATS.

    A refused key or a failed TLS handshake is ``forbidden`` / ``unavailable`` with the server's
    words. Requests on this connection that the server denies fail at once with ``forbidden``
    (see :func:`request`), not after their time-out.
    """
    if isinstance(access, str):
        access = NatsAccess(url=access)
    options = access.connect_options()
    causes: list[BaseException] = []
    denials = _Denials()

    async def remember(exc: Exception) -> None:
        # Replaces nats-py's default, which logs a traceback per failed attempt.
        if not denials.note(exc):
            causes.append(exc)

    nc = Client()
    try:
        servers = access.servers
        # Two tries per server, each bounded by connect_timeout. allow_reconnect is what makes
        # nats-py move on to a cluster's next node when the one it picked is down (without it,
        # the first failure ends the connect); it gives up once every server had its tries.
        async with asyncio.timeout(timeout_s * 2 * len(servers) + 1):
            # nats-py annotates both durations as int but waits on them as float seconds.
            await nc.connect(
                servers, name=name, connect_timeout=timeout_s,  # type: ignore[arg-type]
                allow_reconnect=True, max_reconnect_attempts=1,
                reconnect_time_wait=0.1,  # type: ignore[arg-type]
                error_cb=remember, **options,
            )  # fmt: skip
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        cause = causes[-1] if causes else exc
        await close_quietly(nc)  # a refused TLS session would otherwise leak its transport
        # A refusal is what matters, even when the tries after it only saw a broken pipe.
        if any("authorization violation" in _describe(c).lower() for c in [*causes, exc]):
            raise BatonError(ErrorCode.FORBIDDEN,
                             f"NATS at {access.url} refused this client: authorization violation "
                             "(set --nats-nkey / BATON_NATS_NKEY to a key the server knows)") from None
        raise BatonError(ErrorCode.UNAVAILABLE,
                         f"cannot reach NATS at {access.url}: {_describe(cause)}") from None
    _DENIALS[nc] = denials
    return nc


class _Denials:
    """Permission violations the server reported on one connection, by subject."""

    _VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"',
                            re.IGNORECASE)

    def __init__(self) -> None:
        self.waiters: dict[str, list[asyncio.Future[str]]] = {}

    def note(self, exc: BaseException) -> bool:
        """Wake whoever waits on the denied subject; False when ``exc`` is no denial."""
        found = self._VIOLATION.search(str(exc))
        if found is None:
            return False
        for waiter in self.waiters.pop(found.group(2).lower(), []):
            if not waiter.done():
                waiter.set_result(found.group(0))
        return True

    @contextlib.contextmanager
    def watching(self, subject: str) -> Iterator[asyncio.Future[str]]:
        subject = subject.lower()  # nats-py lowers the whole error text, subject included
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(subject, []).append(waiter)
        try:
            yield waiter
        finally:
            waiter.cancel()
            if waiter in self.waiters.get(subject, []):
                self.waiters[subject].remove(waiter)
                if not self.waiters[subject]:
                    del self.waiters[subject]


_DENIALS: weakref.WeakKeyDictionary[Client, _Denials] = weakref.WeakKeyDictionary()


class Forbidden(BatonError):
    """The server refused this client's role the subject (``forbidden``)."""

    def __init__(self, subject: str, violation: str) -> None:
        super().__init__(ErrorCode.FORBIDDEN,
                         f"NATS denied this client {subject}: {violation} (its role may not "
                         "call this; see the roles in the README)", subject=subject)


async def request(nc: Client, subject: str, message: Any, reply_type: type[T], timeout_s: float) -> T:
    """Send ``message`` to ``subject`` and decode the reply as ``reply_type`` (or raise)."""
    try:
        reply = await _request_unless_denied(nc, subject, codec.encode(message), timeout_s)
    except nats.errors.NoRespondersError:
        raise NoResponders(subject) from None
    except nats.errors.TimeoutError:
        raise NoReply(subject, timeout_s) from None
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
        raise BatonError(ErrorCode.UNAVAILABLE, f"NATS connection lost: {_describe(exc)}") from None
    _raise_service_error(reply)
    return codec.decode_reply(reply.data, reply_type)


async def _request_unless_denied(nc: Client, subject: str, body: bytes, timeout_s: float) -> Msg:
    denials = _DENIALS.get(nc)
    if denials is None:  # a connection made elsewhere: no error callback of ours
        return await nc.request(subject, body, timeout=timeout_s)
    with denials.watching(subject) as denied:
        asking = asyncio.ensure_future(nc.request(subject, body, timeout=timeout_s))
        await asyncio.wait((asking, denied), return_when=asyncio.FIRST_COMPLETED)
        if asking.done():
            return asking.result()
        asking.cancel()
        with contextlib.suppress(BaseException):
            await asking
        raise Forbidden(subject, denied.result())


def _raise_service_error(reply: Msg) -> None:
    """A nats.micro error reply with an empty body (our agents send an ErrorReply body instead)."""
    headers = reply.headers or {}
    if ERROR_HEADER in headers and not reply.data:
        raise BatonError(ErrorCode.INTERNAL, f"service error: {headers[ERROR_HEADER]}")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# --- discovery --------------------------------------------------------------------------------


class _EndpointInfo(msgspec.Struct):
    subject: str
    name: str = ""


class _ServiceInfo(msgspec.Struct):
    """The parts of a nats.micro ``$SRV.INFO`` reply Baton reads; unknown fields are ignored."""

    id: str
    name: str
    version: str
    metadata: dict[str, str] | None = None
    endpoints: list[_EndpointInfo] | None = None


class AgentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One live agent as discovery saw it; ``status`` is None when the status request failed."""

    host_id: str
    service_id: str
    protocol_version: str  # the micro service version is Baton's protocol version
    cpu_model: str | None = None
    libvirt_version: str | None = None
    hypervisor_version: str | None = None
    libvirt_host_uuid: str | None = None
    status: AgentStatus | None = None
    status_error: str | None = None


async def discover_agents(
    nc: Client,
    *,
    prefix: str = DEFAULT_PREFIX,
    quiet: float = timeouts.DISCOVERY_QUIET,
    limit: float = timeouts.DISCOVERY_MAX,
) -> list[AgentInfo]:
    """Agents answering ``$SRV.INFO.baton-agent`` under ``prefix``, sorted by host id.

    Collects INFO replies until ``quiet`` seconds pass without one or ``limit`` seconds in all.
    Replies that are malformed, lack a valid ``host_id`` or serve another prefix are skipped.
    """
    raw = await _gather_replies(nc, micro_discovery("INFO", AGENT_SERVICE), quiet, limit)
    agents = {info.id: agent for info in _decode_infos(raw) if (agent := _agent(info, prefix))}
    return sorted(agents.values(), key=lambda agent: (agent.host_id, agent.service_id))


async def _gather_replies(nc: Client, subject: str, quiet: float, limit: float) -> list[bytes]:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, b"", reply=inbox)
        return await _collect(sub, quiet, limit)
    finally:
        await sub.unsubscribe()


async def _collect(sub: Any, quiet: float, limit: float) -> list[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    bodies: list[bytes] = []
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await sub.next_msg(timeout=min(quiet, left))
        except nats.errors.TimeoutError:
            break
        if _is_no_responders(msg):
            break  # the server says nobody subscribes: no agent at all, stop waiting
        bodies.append(msg.data)
    return bodies


def _is_no_responders(msg: Msg) -> bool:
    return not msg.data and (msg.headers or {}).get(_STATUS_HEADER) == _NO_RESPONDERS


def _decode_infos(bodies: list[bytes]) -> list[_ServiceInfo]:
    infos = []
    for body in bodies:
        try:
            infos.append(msgspec.json.decode(body, type=_ServiceInfo))
        except msgspec.DecodeError:
            continue  # one broken service must not hide the others
    return infos


def _agent(info: _ServiceInfo, prefix: str) -> AgentInfo | None:
    meta = info.metadata or {}
    host_id = meta.get(META_HOST_ID, "")
    if not _serves_prefix(info, host_id, prefix):
        return None
    return AgentInfo(
        host_id=host_id,
        service_id=info.id,
        protocol_version=info.version,
        cpu_model=meta.get(META_CPU_MODEL),
        libvirt_version=meta.get(META_LIBVIRT_VERSION),
        hypervisor_version=meta.get(META_HYPERVISOR_VERSION),
        libvirt_host_uuid=meta.get(META_LIBVIRT_HOST_UUID),
    )


def _serves_prefix(info: _ServiceInfo, host_id: str, prefix: str) -> bool:
    """True when the agent's status endpoint lives under ``prefix`` (several Batons, one NATS)."""
    try:
        status_subject = Subjects(prefix).agent(host_id, AgentEndpoint.STATUS)
    except ValueError:
        return False  # missing or invalid host id: nothing can be addressed to it
    return any(endpoint.subject == status_subject for endpoint in info.endpoints or [])


async def with_status(nc: Client, agents: list[AgentInfo], prefix: str) -> list[AgentInfo]:
    """Ask every agent's ``status`` endpoint concurrently; failures land in ``status_error``."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_with_status(nc, agent, Subjects(prefix))) for agent in agents]
    return [task.result() for task in tasks]


async def _with_status(nc: Client, agent: AgentInfo, subjects: Subjects) -> AgentInfo:
    subject = subjects.agent(agent.host_id, AgentEndpoint.STATUS)
    try:
        status = await request(nc, subject, StatusRequest(), AgentStatus, timeouts.AGENT_STATUS)
    except BatonError as exc:
        return msgspec.structs.replace(agent, status_error=str(exc))
    return msgspec.structs.replace(agent, status=status)
