"""Where a source agent may send a VM: only to a peer agent's own migration URI.

``migration.start`` names the destination host and its libvirt URI. Before libvirt gets that
URI, the source asks the destination's agent for its caps (``baton.agent.<host>.caps``, which
only that host's agent may serve when NATS enforces the roles) and refuses unless the URI is
exactly the one that agent announces. So even a caller allowed to start migrations cannot send
a VM, its disks and undefine-source to an arbitrary libvirt daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.client import Client

from baton.mesh import client
from baton.schemas.agent import CapsRequest, HostCaps
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.subjects import AgentEndpoint, Subjects
from baton.schemas.timeouts import AGENT_CAPS

# (destination host, destination URI) -> None, or BatonError(forbidden / unavailable)
CheckPeer = Callable[[str | None, str], Awaitable[None]]
AskCaps = Callable[[str], Awaitable[HostCaps]]


def peer_checker(own_host: str, ask_caps: AskCaps) -> CheckPeer:
    async def check(host: str | None, uri: str) -> None:
        if host is None:
            raise BatonError(ErrorCode.FORBIDDEN, "migration.start must name the destination "
                             "host (destination_host): a VM goes only to a peer agent's host")
        if host == own_host:
            raise BatonError(ErrorCode.FORBIDDEN, f"{host} is this host: nothing to migrate to")
        try:
            caps = await ask_caps(host)
        except BatonError as exc:
            raise BatonError(ErrorCode.UNAVAILABLE, f"cannot confirm {host}'s migration URI "
                             f"with its agent: {exc.message}") from None
        if caps.host_id != host or caps.migration_uri != uri:
            raise BatonError(ErrorCode.FORBIDDEN,
                             f"{uri} is not the migration URI the agent of {host} announces "
                             f"({caps.migration_uri}): refusing to send the VM there")
    return check


def caps_over_nats(nc: Client, subjects: Subjects) -> AskCaps:
    async def ask(host: str) -> HostCaps:
        return await client.request(nc, subjects.agent(host, AgentEndpoint.CAPS), CapsRequest(),
                                    HostCaps, AGENT_CAPS)
    return ask
