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
