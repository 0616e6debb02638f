"""Ctrl-C at a following ``baton migrate``: the real CLI in its own process (SIGINT needs a
main thread), the real coordinator and scripted fake agents on a real nats-server."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import sys
import time

import pytest

from baton.schemas.migration import Phase
from baton.schemas.subjects import AgentEndpoint as A
from tests.integration.fake_agents import Script

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)

CLI = [sys.executable, "-c", "from baton.cli.main import main; main()"]


async def following_migrate(nats_server, watcher) -> tuple[asyncio.subprocess.Process, str]:
    """A ``baton migrate`` (no terminal) following a migration that runs until aborted."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, "migrate", "vm1", "--to", "h2", "--nats", nats_server.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        while not [e for e in watcher.phases if e.phase == Phase.MIGRATING]:
            await watcher.changed.wait()
            watcher.changed.clear()
    [started] = [e for e in watcher.phases if e.phase == Phase.MIGRATING]
    await asyncio.sleep(0.5)  # the CLI is inside its follow loop (its events come each 0.1 s)
    return proc, started.migration_id


async def test_ctrl_c_without_a_terminal_aborts_the_migration_as_virsh_does(
        nats_server, mesh, coordinator, watcher):
    mesh["h1"].script = Script(outcome="hang", interval_s=0.1)
    proc, migration_id = await following_migrate(nats_server, watcher)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    record = await watcher.final(migration_id)
    assert (1, Phase.ABORTED) == (proc.returncode, record.phase), stderr.decode()
    assert f"aborting {migration_id}" in stderr.decode()
    assert "aborted" in stdout.decode()
    assert "vm1" in mesh["h1"].domains and "vm1" not in mesh["h2"].domains


async def test_a_second_ctrl_c_detaches_and_leaves_the_abort_to_the_coordinator(
        nats_server, mesh, coordinator, watcher):
    mesh["h1"].script = Script(outcome="hang", interval_s=0.1, abort_takes_s=3)
    proc, migration_id = await following_migrate(nats_server, watcher)
    proc.send_signal(signal.SIGINT)
    await asyncio.sleep(0.8)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert 0 == proc.returncode, stderr.decode()
    assert "detached" in stderr.decode() and migration_id in stdout.decode()
    assert Phase.ABORTED == (await watcher.final(migration_id)).phase


def read_until(fd: int, text: str, within_s: float = 15) -> str:
    """What the terminal shows until ``text`` appears (blocking; call in a thread)."""
    seen, deadline = "", time.monotonic() + within_s
    while text not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared; the terminal showed {seen!r}")
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            seen += os.read(fd, 4096).decode(errors="replace")
    return seen


async def test_on_a_terminal_ctrl_c_asks_and_continue_keeps_the_migration_running(
        nats_server, mesh, coordinator, watcher):
    mesh["h1"].script = Script(outcome="hang", interval_s=0.1)
    terminal, cli_side = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "migrate", "vm1", "--to", "h2", "--nats", nats_server.url,
        stdin=cli_side, stdout=cli_side, stderr=cli_side)
    os.close(cli_side)
    try:
        async with asyncio.timeout(20):
            while Phase.MIGRATING not in {e.phase for e in watcher.phases}:
                await watcher.changed.wait()
                watcher.changed.clear()
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(read_until, terminal, "continue watching?")
        os.write(terminal, b"continue\n")
        await asyncio.sleep(1.0)
        assert [] == mesh["h1"].asked(A.MIGRATION_ABORT) and proc.returncode is None
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(read_until, terminal, "continue watching?")
        os.write(terminal, b"abort\n")
        shown = await asyncio.to_thread(read_until, terminal, "aborted")
        assert 1 == await asyncio.wait_for(proc.wait(), 30), shown
    finally:
        if proc.returncode is None:
            proc.kill()
        os.close(terminal)
    [migration_id] = {e.migration_id for e in watcher.phases}
    assert Phase.ABORTED == (await watcher.final(migration_id)).phase
    assert 1 == len(mesh["h1"].asked(A.MIGRATION_ABORT))


async def test_ctrl_c_at_a_following_drain_without_a_terminal_aborts_the_drain(
        nats_server, mesh, coordinator, watcher):
    mesh["h1"].script = Script(outcome="hang", interval_s=0.1)
    proc = await asyncio.create_subprocess_exec(
        *CLI, "drain", "h1", "--nats", nats_server.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        while len({e.migration_id for e in watcher.phases if e.phase == Phase.MIGRATING}) < 2:
            await watcher.changed.wait()
            watcher.changed.clear()
    await asyncio.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 40)
    ids = {e.migration_id for e in watcher.phases}
    assert (1, 2) == (proc.returncode, len(ids)), stderr.decode()
    assert stdout.decode().count("aborted") >= 2  # the summary: both VMs, aborted
    assert "aborting the drain of h1" in stderr.decode()
    assert {Phase.ABORTED} == {(await watcher.final(m)).phase for m in ids}
    assert {"vm1", "vmshared"} <= set(mesh["h1"].domains)
