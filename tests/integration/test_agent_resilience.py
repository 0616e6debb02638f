"""An agent whose libvirt is unreachable answers 'unavailable' at once, and the process runs as a
real console script that stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import nats
import pytest

from baton.schemas.agent import DomainsReply, HostCaps
from baton.schemas.codec import decode_reply
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.limits import DOMAIN_NAMES_MAX
from baton.schemas.subjects import AgentEndpoint, Subjects, micro_discovery
from tests.integration.conftest import start_agent, stop_agent
from tests.integration.host_xml import write_host_xml
from tests.support.natsserver import NatsServer

pytestmark = pytest.mark.integration
S = Subjects()
SMALL_MAX_PAYLOAD = 64 * 1024  # 256 domains with their CPU XML do not fit


async def test_requests_while_libvirt_is_down_get_unavailable_not_a_hang(nats_server, nats_client):
    # Port 9 on loopback: nothing listens there, so every connection attempt is refused.
    agent = await start_agent(nats_server.url, "down1", "qemu+tcp://127.0.0.1:9/system",
                              first_connect_wait_s=0.2)
    try:
        started = time.monotonic()
        msg = await nats_client.request(S.agent("down1", AgentEndpoint.CAPS), b"", timeout=5)
        with pytest.raises(BatonError) as caught:
            decode_reply(msg.data, HostCaps)
        assert ErrorCode.UNAVAILABLE == caught.value.code
        assert "reconnecting" in caught.value.message
        assert time.monotonic() - started < 2
    finally:
        await stop_agent(agent)


def agent_command() -> list[str]:
    script = Path(sys.executable).parent / "baton-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "baton.agent.main"]


async def test_console_script_serves_and_exits_zero_on_sigterm(nats_server, nats_client, tmp_path):
    uri = write_host_xml(tmp_path, "p1", ["vmx"])
    proc = await asyncio.create_subprocess_exec(
        *agent_command(), "--host-id", "p1", "--libvirt-uri", uri, "--nats", nats_server.url,
        "--log-json", stderr=asyncio.subprocess.PIPE)
    try:
        reply = await _wait_for_ping(nats_client, "p1")
        assert "baton-agent" == reply["name"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    events = [json.loads(line)["event"] for line in stderr.decode().splitlines()]
    assert 0 == proc.returncode
    assert {"agent_started", "agent_stopping"} <= set(events)


async def _wait_for_ping(nc, host: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            msg = await nc.request(micro_discovery("PING", "baton-agent"), b"", timeout=0.5)
            return json.loads(msg.data)
        except Exception:
            await asyncio.sleep(0.2)
    raise AssertionError(f"agent {host} never answered $SRV.PING")


async def test_a_reply_too_large_for_nats_is_a_typed_error_and_the_agent_keeps_serving(tmp_path):
    """As many copies of one name as a request may hold (schemas/limits.py) ask for a reply over
    a server's 64 KiB payload limit: the caller gets bad_request saying so, and the same agent
    answers the next request."""
    with NatsServer(config=f"max_payload: {SMALL_MAX_PAYLOAD}\n") as server:
        agent = await start_agent(server.url, "h1", write_host_xml(tmp_path, "h1", ["vm1"]))
        nc = await nats.connect(server.url, max_reconnect_attempts=1)
        try:
            await _too_large_then_served(nc)
        finally:
            await nc.close()
            await stop_agent(agent)


async def _too_large_then_served(nats_client: nats.NATS) -> None:
    subject = S.agent("h1", AgentEndpoint.DOMAINS)
    body = json.dumps({"names": ["vm1"] * DOMAIN_NAMES_MAX, "include_cpu_xml": True}).encode()
    msg = await nats_client.request(subject, body, timeout=10)
    with pytest.raises(BatonError) as caught:
        decode_reply(msg.data, DomainsReply)
    assert ErrorCode.BAD_REQUEST == caught.value.code
    assert "maximum payload" in caught.value.message
    assert "400" == msg.headers["Nats-Service-Error-Code"]
    again = await nats_client.request(subject, json.dumps({"names": ["vm1"]}).encode(), timeout=10)
    assert ["vm1"] == [d.name for d in decode_reply(again.data, DomainsReply).domains]

