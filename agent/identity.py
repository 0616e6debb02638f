"""One agent per host id: before it serves, an agent makes sure no other agent serves its host.

Two agents with the same host id would share ``baton.agent.<host>.>`` (micro endpoints are a
queue group, so each would get half the requests, with half the running jobs) and the journal
of what the host created. So at start-up the agent asks its own host's ``caps`` subject (the
agent role may call ``caps`` on any host, ``schemas/roles.py``): NATS answers "no responders"
at once when nobody serves it, and the agent goes on. Any answer (a reply, an error reply, or
silence from a subscriber) means another agent serves the host: this one reads that agent's
instance (its micro service id) and libvirt host UUID from ``$SRV.INFO.baton-agent`` and
refuses to start with :class:`HostTaken`; ``baton-agent`` exits with :data:`EXIT_HOST_TAKEN`.

Not covered: two agents starting within the same fraction of a second both find the host free.
"""

from __future__ import annotations

import structlog
from nats.aio.client import Client

from baton.mesh.client import AgentInfo, NoResponders, discover_agents, request
from baton.schemas import timeouts
from baton.schemas.agent import CapsRequest, HostCaps
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.subjects import AgentEndpoint, Subjects

log = structlog.get_logger(__name__)
EXIT_HOST_TAKEN = 3  # baton-agent's exit code when another agent serves its host id


class HostTaken(BatonError):
    """Another agent already serves this host id."""

    def __init__(self, host_id: str, other: AgentInfo | None, hostname: str | None) -> None:
        instance = other.service_id if other else "unknown"
        uuid = (other.libvirt_host_uuid if other else None) or "unknown"
        where = f", hostname {hostname}" if hostname else ""
        super().__init__(
            ErrorCode.CONFLICT,
            f"another agent already serves host {host_id} "
            f"(instance {instance}, libvirt host uuid {uuid}{where}); stop it first",
            host=host_id,
            instance=instance,
            libvirt_host_uuid=uuid,
        )


async def refuse_if_served(nc: Client, subjects: Subjects, host_id: str) -> None:
    """Return when no agent serves ``host_id``; raise :class:`HostTaken` when one does."""
    subject = subjects.agent(host_id, AgentEndpoint.CAPS)
    hostname: str | None = None
    try:
        caps = await request(nc, subject, CapsRequest(), HostCaps, timeouts.AGENT_IDENTITY_PROBE)
        hostname = caps.hostname
    except NoResponders:
        return
    except BatonError as exc:
        if exc.code == ErrorCode.FORBIDDEN:  # a custom role without caps: cannot tell, go on
            log.warning("host_identity_unchecked", subject=subject, error=str(exc))
            return
        # An error reply or a subscriber that did not answer: someone serves the host all the same.
    raise HostTaken(host_id, await _serving(nc, subjects, host_id), hostname)


async def _serving(nc: Client, subjects: Subjects, host_id: str) -> AgentInfo | None:
    found = await discover_agents(nc, prefix=subjects.prefix)
    return next((agent for agent in found if agent.host_id == host_id), None)
