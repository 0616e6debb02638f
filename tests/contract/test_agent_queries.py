"""The agent's read-only endpoints (caps, status, cpu.compare, storage.probe, domains): every
implementation answers each request with the real agent's reply type, error code and facts.

``cpu.baseline`` runs on libvirt's test driver with libvirt's CPU map (it has no
baselineHypervisorCPU); the fakes play it over a few of libvirt's models, so the cases use those.

Not covered: ``cpu.compare`` of a ``cpu_xml``: libvirt's test driver has no CPU comparison (the
real agent answers ``unsupported`` there, while the fakes play a QEMU host that compares).
"""

from __future__ import annotations

import msgspec
import pytest

from baton.schemas.agent import (
    AgentStatus,
    CapsRequest,
    CpuBaselineReply,
    CpuBaselineRequest,
    CpuCompareReply,
    CpuCompareRequest,
    DomainsReply,
    DomainsRequest,
    HostCaps,
    StatusRequest,
    StorageProbeReply,
    StorageProbeRequest,
    TokenAction,
    TokenOp,
)
from baton.schemas.errors import ErrorCode
from baton.schemas.limits import (
    BASELINE_GUESTS_MAX,
    BASELINE_HOSTS_MAX,
    CPU_XML_MAX,
    DOMAIN_NAMES_MAX,
    PROBE_PATHS_MAX,
)
from baton.schemas.subjects import AgentEndpoint as A
from tests.contract.cases import Case, answer, refuses, replies
from tests.contract.implementations import MISSING_DIR, PEER

pytestmark = pytest.mark.integration
TOKEN = "contract-token-1"


def token(action: TokenAction, beside: str, value: str = TOKEN) -> StorageProbeRequest:
    return StorageProbeRequest(token=TokenOp(action=action, beside=beside, token=value))


def probed(reply: StorageProbeReply) -> list[tuple[bool, bool]]:
    return [(p.exists, p.is_dir) for p in reply.paths]


def token_result(reply: StorageProbeReply) -> tuple[str, bool, str]:
    assert reply.token is not None
    return reply.token.action, reply.token.ok, reply.token.token_path.rsplit("/", 1)[-1]


def names(reply: DomainsReply) -> list[str]:
    return [d.name for d in reply.domains]


WRITTEN = (A.STORAGE_PROBE, lambda a: token(TokenAction.WRITE, a.disk("vm1")))
CPU_OF = ("h1", True)  # (host_id, runnable)
HASWELL = "<cpu><arch>x86_64</arch><model>Haswell-noTSX</model><vendor>Intel</vendor></cpu>"
WESTMERE = "<cpu><arch>x86_64</arch><model>Westmere</model><vendor>Intel</vendor></cpu>"
EPYC = "<cpu><arch>x86_64</arch><model>EPYC</model><vendor>AMD</vendor></cpu>"


def guest(model: str) -> str:
    return f"<cpu mode='custom' match='exact'><model fallback='forbid'>{model}</model></cpu>"


def baseline(reply: CpuBaselineReply) -> tuple[str, str, str, list[str]]:
    return (reply.host_id, reply.computed_by, reply.baseline.model,
            [g.fit for g in reply.guests])


def baseline_of(*cpus: str) -> bytes:
    return msgspec.json.encode({"host_cpus": list(cpus)})

CASES = [
    # --- caps and status ----------------------------------------------------------------------
    Case("caps", A.CAPS, lambda a: CapsRequest(), replies(HostCaps, "h1"),
         facts=lambda r: r.host_id, canned=True),
    Case("caps-refresh", A.CAPS, lambda a: CapsRequest(refresh=True), replies(HostCaps, "h1"),
         facts=lambda r: r.host_id, canned=True),
    Case("caps-unknown-field-ignored", A.CAPS, lambda a: b'{"refresh": true, "added_later": 1}',
         replies(HostCaps), canned=True),
    Case("status", A.STATUS, lambda a: StatusRequest(), replies(AgentStatus, ("h1", True)),
         facts=lambda r: (r.host_id, r.libvirt_connected), canned=True),
    # --- cpu.compare: who is compared is decided before libvirt is asked ------------------------
    Case("cpu.compare-local-domain", A.CPU_COMPARE, lambda a: CpuCompareRequest(domain="vm1"),
         replies(CpuCompareReply, CPU_OF), facts=lambda r: (r.host_id, r.runnable)),
    Case("cpu.compare-local-domain-by-host", A.CPU_COMPARE,
         lambda a: CpuCompareRequest(domain="vm1", domain_host="h1"),
         replies(CpuCompareReply, CPU_OF), facts=lambda r: (r.host_id, r.runnable)),
    Case("cpu.compare-domain-on-another-host", A.CPU_COMPARE,
         lambda a: CpuCompareRequest(domain="vm3", domain_host=PEER),
         replies(CpuCompareReply, CPU_OF), facts=lambda r: (r.host_id, r.runnable)),
    Case("cpu.compare-unknown-domain", A.CPU_COMPARE,
         lambda a: CpuCompareRequest(domain="nosuch"), refuses(ErrorCode.NOT_FOUND)),
    Case("cpu.compare-unknown-domain-on-another-host", A.CPU_COMPARE,
         lambda a: CpuCompareRequest(domain="vm1", domain_host=PEER), refuses(ErrorCode.NOT_FOUND)),
    Case("cpu.compare-host-without-agent", A.CPU_COMPARE,
         lambda a: CpuCompareRequest(domain="vm1", domain_host="h9"),
         refuses(ErrorCode.UNAVAILABLE)),
    Case("cpu.compare-nothing-to-compare", A.CPU_COMPARE, lambda a: CpuCompareRequest(),
         refuses(ErrorCode.BAD_REQUEST)),
    Case("cpu.compare-xml-and-domain", A.CPU_COMPARE,
         lambda a: CpuCompareRequest(cpu_xml="<cpu/>", domain="vm1"), refuses(ErrorCode.BAD_REQUEST)),
    Case("cpu.compare-invalid-host-id", A.CPU_COMPARE,
         lambda a: b'{"domain": "vm1", "domain_host": "h.1"}', refuses(ErrorCode.BAD_REQUEST),
         canned=True),
    # --- cpu.baseline: libvirt's baseline, then each guest CPU judged against it --------------
    Case("cpu.baseline-two-hosts", A.CPU_BASELINE,
         lambda a: CpuBaselineRequest(host_cpus=[HASWELL, WESTMERE], guest_cpus=[
             guest("Haswell-noTSX"), None, guest("Westmere"), "<cpu mode='host-passthrough'/>",
             guest("NoSuchModel")]),
         replies(CpuBaselineReply, ("h1", "cpu_map", "Westmere",
                                    ["does_not_run", "runs", "runs", "not_judged", "not_judged"])),
         facts=baseline),
    Case("cpu.baseline-no-guests", A.CPU_BASELINE,
         lambda a: CpuBaselineRequest(host_cpus=[HASWELL]),
         replies(CpuBaselineReply, ("h1", "cpu_map", "Haswell-noTSX", [])), facts=baseline),
    Case("cpu.baseline-vendors-differ", A.CPU_BASELINE,
         lambda a: CpuBaselineRequest(host_cpus=[WESTMERE, EPYC]), refuses(ErrorCode.HYPERVISOR)),
    Case("cpu.baseline-host-cpu-without-model", A.CPU_BASELINE,
         lambda a: CpuBaselineRequest(host_cpus=["<cpu><arch>x86_64</arch></cpu>"]),
         refuses(ErrorCode.HYPERVISOR)),
    Case("cpu.baseline-guest-cpu-not-xml", A.CPU_BASELINE,
         lambda a: CpuBaselineRequest(host_cpus=[WESTMERE], guest_cpus=["<cpu"]),
         refuses(ErrorCode.BAD_REQUEST)),
    Case("cpu.baseline-guest-not-a-cpu", A.CPU_BASELINE,
         lambda a: CpuBaselineRequest(host_cpus=[WESTMERE], guest_cpus=["<domain/>"]),
         refuses(ErrorCode.BAD_REQUEST)),
    Case("cpu.baseline-no-hosts", A.CPU_BASELINE, lambda a: baseline_of(),
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("cpu.baseline-empty-host-cpu", A.CPU_BASELINE, lambda a: baseline_of(""),
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("cpu.baseline-overlong-host-cpu", A.CPU_BASELINE,
         lambda a: baseline_of("<cpu>" + " " * CPU_XML_MAX + "</cpu>"),
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("cpu.baseline-too-many-hosts", A.CPU_BASELINE,
         lambda a: baseline_of(*[WESTMERE] * (BASELINE_HOSTS_MAX + 1)),
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("cpu.baseline-too-many-guests", A.CPU_BASELINE,
         lambda a: msgspec.json.encode({"host_cpus": [WESTMERE],
                                        "guest_cpus": [None] * (BASELINE_GUESTS_MAX + 1)}),
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    # --- storage.probe: paths ------------------------------------------------------------------
    Case("storage.probe-nothing", A.STORAGE_PROBE, lambda a: StorageProbeRequest(),
         replies(StorageProbeReply, ([], None)), facts=lambda r: (r.paths, r.token), canned=True),
    Case("storage.probe-pool-directory", A.STORAGE_PROBE,
         lambda a: StorageProbeRequest(paths=[a.pool_dir]),
         replies(StorageProbeReply, [(True, True)]), facts=probed),
    Case("storage.probe-disk", A.STORAGE_PROBE,
         lambda a: StorageProbeRequest(paths=[a.disk("vm1")]),
         replies(StorageProbeReply, [(True, False)]), facts=probed),
    Case("storage.probe-missing-file", A.STORAGE_PROBE,
         lambda a: StorageProbeRequest(paths=[f"{a.pool_dir}/absent.qcow2"]),
         replies(StorageProbeReply, [(False, False)]), facts=probed),
    Case("storage.probe-outside-every-pool", A.STORAGE_PROBE,
         lambda a: StorageProbeRequest(paths=[a.outside_dir]), refuses(ErrorCode.FORBIDDEN)),
    Case("storage.probe-file-outside-every-pool", A.STORAGE_PROBE,
         lambda a: StorageProbeRequest(paths=[a.pool_dir, f"{MISSING_DIR}/x.qcow2"]),
         refuses(ErrorCode.FORBIDDEN)),
    Case("storage.probe-climbs-out-of-a-pool", A.STORAGE_PROBE,
         lambda a: StorageProbeRequest(paths=[f"{a.pool_dir}/../../etc/passwd"]),
         refuses(ErrorCode.FORBIDDEN)),
    Case("storage.probe-many-paths", A.STORAGE_PROBE,  # as many as schemas/limits.py allows
         lambda a: StorageProbeRequest(paths=[f"{a.pool_dir}/{i}" for i in range(PROBE_PATHS_MAX)]),
         replies(StorageProbeReply, PROBE_PATHS_MAX), facts=lambda r: len(r.paths)),
    Case("storage.probe-too-many-paths", A.STORAGE_PROBE,
         lambda a: msgspec.json.encode({"paths": [f"{MISSING_DIR}/{i}" for i in range(1000)]}),
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("storage.probe-relative-path", A.STORAGE_PROBE, lambda a: b'{"paths": ["etc/passwd"]}',
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("storage.probe-empty-path", A.STORAGE_PROBE, lambda a: b'{"paths": [""]}',
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    # --- storage.probe: the shared-storage token ------------------------------------------------
    Case("storage.probe-token-write", A.STORAGE_PROBE, WRITTEN[1],
         replies(StorageProbeReply, ("write", True, f".baton-probe-{TOKEN}")), facts=token_result),
    Case("storage.probe-token-read-back", A.STORAGE_PROBE,
         lambda a: token(TokenAction.READ, a.disk("vm2")), before=(WRITTEN,),
         expected=replies(StorageProbeReply, ("read", True, f".baton-probe-{TOKEN}")),
         facts=token_result),
    Case("storage.probe-token-read-unwritten", A.STORAGE_PROBE,
         lambda a: token(TokenAction.READ, a.disk("vm1")),
         replies(StorageProbeReply, ("read", False, f".baton-probe-{TOKEN}")), facts=token_result),
    Case("storage.probe-token-read-another", A.STORAGE_PROBE,
         lambda a: token(TokenAction.READ, a.disk("vm1"), "contract-token-2"), before=(WRITTEN,),
         expected=replies(StorageProbeReply, ("read", False, ".baton-probe-contract-token-2")),
         facts=token_result),
    Case("storage.probe-token-write-in-missing-dir", A.STORAGE_PROBE,
         lambda a: token(TokenAction.WRITE, f"{MISSING_DIR}/x.qcow2"),
         refuses(ErrorCode.FORBIDDEN)),
    Case("storage.probe-token-write-outside-disks-and-pools", A.STORAGE_PROBE,
         lambda a: token(TokenAction.WRITE, f"{a.outside_dir}/x.qcow2"),
         refuses(ErrorCode.FORBIDDEN)),
    Case("storage.probe-token-remove-outside-disks-and-pools", A.STORAGE_PROBE,
         lambda a: token(TokenAction.REMOVE, f"{a.outside_dir}/x.qcow2"),
         refuses(ErrorCode.FORBIDDEN)),
    Case("storage.probe-token-write-in-an-empty-pool", A.STORAGE_PROBE,
         lambda a: token(TokenAction.WRITE, f"{a.other_pool_dir}/x.qcow2"),
         replies(StorageProbeReply, ("write", True, f".baton-probe-{TOKEN}")), facts=token_result),
    Case("storage.probe-token-read-outside-disks-and-pools", A.STORAGE_PROBE,
         lambda a: token(TokenAction.READ, f"{a.outside_dir}/x.qcow2"),
         replies(StorageProbeReply, ("read", False, f".baton-probe-{TOKEN}")), facts=token_result),
    Case("storage.probe-token-remove-unwritten", A.STORAGE_PROBE,
         lambda a: token(TokenAction.REMOVE, a.disk("vm1")),
         replies(StorageProbeReply, ("remove", True, f".baton-probe-{TOKEN}")), facts=token_result),
    Case("storage.probe-token-malformed", A.STORAGE_PROBE,
         lambda a: b'{"token": {"action": "write", "beside": "/x/y", "token": "short"}}',
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("storage.probe-token-beside-relative", A.STORAGE_PROBE,
         lambda a: b'{"token": {"action": "read", "beside": "x/y", "token": "contract-token-1"}}',
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    # --- domains --------------------------------------------------------------------------------
    Case("domains", A.DOMAINS, lambda a: DomainsRequest(),
         replies(DomainsReply, (["vm1", "vm2", "vmoff"], {None})),
         facts=lambda r: (names(r), {d.cpu_xml for d in r.domains})),
    Case("domains-in-asked-order", A.DOMAINS, lambda a: DomainsRequest(names=["vm2", "vm1"]),
         replies(DomainsReply, ["vm2", "vm1"]), facts=names),
    Case("domains-states", A.DOMAINS, lambda a: DomainsRequest(names=["vm1", "vmoff"]),
         replies(DomainsReply, [("vm1", "running", True), ("vmoff", "shutoff", False)]),
         facts=lambda r: [(d.name, d.state, d.active) for d in r.domains]),
    Case("domains-disks", A.DOMAINS, lambda a: DomainsRequest(names=["vm1"]),
         replies(DomainsReply, [("vda", "file", "vm1.qcow2", "qcow2")]),
         facts=lambda r: [(d.target, d.source_type, (d.source_path or "").rsplit("/", 1)[-1],
                           d.format) for d in r.domains[0].disks]),
    Case("domains-no-names", A.DOMAINS, lambda a: DomainsRequest(names=[]),
         replies(DomainsReply, []), facts=names),
    Case("domains-many-names", A.DOMAINS, lambda a: DomainsRequest(names=["vm1"] * 100),
         replies(DomainsReply, 100), facts=lambda r: len(r.domains)),
    Case("domains-too-many-names", A.DOMAINS,
         lambda a: msgspec.json.encode({"names": ["vm1"] * (DOMAIN_NAMES_MAX + 1)}),
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("domains-unknown", A.DOMAINS, lambda a: DomainsRequest(names=["nosuch"]),
         refuses(ErrorCode.NOT_FOUND)),
    Case("domains-known-and-unknown", A.DOMAINS, lambda a: DomainsRequest(names=["vm1", "nosuch"]),
         refuses(ErrorCode.NOT_FOUND)),
    Case("domains-empty-name", A.DOMAINS, lambda a: b'{"names": [""]}',
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    Case("domains-overlong-name", A.DOMAINS, lambda a: DomainsRequest(names=["v" * 256]),
         refuses(ErrorCode.BAD_REQUEST), canned=True),
]


async def test_every_implementation_answers_a_query_as_the_real_agent_does(implementation, case):
    assert case.expected == await answer(implementation, case)
