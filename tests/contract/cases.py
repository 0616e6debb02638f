"""One contract case: a request (or a few) sent to an implementation, and the answer expected.

The expected answer is what the real agent answers; every other implementation must answer the
same. An :class:`Answer` is the reply's message type, or for a refusal ``ErrorReply`` with its
error code and the NATS micro error header, plus the facts of a reply a case names (projected so
that they do not depend on where an implementation keeps its files).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from baton.mesh.rpc import MICRO_STATUS
from baton.schemas.agent import (
    AgentStatus,
    CpuBaselineReply,
    CpuCompareReply,
    DomainsReply,
    HostCaps,
    StorageProbeReply,
)
from baton.schemas.codec import decode_any, encode
from baton.schemas.errors import ErrorCode, ErrorReply
from baton.schemas.migration import Ack, CleanupReply, MigrationStatus, PrepareReply, StartReply
from baton.schemas.storage import AgentStorageMoveReply
from baton.schemas.subjects import AgentEndpoint, Subjects
from tests.contract.implementations import Implementation

S = Subjects()
REQUEST_TIMEOUT_S = 5.0
AnyReply = (HostCaps | CpuCompareReply | CpuBaselineReply | StorageProbeReply | DomainsReply | AgentStatus
            | PrepareReply | StartReply | Ack | CleanupReply | MigrationStatus | AgentStorageMoveReply
            | ErrorReply)
Request = Callable[[Implementation], Any]  # a request message, or a raw body (bytes)


@dataclass(frozen=True)
class Answer:
    reply: str  # the reply's message type; ErrorReply for a refusal
    code: ErrorCode | None = None
    micro_status: str | None = None  # the Nats-Service-Error-Code header
    facts: Any = None


def replies(reply_type: type[Any], facts: Any = None) -> Answer:
    return Answer(reply_type.__name__, facts=facts)


def refuses(code: ErrorCode) -> Answer:
    return Answer(ErrorReply.__name__, code, MICRO_STATUS[code])


@dataclass(frozen=True)
class Case:
    id: str
    endpoint: AgentEndpoint
    request: Request
    expected: Answer
    facts: Callable[[Any], Any] | None = None  # what of a reply every implementation agrees on
    arrange: Callable[[Implementation], None] | None = None  # files put on the host first
    before: tuple[tuple[AgentEndpoint, Request], ...] = ()  # requests sent first
    canned: bool = False  # the request alone decides the answer: the canned agent serves it too


async def ask(implementation: Implementation, endpoint: AgentEndpoint, request: Any) -> Msg:
    body = request if isinstance(request, bytes) else encode(request)
    return await implementation.nc.request(S.agent(implementation.host, endpoint), body,
                                           timeout=REQUEST_TIMEOUT_S)


async def answer(implementation: Implementation, case: Case) -> Answer:
    if case.arrange is not None:
        case.arrange(implementation)
    for endpoint, request in case.before:
        await ask(implementation, endpoint, request(implementation))
    msg = await ask(implementation, case.endpoint, case.request(implementation))
    return answer_of(msg, case.facts)


def answer_of(msg: Msg, facts: Callable[[Any], Any] | None = None) -> Answer:
    reply = decode_any(msg.data, AnyReply)
    status = (msg.headers or {}).get("Nats-Service-Error-Code")
    if isinstance(reply, ErrorReply):
        return Answer(ErrorReply.__name__, reply.code, status)
    return Answer(type(reply).__name__, None, status, None if facts is None else facts(reply))


def basenames(paths: list[str]) -> list[str]:
    return [os.path.basename(p) for p in paths]
