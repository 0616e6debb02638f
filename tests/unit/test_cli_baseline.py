"""``baton hosts --baseline``'s pure parts: which guest CPUs are sent, rows, JSON, who is left out."""

from __future__ import annotations

import json

import msgspec

from baton.cli import baseline
from baton.schemas.agent import (
    BaselineApi,
    BaselineCpu,
    CpuBaselineReply,
    CpuInfo,
    GuestCpuFit,
    GuestCpuVerdict,
)
from baton.schemas.errors import BatonError, ErrorCode
from tests.integration.fake_agents import domain, host_caps

A, B = "<cpu><model>A</model></cpu>", "<cpu><model>B</model></cpu>"


def with_cpu(name: str, cpu: str | None):
    return msgspec.structs.replace(domain(name), cpu_xml=cpu)


def test_each_guest_cpu_is_sent_once_in_order_of_first_appearance():
    domains = {"h1": [with_cpu("v1", A), with_cpu("v2", None)],
               "h2": [with_cpu("v3", B), with_cpu("v4", A), with_cpu("v5", None)]}
    assert [A, None, B] == baseline.distinct_guest_cpus(domains)


def test_every_domain_gets_the_verdict_of_its_cpu_sorted_by_vm_then_host():
    runs = GuestCpuVerdict(fit=GuestCpuFit.RUNS, reason="fine", mode="custom", model="A")
    passthrough = GuestCpuVerdict(fit=GuestCpuFit.NOT_JUDGED, reason="identical hosts only",
                                  mode="host-passthrough")
    none = GuestCpuVerdict(fit=GuestCpuFit.RUNS, reason="default")
    domains = {"h2": [with_cpu("v1", A)], "h1": [with_cpu("v1", A), with_cpu("v0", B),
                                                  with_cpu("v2", None)]}
    rows = baseline.guest_rows(domains, [A, B, None], [runs, passthrough, none])
    assert [("v0", "h1", "host-passthrough", "not_judged"), ("v1", "h1", "A", "runs"),
            ("v1", "h2", "A", "runs"), ("v2", "h1", "none", "runs")] == [
        (r.vm, r.host, r.cpu, r.fit) for r in rows]


def test_a_tcg_guest_is_outside_the_baseline_whatever_libvirt_says_of_its_cpu():
    lacks = GuestCpuVerdict(fit=GuestCpuFit.DOES_NOT_RUN, reason="lacks svm", mode="custom",
                            model="qemu64", missing_features=["svm"])
    domains = {"h1": [msgspec.structs.replace(with_cpu("t", A), virt_type="qemu"),
                      with_cpu("k", A)]}
    rows = baseline.guest_rows(domains, [A], [lacks])
    assert [("k", "does_not_run", ["svm"]), ("t", "not_judged", [])] == [
        (r.vm, r.fit, r.missing_features) for r in rows]
    assert baseline.TCG_REASON == rows[1].reason


def test_the_json_has_the_baseline_without_its_tag_and_who_computed_it():
    reply = CpuBaselineReply(host_id="h1", computed_by=BaselineApi.HYPERVISOR, baseline=BaselineCpu(
        model="Westmere", vendor="Intel", features=["aes"], xml="<cpu/>"))
    shown = json.loads(baseline.as_json(reply, baseline.host_rows({"h1": host_caps("h1")}), [],
                                        {"h2": "gone"}))
    assert {"computed_on": "h1", "computed_by": "hypervisor",
            "baseline": {"model": "Westmere", "vendor": "Intel", "features": ["aes"],
                         "xml": "<cpu/>"},
            "hosts": [{"host": "h1", "cpu_vendor": "AMD", "cpu_model": "EPYC"}], "vms": [],
            "unanswered": {"h2": "gone"}} == shown


def test_a_host_is_left_out_when_it_fails_or_its_agent_does_not_send_its_cpu():
    old = msgspec.structs.replace(host_caps("h1"), cpu=CpuInfo(arch="x86_64", vendor="AMD",
                                                               model="EPYC"))
    why = [baseline._why_unanswered(answer) for answer in (
        BatonError(ErrorCode.TIMEOUT, "no reply in time"), old, host_caps("h1"))]
    assert ["no reply in time", "its agent does not report its CPU definition (an agent older "
            "than cpu.baseline)", None] == why
