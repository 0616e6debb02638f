"""``baton hosts --baseline``: the cluster's CPU baseline, and which guests' CPUs it can run.

Asks every host's agent at once for its caps (the host's ``<cpu>`` as libvirt describes it) and
its domains with their migratable CPU definitions, then one agent (the first host by id that
answered) for ``cpu.baseline`` over all of them: libvirt computes the baseline and judges each
distinct guest CPU once. Nothing is judged here, except that a TCG guest is outside the
baseline (TCG_REASON). A host that does not answer is named on stderr, left out of the baseline,
and the others are still shown, as ``baton vms`` does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click
import msgspec
from nats.aio.client import Client
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from baton.cli.common import Settings, no_agent_message
from baton.cli.render import make_console
from baton.mesh import client
from baton.schemas import timeouts
from baton.schemas.agent import (
    CapsRequest,
    CpuBaselineReply,
    CpuBaselineRequest,
    DomainInfo,
    DomainsReply,
    DomainsRequest,
    GuestCpuFit,
    GuestCpuVerdict,
    HostCaps,
)
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.subjects import AgentEndpoint

_FIT_STYLE = {GuestCpuFit.RUNS: "green", GuestCpuFit.DOES_NOT_RUN: "red",
              GuestCpuFit.NOT_JUDGED: "yellow"}
_API_CALL = {"hypervisor": "baselineHypervisorCPU", "cpu_map": "baselineCPU, libvirt's CPU map "
             "only: this driver has no baselineHypervisorCPU"}


class HostCpuRow(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    cpu_vendor: str
    cpu_model: str


class GuestRow(msgspec.Struct, frozen=True, kw_only=True):
    """One domain on one host, as ``-o json`` prints it."""

    vm: str
    host: str
    state: str
    cpu: str  # the guest CPU's model, or its mode when it names none ("none": no <cpu>)
    fit: str
    reason: str
    missing_features: list[str] = []


class Answered(msgspec.Struct, frozen=True, kw_only=True):
    """What the hosts told: caps and domains of those that answered, why the others did not."""

    caps: dict[str, HostCaps]
    domains: dict[str, list[DomainInfo]]
    unanswered: dict[str, str]


def distinct_guest_cpus(domains: dict[str, list[DomainInfo]]) -> list[str | None]:
    """Each guest CPU definition once, in order of first appearance (a domain without one: None)."""
    return list(dict.fromkeys(d.cpu_xml for found in domains.values() for d in found))


def guest_rows(domains: dict[str, list[DomainInfo]], cpus: list[str | None],
               verdicts: list[GuestCpuVerdict]) -> list[GuestRow]:
    """A row a domain and host, by VM name then host, with the verdict of its CPU."""
    verdict_of = dict(zip(cpus, verdicts, strict=True))
    rows = [_row(host, d, verdict_of[d.cpu_xml]) for host, found in domains.items() for d in found]
    return sorted(rows, key=lambda r: (r.vm, r.host))


# A TCG guest's CPU is emulated by QEMU: the hosts' physical CPUs, which the baseline is made of,
# do not limit it (the lab's qemu64 guests need svm, which an Intel host lacks, and run).
TCG_REASON = ("TCG guest (domain type qemu): QEMU emulates its CPU, so the hosts' physical CPUs "
              "do not limit it; the baseline applies to KVM guests")


def _row(host: str, d: DomainInfo, verdict: GuestCpuVerdict) -> GuestRow:
    cpu = verdict.model or verdict.mode or "none"
    if d.virt_type == "qemu":
        return GuestRow(vm=d.name, host=host, state=str(d.state), cpu=cpu,
                        fit=str(GuestCpuFit.NOT_JUDGED), reason=TCG_REASON)
    return GuestRow(vm=d.name, host=host, state=str(d.state), cpu=cpu, fit=str(verdict.fit),
                    reason=verdict.reason, missing_features=verdict.missing_features)


def host_rows(caps: dict[str, HostCaps]) -> list[HostCpuRow]:
    return [HostCpuRow(host=host, cpu_vendor=c.cpu.vendor, cpu_model=c.cpu.model)
            for host, c in sorted(caps.items())]


def as_json(reply: CpuBaselineReply, hosts: list[HostCpuRow], rows: list[GuestRow],
            unanswered: dict[str, str]) -> str:
    doc: dict[str, Any] = {"computed_on": reply.host_id, "computed_by": str(reply.computed_by),
                           "baseline": msgspec.to_builtins(reply.baseline),
                           "hosts": msgspec.to_builtins(hosts), "vms": msgspec.to_builtins(rows),
                           "unanswered": unanswered}
    doc["baseline"].pop("kind", None)
    return json.dumps(doc, indent=2)


def baseline_view(reply: CpuBaselineReply, hosts: list[HostCpuRow], rows: list[GuestRow]) -> Group:
    base = reply.baseline
    vendor = f" ({escape(base.vendor)})" if base.vendor else ""
    head = Text.from_markup(
        f"[bold]CPU baseline of {', '.join(h.host for h in hosts)}: {escape(base.model)}{vendor}"
        f"[/], {len(base.features)} features (computed by {reply.host_id}'s libvirt, "
        f"{escape(_API_CALL.get(str(reply.computed_by), str(reply.computed_by)))})")
    features = Text(" ".join(base.features), style="dim")
    host_table = Table(title="hosts")
    for column in ("host", "vendor", "CPU model"):
        host_table.add_column(column)
    for h in hosts:
        host_table.add_row(h.host, escape(h.cpu_vendor), escape(h.cpu_model))
    return Group(head, features, host_table, _guest_table(rows))


def _guest_table(rows: list[GuestRow]) -> Table:
    table = Table(title="guests on the baseline")
    for column in ("vm", "host", "state", "guest CPU", "runs on baseline", "reason"):
        table.add_column(column, overflow="fold" if column in ("guest CPU", "reason") else "ellipsis")
    for r in rows:
        fit = f"[{_FIT_STYLE.get(GuestCpuFit(r.fit), 'default')}]{r.fit.replace('_', ' ')}[/]"
        table.add_row(escape(r.vm), r.host, r.state, escape(r.cpu), fit, escape(r.reason))
    return table


# --- asking the agents ------------------------------------------------------------------------


async def show_baseline(nc: Client, settings: Settings, hosts: list[str]) -> None:
    answered = await _ask_hosts(nc, settings, hosts)
    if not answered.caps:
        raise BatonError(ErrorCode.UNAVAILABLE, "no host told its CPU: " + "; ".join(
            f"{host}: {why}" for host, why in answered.unanswered.items()))
    cpus = distinct_guest_cpus(answered.domains)
    on = min(answered.caps)
    reply = await _baseline(nc, settings, on, CpuBaselineRequest(
        host_cpus=[c.cpu.xml or "" for _, c in sorted(answered.caps.items())], guest_cpus=cpus))
    hosts_shown = host_rows(answered.caps)
    rows = guest_rows(answered.domains, cpus, reply.guests)
    if settings.json:
        click.echo(as_json(reply, hosts_shown, rows, answered.unanswered))
    else:
        make_console().print(baseline_view(reply, hosts_shown, rows))
    for host, why in answered.unanswered.items():
        click.echo(f"baton: {host} left out of the baseline: {why}", err=True)


async def _ask_hosts(nc: Client, settings: Settings, hosts: list[str]) -> Answered:
    caps = await asyncio.gather(*(_ask(nc, settings, h, AgentEndpoint.CAPS, CapsRequest(),
                                       HostCaps, timeouts.AGENT_CAPS) for h in hosts),
                                return_exceptions=True)
    domains = await asyncio.gather(*(_ask(nc, settings, h, AgentEndpoint.DOMAINS,
                                          DomainsRequest(include_cpu_xml=True), DomainsReply,
                                          timeouts.AGENT_DOMAINS) for h in hosts),
                                   return_exceptions=True)
    answered = Answered(caps={}, domains={}, unanswered={})
    for host, host_caps, found in zip(hosts, caps, domains, strict=True):
        if why := _why_unanswered(host_caps) or _why_unanswered(found):
            answered.unanswered[host] = why
        elif isinstance(host_caps, HostCaps) and isinstance(found, DomainsReply):
            answered.caps[host] = host_caps
            answered.domains[host] = found.domains
    return answered


def _why_unanswered(answer: object) -> str | None:
    if isinstance(answer, BatonError):
        return answer.message
    if isinstance(answer, BaseException):
        raise answer
    if isinstance(answer, HostCaps) and answer.cpu.xml is None:
        return "its agent does not report its CPU definition (an agent older than cpu.baseline)"
    return None


async def _ask(nc: Client, settings: Settings, host: str, endpoint: AgentEndpoint, request: Any,
               reply_type: type[Any], deadline_s: float) -> Any:
    try:
        return await client.request(nc, settings.subjects.agent(host, endpoint), request,
                                    reply_type, deadline_s)
    except (client.NoResponders, client.NoReply) as exc:
        exc.message = no_agent_message(host, exc)
        raise


async def _baseline(nc: Client, settings: Settings, host: str,
                    request: CpuBaselineRequest) -> CpuBaselineReply:
    try:
        reply: CpuBaselineReply = await _ask(nc, settings, host, AgentEndpoint.CPU_BASELINE,
                                             request, CpuBaselineReply, timeouts.AGENT_CPU_BASELINE)
    except BatonError as exc:
        if not isinstance(exc, (client.NoResponders, client.NoReply)):
            exc.message = f"agent on '{host}' answered {exc.code} computing the baseline: " \
                          f"{exc.message}"
        raise
    return reply
