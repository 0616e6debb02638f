"""baton.mesh.client against a real nats-server: typed requests map every failure to a BatonError
code, and discovery finds the live agents of one prefix."""

from __future__ import annotations

import asyncio
import socket

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from baton.mesh import client
from baton.schemas import timeouts
from baton.schemas.agent import CapsRequest, HostCaps
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.subjects import AgentEndpoint, Subjects, micro_discovery
from tests.support.canned_agent import SILENT, canned_caps, canned_status, start_canned_agent

CAPS_H1 = Subjects().agent("h1", AgentEndpoint.CAPS)


def unused_port() -> int:
    """A TCP port nothing listens on (bound then released, so the OS just handed it out)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_request_returns_the_typed_reply(nats_client: Client) -> None:
    await start_canned_agent(nats_client, "h1")
    assert canned_caps("h1") == await client.request(nats_client, CAPS_H1, CapsRequest(), HostCaps, 2.0)


async def test_a_request_nobody_listens_to_is_not_found(nats_client: Client) -> None:
    with pytest.raises(client.NoResponders) as caught:
        await client.request(nats_client, CAPS_H1, CapsRequest(), HostCaps, 2.0)
    assert (ErrorCode.NOT_FOUND, CAPS_H1) == (caught.value.code, caught.value.subject)


async def test_a_request_nobody_answers_in_time_is_a_timeout(nats_client: Client) -> None:
    await start_canned_agent(nats_client, "h1", {AgentEndpoint.CAPS: SILENT})
    with pytest.raises(client.NoReply) as caught:
        await client.request(nats_client, CAPS_H1, CapsRequest(), HostCaps, 0.2)
    assert ErrorCode.TIMEOUT == caught.value.code


async def test_an_error_reply_raises_its_code_and_message(nats_client: Client) -> None:
    error = ErrorReply(code=ErrorCode.UNAVAILABLE, message="libvirt connection lost")
    await start_canned_agent(nats_client, "h1", {AgentEndpoint.CAPS: error})
    with pytest.raises(BatonError) as caught:
        await client.request(nats_client, CAPS_H1, CapsRequest(), HostCaps, 2.0)
    assert (ErrorCode.UNAVAILABLE, "libvirt connection lost") == (caught.value.code, caught.value.message)


async def test_connecting_to_nothing_is_unavailable_and_names_the_url() -> None:
    url = f"nats://127.0.0.1:{unused_port()}"
    with pytest.raises(BatonError) as caught:
        await client.connect(url)
    assert ErrorCode.UNAVAILABLE == caught.value.code
    assert caught.value.message.startswith(f"cannot reach NATS at {url}: ")


async def test_discovery_finds_every_agent_sorted_by_host(nats_client: Client) -> None:
    for host in ("h2", "h1"):
        await start_canned_agent(nats_client, host)
    agents = await client.discover_agents(nats_client)
    assert ["h1", "h2"] == [agent.host_id for agent in agents]
    assert ("Skylake-Client-IBRS", "10.0.0", "8.2.2") == (
        agents[0].cpu_model, agents[0].libvirt_version, agents[0].hypervisor_version
    )  # fmt: skip


async def test_discovery_without_agents_returns_nothing_at_once(nats_client: Client) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert [] == await client.discover_agents(nats_client, quiet=5.0, limit=5.0)
    assert loop.time() - started < 1.0  # the server's no-responders status ends the wait


async def test_discovery_skips_agents_under_another_prefix(nats_client: Client) -> None:
    await start_canned_agent(nats_client, "h1", prefix="other")
    await start_canned_agent(nats_client, "h2")
    assert ["h2"] == [agent.host_id for agent in await client.discover_agents(nats_client)]
    assert ["h1"] == [a.host_id for a in await client.discover_agents(nats_client, prefix="other")]


async def test_discovery_skips_malformed_info_and_agents_without_host_id(nats_client: Client) -> None:
    async def garbage(msg: Msg) -> None:
        await msg.respond(b"not json")

    await nats_client.subscribe(micro_discovery("INFO", "baton-agent"), cb=garbage)
    await start_canned_agent(nats_client, "h1", metadata={})
    await start_canned_agent(nats_client, "h2")
    assert ["h2"] == [agent.host_id for agent in await client.discover_agents(nats_client)]


async def test_status_is_fetched_for_each_agent_and_failures_are_kept(nats_client: Client) -> None:
    down = ErrorReply(code=ErrorCode.UNAVAILABLE, message="libvirt down")
    await start_canned_agent(nats_client, "h1")
    await start_canned_agent(nats_client, "h2", {AgentEndpoint.STATUS: down})
    agents = await client.with_status(nats_client, await client.discover_agents(nats_client), "baton")
    assert canned_status("h1") == agents[0].status
    assert (None, "unavailable: libvirt down") == (agents[1].status, agents[1].status_error)


async def test_status_requests_run_concurrently(nats_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "AGENT_STATUS", 0.5)
    for host in ("h1", "h2", "h3"):
        await start_canned_agent(nats_client, host, {AgentEndpoint.STATUS: SILENT})
    agents = await client.discover_agents(nats_client)
    loop = asyncio.get_running_loop()
    started = loop.time()
    statuses = await client.with_status(nats_client, agents, "baton")
    assert loop.time() - started < 2 * timeouts.AGENT_STATUS
    assert 3 == sum(1 for agent in statuses if agent.status_error and "timeout" in agent.status_error)

