"""An agent refuses harm even from a caller with the coordinator's own key (issue #10, §3).

NATS's permissions let the coordinator call every agent's migration endpoints; the agent itself
still acts only on what its ledger says it made, received or sent, creates files only in its
pools' directories, and sends a VM only to the URI its peer's agent announces. Real libvirt and
QEMU, real nats-server with nkeys and TLS.
"""

from __future__ import annotations

import uuid

import pytest

from baton.mesh import client
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    CleanupReply,
    CleanupRequest,
    DiskPlan,
    PrepareReply,
    PrepareRequest,
    StartReply,
    StartRequest,
)
from baton.schemas.subjects import AgentEndpoint, Subjects

pytestmark = pytest.mark.lab
S = Subjects()
TIMEOUT_S = 30.0


def new_id() -> str:
    return uuid.uuid4().hex[:12]


async def test_cleanup_with_the_coordinators_key_keeps_a_running_vm_and_files_it_did_not_make(
        stack, lab, guest):
    vm = guest("h1", storage="local")
    disk = f"/var/lib/libvirt/images/{vm}.qcow2"
    victim = "/var/lib/libvirt/images/somebody-elses.img"
    lab.exec("h1", "sh", "-c", f"echo precious > {victim}")
    nc = await client.connect(stack.access("coordinator"))
    try:
        reply = await client.request(
            nc, S.agent("h1", AgentEndpoint.MIGRATION_CLEANUP),
            CleanupRequest(migration_id=new_id(), vm=vm, remove_domain=True,
                           delete_paths=[victim, disk]), CleanupReply, TIMEOUT_S)
    finally:
        await nc.drain()
    try:
        assert (False, [], [victim, disk]) == (reply.domain_removed, reply.deleted_paths,
                                                reply.kept_paths)
        assert "running" == lab.domstate("h1", vm)
        assert "precious" == lab.exec("h1", "cat", victim).stdout.strip()
        assert 0 == lab.exec("h1", "test", "-s", disk, check=False).returncode
        assert f"{vm} is not a domain this host prepared to receive" in reply.detail
    finally:
        lab.exec("h1", "rm", "-f", victim)


async def test_prepare_with_the_coordinators_key_creates_nothing_outside_the_pools(stack, lab):
    target = f"/etc/cron.d/baton-{new_id()}"
    nc = await client.connect(stack.access("coordinator"))
    try:
        with pytest.raises(BatonError) as caught:
            await client.request(nc, S.agent("h2", AgentEndpoint.MIGRATION_PREPARE), PrepareRequest(
                migration_id=new_id(), vm="nobody", disks=[DiskPlan(
                    target="vda", path=target, format="raw", capacity_bytes=1024 * 1024)]),
                PrepareReply, TIMEOUT_S)
    finally:
        await nc.drain()
    assert ErrorCode.FORBIDDEN == caught.value.code
    assert 1 == lab.exec("h2", "test", "-e", target, check=False).returncode


async def test_start_with_the_coordinators_key_sends_a_vm_only_where_a_peer_agent_says(
        stack, lab, guest):
    vm = guest("h1")
    elsewhere = lab.uri("h3").replace(lab.ip("h3"), "203.0.113.9")  # no agent announces this
    nc = await client.connect(stack.access("coordinator"))
    try:
        with pytest.raises(BatonError) as caught:
            await client.request(nc, S.agent("h1", AgentEndpoint.MIGRATION_START), StartRequest(
                migration_id=new_id(), vm=vm, destination_uri=elsewhere, destination_host="h2"),
                StartReply, TIMEOUT_S)
    finally:
        await nc.drain()
    assert ErrorCode.FORBIDDEN == caught.value.code
    assert f"{elsewhere} is not the migration URI the agent of h2 announces" in caught.value.message
    assert ("running", None) == (lab.domstate("h1", vm), lab.domstate("h2", vm))
