"""Running the ``baton`` group in-process against a test's nats-server: CliRunner in a worker
thread, since the CLI runs its own event loop while the coordinator and the fake agents serve on
the test's. Import ``logs_beside_the_cli_output`` into a test module to make it autouse there."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest
import structlog
from click.testing import CliRunner, Result

from baton.cli import drain, migrate, vms
from baton.cli.main import cli

for commands in (migrate, drain, vms):  # main() registers them; add_command is idempotent
    commands.register(cli)


@pytest.fixture(autouse=True)
def logs_beside_the_cli_output() -> Iterator[None]:
    """Service logs go to the real stderr, so CliRunner's captured stdout holds only the CLI's."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.__stderr__))
    yield
    structlog.reset_defaults()


async def baton(nats_server, *args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, [*args, "--nats", nats_server.url])
