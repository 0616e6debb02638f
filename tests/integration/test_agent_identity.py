"""One agent per host id (``agent/identity.py``): a second agent for a host that an agent already
serves refuses to start, names the one serving, exits non-zero, and the first keeps serving; the
check works within the agent role's NATS permissions."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from baton.agent.identity import EXIT_HOST_TAKEN, HostTaken
from baton.agent.main import AgentConfig, run_agent
from baton.mesh import client
from baton.schemas.agent import CapsRequest, HostCaps
from baton.schemas.subjects import AgentEndpoint, Subjects, micro_discovery
from tests.integration.conftest import start_agent, stop_agent
from tests.integration.host_xml import write_host_xml
from tests.support.secured import secured_nats

pytestmark = pytest.mark.integration
S = Subjects()
BATON_AGENT = Path(sys.executable).parent / "baton-agent"


async def _h1_service_ids(nc) -> list[str]:
    agents = await client.discover_agents(nc)
    return [a.service_id for a in agents if a.host_id == "h1"]


async def _caps(nc, host: str) -> HostCaps:
    return await client.request(nc, S.agent(host, AgentEndpoint.CAPS), CapsRequest(), HostCaps, 5)


async def test_a_second_agent_for_a_served_host_refuses_and_the_first_keeps_serving(
    two_agents, nats_server, nats_client, tmp_path
):
    [first] = await _h1_service_ids(nats_client)
    config = AgentConfig(
        host_id="h1",
        libvirt_uri=write_host_xml(tmp_path / "other", "h1", []),
        nats_url=nats_server.url,
        migration_uri="qemu+tcp://h1/system",
        state_dir=str(tmp_path / "state"),
    )
    with pytest.raises(HostTaken) as refused:
        await asyncio.wait_for(run_agent(config, asyncio.Event()), 20)
    assert (
        f"another agent already serves host h1 (instance {first}, libvirt host uuid unknown, hostname "
    ) in refused.value.message
    assert refused.value.message.endswith("; stop it first")
    assert [first] == await _h1_service_ids(nats_client)
    assert "h1" == (await _caps(nats_client, "h1")).host_id
    assert not (tmp_path / "state").exists(), "a refused agent touches none of the host's state"


async def test_baton_agent_exits_non_zero_with_the_reason_when_its_host_is_served(
    two_agents, nats_server, nats_client, tmp_path
):
    process = await asyncio.create_subprocess_exec(
        str(BATON_AGENT),
        "--host-id",
        "h1",
        "--nats",
        nats_server.url,
        "--libvirt-uri",
        write_host_xml(tmp_path / "other", "h1", []),
        "--state-dir",
        str(tmp_path / "state"),
        "--no-log-json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert EXIT_HOST_TAKEN == process.returncode
    assert "baton-agent: another agent already serves host h1 (instance " in stderr.decode()
    assert "h1" == (await _caps(nats_client, "h1")).host_id


async def test_the_agent_role_may_make_the_check_and_a_free_host_id_starts(tmp_path):
    with secured_nats(tmp_path / "nats", ("h1",)) as server:
        key = {"nats_nkey": str(server.seed("agent-h1")), "nats_ca": str(server.ca)}
        uri = write_host_xml(tmp_path, "h1", ["vm1"])
        first = await start_agent(server.url, "h1", uri, **key)
        try:
            second = AgentConfig(
                host_id="h1",
                libvirt_uri=uri,
                nats_url=server.url,
                migration_uri="qemu+tcp://h1/system",
                state_dir=str(tmp_path / "state"),
                **key,
            )
            with pytest.raises(HostTaken):
                await asyncio.wait_for(run_agent(second, asyncio.Event()), 20)
        finally:
            await stop_agent(first)
        again = await start_agent(server.url, "h1", uri, **key)  # "no responders", not a denial
        nc = await client.connect(server.access("operator"))
        try:
            assert "h1" == (await _caps(nc, "h1")).host_id
        finally:
            await nc.close()
            await stop_agent(again)


async def test_service_info_carries_the_libvirt_host_uuid(two_agents, nats_client):
    inbox = nats_client.new_inbox()
    sub = await nats_client.subscribe(inbox)
    await nats_client.publish(micro_discovery("INFO", "baton-agent"), b"", reply=inbox)
    info = json.loads((await sub.next_msg(timeout=5)).data)
    await sub.unsubscribe()
    assert "unknown" == info["metadata"]["libvirt_host_uuid"]  # the test driver has none
