"""Serving typed requests on NATS micro endpoints: decode -> domain call -> encode.

One wrapper for every endpoint of every Baton service. A :class:`BatonError` becomes an error
reply with its code; anything unexpected is logged with an error id and answered ``internal``
with that id — never a traceback or ``repr(exc)``. Each request is served in its own task of the
service's TaskGroup, so one slow request never holds up the subscription behind it. A reply
that cannot be sent (too large for NATS, connection gone) is logged or answered with a typed
error, never raised into that TaskGroup.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
import structlog
from nats.micro.request import Request

from baton.mesh import metrics
from baton.schemas.codec import decode_request, encode
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply

Req = TypeVar("Req")
log = structlog.get_logger(__name__)

HEADER_TEXT_MAX = 1024  # error text in a header: enough to read, never a payload of its own
# The NATS micro protocol carries an error code in a header; it expects HTTP-like numbers.
MICRO_STATUS = {
    ErrorCode.BAD_REQUEST: "400",
    ErrorCode.FORBIDDEN: "403",
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
    endpoint: str = "",
) -> Callable[[Request], Awaitable[None]]:
    """A micro endpoint handler that serves ``handle`` in a task of ``tasks``.

    ``inline`` serves in the subscription's own callback instead, saving a task and an event-loop
    turn per request; only for handlers that answer from memory (they must never wait long).
    """

    async def on_request(request: Request) -> None:
        if inline:
            await serve(request, request_type, handle, endpoint)
        else:
            tasks.create_task(serve(request, request_type, handle, endpoint))

    return on_request


async def serve(request: Request, request_type: type[Req],
                handle: Callable[[Req], Awaitable[Any]], endpoint: str = "") -> None:
    started = time.monotonic()
    outcome = "ok"
    try:
        reply = await handle(decode_request(request.data, request_type))
    except BatonError as exc:
        outcome = str(exc.code)
        await respond_error(request, exc.to_reply())
        return
    except Exception:
        outcome = str(ErrorCode.INTERNAL)
        error_id = uuid.uuid4().hex[:12]
        log.exception("request_failed", subject=request.subject, error_id=error_id)
        await respond_error(request, ErrorReply(
            code=ErrorCode.INTERNAL, error_id=error_id,
            message=f"internal error (id {error_id}); the service logs say more"))
        return
    finally:
        name = endpoint or request.subject
        metrics.REQUESTS.labels(name, outcome).inc()
        metrics.REQUEST_SECONDS.labels(name).observe(time.monotonic() - started)
    await _respond(request, encode(reply))


async def respond_error(request: Request, reply: ErrorReply) -> None:
    await _respond(request, encode(reply), error_headers(reply))


def error_headers(reply: ErrorReply) -> dict[str, str]:
    """The micro error headers; a header is one line, so the message is flattened there (the JSON
    body keeps it whole)."""
    return {"Nats-Service-Error": " ".join(reply.message.split())[:HEADER_TEXT_MAX],
            # .get: a code without a number must not fail the reply (and the service with it)
            "Nats-Service-Error-Code": MICRO_STATUS.get(reply.code, "500")}


async def _respond(request: Request, body: bytes, headers: dict[str, str] | None = None) -> None:
    """Send one reply. Whatever goes wrong here is logged, never raised: a reply that cannot be
    sent must not end the task group that serves every other request."""
    try:
        await request.respond(body, headers=headers)
    except ValueError:  # a plain publish (no reply subject) asked nothing: nobody to answer
        log.info("request_without_reply_subject", subject=request.subject)
    except nats.errors.MaxPayloadError:
        log.warning("reply_too_large", subject=request.subject, size_bytes=len(body))
        too_large = ErrorReply(code=ErrorCode.BAD_REQUEST, message=(
            f"the reply would be {len(body)} bytes, over the NATS server's maximum payload; "
            "ask for fewer items"))
        await _respond(request, encode(too_large), error_headers(too_large))
    except Exception:
        log.exception("reply_failed", subject=request.subject)
