"""Shell completion's live part against fake agents on a real nats-server: VM names, host ids and
migration ids as the environment reaches them, and nothing (quickly) when NATS is not there.
The real bash completing in tmux against the lab: tests/lab/test_completion.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from click.testing import CliRunner

from baton.cli import completion
from baton.cli.main import cli
from tests.integration.fake_agents import SHARED, Mesh, domain

pytestmark = pytest.mark.integration


def offered(completer, incomplete: str = "") -> list[str]:
    return [item.value for item in completer(None, None, incomplete)]


async def test_vm_names_and_host_ids_come_from_the_agents(nats_server, monkeypatch):
    mesh = Mesh()
    mesh.add("h1").add_domain(domain("web1", directory=SHARED))
    mesh.add("h2").add_domain(domain("db1", directory=SHARED))
    monkeypatch.setenv("BATON_NATS", nats_server.url)
    async with mesh.serving(nats_server.url):
        vms = await asyncio.to_thread(offered, completion.complete_vm)
        web = await asyncio.to_thread(offered, completion.complete_vm, "we")
        hosts = await asyncio.to_thread(offered, completion.complete_host, "h")
    assert (["db1", "web1"], ["web1"], ["h1", "h2"]) == (vms, web, hosts)


def test_without_nats_nothing_is_offered_within_the_deadline(monkeypatch):
    monkeypatch.setenv("BATON_NATS", "nats://127.0.0.1:1")
    started = time.monotonic()
    assert ([], [], []) == (offered(completion.complete_vm), offered(completion.complete_host),
                            offered(completion.complete_migration_id))
    assert time.monotonic() - started < 3 * completion.COMPLETE_WITHIN_S + 1


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_script_hooks_baton_into_the_shell(shell):
    completion.register(cli)  # as main() does
    result = CliRunner().invoke(cli, ["completion", shell])
    assert (0, True) == (result.exit_code, "_BATON_COMPLETE" in result.stdout)
