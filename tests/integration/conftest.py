"""Agents on libvirt's test driver, in this process, on a real nats-server per test."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from baton.agent.libvirt import LibvirtHypervisor
from baton.agent.main import AgentConfig, run_agent
from tests.integration.host_xml import write_host_xml


@dataclass
class RunningAgent:
    host_id: str
    hypervisor: LibvirtHypervisor
    stop: asyncio.Event
    task: asyncio.Task[None]
    made_state_dir: str | None = None  # made here: removed when the agent stops


async def start_agent(nats_url: str, host_id: str, libvirt_uri: str, *,
                      nats_nkey: str | None = None, nats_ca: str | None = None,
                      state_dir: str | None = None, **overrides: float) -> RunningAgent:
    """``state_dir``: the agent's ledger (default: a fresh directory, as on a new host, removed
    by ``stop_agent``)."""
    made = None if state_dir else tempfile.mkdtemp(prefix=f"baton-{host_id}-")
    config = AgentConfig(host_id=host_id, libvirt_uri=libvirt_uri, nats_url=nats_url,
                         nats_nkey=nats_nkey, nats_ca=nats_ca,
                         migration_uri=f"qemu+tcp://{host_id}/system",
                         state_dir=state_dir or made or "",
                         heartbeat_interval_s=overrides.get("heartbeat_interval_s", 0.2),
                         first_connect_wait_s=overrides.get("first_connect_wait_s", 10.0))
    stop = asyncio.Event()
    started: asyncio.Future[LibvirtHypervisor] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_agent(config, stop, started))
    done, _ = await asyncio.wait({task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if started not in done:
        task.cancel()
        if made:
            shutil.rmtree(made, ignore_errors=True)
        raise RuntimeError(f"agent {host_id} did not start")
    return RunningAgent(host_id, started.result(), stop, task, made)


async def stop_agent(agent: RunningAgent) -> None:
    agent.stop.set()
    try:
        await asyncio.wait_for(agent.task, 10)
    finally:
        if agent.made_state_dir:
            shutil.rmtree(agent.made_state_dir, ignore_errors=True)


@pytest.fixture
async def two_agents(nats_server, tmp_path: Path) -> AsyncIterator[dict[str, RunningAgent]]:
    """Agents h1 (domains vm1, vm2) and h2 (domain vm3), each on its own test-driver host."""
    agents = {
        "h1": await start_agent(nats_server.url, "h1", write_host_xml(tmp_path, "h1", ["vm1", "vm2"])),
        "h2": await start_agent(nats_server.url, "h2", write_host_xml(tmp_path, "h2", ["vm3"])),
    }
    yield agents
    for agent in agents.values():
        await stop_agent(agent)
