"""``baton vms`` against scripted fake agents over a real nats-server (h1 holds vm1, vmshared
and the shut-off vmoff; h2 and h3 hold nothing)."""

from __future__ import annotations

import json

import pytest

from baton.schemas.agent import DomainState
from baton.schemas.errors import BatonError, ErrorCode
from tests.integration.cli_runner import (  # the fixture is autouse here
    baton,
    logs_beside_the_cli_output,  # noqa: F401
)
from tests.integration.fake_agents import domain

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)

async def test_vms_lists_every_hosts_domains_with_where_they_are(nats_server, mesh):
    mesh["h2"].add_domain(domain("vmoff", directory="/srv/other", state=DomainState.SHUTOFF))
    result = await baton(nats_server, "vms", "-o", "json")
    listed = json.loads(result.stdout)
    assert 0 == result.exit_code, result.output
    assert [("vm1", "h1", "running"), ("vmoff", "h1", "shutoff"), ("vmoff", "h2", "shutoff"),
            ("vmshared", "h1", "running")] == [(r["vm"], r["host"], r["state"])
                                               for r in listed["vms"]]
    assert ({}, {}) == (listed["unanswered"], listed["running_on_two_hosts"])
    table = await baton(nats_server, "vms", "--host", "h1")
    assert 0 == table.exit_code and "vmshared" in table.stdout and "1.0 GiB" in table.stdout


async def test_a_vm_running_on_two_hosts_is_flagged_and_exits_1(nats_server, mesh):
    mesh["h3"].add_domain(domain("vm1", directory="/srv/other"))
    result = await baton(nats_server, "vms")
    assert 1 == result.exit_code
    assert "running on two hosts at once: vm1 on h1, h3" in result.output
    assert "also on h3" in result.stdout


async def test_a_host_that_does_not_answer_is_named_and_the_rest_listed(nats_server, mesh):
    mesh["h1"].domains_error = BatonError(ErrorCode.HYPERVISOR, "libvirt connection lost")
    result = await baton(nats_server, "vms", "-o", "json")
    assert 0 == result.exit_code, result.output
    assert {"h1": "libvirt connection lost"} == json.loads(result.stdout)["unanswered"]
    one = await baton(nats_server, "vms", "--host", "h1")
    unknown = await baton(nats_server, "vms", "--host", "h9")
    assert (1, 3) == (one.exit_code, unknown.exit_code)
    assert "no agent answers for host 'h9'" in unknown.output
