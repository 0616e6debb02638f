"""Fixtures shared by every suite: a real nats-server per test and a client connected to it, and
one directory for every temporary file the tests make, removed at the end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client

from tests.support.natsserver import NatsServer

# Under pytest-xdist (deploy/test runs two workers) every test file goes whole to one worker, so a
# module's own lab (bench smoke's "bn") or stack is never used from two workers at once. The files
# named here also share one worker, so never two of their tests at once: each guest must
# out-dirty its cap (40 MiB/s under TCG), and two such guests would share the two cores. (xdist's
# own xdist_group marks do nothing here: xdist 3.8.0 sets a private node id that pytest 9.2 no
# longer reads.)
ONE_WORKER_TOGETHER = {
    "tests/lab/test_convergence.py": "dirty-guests",
    "tests/lab/test_completion_timeout.py": "dirty-guests",
    "tests/lab/test_migrate.py": "dirty-guests",  # its auto-converge test
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class WholeFiles(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return ONE_WORKER_TOGETHER.get(path, path)

    return WholeFiles(config, log)


@pytest.fixture(scope="session", autouse=True)
def temporary_files_go_with_the_session() -> Iterator[None]:
    """tempfile.mkdtemp (agents' ledgers, state directories) lands here, not loose in /tmp."""
    base = tempfile.mkdtemp(prefix="baton-tests-")
    before, tempfile.tempdir = tempfile.tempdir, base
    try:
        yield
    finally:
        tempfile.tempdir = before
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A fresh nats-server on 127.0.0.1 and a free port; ``.url`` is its client URL."""
    with NatsServer() as server:
        yield server


@pytest.fixture
async def nats_client(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A nats-py client connected to ``nats_server``, drained at teardown."""
    nc = await nats.connect(nats_server.url, name="baton-test", max_reconnect_attempts=1)
    yield nc
    if not nc.is_closed:
        await nc.drain()
