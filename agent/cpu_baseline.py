"""``cpu.baseline``: the CPU every given host can provide, and which guest CPUs it can run.

libvirt computes the baseline of the hosts' CPUs, every feature expanded. A guest CPU is judged
only from libvirt's facts: libvirt expands the guest's model and required features the same way
(as a host-style ``<cpu>``, which both libvirt baseline calls take), the guest's disabled features
are taken out, and the guest runs on the baseline when the baseline requires every feature left
and its vendor is the guest's. A CPU with no fixed definition (``host-passthrough``, ``maximum``,
``host-model`` before it starts) is reported as not judged, never guessed.

The parsers and :func:`judge` are pure; :func:`baseline_reply` asks the hypervisor. Errors: an
unparseable guest CPU is ``bad_request`` before libvirt is asked; libvirt refusing the hosts'
CPUs is its own error (``hypervisor``); one guest CPU libvirt cannot expand is that guest's
``not_judged`` verdict, with libvirt's reason.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from baton.agent.hypervisor import Hypervisor
from baton.schemas.agent import (
    BaselineCpu,
    CpuBaselineReply,
    CpuBaselineRequest,
    GuestCpuFit,
    GuestCpuVerdict,
)
from baton.schemas.errors import BatonError, ErrorCode

# Feature policies a guest CPU needs from its host (``require`` is libvirt's default).
_NEEDED = frozenset({"require", "force"})
# Policies that keep a feature away from the guest, whatever its model lists.
_REMOVED = frozenset({"disable", "forbid"})
# Guest CPU modes with no fixed CPU to judge, and why.
_UNJUDGED = {
    "host-passthrough": "host-passthrough: the guest sees its host's exact CPU, so it runs only on "
                        "identical hosts; it cannot be judged against a baseline",
    "maximum": "maximum: the guest gets everything its host's hypervisor offers, so it runs only on "
               "identical hosts; it cannot be judged against a baseline",
    "host-model": "host-model: libvirt picks the CPU from the host where the guest starts; it is "
                  "judged once it runs (its running definition names the model)",
}
# libvirt errors that belong to one guest's CPU; any other (unavailable, timeout) fails it all.
_GUEST_ERRORS = frozenset({ErrorCode.HYPERVISOR, ErrorCode.UNSUPPORTED})
_LISTED = 8  # missing features named in a reason; the reply lists them all


@dataclass(frozen=True)
class ExpandedCpu:
    """A ``<cpu>`` as libvirt's baseline gives it: every required feature listed."""

    model: str | None
    vendor: str | None
    required: frozenset[str]


@dataclass(frozen=True)
class GuestSpec:
    """What a guest's ``<cpu>`` asks for (mode None: the domain has no ``<cpu>``)."""

    mode: str | None
    model: str | None = None
    vendor: str | None = None
    required: frozenset[str] = frozenset()  # its own <feature>s it needs
    removed: frozenset[str] = frozenset()  # its <feature>s disabled or forbidden


def expanded(cpu_xml: str) -> ExpandedCpu:
    root = ET.fromstring(cpu_xml)
    required = {f.get("name", "") for f in root.findall("feature")
                if f.get("policy", "require") in _NEEDED} - {""}
    return ExpandedCpu(model=_text(root, "model"), vendor=_text(root, "vendor"),
                       required=frozenset(required))


def guest_spec(cpu_xml: str | None) -> GuestSpec:
    """``bad_request`` for anything that is not one ``<cpu>`` element."""
    if cpu_xml is None:
        return GuestSpec(mode=None)
    try:
        root = ET.fromstring(cpu_xml)
    except ET.ParseError as exc:
        raise BatonError(ErrorCode.BAD_REQUEST, f"a guest CPU is not XML: {exc}") from None
    if root.tag != "cpu":
        raise BatonError(ErrorCode.BAD_REQUEST, f"a guest CPU is a <cpu> element, not <{root.tag}>")
    features = [(f.get("name", ""), f.get("policy", "require")) for f in root.findall("feature")]
    return GuestSpec(mode=root.get("mode", "custom"), model=_text(root, "model"),
                     vendor=_text(root, "vendor"),
                     required=frozenset(n for n, p in features if n and p in _NEEDED),
                     removed=frozenset(n for n, p in features if n and p in _REMOVED))


def host_arch(cpu_xml: str) -> str | None:
    """The ``<arch>`` of a host CPU (None if it has none or is not XML: libvirt says why)."""
    try:
        return _text(ET.fromstring(cpu_xml), "arch")
    except ET.ParseError:
        return None


def as_host_cpu(spec: GuestSpec, arch: str | None) -> str:
    """The guest's model, vendor and needed features as a host-style ``<cpu>``, for libvirt to
    expand (the guest's disabled features are taken out afterwards by :func:`judge`)."""
    root = ET.Element("cpu")
    for tag, text in (("arch", arch), ("model", spec.model), ("vendor", spec.vendor)):
        if text:
            ET.SubElement(root, tag).text = text
    for name in sorted(spec.required):
        ET.SubElement(root, "feature", name=name)
    return ET.tostring(root, encoding="unicode")


def unjudged(spec: GuestSpec) -> GuestCpuVerdict | None:
    """The verdict of a guest CPU libvirt need not expand; None when it must be."""
    if spec.mode is None:
        return GuestCpuVerdict(fit=GuestCpuFit.RUNS, reason="no CPU definition: the guest gets "
                               "the hypervisor's default CPU model, which every host of this "
                               "hypervisor runs")
    if spec.mode in _UNJUDGED:
        return _verdict(spec, GuestCpuFit.NOT_JUDGED, _UNJUDGED[spec.mode])
    if spec.model is None:
        return _verdict(spec, GuestCpuFit.NOT_JUDGED, f"{spec.mode} CPU without a <model>: "
                        "libvirt cannot expand its features")
    return None


def judge(baseline: ExpandedCpu, spec: GuestSpec, guest: ExpandedCpu) -> GuestCpuVerdict:
    """Whether the baseline runs a guest CPU that libvirt expanded to ``guest``."""
    vendor = spec.vendor or guest.vendor
    if vendor and baseline.vendor and vendor != baseline.vendor:
        return _verdict(spec, GuestCpuFit.DOES_NOT_RUN,
                        f"the guest CPU is {vendor}'s, the baseline {baseline.vendor}'s")
    needed = guest.required - spec.removed
    if missing := sorted(needed - baseline.required):
        named = ", ".join(missing[:_LISTED]) + (", ..." if len(missing) > _LISTED else "")
        return _verdict(spec, GuestCpuFit.DOES_NOT_RUN, f"the baseline lacks {len(missing)} "
                        f"feature(s) the guest CPU requires: {named}", missing)
    return _verdict(spec, GuestCpuFit.RUNS, f"the baseline provides all {len(needed)} features "
                    f"{spec.model} and the guest's <feature>s require")


def _verdict(spec: GuestSpec, fit: GuestCpuFit, reason: str,
             missing: list[str] | None = None) -> GuestCpuVerdict:
    return GuestCpuVerdict(fit=fit, reason=reason, mode=spec.mode, model=spec.model,
                           missing_features=missing or [])


def _text(root: ET.Element, tag: str) -> str | None:
    return (root.findtext(tag) or "").strip() or None


# --- asking the hypervisor --------------------------------------------------------------------


async def baseline_reply(hv: Hypervisor, host_id: str,
                         request: CpuBaselineRequest) -> CpuBaselineReply:
    specs = [guest_spec(cpu) for cpu in request.guest_cpus]  # refuse bad input before libvirt
    result = await hv.baseline_cpu(request.host_cpus)
    baseline = expanded(result.cpu_xml)
    if baseline.model is None:
        raise BatonError(ErrorCode.HYPERVISOR, "libvirt's baseline of these CPUs names no model")
    arch = host_arch(request.host_cpus[0])
    expansions: dict[str, ExpandedCpu | str] = {}  # guests sharing a model and features: one call
    verdicts = []
    for spec in specs:
        if (verdict := unjudged(spec)) is None:
            host_cpu = as_host_cpu(spec, arch)
            if host_cpu not in expansions:
                expansions[host_cpu] = await _expansion(hv, host_cpu)
            verdict = _judged(baseline, spec, expansions[host_cpu])
        verdicts.append(verdict)
    return CpuBaselineReply(host_id=host_id, computed_by=result.api, guests=verdicts,
                            baseline=BaselineCpu(model=baseline.model, vendor=baseline.vendor,
                                                 features=sorted(baseline.required),
                                                 xml=result.cpu_xml))


async def _expansion(hv: Hypervisor, host_cpu: str) -> ExpandedCpu | str:
    """libvirt's expansion of one guest CPU, or why libvirt could not expand it."""
    try:
        return expanded((await hv.baseline_cpu([host_cpu])).cpu_xml)
    except BatonError as exc:
        if exc.code not in _GUEST_ERRORS:
            raise
        return exc.message


def _judged(baseline: ExpandedCpu, spec: GuestSpec, guest: ExpandedCpu | str) -> GuestCpuVerdict:
    if isinstance(guest, str):
        return _verdict(spec, GuestCpuFit.NOT_JUDGED, f"libvirt cannot expand the guest CPU: {guest}")
    return judge(baseline, spec, guest)
