"""``baton hosts --baseline`` over a real nats-server: scripted fake agents (whose cpu.baseline is the
agent's own code over the fake CPU map) with h1 on Haswell-noTSX and h2, h3 on Westmere; and once
the real agents on libvirt's test driver, whose host CPU names no model."""

from __future__ import annotations

import json

import msgspec
import pytest

from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.subjects import AgentEndpoint
from tests.integration.cli_runner import (  # the fixture is autouse here
    baton,
    logs_beside_the_cli_output,  # noqa: F401
)
from tests.integration.fake_agents import Mesh, domain, host_caps

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.integration.coordinator_fixtures",)

WESTMERE = "<cpu mode='custom' match='exact'><model fallback='forbid'>Westmere</model></cpu>"


@pytest.fixture
def intel(mesh: Mesh) -> Mesh:
    """h1 Haswell-noTSX, h2 and h3 Westmere; h1 runs vm1 (EPYC), vmwest (Westmere), vmpass
    (host-passthrough) and vmnone (no <cpu>), with vmshared (EPYC) and vmoff (EPYC) defined."""
    mesh["h1"].caps_reply = host_caps("h1", cpu_model="Haswell-noTSX", cpu_vendor="Intel")
    for host in ("h2", "h3"):
        mesh[host].caps_reply = host_caps(host, cpu_model="Westmere", cpu_vendor="Intel")
    for name, cpu in (("vmwest", WESTMERE), ("vmpass", "<cpu mode='host-passthrough'/>"),
                      ("vmnone", None)):
        mesh["h1"].add_domain(msgspec.structs.replace(domain(name), cpu_xml=cpu))
    return mesh


async def test_the_baseline_of_every_host_judges_every_guest(nats_server, intel):
    result = await baton(nats_server, "hosts", "--baseline", "-o", "json")
    assert 0 == result.exit_code, result.output
    shown = json.loads(result.stdout)
    assert ("h1", "cpu_map", "Westmere", "Intel") == (
        shown["computed_on"], shown["computed_by"], shown["baseline"]["model"],
        shown["baseline"]["vendor"])
    assert [("h1", "Haswell-noTSX"), ("h2", "Westmere"), ("h3", "Westmere")] == [
        (h["host"], h["cpu_model"]) for h in shown["hosts"]]
    assert [("vm1", "EPYC", "does_not_run"), ("vmnone", "none", "runs"),
            ("vmoff", "EPYC", "does_not_run"), ("vmpass", "host-passthrough", "not_judged"),
            ("vmshared", "EPYC", "does_not_run"), ("vmwest", "Westmere", "runs")] == [
        (v["vm"], v["cpu"], v["fit"]) for v in shown["vms"]]
    assert ({}, ["avx", "avx2", "bmi1", "fma", "sha-ni", "sse4a", "svm"]) == (
        shown["unanswered"], shown["vms"][0]["missing_features"])
    # every host's CPU went into one request; each distinct guest CPU once
    [asked] = intel["h1"].asked(AgentEndpoint.CPU_BASELINE)
    assert (3, 4) == (len(asked.host_cpus), len(asked.guest_cpus))


async def test_the_table_names_the_baseline_and_each_guests_verdict(nats_server, intel):
    result = await baton(nats_server, "hosts", "--baseline")
    assert 0 == result.exit_code, result.output
    assert "CPU baseline of h1, h2, h3: Westmere (Intel)" in result.stdout
    assert [True] * 4 == [text in result.stdout
                          for text in ("Haswell-noTSX", "vmpass", "does not run", "not judged")]


async def test_a_host_that_does_not_answer_is_named_and_left_out_of_the_baseline(
        nats_server, intel):
    intel["h1"].caps_error = BatonError(ErrorCode.HYPERVISOR, "libvirt connection lost")
    result = await baton(nats_server, "hosts", "--baseline", "-o", "json")
    assert 0 == result.exit_code, result.output
    shown = json.loads(result.stdout)
    assert ({"h1": "libvirt connection lost"}, "h2", ["h2", "h3"], []) == (
        shown["unanswered"], shown["computed_on"], [h["host"] for h in shown["hosts"]],
        shown["vms"])
    assert "h1 left out of the baseline: libvirt connection lost" in result.output


async def test_hosts_libvirt_cannot_baseline_fail_with_the_agents_reason(nats_server, intel):
    intel["h3"].caps_reply = host_caps("h3")  # an AMD EPYC among Intel hosts
    result = await baton(nats_server, "hosts", "--baseline")
    assert 1 == result.exit_code
    assert ("baton: agent on 'h1' answered hypervisor computing the baseline: computing a CPU "
            "baseline: operation failed: CPU vendors do not match") in result.output


async def test_when_no_host_answers_the_baseline_is_unavailable(nats_server, intel):
    for host in ("h1", "h2", "h3"):
        intel[host].domains_error = BatonError(ErrorCode.HYPERVISOR, "libvirt connection lost")
    result = await baton(nats_server, "hosts", "--baseline")
    assert 4 == result.exit_code
    assert "no host told its CPU: h1: libvirt connection lost" in result.output


async def test_real_agents_send_their_hosts_cpu_and_libvirts_refusal_comes_back(
        nats_server, two_agents):
    """The test driver's host CPU names no model, so libvirt cannot baseline it: what comes back
    is libvirt's own reason, through the agent that computed it."""
    result = await baton(nats_server, "hosts", "--baseline")
    assert 1 == result.exit_code
    assert ("agent on 'h1' answered hypervisor computing the baseline: computing a CPU baseline: "
            "XML error: Missing CPU model name") in result.output
