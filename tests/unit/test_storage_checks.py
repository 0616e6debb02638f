"""Storage-move pre-flight decisions and phase mapping (pure: facts in, verdicts out)."""

from __future__ import annotations

from dataclasses import replace

import msgspec

from baton.coordinator.storage_checks import StorageFacts, plan, report
from baton.coordinator.storage_runner import phase_for_stage
from baton.schemas.agent import DiskInfo, DomainInfo, DomainState, StoragePool
from baton.schemas.migration import CheckStatus, Phase
from baton.schemas.storage import StorageMoveRequest, StorageStage
from tests.integration.fake_agents import FAST, GIB, IMAGES, domain, host_caps

FAIL, PASS, WARN = CheckStatus.FAIL, CheckStatus.PASS, CheckStatus.WARN


def facts(**request: object) -> StorageFacts:
    req = StorageMoveRequest(**({"vm": "vm1", "destination_pool": "fast"} | request))
    return StorageFacts(request=req, host="h1", domain=domain("vm1"), caps=host_caps("h1"))


def with_disks(f: StorageFacts, *disks: DiskInfo) -> StorageFacts:
    return replace(f, domain=msgspec.structs.replace(f.domain, disks=list(disks)))


def disk(target: str = "vda", directory: str = IMAGES, **fields: object) -> DiskInfo:
    base = {"device": "disk", "source_type": "file", "format": "qcow2",
            "source_path": f"{directory}/{target}.qcow2", "capacity_bytes": 10 * GIB}
    return DiskInfo(target=target, **(base | fields))


def verdicts(f: StorageFacts) -> dict[str, tuple[CheckStatus, str]]:
    return {c.name: (c.status, c.reason) for c in report(f).checks}


def test_a_running_vm_with_a_qcow2_disk_may_move_to_another_pool_with_room():
    f = facts()
    assert (True, [PASS, PASS, PASS]) == (report(f).ok, [v[0] for v in verdicts(f).values()])
    [move] = plan(f)
    assert (f"{IMAGES}/vm1.qcow2", f"{FAST}/vm1.qcow2", "qcow2") == (
        move.source_path, move.destination_path, move.format)


def test_an_unknown_pool_is_refused_naming_the_pools_there():
    status, reason = verdicts(facts(destination_pool="nosuch"))["pool"]
    assert (FAIL, True) == (status, "no storage pool 'nosuch' (its pools: default, fast, shared)" in reason)


def test_the_pool_a_named_disk_already_lives_in_is_refused():
    status, reason = verdicts(facts(destination_pool="default", disk="vda"))["pool"]
    assert (FAIL, True) == (status, "already in pool default" in reason)


def test_moving_all_disks_skips_those_already_in_the_pool():
    f = with_disks(facts(), disk("vda"), disk("vdb", directory=FAST))
    assert ["vda"] == [m.target for m in plan(f)]
    assert report(f).ok


def test_room_is_judged_against_the_virtual_size_not_the_allocation():
    f = with_disks(facts(), disk(capacity_bytes=10 * GIB, allocation_bytes=GIB))
    small = msgspec.structs.replace(f.caps.pools[1], available_bytes=5 * GIB)
    f = replace(f, caps=msgspec.structs.replace(f.caps, pools=[f.caps.pools[0], small]))
    status, reason = verdicts(f)["pool"]
    assert (FAIL, True) == (status, "5.00 GiB available, the disks need 10.00 GiB" in reason)


def test_a_disk_nobody_could_size_moves_with_a_warning_that_its_room_was_not_counted():
    f = with_disks(facts(), disk(capacity_bytes=0))
    assert (True, WARN, f"the size of vda ({IMAGES}/vda.qcow2) is unknown (neither libvirt nor "
            "qemu-img could read it): the room in pool fast was checked without it") == (
        report(f).ok, *verdicts(f)["pool"])
    two = with_disks(f, disk(capacity_bytes=0), disk("vdb", capacity_bytes=0))
    assert "checked without it; the size of vdb" in verdicts(two)["pool"][1]  # each said
    inactive = msgspec.structs.replace(f.caps.pools[1], active=False)
    f = replace(f, caps=msgspec.structs.replace(f.caps, pools=[f.caps.pools[0], inactive]))
    assert FAIL == verdicts(f)["pool"][0]  # a problem outranks it


def test_the_filesystem_free_space_measured_now_wins_over_a_stale_pool_figure():
    status, reason = verdicts(replace(facts(), free_bytes=GIB))["pool"]
    assert (FAIL, True) == (status, "1.00 GiB available" in reason)


def test_an_inactive_pool_is_refused_with_the_command_that_starts_it():
    f = facts()
    off = msgspec.structs.replace(f.caps.pools[1], active=False)
    f = replace(f, caps=msgspec.structs.replace(f.caps, pools=[f.caps.pools[0], off]))
    status, reason = verdicts(f)["pool"]
    assert (FAIL, True) == (status, "virsh pool-start fast" in reason)


def test_a_disk_another_domain_on_the_host_uses_is_refused():
    other = msgspec.structs.replace(domain("vm2"), disks=domain("vm1").disks)
    status, reason = verdicts(replace(facts(), others=[other]))["disk"]
    assert (FAIL, True) == (status, "also used by vm2" in reason)


def test_shareable_disks_and_unknown_formats_are_refused():
    f = with_disks(facts(), disk(shareable=True, format="vmdk"))
    status, reason = verdicts(f)["disk"]
    assert (FAIL, True, True) == (status, "shareable" in reason, "format vmdk" in reason)


def test_a_cdrom_is_not_moved_with_all_disks_but_refused_when_named():
    f = with_disks(facts(), disk("vda"), disk("hdc", device="cdrom", readonly=True))
    assert ["vda"] == [m.target for m in plan(f)]
    assert FAIL == verdicts(replace(f, request=msgspec.structs.replace(
        f.request, disk="hdc")))["disk"][0]


def test_a_shut_off_vm_is_refused_because_a_block_copy_needs_it_running():
    f = facts()
    off: DomainInfo = msgspec.structs.replace(f.domain, state=DomainState.SHUTOFF, active=False)
    assert FAIL == verdicts(replace(f, domain=off))["vm"][0]


def test_an_existing_file_at_the_destination_is_never_overwritten():
    status, reason = verdicts(replace(facts(), existing=frozenset({f"{FAST}/vm1.qcow2"})))["pool"]
    assert (FAIL, True) == (status, "already exists" in reason)


def test_a_pool_without_a_directory_is_refused():
    f = facts()
    rbd = StoragePool(name="fast", type="rbd", target_path=None, active=True,
                      available_bytes=100 * GIB)
    f = replace(f, caps=msgspec.structs.replace(f.caps, pools=[f.caps.pools[0], rbd]))
    assert FAIL == verdicts(f)["pool"][0]


def test_the_agent_stages_map_onto_the_migration_phases():
    assert [None, Phase.COMPLETING, Phase.COMPLETING, None] == [
        phase_for_stage(StorageStage.COPYING, Phase.MIGRATING),
        phase_for_stage(StorageStage.READY, Phase.MIGRATING),
        phase_for_stage(StorageStage.PIVOTED, Phase.MIGRATING),
        phase_for_stage(StorageStage.READY, Phase.COMPLETING)]
