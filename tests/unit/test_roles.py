"""The roles as data: what baton-keys writes into nats-server's config (the server enforces
them; tests/integration/test_nats_roles.py proves that against a real one)."""

from __future__ import annotations

import pytest

from baton.schemas.roles import Role, inbox_prefix, permissions, user_name

KEY = "UABCDEFGH"


def test_an_agent_role_needs_its_host_and_no_other_role_takes_one():
    with pytest.raises(ValueError):
        permissions(Role.AGENT, KEY)
    with pytest.raises(ValueError):
        permissions(Role.OPERATOR, KEY, host="h1")
    with pytest.raises(ValueError):
        permissions(Role.AGENT, KEY, host="h1.>")


def test_an_agent_serves_and_publishes_only_under_its_own_host():
    perms = permissions(Role.AGENT, KEY, host="h1")
    assert {"baton.agent.h1.>", f"{inbox_prefix(KEY)}.>"} <= set(perms["subscribe"]["allow"])
    assert ["baton.events.h1.>", "baton.hosts.h1.>", "baton.agent.*.caps",
            "baton.agent.*.domains"] == perms["publish"]["allow"][:4]
    assert True is perms["allow_responses"]


def test_the_operator_calls_no_agent_endpoint_that_changes_anything():
    allowed = permissions(Role.OPERATOR, KEY)["publish"]["allow"]
    agent_calls = sorted(s for s in allowed if s.startswith("baton.agent."))
    assert ["baton.agent.*.caps", "baton.agent.*.cpu.baseline", "baton.agent.*.cpu.compare",
            "baton.agent.*.domains", "baton.agent.*.status"] == agent_calls
    assert "allow_responses" not in permissions(Role.OPERATOR, KEY)


def test_the_monitor_publishes_nothing():
    perms = permissions(Role.MONITOR, KEY)
    assert ({"deny": [">"]}, ["baton.events.>", "baton.migrations.>", "baton.hosts.>"]) == (
        perms["publish"], perms["subscribe"]["allow"])


def test_a_prefix_moves_every_subject():
    perms = permissions(Role.COORDINATOR, KEY, prefix="dc1.baton")
    subjects = perms["publish"]["allow"] + perms["subscribe"]["allow"]
    jetstream = [s for s in subjects if s.startswith(("$JS.", "$KV."))]
    assert all(s.startswith(("dc1.baton.", "$SRV.", "_INBOX.")) for s in subjects
               if s not in jetstream)
    assert all("dc1-baton-jobs" in s or "dc1-baton-leader" in s
               for s in jetstream if s != "$JS.API.INFO")
    assert {"$KV.dc1-baton-jobs.>", "$KV.dc1-baton-leader.>"} <= set(jetstream)


def test_user_names_say_the_role_and_host():
    assert ("agent-h1", "coordinator") == (user_name(Role.AGENT, "h1"), user_name(Role.COORDINATOR))
