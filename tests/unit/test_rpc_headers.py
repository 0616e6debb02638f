"""The micro error headers a Baton service sends with every error reply."""

from __future__ import annotations

from baton.mesh.rpc import HEADER_TEXT_MAX, error_headers
from baton.schemas.errors import ErrorCode, ErrorReply


def test_a_multi_line_error_message_is_one_line_in_the_header():
    reply = ErrorReply(code=ErrorCode.HYPERVISOR, message="qemu-img failed:\nline two\r\n  three")
    assert {"Nats-Service-Error": "qemu-img failed: line two three",
            "Nats-Service-Error-Code": "502"} == error_headers(reply)


def test_a_long_error_message_is_cut_in_the_header_only():
    reply = ErrorReply(code=ErrorCode.BAD_REQUEST, message="x" * 5000)
    assert HEADER_TEXT_MAX == len(error_headers(reply)["Nats-Service-Error"])
    assert 5000 == len(reply.message)


def test_every_error_code_has_its_own_micro_status_number():
    """A code missing from the table once raised KeyError inside the error reply and took the
    agent's whole TaskGroup down; each code now maps to a distinct HTTP-like number."""
    statuses = {code: error_headers(ErrorReply(code=code, message="m"))["Nats-Service-Error-Code"]
                for code in ErrorCode}
    assert len(set(statuses.values())) == len(list(ErrorCode))
    assert "403" == statuses[ErrorCode.FORBIDDEN]
