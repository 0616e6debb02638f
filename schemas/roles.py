"""Who may publish and subscribe to what: Baton's roles as NATS subject permissions.

NATS enforces these (a user per key in the server's ``authorization`` block; ``baton-keys``
writes it), not Baton: a client whose role lacks a subject gets a permissions violation from
the server and its message goes nowhere. Each role gets the least it needs:

- ``agent-<host>``: serves only ``<p>.agent.<host>.>`` (and micro discovery for its service);
  publishes only its host's events, heartbeat and job reports (``<p>.events.<host>.>``,
  ``<p>.hosts.<host>.>``); calls other agents' read-only endpoints only (a destination fetches
  the guest CPU from the source's ``domains``; a source checks its peer's ``caps``).
- ``coordinator``: serves ``<p>.coordinator.>``, calls every agent endpoint, hears agents'
  reports and events, publishes ``<p>.migrations.*.{phase,progress}``.
- ``operator`` (CLI, automation): calls the coordinator and the agents' read-only endpoints,
  hears every event; can not call an agent's migration, storage move/abort or probe endpoints.
- ``monitor``: hears events, phases and progress; publishes nothing.

Replies: every requester gets its replies on its own inbox, ``_INBOX.<its public key>``
(:func:`inbox_prefix`), so no role can read another client's replies; responders publish
replies through the server's ``allow_responses`` (only to the reply subject of a request they
received, once).

Pure data: no I/O, no key material. JSON-compatible dicts, the shape of nats-server's
``permissions`` block.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from baton.schemas.subjects import (
    AGENT_SERVICE,
    COORDINATOR_SERVICE,
    AgentEndpoint,
    MigrationEvent,
    Subjects,
    is_host_id,
)


class Role(StrEnum):
    AGENT = "agent"  # one per host: agent-<host>
    COORDINATOR = "coordinator"
    OPERATOR = "operator"
    MONITOR = "monitor"


# Agent endpoints that only read: an operator may call them, an agent may call a peer's.
READ_ONLY_ENDPOINTS = (AgentEndpoint.CAPS, AgentEndpoint.DOMAINS, AgentEndpoint.STATUS,
                       AgentEndpoint.CPU_COMPARE, AgentEndpoint.CPU_BASELINE)
# What an agent asks of its peers (see agent/service.py remote_domain_fetcher, migration.start).
PEER_ENDPOINTS = (AgentEndpoint.CAPS, AgentEndpoint.DOMAINS)
INBOX_ROOT = "_INBOX"


def inbox_prefix(public_key: str) -> str:
    """The inbox a client with this nkey uses (nats.connect's ``inbox_prefix``)."""
    return f"{INBOX_ROOT}.{public_key}"


def _discovery_served(service: str) -> list[str]:
    """What a NATS micro service subscribes to for discovery: all, by name, by name and id."""
    verbs = ("PING", "INFO", "STATS")
    return ([f"$SRV.{verb}" for verb in verbs] + [f"$SRV.{verb}.{service}" for verb in verbs]
            + [f"$SRV.{verb}.{service}.>" for verb in verbs])


def _kv_bucket(bucket: str) -> list[str]:
    """The JetStream API calls (and the KV subjects) the coordinator makes on one of its own
    buckets (the records, the leadership lease) only: bind or create it, put, get, and list keys
    (an ordered consumer), and scale its replicas up."""
    stream = f"KV_{bucket}"
    return ["$JS.API.INFO", f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.CREATE.{stream}",
            f"$JS.API.STREAM.UPDATE.{stream}",
            f"$JS.API.STREAM.MSG.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>", f"$JS.API.CONSUMER.DELETE.{stream}.>",
            f"$KV.{bucket}.>"]


def _discovery_asked(service: str) -> list[str]:
    return [f"$SRV.{verb}.{service}" for verb in ("PING", "INFO")]


def permissions(role: Role, public_key: str, *, prefix: str = "baton",
                host: str | None = None) -> dict[str, Any]:
    """nats-server permissions for one user (``public_key``) of ``role``; ``host`` for agents."""
    if (role is Role.AGENT) != (host is not None):
        raise ValueError("an agent role needs its host id, and only an agent role takes one")
    if host is not None and not is_host_id(host):
        raise ValueError(f"invalid host id {host!r}")
    inbox = f"{inbox_prefix(public_key)}.>"
    p = prefix
    agent_read = [f"{p}.agent.*.{endpoint.value}" for endpoint in READ_ONLY_ENDPOINTS]
    hear_all = [f"{p}.events.>", f"{p}.migrations.>", f"{p}.hosts.>"]
    if role is Role.AGENT:
        publish = ([f"{p}.events.{host}.>", f"{p}.hosts.{host}.>"]
                   + [f"{p}.agent.*.{endpoint.value}" for endpoint in PEER_ENDPOINTS]
                   + _discovery_asked(AGENT_SERVICE))
        subscribe = [f"{p}.agent.{host}.>", inbox, *_discovery_served(AGENT_SERVICE)]
    elif role is Role.COORDINATOR:
        publish = ([f"{p}.agent.>"]
                   + [f"{p}.migrations.*.{event.value}"
                      for event in (MigrationEvent.PHASE, MigrationEvent.PROGRESS)]
                   + _discovery_asked(AGENT_SERVICE)
                   + _kv_bucket(Subjects(prefix).jobs_bucket)
                   + _kv_bucket(Subjects(prefix).leader_bucket))
        subscribe = [f"{p}.coordinator.>", f"{p}.events.>", f"{p}.hosts.>", inbox,
                     *_discovery_served(COORDINATOR_SERVICE)]
    elif role is Role.OPERATOR:
        publish = [f"{p}.coordinator.>", *agent_read, *_discovery_asked(AGENT_SERVICE),
                   *_discovery_asked(COORDINATOR_SERVICE)]
        subscribe = [*hear_all, inbox]
    else:
        publish = []
        subscribe = hear_all
    perms: dict[str, Any] = {"publish": {"allow": publish} if publish else {"deny": [">"]},
                             "subscribe": {"allow": subscribe}}
    if role in (Role.AGENT, Role.COORDINATOR):
        perms["allow_responses"] = True  # answer requests on the requester's reply subject
    return perms


def user_name(role: Role, host: str | None = None) -> str:
    """The role's user name in files and logs: ``agent-h1``, ``coordinator``, ..."""
    return f"{role.value}-{host}" if role is Role.AGENT else role.value
