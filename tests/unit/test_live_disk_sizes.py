"""When the agent asks libvirt for a disk's live size (blockInfo): never while a job holds the
domain so that the call would wait for the job's end (agent/libvirt/domains.py). Found in the lab
twice: a migration's destination paused "starting up" and then paused "migration" (controlInfo
"ok" all the same) hung every status read for the whole copy. A stand-in domain object records
the calls; the lab test (tests/lab/test_migration_facts.py) asks a real destination throughout."""

from __future__ import annotations

import libvirt
import pytest

from baton.agent.libvirt import domains

PAUSED, RUNNING = libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_RUNNING
OK, JOB = libvirt.VIR_DOMAIN_CONTROL_OK, libvirt.VIR_DOMAIN_CONTROL_JOB

XML = """<domain type='qemu'><name>vm1</name><uuid>00000000-0000-4000-8000-000000000001</uuid>
<memory unit='KiB'>131072</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/nowhere/vm1.qcow2'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>"""


class Dom:
    def __init__(self, state: int, reason: int, control: int | Exception) -> None:
        self._state, self._reason, self._control = state, reason, control
        self.block_info_asked = False

    def state(self) -> list[int]:
        return [self._state, self._reason]

    def info(self) -> list[int]:
        return [self._state, 131072, 131072, 1, 0]

    def XMLDesc(self, _flags: int) -> str:
        return XML

    def isActive(self) -> int:
        return 1

    def isPersistent(self) -> int:
        return 1

    def name(self) -> str:
        return "vm1"

    def UUIDString(self) -> str:
        return "00000000-0000-4000-8000-000000000001"

    def controlInfo(self) -> list[int]:
        if isinstance(self._control, Exception):
            raise self._control
        return [self._control, 0, 0]

    def blockInfo(self, _target: str) -> list[int]:
        self.block_info_asked = True
        return [1 << 30, 1 << 20, 1 << 20]


class Conn:
    def storageVolLookupByPath(self, path: str) -> None:
        raise libvirt.libvirtError(f"no volume at {path}")


def unreadable() -> libvirt.libvirtError:
    return libvirt.libvirtError("cannot read the control state")


@pytest.mark.parametrize(("state", "reason", "control", "asked"), [
    (RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, OK, True),
    (PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, OK, True),
    (PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, OK, False),
    (PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP, OK, False),
    (PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, OK, False),
    (PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, OK, False),
    (RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, JOB, False),
    (RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, "unreadable", False),
])
def test_block_info_is_asked_only_when_no_job_can_make_it_wait(state, reason, control, asked):
    dom = Dom(state, reason, unreadable() if control == "unreadable" else control)
    info = domains._domain_info(Conn(), dom, include_cpu_xml=False)  # type: ignore[arg-type]
    sizes = (info.disks[0].capacity_bytes, info.disks[0].allocation_bytes)
    assert (asked, (1 << 30, 1 << 20) if asked else (0, 0)) == (dom.block_info_asked, sizes)
