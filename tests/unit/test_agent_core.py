"""AgentCore's decisions against a fake hypervisor: caching, CPU comparison, failures."""

from __future__ import annotations

import pytest

from baton.agent import hostfacts
from baton.agent.core import AgentCore
from baton.agent.hostfacts import MIGRATION_TLS_FILES, migration_tls_ready
from baton.agent.hypervisor import CpuVerdict, GuestCpu
from baton.schemas.agent import (
    CapsRequest,
    CpuCompareRequest,
    CpuCompatibility,
    DiskInfo,
    DomainInfo,
    DomainsRequest,
    DomainState,
)
from baton.schemas.errors import BatonError, ErrorCode
from tests.fakes import FakeHypervisor
from tests.support.images import MIB, make_image, needs_qemu_img


async def no_remote(host: str, domain: str) -> DomainInfo:
    raise AssertionError("no remote lookup expected")


def make_core(hv: FakeHypervisor, fetch=no_remote) -> AgentCore:
    return AgentCore("h1", hv, "qemu+tcp://10.0.0.1/system", fetch, heartbeat_interval_s=5)


async def test_caps_are_served_from_cache_until_a_refresh_is_asked():
    hv = FakeHypervisor()
    core = make_core(hv)
    first = await core.caps(CapsRequest())
    await core.caps(CapsRequest())
    refreshed = await core.caps(CapsRequest(refresh=True))
    assert 2 == hv.host_fact_reads
    assert ("h1", "qemu+tcp://10.0.0.1/system") == (first.host_id, first.migration_uri)
    assert refreshed.collected_at >= first.collected_at


async def test_incompatible_cpu_is_not_runnable_and_keeps_libvirts_reason():
    hv = FakeHypervisor(verdict=CpuVerdict(CpuCompatibility.INCOMPATIBLE, "lacks avx512f"))
    reply = await make_core(hv).cpu_compare(CpuCompareRequest(cpu_xml="<cpu/>"))
    assert (False, CpuCompatibility.INCOMPATIBLE, "lacks avx512f") == (
        reply.runnable, reply.result, reply.reason)


async def test_local_domain_cpu_is_compared_with_its_virt_type():
    hv = FakeHypervisor(guests={"g1": GuestCpu("<cpu><model>qemu64</model></cpu>", "qemu")})
    reply = await make_core(hv).cpu_compare(CpuCompareRequest(domain="g1"))
    assert [("<cpu><model>qemu64</model></cpu>", "qemu")] == hv.compared
    assert reply.runnable


async def test_remote_domain_cpu_is_fetched_from_its_host():
    asked = []

    async def fetch(host: str, domain: str) -> DomainInfo:
        asked.append((host, domain))
        return DomainInfo(name=domain, uuid="u", state="running", active=True, persistent=True,
                          memory_kib=1, max_memory_kib=1, vcpus=1, virt_type="kvm",
                          cpu_xml="<cpu><model>EPYC</model></cpu>")

    hv = FakeHypervisor()
    await make_core(hv, fetch).cpu_compare(CpuCompareRequest(domain="g9", domain_host="h7"))
    assert ([("h7", "g9")], [("<cpu><model>EPYC</model></cpu>", "kvm")]) == (asked, hv.compared)


@pytest.mark.parametrize("request_", [
    CpuCompareRequest(),
    CpuCompareRequest(cpu_xml="<cpu/>", domain="g1"),
])
async def test_cpu_compare_needs_exactly_one_subject(request_):
    with pytest.raises(BatonError) as caught:
        await make_core(FakeHypervisor()).cpu_compare(request_)
    assert ErrorCode.BAD_REQUEST == caught.value.code


async def test_caps_while_disconnected_is_unavailable():
    with pytest.raises(BatonError) as caught:
        await make_core(FakeHypervisor(connected=False)).caps(CapsRequest())
    assert ErrorCode.UNAVAILABLE == caught.value.code


# --- QEMU's migration TLS certificates ------------------------------------------------------------


def _tls_dir(directory, files=MIGRATION_TLS_FILES):
    directory.mkdir(parents=True, exist_ok=True)
    for name in files:
        (directory / name).write_text("pem")
    return directory


def test_migration_tls_is_ready_when_qemu_conf_names_a_directory_with_every_file(tmp_path):
    conf = tmp_path / "qemu.conf"
    conf.write_text(f'user = "root"\nmigrate_tls_x509_cert_dir = "{_tls_dir(tmp_path / "pki")}"\n')
    assert True is migration_tls_ready(conf)


def test_the_default_tls_directory_counts_when_no_migration_one_is_set(tmp_path):
    conf = tmp_path / "qemu.conf"
    conf.write_text(f'default_tls_x509_cert_dir = "{_tls_dir(tmp_path / "pki")}"\n')
    assert True is migration_tls_ready(conf)


def test_a_missing_key_or_a_commented_setting_is_not_ready(tmp_path, monkeypatch):
    monkeypatch.setattr(hostfacts, "DEFAULT_TLS_DIR", str(tmp_path / "empty-default"))
    partial = _tls_dir(tmp_path / "partial", MIGRATION_TLS_FILES[:-1])
    conf = tmp_path / "qemu.conf"
    conf.write_text(f'migrate_tls_x509_cert_dir = "{partial}"\n')
    commented = tmp_path / "commented.conf"
    commented.write_text(f'#migrate_tls_x509_cert_dir = "{_tls_dir(tmp_path / "full")}"\n')
    assert (False, False) == (migration_tls_ready(conf), migration_tls_ready(commented))


@needs_qemu_img
async def test_a_file_disk_libvirt_could_not_size_is_sized_from_its_image(tmp_path):
    """Seen under load: a 16 TiB disk read as 0 bytes passed a move's free-space check."""
    image = make_image(tmp_path / "vm1.qcow2", size=16 * 1024 * MIB)  # thin: 16 GiB virtual
    def disk(target: str, path: str, capacity: int = 0) -> DiskInfo:
        return DiskInfo(target=target, device="disk", source_type="file", source_path=path,
                        format="qcow2", capacity_bytes=capacity)
    vm = DomainInfo(name="vm1", uuid="u1", state=DomainState.RUNNING, active=True,
                    persistent=True, memory_kib=1, max_memory_kib=1, vcpus=1,
                    disks=[disk("vda", str(image)), disk("vdb", str(tmp_path / "gone.qcow2")),
                           disk("vdc", str(image), capacity=5)])
    reply = await make_core(FakeHypervisor(defined={"vm1": vm})).domains(
        DomainsRequest(names=["vm1"]))
    # from the image; no image to read stays unknown; what libvirt said stands
    assert [16 * 1024 * MIB, 0, 5] == [d.capacity_bytes for d in reply.domains[0].disks]
