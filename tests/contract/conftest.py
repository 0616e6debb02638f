"""Runs each contract case against each implementation of the agent (``implementations.py``).

A test that takes ``implementation`` and ``case`` runs once per case of its module's ``CASES``
and implementation (the canned agent only for the cases the request alone decides), with ids
like ``caps-real``; a test that takes only ``implementation`` runs once per implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contract.implementations import IMPLEMENTATIONS, Implementation


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "implementation" not in metafunc.fixturenames:
        return
    if "case" not in metafunc.fixturenames:
        metafunc.parametrize("implementation", list(IMPLEMENTATIONS), indirect=True)
        return
    params = [pytest.param(name, case, id=f"{case.id}-{name}")
              for case in metafunc.module.CASES for name in IMPLEMENTATIONS
              if case.canned or name != "canned"]
    metafunc.parametrize(("implementation", "case"), params, indirect=["implementation"])


@pytest.fixture
async def implementation(request: pytest.FixtureRequest, nats_server, nats_client,
                         tmp_path: Path) -> AsyncIterator[Implementation]:
    async with IMPLEMENTATIONS[request.param](nats_server.url, nats_client, tmp_path) as started:
        yield started
