"""cpu.baseline's judgement of guest CPUs (pure), and the reply built over a fake hypervisor."""

from __future__ import annotations

import pytest

from baton.agent import cpu_baseline
from baton.agent.core import AgentCore
from baton.agent.cpu_baseline import (
    ExpandedCpu,
    GuestSpec,
    as_host_cpu,
    expanded,
    guest_spec,
    judge,
    unjudged,
)
from baton.schemas.agent import BaselineApi, CpuBaselineRequest, DomainInfo, GuestCpuFit
from baton.schemas.errors import BatonError, ErrorCode
from tests.fakes import CPU_MODELS, FakeHypervisor

BASE = ExpandedCpu(model="Westmere", vendor="Intel", required=frozenset({"sse2", "aes", "vmx"}))
HASWELL = "<cpu><arch>x86_64</arch><model>Haswell-noTSX</model><vendor>Intel</vendor></cpu>"
WESTMERE = "<cpu><arch>x86_64</arch><model>Westmere</model><vendor>Intel</vendor></cpu>"


def custom(model: str, *features: tuple[str, str]) -> str:
    listed = "".join(f"<feature policy='{policy}' name='{name}'/>" for policy, name in features)
    return f"<cpu mode='custom' match='exact'><model fallback='forbid'>{model}</model>{listed}</cpu>"


def test_a_guest_cpu_spec_splits_needed_from_removed_features_by_policy():
    spec = guest_spec(custom("Westmere", ("require", "vmx"), ("force", "aes"),
                             ("optional", "pcid"), ("disable", "sse2"), ("forbid", "svm"))
                      .replace("</cpu>", "<feature name='x2apic'/><vendor>Intel</vendor></cpu>"))
    assert GuestSpec(mode="custom", model="Westmere", vendor="Intel",
                     required=frozenset({"vmx", "aes", "x2apic"}),
                     removed=frozenset({"sse2", "svm"})) == spec


def test_libvirts_expansion_requires_what_it_lists_unmarked_required_or_forced_and_nothing_nameless():
    # libvirt's baseline lists features bare (policy require by default); a nameless <feature>
    # is not a feature, whatever its policy
    cpu = expanded("<cpu><model> Westmere </model><vendor>Intel</vendor><feature policy='require'/>"
                   "<feature name=''/><feature name='vmx'/><feature policy='force' name='aes'/>"
                   "<feature policy='disable' name='sse2'/><feature policy='optional' name='pcid'/>"
                   "</cpu>")
    assert ExpandedCpu(model="Westmere", vendor="Intel", required=frozenset({"vmx", "aes"})) == cpu


def test_a_nameless_feature_of_a_guest_cpu_is_neither_needed_nor_removed():
    spec = guest_spec("<cpu><model>Westmere</model><feature policy='require'/>"
                      "<feature policy='disable'/></cpu>")
    assert (frozenset(), frozenset()) == (spec.required, spec.removed)


def test_a_cpu_without_a_mode_is_custom_and_a_domain_without_a_cpu_has_no_mode():
    assert ("custom", None) == (guest_spec("<cpu><model>qemu64</model></cpu>").mode,
                                guest_spec(None).mode)


@pytest.mark.parametrize("xml", ["<cpu", "<domain/>"])
def test_a_guest_cpu_that_is_not_one_cpu_element_is_a_bad_request(xml):
    with pytest.raises(BatonError) as refused:
        guest_spec(xml)
    assert ErrorCode.BAD_REQUEST == refused.value.code


def test_the_guest_goes_to_libvirt_as_a_host_cpu_with_only_its_needed_features():
    spec = guest_spec(custom("Westmere", ("require", "vmx"), ("disable", "aes")))
    assert ("<cpu><arch>x86_64</arch><model>Westmere</model><feature name=\"vmx\" /></cpu>"
            == as_host_cpu(spec, "x86_64"))


def test_the_guests_vendor_goes_to_libvirt_with_its_model():
    spec = guest_spec(custom("EPYC").replace("</cpu>", "<vendor>AMD</vendor></cpu>"))
    assert ("<cpu><model>EPYC</model><vendor>AMD</vendor></cpu>" == as_host_cpu(spec, None))


@pytest.mark.parametrize(("xml", "fit", "says"), [
    (None, GuestCpuFit.RUNS, "default CPU model"),
    ("<cpu mode='host-passthrough'/>", GuestCpuFit.NOT_JUDGED, "runs only on identical hosts"),
    ("<cpu mode='maximum'/>", GuestCpuFit.NOT_JUDGED, "runs only on identical hosts"),
    ("<cpu mode='host-model'/>", GuestCpuFit.NOT_JUDGED, "judged once it runs"),
    ("<cpu mode='custom'><feature name='vmx'/></cpu>", GuestCpuFit.NOT_JUDGED, "without a <model>"),
], ids=["no-cpu", "host-passthrough", "maximum", "host-model", "no-model"])
def test_a_cpu_with_no_fixed_definition_is_answered_without_libvirt(xml, fit, says):
    verdict = unjudged(guest_spec(xml))
    assert verdict is not None
    assert (fit, True) == (verdict.fit, says in verdict.reason)


@pytest.mark.parametrize(("xml", "reason"), [
    (None, "no CPU definition: the guest gets the hypervisor's default CPU model, which every host "
     "of this hypervisor runs"),
    ("<cpu mode='custom'/>", "custom CPU without a <model>: libvirt cannot expand its features"),
], ids=["no-cpu", "no-model"])
def test_the_reasons_for_answering_without_libvirt_say_what_the_guest_gets(xml, reason):
    verdict = unjudged(guest_spec(xml))
    assert verdict is not None and reason == verdict.reason


def test_a_custom_cpu_with_a_model_must_be_expanded_by_libvirt():
    assert unjudged(guest_spec(custom("Westmere"))) is None


def test_a_guest_whose_every_needed_feature_is_in_the_baseline_runs():
    verdict = judge(BASE, guest_spec(custom("Westmere")), ExpandedCpu("Westmere", None,
                                                                      frozenset({"sse2", "aes"})))
    assert (GuestCpuFit.RUNS, [], "Westmere") == (verdict.fit, verdict.missing_features,
                                                  verdict.model)


def test_a_guest_needing_features_the_baseline_lacks_does_not_run_and_names_them():
    guest = ExpandedCpu("Haswell-noTSX", None, frozenset({"sse2", "avx2", "avx"}))
    verdict = judge(BASE, guest_spec(custom("Haswell-noTSX")), guest)
    assert (GuestCpuFit.DOES_NOT_RUN, ["avx", "avx2"]) == (verdict.fit, verdict.missing_features)
    assert "lacks 2 feature(s) the guest CPU requires: avx, avx2" in verdict.reason


def test_a_feature_the_guest_disables_is_not_needed_from_the_baseline():
    guest = ExpandedCpu("Haswell-noTSX", None, frozenset({"sse2", "avx"}))
    verdict = judge(BASE, guest_spec(custom("Haswell-noTSX", ("disable", "avx"))), guest)
    assert GuestCpuFit.RUNS == verdict.fit


def test_a_long_list_of_missing_features_is_cut_in_the_reason_but_whole_in_the_reply():
    many = frozenset(f"f{i:02}" for i in range(10))
    verdict = judge(BASE, guest_spec(custom("Big")), ExpandedCpu("Big", None, many))
    assert (10, True, False) == (len(verdict.missing_features), verdict.reason.endswith(", ..."),
                                 "f08" in verdict.reason)


def test_as_many_missing_features_as_a_reason_names_are_all_named_without_an_ellipsis():
    listed = sorted(f"f{i:02}" for i in range(cpu_baseline._LISTED))
    verdict = judge(BASE, guest_spec(custom("Big")), ExpandedCpu("Big", None, frozenset(listed)))
    assert verdict.reason.endswith(f"requires: {', '.join(listed)}"), verdict.reason


@pytest.mark.parametrize(("given", "expanded_vendor"), [("AMD", None), (None, "AMD")])
def test_a_guest_cpu_of_another_vendor_does_not_run(given, expanded_vendor):
    xml = custom("EPYC") if given is None else custom("EPYC").replace(
        "</cpu>", f"<vendor>{given}</vendor></cpu>")
    verdict = judge(BASE, guest_spec(xml), ExpandedCpu("EPYC", expanded_vendor, frozenset()))
    assert (GuestCpuFit.DOES_NOT_RUN, "the guest CPU is AMD's, the baseline Intel's") == (
        verdict.fit, verdict.reason)


# --- the reply, over the fake hypervisor --------------------------------------------------------


async def baseline(hv: FakeHypervisor, *guests: str | None, hosts=(HASWELL, WESTMERE)):
    core = AgentCore("h1", hv, "qemu+tcp://h1/system", no_remote, heartbeat_interval_s=5)
    return await core.cpu_baseline(CpuBaselineRequest(host_cpus=list(hosts),
                                                      guest_cpus=list(guests)))


async def no_remote(host: str, domain: str) -> DomainInfo:
    raise AssertionError("no remote lookup expected")


async def test_the_reply_gives_libvirts_baseline_and_a_verdict_per_guest_in_order():
    reply = await baseline(FakeHypervisor(), custom("Haswell-noTSX"), None, custom("Westmere"))
    assert ("h1", BaselineApi.CPU_MAP, "Westmere", "Intel", sorted(CPU_MODELS["Westmere"][1])) == (
        reply.host_id, reply.computed_by, reply.baseline.model, reply.baseline.vendor,
        reply.baseline.features)
    assert [GuestCpuFit.DOES_NOT_RUN, GuestCpuFit.RUNS, GuestCpuFit.RUNS] == [
        g.fit for g in reply.guests]
    assert "<model fallback=\"forbid\">Westmere</model>" in reply.baseline.xml


async def test_guests_sharing_a_model_and_features_are_expanded_once():
    hv = FakeHypervisor()
    await baseline(hv, custom("Westmere"), custom("Westmere", ("disable", "aes")),
                   custom("Westmere", ("require", "vmx")), "<cpu mode='host-passthrough'/>")
    assert [2, 1, 1] == [len(cpus) for cpus in hv.baselined]  # the hosts, then two guest CPUs


async def test_the_guest_is_expanded_for_the_hosts_architecture():
    hv = FakeHypervisor()
    await baseline(hv, custom("Westmere"), hosts=(WESTMERE,))
    assert "<arch>x86_64</arch>" in hv.baselined[1][0]


async def test_a_guest_cpu_libvirt_cannot_expand_is_not_judged_with_libvirts_reason():
    reply = await baseline(FakeHypervisor(), custom("NoSuchModel"), custom("Westmere"))
    assert [GuestCpuFit.NOT_JUDGED, GuestCpuFit.RUNS] == [g.fit for g in reply.guests]
    assert "Unknown CPU model NoSuchModel" in reply.guests[0].reason


async def test_a_bad_guest_cpu_is_refused_before_libvirt_is_asked():
    hv = FakeHypervisor()
    with pytest.raises(BatonError) as refused:
        await baseline(hv, custom("Westmere"), "<cpu")
    assert (ErrorCode.BAD_REQUEST, []) == (refused.value.code, hv.baselined)


async def test_hosts_libvirt_cannot_baseline_fail_the_request_with_libvirts_error():
    with pytest.raises(BatonError) as refused:
        await baseline(FakeHypervisor(), hosts=(WESTMERE, WESTMERE.replace("Intel", "AMD")
                                                .replace("Westmere", "EPYC")))
    assert (ErrorCode.HYPERVISOR, True) == (refused.value.code,
                                           "vendors do not match" in refused.value.message)


async def test_a_baseline_without_a_model_is_a_hypervisor_error(monkeypatch):
    monkeypatch.setattr("tests.fakes.fake_baseline", lambda _cpus: "<cpu mode='custom'/>")
    with pytest.raises(BatonError) as refused:
        await baseline(FakeHypervisor())
    assert (ErrorCode.HYPERVISOR, "libvirt's baseline of these CPUs names no model") == (
        refused.value.code, refused.value.message)


async def test_a_libvirt_connection_lost_while_judging_fails_the_whole_request():
    hv = FakeHypervisor()

    async def lost(cpus: list[str]):
        if len(hv.baselined) == 1:
            raise BatonError(ErrorCode.UNAVAILABLE, "fake libvirt is down")
        hv.baselined.append(cpus)
        return await FakeHypervisor.baseline_cpu(FakeHypervisor(), cpus)

    hv.baseline_cpu = lost  # type: ignore[method-assign]
    with pytest.raises(BatonError) as refused:
        await baseline(hv, custom("Westmere"))
    assert ErrorCode.UNAVAILABLE == refused.value.code


def test_the_arch_of_a_host_cpu_that_is_not_xml_is_left_to_libvirt():
    assert (None, "x86_64") == (cpu_baseline.host_arch("<cpu"), cpu_baseline.host_arch(WESTMERE))
