"""Host facts libvirt does not give: Linux bridges, read from sysfs.

The agent runs in the host's own network namespace, so ``/sys/class/net`` lists that host's
devices. ``sysfs`` is a parameter so tests can point it at a directory they build.
"""

from __future__ import annotations

from pathlib import Path

from baton.schemas.agent import Bridge

SYS_CLASS_NET = Path("/sys/class/net")


def bridges(sysfs: Path = SYS_CLASS_NET) -> list[Bridge]:
    """Every Linux bridge device, with its operational state and MTU."""
    if not sysfs.is_dir():
        return []
    found = [_bridge(dev) for dev in sorted(sysfs.iterdir()) if (dev / "bridge").is_dir()]
    return [b for b in found if b is not None]


def _bridge(dev: Path) -> Bridge | None:
    try:
        operstate = (dev / "operstate").read_text().strip()
        flags = int((dev / "flags").read_text().strip(), 16)
        mtu = int((dev / "mtu").read_text().strip())
    except (OSError, ValueError):
        return None  # the device vanished while we looked
    # An empty bridge reports operstate "down" or "unknown" while administratively up; IFF_UP
    # (flag 0x1) is what decides whether guests can be plugged into it.
    up = bool(flags & 0x1) and operstate != "lowerlayerdown"
    return Bridge(name=dev.name, up=up, mtu=mtu)
