"""Two agents on libvirt's test driver, queried only through their public NATS subjects."""

from __future__ import annotations

import asyncio
import json

import pytest

from baton.schemas.agent import (
    AgentStatus,
    CapsRequest,
    CpuCompareReply,
    CpuCompareRequest,
    DomainsReply,
    DomainsRequest,
    HostCaps,
    StorageProbeReply,
    StorageProbeRequest,
    TokenAction,
    TokenOp,
)
from baton.schemas.codec import decode_any, decode_reply, encode
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.events import Heartbeat
from baton.schemas.subjects import AgentEndpoint, Subjects, micro_discovery

pytestmark = pytest.mark.integration
S = Subjects()


async def ask(nc, host: str, endpoint: AgentEndpoint, body: bytes, reply_type):
    msg = await nc.request(S.agent(host, endpoint), body, timeout=5)
    return decode_reply(msg.data, reply_type)


async def gather_replies(nc, subject: str, window_s: float = 0.5) -> list[dict]:
    inbox = nc.new_inbox()
    replies: list[dict] = []

    async def collect(msg) -> None:
        replies.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish(subject, b"", reply=inbox)
    await asyncio.sleep(window_s)
    await sub.unsubscribe()
    return replies


async def test_both_agents_answer_micro_discovery_with_their_host_metadata(two_agents, nats_client):
    pings = await gather_replies(nats_client, micro_discovery("PING", "baton-agent"))
    infos = await gather_replies(nats_client, micro_discovery("INFO", "baton-agent"))
    assert ["baton-agent", "baton-agent"] == [p["name"] for p in pings]
    metadata = sorted((i["metadata"] for i in infos), key=lambda m: m["host_id"])
    assert ["h1", "h2"] == [m["host_id"] for m in metadata]
    assert {"9.0.0"} == {m["libvirt_version"] for m in metadata}
    assert {"libvirt_uri", "hypervisor_version", "cpu_model"} <= set(metadata[0])


async def test_each_agent_reports_its_own_host_capabilities(two_agents, nats_client):
    h1 = await ask(nats_client, "h1", AgentEndpoint.CAPS, encode(CapsRequest()), HostCaps)
    h2 = await ask(nats_client, "h2", AgentEndpoint.CAPS, b"", HostCaps)
    assert ("h1", ["h1-pool", "shared"], ["h1-net"]) == (
        h1.host_id, [p.name for p in h1.pools], [n.name for n in h1.networks])
    assert ("h2", ["h2-pool", "shared"]) == (h2.host_id, [p.name for p in h2.pools])
    assert "qemu+tcp://h1/system" == h1.migration_uri
    assert h1.memory.total_bytes > 0 and h1.pools[0].active


async def test_domains_list_disks_and_interfaces(two_agents, nats_client):
    reply = await ask(nats_client, "h1", AgentEndpoint.DOMAINS, b"{}", DomainsReply)
    assert ["vm1", "vm2"] == [d.name for d in reply.domains]
    vm1 = reply.domains[0]
    assert ("running", "vda", "qcow2", "shared") == (vm1.state, vm1.disks[0].target,
                                                    vm1.disks[0].format, vm1.disks[0].pool)
    assert [("bridge", "br-vm")] == [(i.type, i.source) for i in vm1.interfaces]


async def test_unknown_domain_is_a_not_found_error(two_agents, nats_client):
    with pytest.raises(BatonError) as caught:
        await ask(nats_client, "h1", AgentEndpoint.DOMAINS,
                  encode(DomainsRequest(names=["nosuch"])), DomainsReply)
    assert ErrorCode.NOT_FOUND == caught.value.code
    assert "nosuch" in caught.value.message


@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b'{"refresh": "yes"}', b"\xff\xfe"])
async def test_malformed_request_gets_an_error_reply_and_the_agent_keeps_serving(
        two_agents, nats_client, body):
    msg = await nats_client.request(S.agent("h1", AgentEndpoint.CAPS), body, timeout=5)
    error = decode_any(msg.data, ErrorReply)
    assert ErrorCode.BAD_REQUEST == error.code
    assert "Traceback" not in error.message
    assert "400" == msg.headers["Nats-Service-Error-Code"]
    caps = await ask(nats_client, "h1", AgentEndpoint.CAPS, b"", HostCaps)
    assert "h1" == caps.host_id


async def test_relative_probe_path_is_rejected(two_agents, nats_client):
    with pytest.raises(BatonError) as caught:
        await ask(nats_client, "h1", AgentEndpoint.STORAGE_PROBE, b'{"paths": ["etc/passwd"]}',
                  StorageProbeReply)
    assert ErrorCode.BAD_REQUEST == caught.value.code


async def test_shared_storage_token_written_by_one_agent_is_read_by_the_other(
        two_agents, nats_client, tmp_path):
    disk = tmp_path / "shared" / "vm1.qcow2"  # vm1's disk on h1: a token may go beside it
    disk.write_bytes(b"x" * 10)

    async def token(host, action, value="tok-12345678"):
        op = TokenOp(action=action, beside=str(disk), token=value)
        return await ask(nats_client, host, AgentEndpoint.STORAGE_PROBE,
                         encode(StorageProbeRequest(paths=[str(disk)], token=op)), StorageProbeReply)

    written = await token("h1", TokenAction.WRITE)
    read = await token("h2", TokenAction.READ)
    wrong = await token("h2", TokenAction.READ, "tok-other-999")
    await token("h1", TokenAction.REMOVE)
    assert (True, True, False) == (written.token.ok, read.token.ok, wrong.token.ok)
    assert (True, 10) == (read.paths[0].exists, read.paths[0].size_bytes)
    assert [] == [p.name for p in disk.parent.glob(".baton-probe-*")]


async def test_cpu_compare_on_the_test_driver_is_answered_unsupported(two_agents, nats_client):
    """The test driver has no CPU comparison; the agent says so instead of guessing."""
    with pytest.raises(BatonError) as caught:
        await ask(nats_client, "h2", AgentEndpoint.CPU_COMPARE,
                  encode(CpuCompareRequest(cpu_xml="<cpu><model>qemu64</model></cpu>")),
                  CpuCompareReply)
    assert ErrorCode.UNSUPPORTED == caught.value.code


async def test_cpu_compare_of_a_domain_on_another_host_fetches_it_from_that_agent(
        two_agents, nats_client):
    """Test-driver domains have no <cpu>: the verdict is the hypervisor default, runnable."""
    reply = await ask(nats_client, "h2", AgentEndpoint.CPU_COMPARE,
                      encode(CpuCompareRequest(domain="vm1", domain_host="h1")), CpuCompareReply)
    assert ("h2", True) == (reply.host_id, reply.runnable)


async def test_heartbeats_arrive_and_status_reports_the_last_one(two_agents, nats_client):
    beats: asyncio.Queue[Heartbeat] = asyncio.Queue()

    async def collect(msg) -> None:
        beats.put_nowait(decode_any(msg.data, Heartbeat))

    sub = await nats_client.subscribe(S.heartbeat("h2"), cb=collect)
    first = await asyncio.wait_for(beats.get(), 5)
    second = await asyncio.wait_for(beats.get(), 5)
    await sub.unsubscribe()
    status = await ask(nats_client, "h2", AgentEndpoint.STATUS, b"", AgentStatus)
    assert ("h2", True, 1) == (first.host_id, first.libvirt_connected, second.seq - first.seq)
    assert 1 == first.domains_running
    assert status.libvirt_connected and status.last_heartbeat_at >= second.at
