"""NATS itself enforces Baton's roles: a real nats-server with the config ``baton-keys``
writes, TLS from the lab's CA tool, agents on libvirt's test driver and the real coordinator,
each signed in with its own key. Every refusal is checked against the thing it protects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner

from baton.cli.main import cli
from baton.coordinator.main import CoordinatorConfig, run_coordinator
from baton.mesh import client
from baton.mesh.access import NatsAccess
from baton.schemas.agent import CapsRequest, CpuBaselineReply, CpuBaselineRequest, HostCaps
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.job import CheckName, CheckStatus
from baton.schemas.migration import (
    AgentAbortRequest,
    CheckRequest,
    CleanupRequest,
    JobsReply,
    JobsRequest,
    PreflightReport,
    StartRequest,
)
from baton.schemas.storage import AgentStorageAbortRequest
from baton.schemas.subjects import AgentEndpoint, CoordinatorEndpoint, MigrationEvent, Subjects
from tests.integration.conftest import RunningAgent, start_agent, stop_agent
from tests.integration.host_xml import write_host_xml
from tests.support.secured import SecuredNats, secured_nats

S = Subjects()
NOT_AN_AGENT = ("operator", "monitor", "agent-h2")


@dataclass
class SecuredMesh:
    nats: SecuredNats
    agents: dict[str, RunningAgent]
    victim: Path  # a file on h1 that nobody may have deleted

    async def connect(self, user: str | None) -> nats.NATS:
        return await client.connect(self.nats.access(user), name=f"test-{user}")


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[SecuredMesh]:
    with secured_nats(tmp_path / "nats", ("h1", "h2")) as server:
        agents = {}
        for host, domains in (("h1", ["vm1"]), ("h2", [])):
            agents[host] = await start_agent(
                server.url, host, write_host_xml(tmp_path, host, domains),
                nats_nkey=str(server.seed(f"agent-{host}")), nats_ca=str(server.ca))
        config = CoordinatorConfig(nats_url=server.url, nats_nkey=str(server.seed("coordinator")),
                                   nats_ca=str(server.ca), grace_s=0.2, rollback_s=2)
        stop = asyncio.Event()
        started: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(run_coordinator(config, stop, started))  # type: ignore[arg-type]
        await asyncio.wait_for(started, 15)
        victim = tmp_path / "h1-pool" / "precious.qcow2"
        victim.write_bytes(b"the only copy")
        try:
            yield SecuredMesh(server, agents, victim)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
            for agent in agents.values():
                await stop_agent(agent)


async def test_an_anonymous_client_is_refused(secured):
    with pytest.raises(BatonError) as refused:
        await secured.connect(None)
    assert ErrorCode.FORBIDDEN == refused.value.code


async def test_a_key_the_server_does_not_know_is_refused(secured, tmp_path):
    from baton.cli.keys import ensure_seed
    ensure_seed(tmp_path, "stranger")
    with pytest.raises(BatonError) as refused:
        await client.connect(NatsAccess(url=secured.nats.url, nkey_file=str(tmp_path / "stranger.nk"),
                                        ca_file=str(secured.nats.ca)))
    assert ErrorCode.FORBIDDEN == refused.value.code


async def test_without_the_ca_the_client_does_not_trust_the_server(secured):
    access = NatsAccess(url=secured.nats.url, nkey_file=str(secured.nats.seed("operator")))
    with pytest.raises(BatonError) as refused:
        await client.connect(access)
    assert ErrorCode.UNAVAILABLE == refused.value.code
    assert "certificate verify failed" in refused.value.message.lower()


async def test_the_operator_runs_a_full_check_through_the_coordinator_and_both_agents(secured):
    """The check needs every role's grants: coordinator → agents, destination agent → source
    agent (the guest CPU), replies on each one's own inbox."""
    nc = await secured.connect("operator")
    try:
        report = await client.request(
            nc, S.coordinator(CoordinatorEndpoint.CHECK),
            CheckRequest(vm="vm1", destination="h2"), PreflightReport, 20)
        caps = await client.request(nc, S.agent("h1", AgentEndpoint.CAPS), CapsRequest(),
                                    HostCaps, 10)
        jobs = await client.request(nc, S.coordinator(CoordinatorEndpoint.JOBS), JobsRequest(),
                                    JobsReply, 10)
    finally:
        await nc.close()
    assert ("vm1", "h1", "h2") == (report.vm, report.source, report.destination)
    passed = {check.name for check in report.checks if check.status is CheckStatus.PASS}
    # hosts, vm: coordinator → both agents; storage: probe on both; cpu: h2's agent asks h1's.
    assert {CheckName.HOSTS, CheckName.VM, CheckName.STORAGE, CheckName.CPU} <= passed
    assert "h1" == caps.host_id
    assert [] == jobs.migrations


WESTMERE = "<cpu><arch>x86_64</arch><model>Westmere</model><vendor>Intel</vendor></cpu>"


@pytest.mark.parametrize(("user", "allowed"), [("operator", True), ("coordinator", True),
                                               ("monitor", False), ("agent-h2", False)])
async def test_the_operator_and_the_coordinator_may_ask_an_agent_for_a_cpu_baseline(
        secured, user, allowed):
    """``baton hosts --baseline`` is the operator's; agents never need a peer's baseline."""
    nc = await secured.connect(user)
    try:
        reply = await client.request(nc, S.agent("h1", AgentEndpoint.CPU_BASELINE),
                                     CpuBaselineRequest(host_cpus=[WESTMERE]), CpuBaselineReply, 10)
        outcome: object = reply.baseline.model
    except BatonError as exc:
        outcome = exc.code
    finally:
        await nc.close()
    assert ("Westmere" if allowed else ErrorCode.FORBIDDEN) == outcome


@pytest.mark.parametrize("user", NOT_AN_AGENT)
async def test_only_the_coordinator_may_ask_an_agent_to_clean_up(secured, user):
    nc = await secured.connect(user)
    try:
        with pytest.raises(BatonError) as refused:
            await client.request(
                nc, S.agent("h1", AgentEndpoint.MIGRATION_CLEANUP),
                CleanupRequest(migration_id="m1", vm="vm1", remove_domain=True,
                               delete_paths=[str(secured.victim)]),
                object, 5)
    finally:
        await nc.close()
    assert ErrorCode.FORBIDDEN == refused.value.code
    assert secured.victim.exists()
    assert ["vm1"] == [d.name for d in await secured.agents["h1"].hypervisor.domains(None, False)]


@pytest.mark.parametrize("user", NOT_AN_AGENT)
@pytest.mark.parametrize("endpoint, request_", [
    (AgentEndpoint.MIGRATION_START,
     StartRequest(migration_id="m1", vm="vm1", destination_uri="qemu+tcp://evil/system")),
    (AgentEndpoint.MIGRATION_ABORT, AgentAbortRequest(migration_id="m1", vm="vm1")),
    (AgentEndpoint.STORAGE_ABORT, AgentStorageAbortRequest(migration_id="m1", vm="vm1")),
], ids=["migration.start", "migration.abort", "storage.abort"])
async def test_no_one_but_the_coordinator_may_start_or_abort_an_agents_job(
        secured, user, endpoint, request_):
    nc = await secured.connect(user)
    try:
        with pytest.raises(BatonError) as refused:
            await client.request(nc, S.agent("h1", endpoint), request_, object, 5)
    finally:
        await nc.close()
    assert ErrorCode.FORBIDDEN == refused.value.code


async def _denials(nc_user: str, secured: SecuredMesh, action) -> list[str]:
    """Run ``action(nc)`` as ``nc_user`` and return the server's permission errors."""
    errors: list[str] = []
    denied = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))
        denied.set()

    nc = await nats.connect(secured.nats.url, error_cb=on_error,
                            **secured.nats.access(nc_user).connect_options())
    try:
        await action(nc)
        await nc.flush()
        await asyncio.wait_for(denied.wait(), 5)
    finally:
        await nc.close()
    return errors


@pytest.mark.parametrize("user", NOT_AN_AGENT)
async def test_no_one_else_may_serve_an_agents_subjects(secured, user):
    async def serve_h1(nc) -> None:
        await nc.subscribe(S.agent("h1", AgentEndpoint.CAPS), queue="q")

    errors = await _denials(user, secured, serve_h1)
    subject = S.agent("h1", AgentEndpoint.CAPS)
    assert [f'nats: permissions violation for subscription to "{subject}" using queue "q"'] == errors


@pytest.mark.parametrize("user, subject", [
    ("agent-h2", S.agent_report("h1", "m1", MigrationEvent.SOURCE_FINISHED)),
    ("agent-h2", S.heartbeat("h1")),
    ("operator", S.agent_report("h1", "m1", MigrationEvent.SOURCE_FINISHED)),
    ("operator", S.migration("m1", MigrationEvent.PHASE)),
    ("monitor", S.coordinator(CoordinatorEndpoint.JOBS)),
    ("monitor", S.migration("m1", MigrationEvent.PHASE)),
])
async def test_no_one_may_publish_in_anothers_name(secured, user, subject):
    async def publish(nc) -> None:
        await nc.publish(subject, b"{}")

    errors = await _denials(user, secured, publish)
    assert [f'nats: permissions violation for publish to "{subject}"'] == errors


async def test_a_client_cannot_read_another_clients_replies(secured):
    async def snoop(nc) -> None:
        await nc.subscribe("_INBOX.>")

    errors = await _denials("operator", secured, snoop)
    assert ['nats: permissions violation for subscription to "_inbox.>"'] == errors  # nats-py lowers


async def test_the_monitor_hears_heartbeats(secured):
    nc = await secured.connect("monitor")
    try:
        sub = await nc.subscribe(S.heartbeats())
        msg = await sub.next_msg(timeout=5)
    finally:
        await nc.close()
    assert msg.subject in {S.heartbeat("h1"), S.heartbeat("h2")}


async def test_the_cli_signs_in_with_the_key_and_ca_from_its_environment(secured):
    env = {"BATON_NATS": secured.nats.url, "BATON_NATS_CA": str(secured.nats.ca)}

    async def baton(user: str | None, *args: str):
        key = {"BATON_NATS_NKEY": str(secured.nats.seed(user))} if user else {}
        return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env={**env, **key})

    ok = await baton("operator", "caps", "h1", "-o", "json")
    refused = await baton("monitor", "caps", "h1")
    anonymous = await baton(None, "hosts")
    assert (0, 6, 6) == (ok.exit_code, refused.exit_code, anonymous.exit_code), (
        ok.output, refused.output, anonymous.output)
    assert "h1" == json.loads(ok.stdout)["host_id"]
    assert "forbidden" in refused.stderr or "denied" in refused.stderr
