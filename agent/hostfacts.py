"""Host facts libvirt does not give: Linux bridges, read from sysfs; QEMU's migration TLS
certificates, found through libvirt's qemu.conf.

The agent runs in the host's own network namespace, so ``/sys/class/net`` lists that host's
devices. ``sysfs`` is a parameter so tests can point it at a directory they build.
"""

from __future__ import annotations

import re
from pathlib import Path

from baton.schemas.agent import Bridge

SYS_CLASS_NET = Path("/sys/class/net")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_TLS_DIR = "/etc/pki/qemu"  # libvirt's default_tls_x509_cert_dir
# What QEMU needs to send (client) and receive (server) a migration stream over TLS.
MIGRATION_TLS_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem",
                       "client-key.pem")


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


def migration_tls_ready(qemu_conf: Path = QEMU_CONF) -> bool:
    """Whether QEMU here can migrate over TLS: its x509 directory (``migrate_tls_x509_cert_dir``,
    else ``default_tls_x509_cert_dir``, else libvirt's default) holds every file it needs."""
    try:
        text = qemu_conf.read_text()
    except OSError:
        text = ""
    settings = dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]*)"', text, re.MULTILINE))
    directory = Path(settings.get("migrate_tls_x509_cert_dir")
                     or settings.get("default_tls_x509_cert_dir") or DEFAULT_TLS_DIR)
    return all((directory / name).is_file() for name in MIGRATION_TLS_FILES)
