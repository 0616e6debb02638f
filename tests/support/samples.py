"""Build a valid example instance of any wire message from its type, for round-trip tests.

Walks ``msgspec.inspect`` type info, fills every field (optional ones too, so they get exercised)
and picks the first non-None member of unions. Constrained strings get a value from
:data:`PATTERN_EXAMPLES`; a new pattern in ``schemas`` fails loudly until an example is added here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec.inspect as mi

from baton.schemas.base import HOST_ID_PATTERN
from baton.schemas.migration import DOMAIN_UUID_PATTERN

SAMPLE_TIME = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

PATTERN_EXAMPLES = {
    HOST_ID_PATTERN: "h1",
    r"^/": "/var/lib/libvirt/images/vm1.qcow2",
    r"^[A-Za-z0-9_-]{8,64}$": "token_0123",
    r"^[A-Za-z0-9_-]{1,64}$": "mig-0001",
    r"^[A-Za-z0-9_-]{1,32}$": "vda",
    DOMAIN_UUID_PATTERN: "6695eb01-f6a4-8304-79aa-97f2502e193f",
}


def sample(type_: Any) -> Any:
    """A valid instance of ``type_`` (a Struct class or any type msgspec understands)."""
    return _value(mi.type_info(type_))


def _value(info: mi.Type) -> Any:
    builder = _BUILDERS.get(type(info))
    if builder is None:
        raise NotImplementedError(f"tests/support/samples.py cannot build {info!r} yet")
    return builder(info)


def _struct(info: mi.StructType) -> Any:
    return info.cls(**{field.name: _value(field.type) for field in info.fields})


def _str(info: mi.StrType) -> str:
    if info.pattern is None:
        return "x" * max(info.min_length or 1, 1)
    if info.pattern not in PATTERN_EXAMPLES:
        raise NotImplementedError(f"add an example for pattern {info.pattern!r} to PATTERN_EXAMPLES")
    return PATTERN_EXAMPLES[info.pattern]


def _int(info: mi.IntType) -> int:
    low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else 0)
    return max(low, 7) if info.le is None else min(max(low, 7), info.le)


def _float(info: mi.FloatType) -> float:
    low = info.ge if info.ge is not None else (info.gt if info.gt is not None else 0.0)
    return low + 1.5


def _union(info: mi.UnionType) -> Any:
    return _value(next(t for t in info.types if not isinstance(t, mi.NoneType)))


_BUILDERS: dict[type, Any] = {
    mi.StructType: _struct,
    mi.StrType: _str,
    mi.IntType: _int,
    mi.FloatType: _float,
    mi.BoolType: lambda info: True,
    mi.DateTimeType: lambda info: SAMPLE_TIME,
    mi.EnumType: lambda info: list(info.cls)[-1],
    mi.LiteralType: lambda info: info.values[0],
    mi.ListType: lambda info: [_value(info.item_type)],
    mi.DictType: lambda info: {_value(info.key_type): _value(info.value_type)},
    mi.UnionType: _union,
    mi.NoneType: lambda info: None,
    mi.AnyType: lambda info: "any",
}

