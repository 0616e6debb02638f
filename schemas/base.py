"""The one base every wire message derives from.

Messages are frozen, keyword-only, tagged msgspec Structs. The tag lives in the ``kind`` field and
is a stable dotted name that is never reused; schema evolution is additive (new fields get
defaults, a breaking change is a new type with a new tag). Decoding into a single type accepts a
body without ``kind``, so simple clients may omit it on requests. msgspec applies ``kw_only`` only
to the fields a class itself declares, so every message class repeats ``kw_only=True``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

from baton.schemas.limits import HOST_ID_MAX, VM_NAME_MAX

# Subject-safe token: NATS subjects split on '.', and '*', '>' and whitespace are special.
# The lookahead stops Python's '$' from matching before a trailing newline; JSON Schema (ECMA-262)
# reads the same pattern the same way.
HOST_ID_PATTERN = r"^[A-Za-z0-9_-]+(?!\n)$"
HostId = Annotated[str, msgspec.Meta(pattern=HOST_ID_PATTERN, min_length=1, max_length=HOST_ID_MAX)]
VmName = Annotated[str, msgspec.Meta(min_length=1, max_length=VM_NAME_MAX)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Base of every message on the wire."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (every timestamp on the wire is UTC)."""
    return datetime.now(UTC)
