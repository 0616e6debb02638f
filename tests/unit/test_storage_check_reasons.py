"""The words of every storage-move check, exactly as `baton move-disk --dry-run` shows them, and
the edge of each decision (pure: facts in, verdicts out)."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from baton.coordinator.storage_checks import (
    StorageFacts,
    check_disk,
    check_pool,
    failure_summary,
    gather,
    in_pool,
    locate,
    pick_host,
    report,
)
from baton.schemas.agent import (
    DiskInfo,
    DomainInfo,
    DomainState,
    PathProbe,
    StoragePool,
    StorageProbeReply,
)
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import CheckStatus
from baton.schemas.storage import StorageCheckName, StorageMoveRequest
from tests.integration.fake_agents import FAST, GIB, IMAGES, domain
from tests.unit.test_storage_checks import disk, facts, with_disks

FAIL, PASS = CheckStatus.FAIL, CheckStatus.PASS


def reason(result) -> tuple[CheckStatus, str]:
    return result.status, result.reason


# --- the disks --------------------------------------------------------------------------------


def test_a_vm_without_disks_says_so():
    result = check_disk(with_disks(facts()))
    assert (StorageCheckName.DISK, FAIL, "vm1 has no disks (its disks: none)") == (
        result.name, *reason(result))


def test_a_named_disk_the_vm_lacks_lists_the_ones_it_has():
    f = with_disks(facts(disk="vdz"), disk("vda"), disk("vdb"))
    assert (FAIL, "vm1 has no disk vdz (its disks: vda, vdb)") == reason(check_disk(f))


def test_the_disk_check_names_each_disk_to_move_with_its_size():
    f = with_disks(facts(), disk("vda", capacity_bytes=3 * GIB // 2), disk("vdb"))
    assert (PASS, f"vda: qcow2 1.50 GiB at {IMAGES}/vda.qcow2; vdb: qcow2 10.00 GiB at "
            f"{IMAGES}/vdb.qcow2") == reason(check_disk(f))


def test_disks_already_in_the_pool_leave_nothing_to_move():
    f = with_disks(facts(), disk("vda", directory=FAST))
    assert (PASS, "nothing to move") == reason(check_disk(f))


@pytest.mark.parametrize(("fields", "words"), [
    ({"readonly": True}, f"vda ({IMAGES}/vda.qcow2) is a read-only disk; only writable disks "
                         "move"),
    ({"device": "cdrom"}, f"vda ({IMAGES}/vda.qcow2) is a read-only cdrom; only writable disks "
                          "move"),
    ({"source_type": "network", "source_path": None},
     "vda (no file) is a network disk; only file-backed disks move"),
    ({"source_path": None}, "vda (no file) is a file disk; only file-backed disks move"),
    ({"source_type": "block"}, f"vda ({IMAGES}/vda.qcow2) is a block disk; only file-backed "
                               "disks move"),
    ({"format": None}, f"vda ({IMAGES}/vda.qcow2) has format unknown; the copy keeps the format "
                       "and Baton moves qcow2 and raw only"),
    ({"shareable": True}, f"vda ({IMAGES}/vda.qcow2) is marked shareable: other VMs may write it "
                          "during the copy"),
], ids=["readonly", "cdrom", "network", "no-file", "block", "no-format", "shareable"])
def test_each_disk_that_cannot_move_says_why(fields, words):
    assert (FAIL, words) == reason(check_disk(with_disks(facts(disk="vda"), disk(**fields))))


def test_a_disk_two_other_domains_use_names_both_in_order():
    f = facts()
    users = [msgspec.structs.replace(domain(n), disks=domain("vm1").disks) for n in ("vm3", "vm2")]
    f = replace(f, others=users)
    assert (FAIL, f"vda ({IMAGES}/vm1.qcow2) is also used by vm2, vm3 on h1") == reason(
        check_disk(f))


def test_several_problems_of_one_disk_are_all_listed():
    f = with_disks(facts(), disk(shareable=True, format="vmdk"))
    assert (FAIL, f"vda ({IMAGES}/vda.qcow2) is marked shareable: other VMs may write it during "
            f"the copy; vda ({IMAGES}/vda.qcow2) has format vmdk; the copy keeps the format and "
            "Baton moves qcow2 and raw only") == reason(check_disk(f))


# --- the pool ---------------------------------------------------------------------------------


def test_the_pool_check_says_where_and_how_much_room():
    assert (PASS, f"pool fast ({FAST}) is active with 100.00 GiB available for 10.00 GiB") == \
        reason(check_pool(facts()))


def test_a_host_without_pools_says_none():
    f = replace(facts(destination_pool="fast"), caps=msgspec.structs.replace(facts().caps,
                                                                             pools=[]))
    assert (FAIL, "h1 has no storage pool 'fast' (its pools: none)") == reason(check_pool(f))


def test_room_exactly_the_virtual_size_is_enough_and_a_byte_less_is_not():
    def with_room(available: int) -> StorageFacts:
        f = facts()
        pools = [msgspec.structs.replace(p, available_bytes=available) if p.name == "fast" else p
                 for p in f.caps.pools]
        return replace(f, caps=msgspec.structs.replace(f.caps, pools=pools))
    assert PASS == check_pool(with_room(10 * GIB)).status  # vm1's disk: 10 GiB virtual size
    assert (FAIL, "pool fast has 10.00 GiB available, the disks need 10.00 GiB (their virtual "
            "size): free space or pick another pool") == reason(check_pool(with_room(10 * GIB - 1)))


def test_an_inactive_pool_names_its_host():
    f = facts()
    pools = [msgspec.structs.replace(p, active=False) if p.name == "fast" else p
             for p in f.caps.pools]
    f = replace(f, caps=msgspec.structs.replace(f.caps, pools=pools))
    assert "pool fast is inactive on h1: virsh pool-start fast" in check_pool(f).reason


def test_a_disk_whose_pool_libvirt_names_is_in_that_pool_wherever_its_file_is():
    pool = StoragePool(name="fast", type="dir", target_path=FAST, active=True)
    assert in_pool(disk(pool="fast", directory="/elsewhere"), pool)
    assert in_pool(disk(directory=FAST), StoragePool(name="fast", type="dir",
                                                     target_path=FAST + "/", active=True))
    assert not in_pool(disk(directory=IMAGES), pool)


def test_the_failure_summary_lists_every_failed_check():
    f = with_disks(facts(destination_pool="nosuch"), disk(format="vmdk"))
    assert ("storage move refused — disk: vda (/var/lib/libvirt/images/vda.qcow2) has format "
            "vmdk; the copy keeps the format and Baton moves qcow2 and raw only | pool: h1 has "
            "no storage pool 'nosuch' (its pools: default, fast, shared)") == \
        failure_summary(report(f).checks)


# --- which host ----------------------------------------------------------------------------


def test_a_vm_defined_on_two_hosts_needs_the_host_named():
    off = domain("vm1", state=DomainState.SHUTOFF)
    with pytest.raises(BatonError) as caught:
        pick_host("vm1", [("h1", off), ("h2", off)])
    assert (ErrorCode.BAD_REQUEST, "vm1 is defined on h1, h2: say which host holds the disks "
            "to move (host / --host)") == (caught.value.code, caught.value.message)
    assert "h2" == pick_host("vm1", [("h1", off), ("h2", domain("vm1"))])


def test_an_unknown_vm_is_not_found():
    with pytest.raises(BatonError) as caught:
        pick_host("vm9", [])
    assert (ErrorCode.NOT_FOUND, "no host has a VM named 'vm9'") == (caught.value.code,
                                                                     caught.value.message)


class Agents:
    """discover_hosts and domain_or_none, with one host that cannot be asked."""

    async def discover_hosts(self) -> list[str]:
        return ["h1", "h2", "h3"]

    async def domain_or_none(self, host: str, vm: str) -> DomainInfo | None:
        if host == "h1":
            raise BatonError(ErrorCode.UNAVAILABLE, "h1 is unreachable")
        return domain(vm) if host == "h3" else None


async def test_locate_finds_the_vm_though_another_host_cannot_answer():
    assert "h3" == await locate(Agents(), "vm1")  # type: ignore[arg-type]


# --- the last survivors of the mutation run (tests/README.md) ----------------------------------


def test_a_pool_directory_ending_in_x_is_still_that_directory():
    """rstrip('/') strips slashes only: a directory whose name ends in another character the
    mutation might strip is still matched exactly."""
    pool = StoragePool(name="px", type="dir", target_path="/srv/poolX", active=True)
    assert in_pool(disk(directory="/srv/poolX"), pool)
    assert not in_pool(disk(directory="/srv/pool"), pool)
    root = StoragePool(name="root", type="dir", target_path="/", active=True)
    assert in_pool(DiskInfo(target="vda", device="disk", source_type="file",
                            source_path="/vm1.qcow2"), root)


def test_the_plan_carries_each_disks_sizes_and_a_sourceless_disk_plainly():
    f = with_disks(facts(), disk(capacity_bytes=10 * GIB, allocation_bytes=3 * GIB),
                   disk("vdb", source_type="network", source_path=None, format=None))
    vda, vdb = report(f).disks
    assert (10 * GIB, 3 * GIB) == (vda.capacity_bytes, vda.allocation_bytes)
    assert ("", f"{FAST}/", "") == (vdb.source_path, vdb.destination_path, vdb.format)


def test_a_named_disk_already_in_the_pool_and_a_pool_without_a_directory_say_what_to_do():
    f = with_disks(facts(disk="vda"), disk(directory=FAST))
    assert (FAIL, f"vda is already in pool fast ({FAST}/vda.qcow2): choose another pool") == \
        reason(check_pool(f))
    rbd = facts(destination_pool="ceph")
    rbd = replace(rbd, caps=msgspec.structs.replace(rbd.caps, pools=[StoragePool(
        name="ceph", type="rbd", target_path=None, active=True, available_bytes=100 * GIB)]))
    assert "pool ceph (rbd) has no directory; Baton copies into directory-backed pools only" \
        in check_pool(rbd).reason


class Probing(Agents):
    """The host's agent for gather: vm1, its pools, and a probe whose pool directory is gone."""

    def __init__(self, pool_exists: bool) -> None:
        self.pool_exists = pool_exists

    async def domain(self, host: str, vm: str) -> DomainInfo:
        return domain(vm)

    async def caps(self, host: str):
        return facts().caps

    async def all_domains(self, host: str) -> list[DomainInfo]:
        return [domain("vm1")]

    async def storage_probe(self, host: str, request):
        return StorageProbeReply(host_id=host, paths=[
            PathProbe(path=p, exists=self.pool_exists if i == 0 else False, fs_free_bytes=GIB)
            for i, p in enumerate(request.paths)])


@pytest.mark.parametrize(("pool_exists", "free"), [(True, GIB), (False, None)])
async def test_free_space_counts_only_when_the_pool_directory_exists(pool_exists, free):
    got = await gather(Probing(pool_exists), StorageMoveRequest(vm="vm1", destination_pool="fast"),
                       "h1")  # type: ignore[arg-type]
    assert free == got.free_bytes
