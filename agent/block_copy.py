"""What a storage move needs from the hypervisor (the port), and the pure XML it reads and writes.

The libvirt boundary implements :class:`BlockCopier` (``agent/libvirt/blockjobs.py``); unit
tests use a fake. Every method is a coroutine that never blocks the event loop and raises
:class:`schemas.errors.BatonError` like the rest of :mod:`agent.hypervisor`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from io import StringIO
from typing import Protocol
from xml.sax.saxutils import quoteattr

from baton.agent.hypervisor import HostFacts
from baton.schemas.agent import DomainInfo


@dataclass(frozen=True)
class BlockJobProgress:
    """A running block job's position (``virDomainGetBlockJobInfo``)."""

    cur_bytes: int
    end_bytes: int
    bandwidth_mib_s: int  # libvirt reports MiB/s here, whatever unit the job was started with


@dataclass(frozen=True)
class DiskSources:
    """Where one disk points in the live and the saved (inactive) definition."""

    live: str | None
    persistent: str | None  # None: a transient domain has no saved definition
    mirror_ready: bool  # the live XML shows <mirror ready='yes'>: the copy is in sync


class BlockCopier(Protocol):
    async def domains(self, names: list[str] | None, include_cpu_xml: bool) -> list[DomainInfo]: ...

    async def refresh_pools(self) -> None: ...

    async def host_facts(self) -> HostFacts:
        """The host's facts; a copy is made only in an active pool's directory."""

    async def block_copy(self, vm: str, target: str, destination_xml: str,
                         bandwidth_bytes_s: int | None) -> None:
        """Start a copy job of ``target`` into a new file (transient job on a persistent VM)."""

    async def block_job_progress(self, vm: str, target: str) -> BlockJobProgress | None:
        """The running job on ``target``; None when none runs."""

    async def block_job_abort(self, vm: str, target: str, pivot: bool) -> None:
        """End the copy: ``pivot`` switches the VM to the copy, else the copy is abandoned."""

    async def disk_sources(self, vm: str, target: str) -> DiskSources: ...

    async def define_disk_source(self, vm: str, target: str, path: str) -> None:
        """Save the VM's definition with ``target`` pointing at ``path``."""


# --- pure XML ---------------------------------------------------------------------------------


def copy_destination_xml(path: str, disk_format: str) -> str:
    """The ``<disk>`` blockCopy writes into: a plain file, in the source's format."""
    return (f"<disk type='file'><source file={quoteattr(path)}/>"
            f"<driver type={quoteattr(disk_format)}/></disk>")


def _disk(root: ET.Element, target: str) -> ET.Element | None:
    for disk in root.findall("devices/disk"):
        node = disk.find("target")
        if node is not None and node.get("dev") == target:
            return disk
    return None


def disk_source(domain_xml: str, target: str) -> str | None:
    disk = _disk(ET.fromstring(domain_xml), target)
    source = None if disk is None else disk.find("source")
    return None if source is None else source.get("file") or source.get("dev")


def mirror_ready(domain_xml: str, target: str) -> bool:
    disk = _disk(ET.fromstring(domain_xml), target)
    mirror = None if disk is None else disk.find("mirror")
    return mirror is not None and mirror.get("ready") in ("yes", "pivot")


def with_disk_source(domain_xml: str, target: str, path: str) -> str:
    """The definition with ``target``'s file source replaced (everything else kept as it was)."""
    for _event, (prefix, uri) in ET.iterparse(StringIO(domain_xml), events=("start-ns",)):
        ET.register_namespace(prefix, uri)  # keep metadata prefixes as libvirt wrote them
    root = ET.fromstring(domain_xml)
    disk = _disk(root, target)
    source = None if disk is None else disk.find("source")
    if disk is None or source is None or disk.get("type", "file") != "file":
        raise ValueError(f"no file-backed disk {target!r} in the definition")
    source.attrib.pop("index", None)  # a live-only attribute
    source.set("file", path)
    return ET.tostring(root, encoding="unicode")
