"""Hold points (coordinator/holds.py): a no-op unless the process was started to hold there."""

from __future__ import annotations

import asyncio

import pytest

from baton.coordinator import holds


async def test_without_the_variable_every_point_returns_at_once(monkeypatch):
    monkeypatch.delenv(holds.ENV, raising=False)
    async with asyncio.timeout(1):
        for point in sorted(holds.POINTS):
            await holds.hold_at(point)


async def test_the_named_point_holds_and_the_others_do_not(monkeypatch):
    monkeypatch.setenv(holds.ENV, "prepared")
    async with asyncio.timeout(1):
        await holds.hold_at("checking")
        await holds.hold_at("completing")
    held = asyncio.ensure_future(holds.hold_at("prepared"))
    await asyncio.sleep(0.2)
    still_held = not held.done()
    held.cancel()
    assert still_held


def test_an_unknown_point_is_a_programming_error():
    with pytest.raises(AssertionError):
        asyncio.run(holds.hold_at("nowhere"))
