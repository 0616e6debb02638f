"""The wire contract: every public message round-trips, bad input is a ``bad_request`` naming the
field, error replies raise, and the exported JSON Schema files are fresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from baton.schemas import codec, export
from baton.schemas.agent import (
    AgentStatus,
    CapsRequest,
    DomainsRequest,
    HostCaps,
    StatusRequest,
    StorageProbeRequest,
)
from baton.schemas.base import HostId
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from tests.support.samples import sample

_REQUESTS_WITH_DEFAULTS = [CapsRequest, StatusRequest, StorageProbeRequest, DomainsRequest]


def _tag(message_type: Any) -> str:
    return export.tag_of(message_type)


def _bad_request(data: bytes, type_: Any) -> BatonError:
    with pytest.raises(BatonError) as caught:
        codec.decode_request(data, type_)
    assert ErrorCode.BAD_REQUEST == caught.value.code
    return caught.value


@pytest.mark.parametrize("message_type", export.PUBLIC_MESSAGES, ids=_tag)
def test_every_public_message_round_trips_through_the_codec(message_type: Any) -> None:
    message = sample(message_type)
    assert message == codec.decode_request(codec.encode(message), message_type)


@pytest.mark.parametrize("message_type", export.PUBLIC_MESSAGES, ids=_tag)
def test_encoded_messages_carry_their_stable_tag(message_type: Any) -> None:
    body = msgspec.json.decode(codec.encode(sample(message_type)))
    assert _tag(message_type) == body["kind"]


@pytest.mark.parametrize(
    "message_type", [t for t in export.PUBLIC_MESSAGES if t is not ErrorReply], ids=_tag
)
def test_a_reply_decodes_as_its_type(message_type: Any) -> None:
    message = sample(message_type)
    assert message == codec.decode_reply(codec.encode(message), message_type)


def test_public_message_tags_are_unique() -> None:
    tags = [_tag(t) for t in export.PUBLIC_MESSAGES]
    assert sorted(set(tags)) == sorted(tags)


@pytest.mark.parametrize("message_type", _REQUESTS_WITH_DEFAULTS, ids=_tag)
def test_an_empty_body_decodes_to_the_defaults(message_type: Any) -> None:
    assert message_type() == codec.decode_request(b"", message_type)


def test_a_body_without_kind_is_accepted() -> None:
    assert CapsRequest(refresh=True) == codec.decode_request(b'{"refresh": true}', CapsRequest)


def test_a_bad_host_id_is_a_bad_request_naming_the_field() -> None:
    body = msgspec.json.decode(codec.encode(sample(AgentStatus)))
    error = _bad_request(msgspec.json.encode(body | {"host_id": "h.1"}), AgentStatus)
    assert "$.host_id" in error.message


def test_a_relative_probe_path_is_a_bad_request_naming_the_field() -> None:
    error = _bad_request(b'{"paths": ["/ok", "relative/disk.qcow2"]}', StorageProbeRequest)
    assert "$.paths[1]" in error.message


def test_a_wrong_type_is_a_bad_request_naming_the_field() -> None:
    error = _bad_request(b'{"refresh": "yes"}', CapsRequest)
    assert "Expected `bool`, got `str` - at `$.refresh`" in error.message


def test_a_negative_size_is_a_bad_request_naming_the_nested_field() -> None:
    body = msgspec.json.decode(codec.encode(sample(HostCaps)))
    body["memory"]["free_bytes"] = -1
    assert "$.memory.free_bytes" in _bad_request(msgspec.json.encode(body), HostCaps).message


def test_a_missing_required_field_is_a_bad_request_naming_it() -> None:
    assert "host_id" in _bad_request(b'{"agent_version": "1"}', AgentStatus).message


@pytest.mark.parametrize("data", [b"{", b"not json", b"[]", b"null", b"\xff"])
def test_malformed_json_is_a_bad_request(data: bytes) -> None:
    assert _bad_request(data, CapsRequest).message.startswith("invalid request: ")


def test_another_message_s_tag_is_a_bad_request() -> None:
    _bad_request(b'{"kind": "agent.status.request"}', CapsRequest)


def test_decode_reply_raises_the_peer_s_error() -> None:
    reply = ErrorReply(code=ErrorCode.CONFLICT, message="vm1 is migrating", details={"vm": "vm1"})
    with pytest.raises(BatonError) as caught:
        codec.decode_reply(codec.encode(reply), HostCaps)
    assert (ErrorCode.CONFLICT, "vm1 is migrating", {"vm": "vm1"}) == (
        caught.value.code, caught.value.message, caught.value.details
    )  # fmt: skip


def test_a_malformed_reply_is_an_internal_error() -> None:
    with pytest.raises(BatonError) as caught:
        codec.decode_reply(b'{"kind": "agent.caps.reply"}', HostCaps)
    assert ErrorCode.INTERNAL == caught.value.code


def test_baton_error_survives_the_wire() -> None:
    error = BatonError(ErrorCode.NOT_FOUND, "no pool p1", pool="p1")
    back = BatonError.from_reply(codec.decode_request(codec.encode(error.to_reply()), ErrorReply))
    assert (error.code, error.message, error.details) == (back.code, back.message, back.details)


def test_a_host_id_with_a_trailing_newline_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'"h1\\n"', type=HostId)


def test_the_committed_json_schema_files_are_fresh() -> None:
    assert [] == export.stale_files()


def test_the_freshness_check_reports_changed_missing_and_extra_files(tmp_path: Path) -> None:
    export.write(tmp_path)
    (tmp_path / "agent.caps.reply.json").write_text("{}\n")
    (tmp_path / "error.json").unlink()
    (tmp_path / "retired.json").write_text("{}\n")
    assert ["agent.caps.reply.json", "error.json", "retired.json"] == export.stale_files(tmp_path)


def test_freshly_written_schemas_are_not_stale(tmp_path: Path) -> None:
    export.write(tmp_path)
    assert [] == export.stale_files(tmp_path)
