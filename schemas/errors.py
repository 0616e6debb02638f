"""Error codes and the typed error reply every endpoint may answer with."""

from __future__ import annotations

from enum import StrEnum

from baton.schemas.base import Message


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"  # malformed JSON, wrong types, failed validation
    # Refused: NATS denied this client's role the subject, or an agent refuses a harmful act
    # (a file it did not create, a domain it does not own for that migration).
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"  # unknown VM, host, pool, path or migration id
    CONFLICT = "conflict"  # the target state is taken (VM already migrating, already defined)
    PRECONDITION_FAILED = "precondition_failed"  # a pre-flight check failed; nothing was touched
    UNAVAILABLE = "unavailable"  # a dependency is down (libvirt connection lost, host unreachable)
    TIMEOUT = "timeout"  # a peer did not answer within its deadline
    UNSUPPORTED = "unsupported"  # the hypervisor or this host cannot do what was asked
    HYPERVISOR = "hypervisor"  # libvirt refused or failed an operation; message carries its text
    INTERNAL = "internal"  # a bug; the reply carries an error id to find it in the logs


class ErrorReply(Message, frozen=True, kw_only=True, tag="error"):
    """Answer to a request that could not be served. ``message`` is for a person."""

    code: ErrorCode
    message: str
    error_id: str | None = None  # set for ``internal``: the id logged with the traceback
    details: dict[str, str] = {}


class BatonError(Exception):
    """A failure with a code that is safe to send over the wire."""

    def __init__(self, code: ErrorCode, message: str, error_id: str | None = None,
                 **details: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.error_id = error_id
        self.details = details

    def to_reply(self) -> ErrorReply:
        return ErrorReply(code=self.code, message=self.message, error_id=self.error_id,
                          details=self.details)

    @classmethod
    def from_reply(cls, reply: ErrorReply) -> BatonError:
        return cls(reply.code, reply.message, reply.error_id, **reply.details)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
