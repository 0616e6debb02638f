"""The implementations of the agent's contract, each started the way its own tests start it.

- ``real``: the real agent (``baton.agent.main.run_agent``: AgentCore, MigrationManager,
  StorageMoveManager and start_service on a LibvirtHypervisor) on libvirt's test driver, started
  as ``tests/integration`` starts it.
- ``fake``, ``fake-fail``, ``fake-hang``: the coordinator tests' scripted FakeAgent with each
  :class:`Script` outcome (a script only decides what happens after a reply, never the reply).
- ``canned``: the CLI tests' canned agent, with a canned reply on every endpoint.

Every implementation serves the same two hosts: h1 (the one addressed) holds the running vm1 and
vm2 and the shut-off vmoff, each with one qcow2 disk ``vda`` at ``<pool_dir>/<vm>.qcow2``; h2
holds vm3 (for a CPU comparison of a domain on another host).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from nats.aio.client import Client

from baton.schemas.agent import DomainState
from tests.integration.conftest import start_agent, stop_agent
from tests.integration.fake_agents import FAST, IMAGES, Mesh, Script, domain
from tests.support.canned_agent import every_endpoint, start_canned_agent

HOST = "h1"
PEER = "h2"
MISSING_DIR = "/nonexistent-baton-contract"
ELSEWHERE = "/srv/elsewhere"  # the fakes' directory that is in no pool


@dataclass(frozen=True)
class Implementation:
    nc: Client  # connected to the test's nats-server
    host: str  # the host id to address
    peer_uri: str  # the migration URI of the other host
    pool_dir: str  # a pool holding the domains' disks
    other_pool_dir: str  # a second pool, empty
    outside_dir: str  # a directory of the host that is in no pool
    add_file: Callable[[str], None]  # put a file that no domain uses at this path

    def disk(self, vm: str) -> str:
        return f"{self.pool_dir}/{vm}.qcow2"


Starter = Callable[[str, Client, Path], AbstractAsyncContextManager[Implementation]]

# --- real ---------------------------------------------------------------------------------------

_DOMAIN = """
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>{name}</name>
    <memory>131072</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>{runstate}
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='{disk}'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
  </domain>"""
_SHUT_OFF = "\n    <test:runstate>5</test:runstate>"  # VIR_DOMAIN_SHUTOFF
_POOL = "\n  <pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"


def write_host(directory: Path, host: str, running: tuple[str, ...],
               shut_off: tuple[str, ...] = ()) -> str:
    """A test-driver host with pools ``<host>-pool`` (the disks, which exist) and ``<host>-fast``."""
    pool, fast = directory / f"{host}-pool", directory / f"{host}-fast"
    pool.mkdir()
    fast.mkdir()
    domains = [(vm, "") for vm in running] + [(vm, _SHUT_OFF) for vm in shut_off]
    text = "<node>"
    for vm, runstate in domains:
        (pool / f"{vm}.qcow2").write_bytes(b"disk")
        text += _DOMAIN.format(name=vm, runstate=runstate, disk=pool / f"{vm}.qcow2")
    text += _POOL.format(name=pool.name, path=pool) + _POOL.format(name=fast.name, path=fast)
    path = directory / f"{host}.xml"
    path.write_text(text + "\n</node>\n")
    return f"test://{path}"


def _write_file(path: str) -> None:
    Path(path).write_bytes(b"left behind")


@asynccontextmanager
async def real(nats_url: str, nc: Client, tmp_path: Path) -> AsyncIterator[Implementation]:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    async with AsyncExitStack() as stack:
        for host, uri in ((HOST, write_host(tmp_path, HOST, ("vm1", "vm2"), ("vmoff",))),
                          (PEER, write_host(tmp_path, PEER, ("vm3",)))):
            stack.push_async_callback(stop_agent, await start_agent(nats_url, host, uri))
        yield Implementation(nc, HOST, f"qemu+tcp://{PEER}/system",
                             str(tmp_path / f"{HOST}-pool"), str(tmp_path / f"{HOST}-fast"),
                             str(outside), _write_file)


# --- fake ---------------------------------------------------------------------------------------


@asynccontextmanager
async def fake(nats_url: str, nc: Client, _tmp_path: Path,
               outcome: str = "success") -> AsyncIterator[Implementation]:
    mesh = Mesh()
    mesh.storage.shared_dirs.add(ELSEWHERE)  # a directory both hosts have, in no pool
    h1, h2 = mesh.add(HOST), mesh.add(PEER)
    for info in (domain("vm1"), domain("vm2"), domain("vmoff", state=DomainState.SHUTOFF)):
        h1.add_domain(info)
    h2.add_domain(domain("vm3"))
    h1.script = h2.script = Script(outcome=outcome)
    async with mesh.serving(nats_url):
        yield Implementation(nc, HOST, h2.caps_reply.migration_uri, IMAGES, FAST, ELSEWHERE,
                             partial(mesh.storage.add, HOST))


# --- canned -------------------------------------------------------------------------------------


@asynccontextmanager
async def canned(_nats_url: str, nc: Client, _tmp_path: Path) -> AsyncIterator[Implementation]:
    service = await start_canned_agent(nc, HOST, every_endpoint(HOST))
    try:
        yield Implementation(nc, HOST, f"qemu+tcp://{PEER}/system", IMAGES, FAST,
                             ELSEWHERE, lambda _path: None)
    finally:
        await service.stop()


IMPLEMENTATIONS: dict[str, Starter] = {
    "real": real,
    "fake": fake,
    "fake-fail": partial(fake, outcome="fail"),
    "fake-hang": partial(fake, outcome="hang"),
    "canned": canned,
}
