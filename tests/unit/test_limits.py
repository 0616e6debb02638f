"""Every list and string of every request is bounded (``schemas/limits.py``), and decoding refuses
one item or character over a bound with ``bad_request`` naming the field and the limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from baton.schemas import agent, codec, limits, migration, storage
from baton.schemas.base import Message
from baton.schemas.errors import BatonError, ErrorCode
from tests.support.samples import sample

Path = tuple[str | int, ...]
DICT_KEY = "<key>"  # a dict's keys, in a slot's path
DICT_VALUE = "[...]"  # a dict's values, in a slot's path (as msgspec names the place)
SAMPLE_KEY = "x"  # the one key of a sample dict (tests/support/samples.py)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


# Every request on the wire is tagged ``*.request`` (agent, migration and storage endpoints).
REQUESTS = sorted(
    {c for c in _subclasses(Message) if str(c.__struct_config__.tag).endswith(".request")},
    key=lambda c: str(c.__struct_config__.tag),
)


def _slots(info: mi.Type, path: Path) -> Iterator[tuple[Path, mi.Type]]:
    """Each string and list inside ``info``, with its place in a sample body."""
    if isinstance(info, mi.StructType):
        for field in info.fields:
            yield from _slots(field.type, (*path, field.encode_name))
    elif isinstance(info, mi.UnionType):
        for member in info.types:
            yield from _slots(member, path)
    elif isinstance(info, mi.ListType):
        yield path, info
        yield from _slots(info.item_type, (*path, 0))
    elif isinstance(info, mi.DictType):
        yield path, info
        yield (*path, DICT_KEY), info.key_type  # every key: bounded, never put in a body
        yield from _slots(info.value_type, (*path, DICT_VALUE))
    elif isinstance(info, mi.StrType):
        yield path, info


def _bounded_slots() -> list[tuple[type, Path, mi.Type]]:
    return [
        (t, path, info)
        for t in REQUESTS
        for path, info in _slots(mi.type_info(t), ())
        if getattr(info, "max_length", None) is not None and DICT_KEY not in path
    ]


def _slot_id(case: tuple[type, Path, mi.Type]) -> str:
    message_type, path, _ = case
    return f"{message_type.__struct_config__.tag}:{_json_path(path)}"


def _json_path(path: Path) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else p if p == DICT_VALUE else f".{p}"
                         for p in path)


def _body_with(message_type: type, path: Path, value: Any) -> bytes:
    body = msgspec.to_builtins(sample(message_type))
    parent = body
    keys = [SAMPLE_KEY if key == DICT_VALUE else key for key in path]
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = value
    return msgspec.json.encode(body)


def _at(message_type: type, path: Path) -> Any:
    value = msgspec.to_builtins(sample(message_type))
    for key in path:
        value = value[SAMPLE_KEY if key == DICT_VALUE else key]
    return value


def _sized(message_type: type, path: Path, info: Any, size: int) -> Any:
    """The sample value at ``path`` grown to ``size`` items or characters (still valid otherwise)."""
    current = _at(message_type, path)
    if isinstance(info, mi.ListType):
        return [current[0]] * size
    if isinstance(info, mi.DictType):
        return {f"k{i}": current[SAMPLE_KEY] for i in range(size)}
    return (current + "x" * size)[:size]


def test_every_request_type_is_checked() -> None:
    tags = {str(t.__struct_config__.tag) for t in REQUESTS}
    assert {
        "agent.storage_probe.request",
        "agent.migration.cleanup.request",
        "coordinator.jobs.request",
        "agent.storage.move.request",
    } <= tags


@pytest.mark.parametrize("message_type", REQUESTS, ids=lambda t: str(t.__struct_config__.tag))
def test_every_string_and_list_of_a_request_has_a_maximum(message_type: type) -> None:
    unbounded = [
        _json_path(path)
        for path, info in _slots(mi.type_info(message_type), ())
        if getattr(info, "max_length", None) is None and getattr(info, "pattern", None) is None
    ]  # patterns here are {m,n}-bounded
    assert [] == unbounded


@pytest.mark.parametrize("case", _bounded_slots(), ids=_slot_id)
def test_a_request_at_a_limit_decodes(case: tuple[type, Path, Any]) -> None:
    message_type, path, info = case
    body = _body_with(message_type, path, _sized(message_type, path, info, info.max_length))
    assert isinstance(codec.decode_request(body, message_type), message_type)


@pytest.mark.parametrize("case", _bounded_slots(), ids=_slot_id)
def test_one_over_a_limit_is_a_bad_request_naming_the_field_and_the_limit(
    case: tuple[type, Path, Any],
) -> None:
    message_type, path, info = case
    body = _body_with(message_type, path, _sized(message_type, path, info, info.max_length + 1))
    with pytest.raises(BatonError) as caught:
        codec.decode_request(body, message_type)
    assert ErrorCode.BAD_REQUEST == caught.value.code
    assert f"length <= {info.max_length} - at `{_json_path(path)}`" in caught.value.message


@pytest.mark.parametrize(
    ("message_type", "path", "limit"),
    [
        (agent.StorageProbeRequest, ("paths",), limits.PROBE_PATHS_MAX),
        (agent.DomainsRequest, ("names",), limits.DOMAIN_NAMES_MAX),
        (agent.CpuCompareRequest, ("cpu_xml",), limits.CPU_XML_MAX),
        (migration.CleanupRequest, ("delete_paths",), limits.DELETE_PATHS_MAX),
        (migration.CleanupRequest, ("delete_paths", 0), limits.PATH_MAX),
        (migration.PrepareRequest, ("disks",), limits.DISKS_MAX),
        (migration.StartRequest, ("copy_disks",), limits.DISKS_MAX),
        (migration.StartRequest, ("destination_uri",), limits.URI_MAX),
        (migration.JobsRequest, ("cursor",), limits.CURSOR_MAX),
        (storage.AgentStorageMoveRequest, ("disks",), limits.DISKS_MAX),
        (storage.AgentStorageAbortRequest, ("disks",), limits.DISKS_MAX),
        (storage.AgentStorageAbortRequest, ("disks", 0, "destination_path"), limits.PATH_MAX),
    ],
)
def test_the_named_limits_guard_the_fields_they_are_for(message_type: type, path: Path, limit: int) -> None:
    [info] = [info for p, info in _slots(mi.type_info(message_type), ()) if p == path]
    assert limit == info.max_length


def test_the_limits_are_the_sizes_the_issue_asks_for() -> None:
    assert (64, 256, 64, 4096, 200, 50) == (
        limits.DISKS_MAX,
        limits.PROBE_PATHS_MAX,
        limits.DELETE_PATHS_MAX,
        limits.TEXT_MAX,
        limits.JOBS_PAGE_MAX,
        limits.JOBS_PAGE_DEFAULT,
    )


def test_thousands_of_probe_paths_are_refused_at_decode() -> None:
    body = msgspec.json.encode({"paths": [f"/srv/disk-{i}.qcow2" for i in range(5000)]})
    with pytest.raises(BatonError) as caught:
        codec.decode_request(body, agent.StorageProbeRequest)
    assert (ErrorCode.BAD_REQUEST, "invalid request: Expected `array` of length <= 256 - at `$.paths`") == (
        caught.value.code,
        caught.value.message,
    )


@pytest.mark.parametrize("limit", [0, limits.JOBS_PAGE_MAX + 1])
def test_a_jobs_page_size_out_of_range_is_a_bad_request(limit: int) -> None:
    with pytest.raises(BatonError) as caught:
        codec.decode_request(msgspec.json.encode({"limit": limit}), migration.JobsRequest)
    assert "$.limit" in caught.value.message


def test_a_jobs_request_without_paging_fields_asks_for_the_first_default_page() -> None:
    request = codec.decode_request(b"{}", migration.JobsRequest)
    assert (limits.JOBS_PAGE_DEFAULT, None) == (request.limit, request.cursor)
