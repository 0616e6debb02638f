"""Smoke tests of the lab itself: hosts, pools, bridges, and one live migration."""

from __future__ import annotations

import pytest

from tests.lab.labctl import CORRUPTION_RE, LAB_HOSTS, GuestFactory, Lab

pytestmark = pytest.mark.lab


def test_every_host_has_the_four_pools_active(lab: Lab) -> None:
    """Each host has default, slow, fast and shared dir pools, all active."""
    for n in range(1, LAB_HOSTS + 1):
        pools = lab.pools(f"h{n}")
        assert {"default": "active", "slow": "active", "fast": "active", "shared": "active"} == {
            name: pools.get(name) for name in ("default", "slow", "fast", "shared")
        }


def test_br_vm_exists_on_h1_and_h2_but_not_h3(lab: Lab) -> None:
    """The guest bridge br-vm is missing on h3 only, for the network pre-flight check."""
    assert [True, True, False] == ["br-vm" in lab.link_names(h) for h in ("h1", "h2", "h3")]


def test_hosts_have_distinct_uuids(lab: Lab) -> None:
    """libvirt refuses to migrate between hosts with one UUID; each host has its own."""
    uuids = {lab.virsh(f"h{n}", "capabilities").split("<uuid>", 1)[1].split("<", 1)[0] for n in (1, 2, 3)}
    assert 3 == len(uuids)


def test_shared_storage_live_migration_keeps_the_guest_running(lab: Lab, guest: GuestFactory) -> None:
    """A guest on shared storage migrates h1 -> h2 with plain virsh and keeps counting there."""
    name = guest(host="h1", storage="shared")
    before = lab.wait_alive_past(name, 0)
    disk = lab.disk_path(name)
    hb_before = lab.heartbeats(disk)

    lab.virsh("h1", "migrate", "--live", "--p2p", "--persistent", "--undefinesource", name, lab.uri("h2"))

    assert (None, "running") == (lab.domstate("h1", name), lab.domstate("h2", name))
    after = lab.wait_alive_past(name, before + 3)
    assert after > before
    console = lab.console(name)  # the destination's console log
    assert [] == CORRUPTION_RE.findall(console)
    hb_after = lab.heartbeats(disk)
    assert 0 == hb_after.corrupt_records
    assert hb_after.max_seq > hb_before.max_seq
    assert 1 == len(hb_after.boot_ids)  # same boot: the guest was moved, not restarted
