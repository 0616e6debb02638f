"""Serving typed requests on NATS micro endpoints: decode -> domain call -> encode.

One wrapper for every endpoint of every Baton service. A :class:`BatonError` becomes an error
reply with its code; anything unexpected is logged with an error id and answered ``internal``
with that id — never a traceback or ``repr(exc)``. Each request is served in its own task of the
service's TaskGroup, so one slow request never holds up the subscription behind it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from nats.micro.request import Request

from baton.schemas.codec import decode_request, encode
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply

Req = TypeVar("Req")
log = structlog.get_logger(__name__)

# The NATS micro protocol carries an error code in a header; it expects HTTP-like numbers.
MICRO_STATUS = {
    ErrorCode.BAD_REQUEST: "400",
    ErrorCode.NOT_FOUND: "404",
    ErrorCode.CONFLICT: "409",
    ErrorCode.PRECONDITION_FAILED: "412",
    ErrorCode.INTERNAL: "500",
    ErrorCode.UNSUPPORTED: "501",
    ErrorCode.HYPERVISOR: "502",
    ErrorCode.UNAVAILABLE: "503",
    ErrorCode.TIMEOUT: "504",
}


def typed_handler(
    request_type: type[Req],
    handle: Callable[[Req], Awaitable[Any]],
    tasks: asyncio.TaskGroup,
    inline: bool = False,
) -> Callable[[Request], Awaitable[None]]:
    """A micro endpoint handler that serves ``handle`` in a task of ``tasks``.

    ``inline`` serves in the subscription's own callback instead, saving a task and an event-loop
    turn per request; only for handlers that answer from memory (they must never wait long).
    """

    async def on_request(request: Request) -> None:
        if inline:
            await serve(request, request_type, handle)
        else:
            tasks.create_task(serve(request, request_type, handle))

    return on_request


async def serve(request: Request, request_type: type[Req],
                handle: Callable[[Req], Awaitable[Any]]) -> None:
    try:
        reply = await handle(decode_request(request.data, request_type))
    except BatonError as exc:
        await respond_error(request, exc.to_reply())
        return
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception("request_failed", subject=request.subject, error_id=error_id)
        await respond_error(request, ErrorReply(
            code=ErrorCode.INTERNAL, error_id=error_id,
            message=f"internal error (id {error_id}); the service logs say more"))
        return
    await _respond(request, encode(reply))


async def respond_error(request: Request, reply: ErrorReply) -> None:
    headers = {"Nats-Service-Error": reply.message,
               "Nats-Service-Error-Code": MICRO_STATUS[reply.code]}
    await _respond(request, encode(reply), headers)


async def _respond(request: Request, body: bytes, headers: dict[str, str] | None = None) -> None:
    try:
        await request.respond(body, headers=headers)
    except ValueError:  # a plain publish (no reply subject) asked nothing: nobody to answer
        log.info("request_without_reply_subject", subject=request.subject)
