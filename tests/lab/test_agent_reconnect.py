"""An agent survives its libvirtd going away: it answers 'unavailable' meanwhile, reconnects
when the daemon is back, and its event callbacks are registered again."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from baton.mesh import client
from baton.mesh.daemon import announce_ready
from baton.schemas.agent import AgentStatus, HostCaps
from baton.schemas.codec import decode_any, decode_reply
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import LifecycleEvent, LifecycleKind
from baton.schemas.subjects import AgentEndpoint, Subjects

pytestmark = pytest.mark.lab
S = Subjects()
DOMAIN_XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features></domain>"""


async def status(nc, host: str) -> AgentStatus:
    msg = await nc.request(S.agent(host, AgentEndpoint.STATUS), b"", timeout=5)
    return decode_reply(msg.data, AgentStatus)


async def wait_connected(nc, host: str, connected: bool, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while (await status(nc, host)).libvirt_connected != connected:
        assert time.monotonic() < deadline, f"{host} libvirt_connected never became {connected}"
        await asyncio.sleep(0.5)


async def test_agent_reconnects_after_its_libvirtd_restarts_and_events_flow_again(stack, lab, tmp_path):
    nc = await client.connect(stack.access("operator"))
    defined: asyncio.Queue[LifecycleEvent] = asyncio.Queue()

    async def collect(msg) -> None:
        defined.put_nowait(decode_any(msg.data, LifecycleEvent))

    name = f"rc-{int(time.time())}"
    await nc.subscribe(S.events_filter(host="h3", vm=name, event="lifecycle"), cb=collect)
    await announce_ready(nc)
    await asyncio.to_thread(lab.libvirtd, "h3", "kill")
    try:
        await wait_connected(nc, "h3", False)
        msg = await nc.request(S.agent("h3", AgentEndpoint.CAPS), json.dumps({"refresh": True}).encode(),
                               timeout=5)
        with pytest.raises(BatonError) as caught:
            decode_reply(msg.data, HostCaps)
        assert ErrorCode.UNAVAILABLE == caught.value.code
    finally:
        await asyncio.to_thread(lab.libvirtd, "h3", "start")
    await wait_connected(nc, "h3", True)
    xml = tmp_path / "d.xml"
    xml.write_text(DOMAIN_XML.format(name=name))
    await asyncio.to_thread(lab.virsh, "h3", "define", str(xml))
    try:
        event = await asyncio.wait_for(defined.get(), 15)
    finally:
        await asyncio.to_thread(lab.virsh, "h3", "undefine", name)
        await nc.drain()
    assert (LifecycleKind.DEFINED, "added", "h3") == (event.event, event.detail, event.host_id)
