"""JSON encoding and typed decoding of wire messages.

Requests are decoded with a Decoder built once per type; any decode or validation failure turns
into a :class:`BatonError` with code ``bad_request`` and msgspec's message (which names the
offending field, never Python internals). Replies decode as ``T | ErrorReply``; an error reply is
raised as :class:`BatonError`.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar, cast

import msgspec

from baton.schemas.errors import BatonError, ErrorCode, ErrorReply

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


@functools.cache
def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(type_)


@functools.cache
def _reply_decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    # Keyed on the reply type itself: building ``type_ | ErrorReply`` on every reply costs more
    # than the decode of a small one.
    return msgspec.json.Decoder(type_ | ErrorReply)


def decode_request(data: bytes, type_: type[T]) -> T:
    """Decode a request body; an empty body means 'all defaults'."""
    try:
        # Type objects are hashable; mypy cannot prove it of an unbounded ``type[T]``.
        type_key: Any = type_
        return cast(T, _decoder(type_key).decode(data or b"{}"))
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise BatonError(ErrorCode.BAD_REQUEST, f"invalid request: {exc}") from None


def decode_reply(data: bytes, type_: type[T]) -> T:
    """Decode a reply; raise the peer's typed error, or ``bad_request`` on a malformed reply."""
    try:
        type_key: Any = type_  # hashable, as in decode_request
        reply = _reply_decoder(type_key).decode(data)
    except msgspec.DecodeError as exc:
        raise BatonError(ErrorCode.INTERNAL, f"malformed reply from peer: {exc}") from None
    if isinstance(reply, ErrorReply):
        raise BatonError.from_reply(reply)
    return cast(T, reply)


def decode_any(data: bytes, type_: Any) -> Any:
    """Decode into any type expression (a union of tagged messages, for instance)."""
    return _decoder(type_).decode(data)
