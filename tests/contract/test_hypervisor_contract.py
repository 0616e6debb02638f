"""The ``Hypervisor`` protocol (agent/hypervisor.py) where libvirt's test driver supports it, run
against the real ``LibvirtHypervisor`` on the test driver and against ``tests.fakes
.FakeHypervisor`` set up as its twin: the same result shapes and the same BatonError codes.

The twin holds the same domains and, like the test driver, cannot compare CPUs (``verdict=None``);
both compute a CPU baseline with libvirt's CPU map (the test driver has no baselineHypervisorCPU),
the twin over a few of libvirt's models, so only the models and the feature relations are compared.
Not covered: migration and job calls (the test driver has none) and removing a domain that exists
(the test driver's undefine refuses the NVRAM and checkpoint flags the adapter passes).
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from baton.agent.libvirt import LibvirtHypervisor
from baton.schemas.agent import BaselineApi, DomainState
from baton.schemas.errors import BatonError, ErrorCode
from tests.contract.implementations import HOST, write_host
from tests.fakes import FakeHypervisor
from tests.integration.fake_agents import domain

pytestmark = pytest.mark.integration
RUNNING, SHUT_OFF = ("vm1", "vm2"), ("vmoff",)


def twin() -> FakeHypervisor:
    """A FakeHypervisor holding what ``write_host`` gives the test driver."""
    defined = [domain(vm) for vm in RUNNING] + [domain(vm, state=DomainState.SHUTOFF)
                                                for vm in SHUT_OFF]
    return FakeHypervisor(verdict=None, defined={d.name: msgspec.structs.replace(
        d, virt_type="test", cpu_xml=None) for d in defined})


@contextlib.asynccontextmanager
async def real(tmp_path: Path, connect: bool = True) -> AsyncIterator[LibvirtHypervisor]:
    hv = LibvirtHypervisor(write_host(tmp_path, HOST, RUNNING, SHUT_OFF), HOST, lambda _e: None)
    if not connect:
        yield hv
        return
    task = asyncio.create_task(hv.run())
    try:
        assert await hv.wait_connected(10)
        yield hv
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(params=["real", "fake"])
async def hypervisor(request, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield twin()
        return
    async with real(tmp_path) as hv:
        yield hv


@pytest.fixture(params=["real", "fake"])
async def disconnected(request, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield FakeHypervisor(connected=False)
        return
    async with real(tmp_path, connect=False) as hv:
        yield hv


async def outcome(call: Awaitable[Any]) -> Any:
    """The result's type name, or the BatonError's code."""
    try:
        return type(await call).__name__
    except BatonError as exc:
        return exc.code


async def test_host_facts_describe_the_host_in_the_same_shape(hypervisor):
    facts = await hypervisor.host_facts()
    versions = facts.versions
    memory = facts.memory
    shape = (type(facts).__name__, bool(facts.hostname), bool(facts.cpu.arch),
             all((versions.libvirt, versions.hypervisor, versions.hypervisor_type)),
             0 <= memory.free_bytes <= memory.total_bytes and memory.total_bytes > 0,
             all((p.target_path or "/").startswith("/") for p in facts.pools))
    assert ("HostFacts", True, True, True, True, True) == shape


async def test_every_domain_is_listed_sorted_by_name_without_its_cpu_unless_asked(hypervisor):
    listed = await hypervisor.domains(None, include_cpu_xml=False)
    assert (["vm1", "vm2", "vmoff"], {None}) == ([d.name for d in listed],
                                                 {d.cpu_xml for d in listed})


async def test_named_domains_come_in_the_order_asked_with_their_state(hypervisor):
    listed = await hypervisor.domains(["vmoff", "vm1"], include_cpu_xml=True)
    none = await hypervisor.domains([], include_cpu_xml=False)
    assert ([("vmoff", DomainState.SHUTOFF, False), ("vm1", DomainState.RUNNING, True)], []) == (
        [(d.name, d.state, d.active) for d in listed], none)


@pytest.mark.parametrize("call", [
    lambda hv: hv.domains(["nosuch"], include_cpu_xml=False),
    lambda hv: hv.domains(["vm1", "nosuch"], include_cpu_xml=True),
    lambda hv: hv.guest_cpu("nosuch"),
    lambda hv: hv.migratable_xml("nosuch", inactive=False),
], ids=["domains", "domains-with-a-known-one", "guest_cpu", "migratable_xml"])
async def test_an_unknown_domain_is_not_found(hypervisor, call: Callable[[Any], Awaitable[Any]]):
    assert ErrorCode.NOT_FOUND == await outcome(call(hypervisor))


@pytest.mark.parametrize("inactive", [False, True])
async def test_a_migratable_definition_names_the_domain_and_its_disks(hypervisor, inactive):
    root = ET.fromstring(await hypervisor.migratable_xml("vm1", inactive=inactive))
    [known] = await hypervisor.domains(["vm1"], include_cpu_xml=False)
    assert ("vm1", [(d.target, d.source_path) for d in known.disks]) == (
        root.findtext("name"), [(d.find("target").get("dev"), d.find("source").get("file"))
                                for d in root.iter("disk")])


async def test_a_domain_without_a_cpu_definition_has_the_default_guest_cpu(hypervisor):
    guest = await hypervisor.guest_cpu("vm1")
    assert ("GuestCpu", None) == (type(guest).__name__, guest.cpu_xml)


async def test_a_driver_without_cpu_comparison_answers_unsupported(hypervisor):
    verdict = await outcome(hypervisor.compare_cpu("<cpu><model>qemu64</model></cpu>", None))
    assert ErrorCode.UNSUPPORTED == verdict


def host_cpu(model: str, vendor: str | None = "Intel", *features: str) -> str:
    listed = "".join(f"<feature name='{name}'/>" for name in features)
    vendor_element = f"<vendor>{vendor}</vendor>" if vendor else ""
    return f"<cpu><arch>x86_64</arch><model>{model}</model>{vendor_element}{listed}</cpu>"


def baseline_facts(xml: str) -> tuple[str | None, str | None, set[str]]:
    root = ET.fromstring(xml)
    return (root.findtext("model"), root.findtext("vendor"),
            {f.get("name", "") for f in root.iter("feature") if f.get("policy") == "require"})


async def test_the_baseline_of_one_cpu_is_its_model_with_every_feature_listed(hypervisor):
    result = await hypervisor.baseline_cpu([host_cpu("Westmere", "Intel", "vmx")])
    model, vendor, features = baseline_facts(result.cpu_xml)
    assert (BaselineApi.CPU_MAP, "Westmere", "Intel", True, True) == (
        result.api, model, vendor, {"vmx", "sse2", "aes"} <= features, "avx" not in features)


async def test_the_baseline_of_two_cpus_is_the_older_model_with_the_features_both_have(hypervisor):
    haswell = host_cpu("Haswell-noTSX", "Intel", "vmx", "pdpe1gb")
    westmere = host_cpu("Westmere", "Intel", "vmx")
    both = baseline_facts((await hypervisor.baseline_cpu([haswell, westmere])).cpu_xml)
    alone = [baseline_facts((await hypervisor.baseline_cpu([cpu])).cpu_xml)[2]
             for cpu in (haswell, westmere)]
    assert ("Westmere", "Intel", True, True, True) == (
        both[0], both[1], both[2] <= alone[0] & alone[1], "vmx" in both[2],
        not {"avx", "pdpe1gb"} & both[2])


@pytest.mark.parametrize("cpus", [
    [], ["<cpu><arch>x86_64</arch></cpu>"], [host_cpu("NoSuchModel")], ["<cpu"],
    [host_cpu("Westmere"), "<cpu><model>Westmere</model></cpu>"],
    [host_cpu("Westmere", "Intel"), host_cpu("EPYC", "AMD")],
], ids=["none", "no-model", "unknown-model", "not-xml", "no-arch", "vendors-differ"])
async def test_cpus_libvirt_cannot_baseline_are_a_hypervisor_error(hypervisor, cpus):
    assert ErrorCode.HYPERVISOR == await outcome(hypervisor.baseline_cpu(cpus))


async def test_only_active_domains_count_as_running(hypervisor):
    assert 2 == await hypervisor.running_domain_count()


UNKNOWN_UUID = "00000000-0000-0000-0000-0000000000ff"


async def test_removing_an_unknown_domain_answers_false_and_touches_nothing(hypervisor):
    removed = await hypervisor.remove_domain("nosuch", UNKNOWN_UUID)
    known_name = await hypervisor.remove_domain("vm1", UNKNOWN_UUID)  # a name alone is no proof
    left = await hypervisor.domains(None, include_cpu_xml=False)
    assert (False, False, ["vm1", "vm2", "vmoff"]) == (removed, known_name,
                                                       [d.name for d in left])


async def test_removing_by_the_uuid_of_another_domain_is_a_conflict_and_touches_nothing(
        hypervisor):
    [vm2] = await hypervisor.domains(["vm2"], include_cpu_xml=False)
    verdict = await outcome(hypervisor.remove_domain("vm1", vm2.uuid))
    left = await hypervisor.domains(None, include_cpu_xml=False)
    assert (ErrorCode.CONFLICT, ["vm1", "vm2", "vmoff"]) == (verdict, [d.name for d in left])


async def test_refreshing_the_pools_succeeds(hypervisor):
    assert "NoneType" == await outcome(hypervisor.refresh_pools())


async def test_every_call_while_disconnected_is_unavailable(disconnected):
    calls = [disconnected.host_facts(), disconnected.domains(None, include_cpu_xml=False),
             disconnected.guest_cpu("vm1"), disconnected.compare_cpu("<cpu/>", None),
             disconnected.baseline_cpu(["<cpu/>"]),
             disconnected.running_domain_count(), disconnected.remove_domain("vm1", UNKNOWN_UUID),
             disconnected.refresh_pools()]
    assert [ErrorCode.UNAVAILABLE] * len(calls) == [await outcome(call) for call in calls]


async def test_removing_a_running_guest_is_a_conflict_and_touches_nothing(hypervisor):
    """A clean-up never destroys a running guest: it may be the only live copy."""
    [vm1] = await hypervisor.domains(["vm1"], include_cpu_xml=False)
    verdict = await outcome(hypervisor.remove_domain("vm1", vm1.uuid))
    left = await hypervisor.domains(None, include_cpu_xml=False)
    assert (ErrorCode.CONFLICT, ["vm1", "vm2", "vmoff"]) == (verdict, [d.name for d in left])


async def test_a_running_domains_pages_read_as_one_short_digest_each(hypervisor):
    digests = await hypervisor.page_digests("vm1", [0, 1, 0x100, 0x7FFF])
    assert (4, {8}) == (len(digests), {len(d) for d in digests})


@pytest.mark.parametrize(("vm", "code"), [("nosuch", ErrorCode.NOT_FOUND),
                                          ("vmoff", ErrorCode.HYPERVISOR)])
async def test_pages_of_an_unknown_or_shut_off_domain_are_not_read(hypervisor, vm, code):
    assert code == await outcome(hypervisor.page_digests(vm, [0]))


def arm_host(directory: Path) -> str:
    """A test-driver host whose one running guest is an aarch64 one."""
    uri = write_host(directory, HOST, ("arm1",))
    path = Path(uri.removeprefix("test://"))
    path.write_text(path.read_text().replace("<type>hvm</type>",
                                             "<type arch='aarch64'>hvm</type>"))
    return uri


async def test_the_memory_of_a_guest_that_is_not_x86_is_not_sampled(tmp_path: Path):
    # the sampled page numbers follow x86's layout; libvirt's own calculation measures others
    hv = LibvirtHypervisor(arm_host(tmp_path), HOST, lambda _e: None)
    task = asyncio.create_task(hv.run())
    try:
        assert await hv.wait_connected(10)
        assert ErrorCode.UNSUPPORTED == await outcome(hv.page_digests("arm1", [0]))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
