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
from baton.schemas.agent import StorageProbeReply, StorageProbeRequest
from baton.schemas.codec import decode_any, encode
from baton.schemas.errors import BatonError, ErrorCode, ErrorReply
from baton.schemas.migration import (
    Ack,
    CleanupReply,
    CleanupRequest,
    DiskPlan,
    PrepareReply,
    PrepareRequest,
    StartReply,
    StartRequest,
)
from baton.schemas.storage import (
    AgentStorageAbortRequest,
    AgentStorageMoveReply,
    AgentStorageMoveRequest,
    DiskMove,
)
from baton.schemas.subjects import AgentEndpoint, CoordinatorEndpoint, Subjects
from tests.lab.migrations import final, start, wait_phase

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


async def test_storage_move_with_the_coordinators_key_copies_a_disk_nowhere_outside_the_pools(
        stack, lab, guest):
    """libvirt writes a block copy as root: a copy into /etc/cron.d would put the guest's bytes
    where cron runs them. The agent refuses and the VM keeps its disk."""
    vm = guest("h1", storage="local")
    disk = f"/var/lib/libvirt/images/{vm}.qcow2"
    target = f"/etc/cron.d/baton-{new_id()}"
    nc = await client.connect(stack.access("coordinator"))
    try:
        with pytest.raises(BatonError) as caught:
            await client.request(nc, S.agent("h1", AgentEndpoint.STORAGE_MOVE),
                                 AgentStorageMoveRequest(migration_id=new_id(), vm=vm, disks=[
                                     DiskMove(target="vda", source_path=disk,
                                              destination_path=target, format="qcow2")]),
                                 AgentStorageMoveReply, TIMEOUT_S)
    finally:
        await nc.drain()
    assert ErrorCode.FORBIDDEN == caught.value.code
    assert "only there" in caught.value.message
    assert 1 == lab.exec("h1", "test", "-e", target, check=False).returncode
    blocks = [line.split() for line in lab.virsh("h1", "domblklist", vm).splitlines()[2:]]
    assert ("running", [["vda", disk]]) == (lab.domstate("h1", vm), [b for b in blocks if b])


async def test_probe_with_the_coordinators_key_looks_at_nothing_outside_disks_and_pools(stack):
    nc = await client.connect(stack.access("coordinator"))
    try:
        with pytest.raises(BatonError) as caught:
            await client.request(nc, S.agent("h1", AgentEndpoint.STORAGE_PROBE),
                                 StorageProbeRequest(paths=["/etc/shadow"]),
                                 StorageProbeReply, TIMEOUT_S)
        pool = await client.request(nc, S.agent("h1", AgentEndpoint.STORAGE_PROBE),
                                    StorageProbeRequest(paths=["/var/lib/libvirt/images"]),
                                    StorageProbeReply, TIMEOUT_S)
    finally:
        await nc.drain()
    assert ErrorCode.FORBIDDEN == caught.value.code
    assert [(True, True)] == [(p.exists, p.is_dir) for p in pool.paths]


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


async def test_oversized_requests_during_a_migration_are_refused_and_the_migration_goes_on(
        stack, lab, guest):
    """Thousands of probe paths, an endless jobs page, a 300 KiB VM name: typed refusals while
    a shared-nothing migration runs; no process dies and the migration succeeds."""
    vm = guest("h1", storage="local", dirty_rate_mib_s=1)  # converges soon after its disk
    seq_before = lab.alive_seq(vm)
    migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "8")
    wait_phase(stack, migration_id, {"migrating"})
    codes = []
    # The agents' endpoints as the coordinator calls them; jobs as an operator (the CLI) does.
    for user, subject, body in (
            ("coordinator", S.agent("h1", AgentEndpoint.STORAGE_PROBE),
             encode(StorageProbeRequest(paths=[f"/var/lib/libvirt/images/{i}.qcow2"
                                               for i in range(5000)]))),
            ("operator", S.coordinator(CoordinatorEndpoint.JOBS), b'{"limit": 100000}'),
            ("coordinator", S.agent("h2", AgentEndpoint.DOMAINS),
             b'{"names": ["' + b"x" * (300 << 10) + b'"]}')):
        nc = await client.connect(stack.access(user))
        try:
            reply = await nc.request(subject, body, timeout=TIMEOUT_S)
            codes.append(decode_any(reply.data, ErrorReply).code)
        finally:
            await nc.drain()
    rec = final(stack, migration_id)
    assert [ErrorCode.BAD_REQUEST] * 3 == codes
    assert "succeeded" == rec["phase"]
    assert ("running", None) == (lab.domstate("h2", vm), lab.domstate("h1", vm))
    assert lab.wait_alive_past(vm, seq_before) > seq_before
    assert stack.agents_alive() and stack.coordinator_alive()


@pytest.mark.parametrize("user", ["operator", "monitor", "agent-h2"])
async def test_a_wrong_role_cannot_ask_an_agent_to_clean_up_start_or_abort(stack, lab, guest, user):
    """Refused by nats-server itself (the agent never sees the request): a real running guest
    and a file in h1's pool stay as they were."""
    vm = guest("h1")
    victim = "/var/lib/libvirt/images/somebody-elses.img"
    lab.exec("h1", "sh", "-c", f"echo precious > {victim}")
    codes = []
    nc = await client.connect(stack.access(user))
    try:
        for endpoint, message, reply_type in (
                (AgentEndpoint.MIGRATION_CLEANUP, CleanupRequest(
                    migration_id=new_id(), vm=vm, remove_domain=True, delete_paths=[victim]),
                 CleanupReply),
                (AgentEndpoint.MIGRATION_START, StartRequest(
                    migration_id=new_id(), vm=vm, destination_uri=lab.uri("h2"),
                    destination_host="h2"), StartReply),
                (AgentEndpoint.STORAGE_ABORT, AgentStorageAbortRequest(
                    migration_id=new_id(), vm=vm), Ack)):
            with pytest.raises(BatonError) as caught:
                await client.request(nc, S.agent("h1", endpoint), message, reply_type, TIMEOUT_S)
            codes.append(caught.value.code)
    finally:
        await nc.drain()
    try:
        assert [ErrorCode.FORBIDDEN] * 3 == codes
        assert ("running", None) == (lab.domstate("h1", vm), lab.domstate("h2", vm))
        assert "precious" == lab.exec("h1", "cat", victim).stdout.strip()
    finally:
        lab.exec("h1", "rm", "-f", victim)
