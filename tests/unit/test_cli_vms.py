"""``baton vms``'s rows and its running-twice flag (pure)."""

from __future__ import annotations

from baton.cli.vms import VmRow, running_twice


def row(vm: str, host: str, state: str = "running", uuid: str = "u1") -> VmRow:
    return VmRow(vm=vm, host=host, uuid=uuid, state=state, persistent=True, memory_bytes=1,
                 vcpus=1, disks=[])


def test_only_the_same_domain_running_on_two_hosts_is_flagged():
    assert {"a": ["h1", "h2"]} == running_twice([row("a", "h1"), row("a", "h2")])
    # a paused incoming copy (a live migration in flight) or a kept inactive definition is not
    assert {} == running_twice([row("a", "h1"), row("a", "h2", state="paused"),
                                row("a", "h3", state="shutoff")])
    # two different domains that share a name are two VMs, not one running twice
    assert {} == running_twice([row("a", "h1", uuid="u1"), row("a", "h2", uuid="u2")])
