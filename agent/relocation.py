"""A domain definition with some disks at other paths: what a copy into another pool sends libvirt
as the destination's definition (``destination_xml``, and ``persistent_xml`` when it is kept).

Pure. Only the file path of each named disk changes; everything else, the guest ABI included,
stays as libvirt wrote it, so the destination QEMU is the same machine reading other files.
A named disk that the definition lacks, or that is not a writable file, is refused rather than
skipped: the destination would otherwise open the source's path, which is not the copy.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from baton.schemas.errors import BatonError, ErrorCode


def check_paths(copied: list[str], paths: dict[str, str]) -> None:
    """Only a copied disk may land elsewhere (an uncopied one would be opened at a path that
    holds no copy), and only at an absolute path."""
    if stray := sorted(set(paths) - set(copied)):
        raise BatonError(ErrorCode.BAD_REQUEST, f"{', '.join(stray)} not copied: only a copied "
                         "disk can land at another path on the destination")
    if relative := sorted(p for p in paths.values() if not os.path.isabs(p)):
        raise BatonError(ErrorCode.BAD_REQUEST, f"disk path must be absolute: {relative[0]}")


def relocate_disks(domain_xml: str, paths: dict[str, str]) -> str:
    """``domain_xml`` with each disk target in ``paths`` reading the file at its new path."""
    root = ET.fromstring(domain_xml)
    disks = {target.get("dev"): disk for disk in root.findall("devices/disk")
             if (target := disk.find("target")) is not None}
    for dev, path in sorted(paths.items()):
        disk = disks.get(dev)
        source = None if disk is None else disk.find("source")
        if disk is None or source is None or disk.get("type") != "file" \
                or disk.get("device", "disk") != "disk" or source.get("file") is None:
            raise BatonError(ErrorCode.BAD_REQUEST, f"cannot put {dev} elsewhere: the domain has "
                             f"no file-backed disk {dev} (only such disks are copied)")
        source.set("file", path)
        # The copy is a single image (pre-created, flat): the source's chain does not apply.
        for chain in disk.findall("backingStore"):
            disk.remove(chain)
    return ET.tostring(root, encoding="unicode")
