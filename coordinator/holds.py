"""Hold points: where a fault test can stop a migration's coordinator to kill it exactly there.

A crash-safety claim ("a coordinator killed while it prepares loses nothing") is only tested if
the kill lands in that phase, and phases last milliseconds. A coordinator started with
``BATON_HOLD_AT=<point>`` logs ``held_at`` when a migration reaches that point and waits there
for ever (the rest of the process keeps running: the lease, other migrations); the test then
kills it. Unset, as in every real deployment, a hold point costs one dictionary lookup.

The points (each named for what has happened when it is reached):

- ``checking``: the record says checking; nothing has been asked of any host yet;
- ``prepared``: the destination has made the migration's disks; the source has not started;
- ``completing``: libvirt's migration has ended well; nothing has been confirmed or deleted.
"""

from __future__ import annotations

import asyncio
import os

import structlog

log = structlog.get_logger(__name__)
ENV = "BATON_HOLD_AT"
POINTS = frozenset({"checking", "prepared", "completing"})


async def hold_at(point: str) -> None:
    """Return at once, unless this process was started to hold at ``point``."""
    assert point in POINTS, point
    if os.environ.get(ENV) != point:
        return
    log.warning("held_at", point=point)
    await asyncio.Event().wait()  # until the test kills the process (or the task is cancelled)
