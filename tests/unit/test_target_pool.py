"""Copies into another pool (``--target-pool`` / ``--disk-map``): where each disk lands, what
pre-flight refuses and why, what the agents are asked, and the definition the source rewrites.

The lab test (tests/lab/test_migrate.py) moves a real guest's disk into h2's ``fast`` pool.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from typing import Any

import msgspec
import pytest

from baton.agent.migration_plan import Definitions, plan_migration
from baton.agent.relocation import check_paths, relocate_disks
from baton.coordinator.plan import make_plan, prepare_request, start_request
from baton.coordinator.preflight import (
    DiskView,
    Facts,
    Intent,
    check_storage,
    gather,
    landings,
    pool_request_problems,
)
from baton.schemas.agent import DiskInfo, PathProbe, StoragePool
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import CheckStatus, DiskPlan, MigrateRequest, StartRequest, StorageMode
from tests.integration.fake_agents import FAST, GIB, IMAGES, SHARED, domain, host_caps
from tests.unit.test_preflight_checks import Agents

PASS, FAIL = CheckStatus.PASS, CheckStatus.FAIL
SLOW = "/var/lib/libvirt/pools/slow"


def disk(path: str, target: str = "vda", **flags: bool) -> DiskInfo:
    return DiskInfo(target=target, device="disk", source_type="file", source_path=path,
                    format="qcow2", capacity_bytes=10 * GIB, **flags)


def vm(*disks: DiskInfo) -> Any:
    return msgspec.structs.replace(domain("vm1"), disks=list(disks))


def facts(disks: list[DiskView], intent: Intent, **changes: Any) -> Facts:
    caps = changes.pop("destination_caps", None) or host_caps("h2")
    views = {v.disk.target: v for v in disks}
    landed = landings(vm(*(v.disk for v in disks)), caps, intent)
    placed = [dataclasses.replace(v, landing=landed.get(t), on_destination=PathProbe(
        path=landed.get(t, v.path), exists=False)) for t, v in views.items()]
    return Facts(vm="vm1", source="h1", destination="h2", live=True,
                 requested_storage=changes.pop("storage", StorageMode.AUTO),
                 domain=vm(*(v.disk for v in disks)), destination_caps=caps, on_destination=None,
                 disks=placed, source_caps=host_caps("h1"), intent=intent, **changes)


def local(path: str, target: str = "vda", **flags: bool) -> DiskView:
    return DiskView(disk(path, target, **flags), shared=False)


def shared(path: str, target: str = "vda") -> DiskView:
    return DiskView(disk(path, target), shared=True)


# --- where each disk lands ----------------------------------------------------------------------


def test_a_target_pool_puts_every_writable_disk_in_its_directory_and_a_disk_map_wins():
    domain_ = vm(disk(f"{IMAGES}/a.qcow2"), disk(f"{SLOW}/b.qcow2", "vdb"),
                 disk(f"{IMAGES}/iso.img", "hdc", readonly=True))
    assert {"vda": f"{FAST}/a.qcow2", "vdb": f"{IMAGES}/b.qcow2"} == landings(
        domain_, host_caps("h2"), Intent(target_pool="fast", disk_pools={"vdb": "default"}))


def test_a_disk_never_copied_is_passed_over_and_the_disks_after_it_still_land():
    domain_ = vm(disk(f"{IMAGES}/iso.img", "hdc", readonly=True),
                 disk(f"{IMAGES}/shared.img", "vdb", shareable=True), disk(f"{IMAGES}/a.qcow2"))
    assert {"vda": f"{FAST}/a.qcow2"} == landings(domain_, host_caps("h2"),
                                                  Intent(target_pool="fast"))


def test_a_disk_already_in_the_pools_directory_or_in_a_pool_the_host_lacks_has_no_landing():
    domain_ = vm(disk(f"{FAST}/a.qcow2"), disk(f"{IMAGES}/b.qcow2", "vdb"))
    assert {} == landings(domain_, host_caps("h2"), Intent(disk_pools={"vda": "fast",
                                                                       "vdb": "nvme"}))
    assert {} == landings(domain_, host_caps("h2"), Intent())


async def test_gather_probes_the_destination_where_the_copy_lands_not_the_sources_path():
    agents = Agents()
    got = await gather(agents, "vm1", "h1", "h2", live=True,  # type: ignore[arg-type]
                       storage=StorageMode.COPY, intent=Intent(target_pool="fast"))
    read = [r.paths for h, r in agents.probes if h == "h2"]
    assert [[f"{FAST}/a.qcow2", f"{FAST}/b.qcow2"], [f"{FAST}/c.qcow2"]] == read
    assert [(f"{IMAGES}/a.qcow2", f"{FAST}/a.qcow2", f"{FAST}/a.qcow2")] == [
        (v.path, v.destination_path, v.on_destination.path if v.on_destination else None)
        for v in got.disks[:1]]


# --- what pre-flight refuses --------------------------------------------------------------------


def test_a_copy_into_an_existing_pool_passes_and_says_where_each_disk_lands():
    result = check_storage(facts([local(f"{IMAGES}/a.qcow2")], Intent(target_pool="fast")))
    assert (PASS, f"copy 1 local disk(s), 10.0 GiB, into pools on h2; vda into {FAST}/a.qcow2") \
        == (result.status, result.reason)


def with_pools(*pools: StoragePool) -> Any:
    """h2 with its usual pools and these."""
    caps = host_caps("h2")
    return msgspec.structs.replace(caps, pools=[*caps.pools, *pools])


@pytest.mark.parametrize(("caps", "said"), [
    (host_caps("h2"), "h2 has no storage pool 'nvme' (its pools: default, fast, shared)"),
    (with_pools(StoragePool(name="nvme", type="dir", target_path="/nvme", active=False)),
     "pool nvme is inactive on h2: virsh pool-start nvme"),
    (with_pools(StoragePool(name="nvme", type="rbd", target_path=None, active=True)),
     "pool nvme (rbd) on h2 has no directory; Baton copies into directory-backed pools only"),
], ids=["missing", "inactive", "not-a-directory"])
def test_a_pool_that_cannot_take_the_copy_fails_with_what_to_do(caps, said):
    result = check_storage(facts([local(f"{IMAGES}/a.qcow2")], Intent(target_pool="nvme"),
                                 destination_caps=caps))
    assert (FAIL, said) == (result.status, result.reason)


def test_a_missing_pool_and_a_failed_copy_are_both_reported():
    before = facts([local(f"{IMAGES}/a.qcow2")], Intent(target_pool="nvme"))
    there = PathProbe(path=f"{IMAGES}/a.qcow2", exists=True)  # no landing: its own path
    result = check_storage(dataclasses.replace(before, disks=[
        dataclasses.replace(before.disks[0], on_destination=there)]))
    assert (FAIL, "h2 has no storage pool 'nvme' (its pools: default, fast, shared); "
            f"{IMAGES}/a.qcow2 already exists on h2: remove it there or move the VM elsewhere") \
        == (result.status, result.reason)


def test_a_host_without_pools_and_a_vm_without_file_disks_say_none():
    bare = msgspec.structs.replace(host_caps("h2"), pools=[])
    assert ["h2 has no storage pool 'fast' (its pools: none)"] == pool_request_problems(
        facts([local(f"{IMAGES}/a.qcow2")], Intent(target_pool="fast"), destination_caps=bare))
    assert ["vm1 has no file-backed disk vdz (its disks: none)"] == pool_request_problems(
        facts([], Intent(disk_pools={"vdz": "fast"})))


def test_a_pool_asked_for_a_vm_without_file_disks_fails_storage():
    result = check_storage(facts([], Intent(target_pool="fast")))
    assert (FAIL, "nothing is copied, so nothing goes into pool fast: vm1's disks are on storage "
            "both hosts see (or read-only)") == (result.status, result.reason)


def test_with_shared_storage_asked_for_local_disks_nothing_is_copied_or_lands():
    # --storage shared: the local disks are not copied, so the pool gets nothing, and two of
    # them that would land on one path there are no clash
    views = [local(f"{IMAGES}/a.qcow2"), local(f"{SLOW}/a.qcow2", "vdb")]
    assert ["nothing is copied, so nothing goes into pool fast: vm1's disks are on storage both "
            "hosts see (or read-only)"] == pool_request_problems(
        facts(views, Intent(target_pool="fast"), storage=StorageMode.SHARED))


def test_only_copied_disks_of_this_vm_can_be_mapped():
    views = [local(f"{IMAGES}/a.qcow2"), shared(f"{SHARED}/b.qcow2", "vdb"),
             local(f"{IMAGES}/iso.img", "hdc", readonly=True)]
    intent = Intent(disk_pools={"vdb": "fast", "hdc": "fast", "vdz": "fast"})
    assert [
        f"vdb ({SHARED}/b.qcow2) is on storage both hosts see, so it is not copied: only a copied "
        "disk goes into another pool",
        f"hdc ({IMAGES}/iso.img) is read-only or shareable, so it is not copied: only a copied "
        "disk goes into another pool",
        "vm1 has no file-backed disk vdz (its disks: hdc, vda, vdb)",
    ] == sorted(pool_request_problems(facts(views, intent)), key=lambda p: p[:3] != "vdb")


def test_a_target_pool_for_a_vm_on_shared_storage_fails_as_nothing_is_copied():
    result = check_storage(facts([shared(f"{SHARED}/a.qcow2")], Intent(target_pool="fast")))
    assert (FAIL, "nothing is copied, so nothing goes into pool fast: vm1's disks are on storage "
            "both hosts see (or read-only)") == (result.status, result.reason)


def test_two_disks_landing_on_one_path_fail():
    views = [local(f"{IMAGES}/a.qcow2"), local(f"{SLOW}/a.qcow2", "vdb")]
    assert [f"vda and vdb would both land at {FAST}/a.qcow2 on h2: map them to different pools"] \
        == pool_request_problems(facts(views, Intent(target_pool="fast")))


def test_a_file_where_the_copy_would_land_fails_the_check():
    before = facts([local(f"{IMAGES}/a.qcow2")], Intent(target_pool="fast"))
    there = PathProbe(path=f"{FAST}/a.qcow2", exists=True)
    result = check_storage(dataclasses.replace(before, disks=[
        dataclasses.replace(before.disks[0], on_destination=there)]))
    assert (FAIL, f"{FAST}/a.qcow2 already exists on h2: remove it there or move the VM "
            "elsewhere") == (result.status, result.reason)


def test_without_pools_asked_nothing_changes():
    assert [] == pool_request_problems(facts([local(f"{IMAGES}/a.qcow2")], Intent()))


# --- what each agent is asked -------------------------------------------------------------------


def test_the_destination_creates_the_landing_path_and_the_source_deletes_its_own_path():
    views = [local(f"{IMAGES}/a.qcow2"), local(f"{IMAGES}/b.qcow2", "vdb")]
    plan = make_plan(facts(views, Intent(disk_pools={"vda": "fast"}), storage=StorageMode.COPY))
    prepare = prepare_request("m1", "vm1", plan, None)
    assert [DiskPlan(target="vda", path=f"{FAST}/a.qcow2", format="qcow2",
                     capacity_bytes=10 * GIB, source_path=f"{IMAGES}/a.qcow2"),
            DiskPlan(target="vdb", path=f"{IMAGES}/b.qcow2", format="qcow2",
                     capacity_bytes=10 * GIB)] == prepare.disks
    assert [f"{IMAGES}/a.qcow2", f"{IMAGES}/b.qcow2"] == plan.copy_paths
    start = start_request("m1", MigrateRequest(vm="vm1", destination="h2"), plan, None)
    assert (["vda", "vdb"], {"vda": f"{FAST}/a.qcow2"}) == (start.copy_disks,
                                                           start.destination_paths)


# --- the definition the source sends ------------------------------------------------------------

DEFINITION = """<domain type='kvm'><name>vm1</name><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/slow/vm1.qcow2' index='2'/><backingStore type='file'><format type='qcow2'/>
<source file='/base.qcow2'/></backingStore><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><source file='/slow/data.qcow2'/><target dev='vdb'/></disk>
<disk type='file' device='cdrom'><source file='/iso/boot.iso'/><target dev='hdc'/><readonly/></disk>
<disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdd'/></disk>
<disk type='file'><source file='/slow/plain.qcow2'/><target dev='vde'/></disk>
<disk type='file' device='disk'><driver name='qemu'/><target dev='vdf'/></disk>
<interface type='bridge'><source bridge='br0'/></interface></devices></domain>"""


def sources(xml: str) -> dict[str, list[str | None]]:
    root = ET.fromstring(xml)
    return {d.find("target").get("dev"): [s.get("file") for s in d.iter("source")]  # type: ignore[union-attr]
            for d in root.iter("disk")}


def test_relocation_moves_only_the_named_disk_and_drops_its_backing_chain():
    moved = relocate_disks(DEFINITION, {"vda": "/fast/vm1.qcow2"})
    assert {"vda": ["/fast/vm1.qcow2"], "vdb": ["/slow/data.qcow2"], "hdc": ["/iso/boot.iso"],
            "vdd": [None], "vde": ["/slow/plain.qcow2"], "vdf": []} == sources(moved)
    assert "2" == ET.fromstring(moved).find("devices/disk/source").get("index")  # type: ignore[union-attr]
    assert "br0" == ET.fromstring(moved).find("devices/interface/source").get("bridge")  # type: ignore[union-attr]


def test_a_disk_without_a_device_attribute_is_a_disk_and_moves():  # libvirt's default device
    moved = relocate_disks(DEFINITION, {"vde": "/fast/plain.qcow2"})
    assert ["/fast/plain.qcow2"] == sources(moved)["vde"]


@pytest.mark.parametrize("target", ["hdc", "vdd", "vdz", "vdf"])
def test_relocation_refuses_a_disk_that_is_not_a_writable_file(target):
    with pytest.raises(BatonError) as caught:
        relocate_disks(DEFINITION, {target: "/fast/x.qcow2"})
    assert (ErrorCode.BAD_REQUEST, f"cannot put {target} elsewhere: the domain has no file-backed "
            f"disk {target} (only such disks are copied)") == (caught.value.code,
                                                              caught.value.message)


def test_every_disk_not_copied_is_named():
    with pytest.raises(BatonError) as caught:
        check_paths(["vda"], {"vdc": "/fast/c.qcow2", "vdb": "/fast/b.qcow2"})
    assert "vdb, vdc not copied: only a copied disk can land at another path on the " \
        "destination" == caught.value.message


def start(**options: Any) -> StartRequest:
    return StartRequest(migration_id="m1", vm="vm1", destination_uri="qemu+tcp://h2/system",
                        copy_disks=["vda"], **options)


def test_the_plan_carries_the_definitions_and_the_persistent_one_only_when_kept():
    both = Definitions(destination_xml="<dest/>", persistent_xml="<persist/>")
    kept = plan_migration(start(), domain_active=True, definitions=both)
    transient = plan_migration(start(persistent=False), domain_active=True, definitions=both)
    none = plan_migration(start(), domain_active=True)
    assert ("<dest/>", "<persist/>") == (kept.params["destination_xml"],
                                         kept.params["persistent_xml"])
    assert ("<dest/>", False) == (transient.params["destination_xml"],
                                  "persistent_xml" in transient.params)
    assert set() == {"destination_xml", "persistent_xml"} & set(none.params)
