"""The pure XML of agent/block_copy.py a storage move decides by: which file a disk uses, whether
its copy is in sync (the condition for a pivot), and the saved definition rewritten to the copy.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from baton.agent import block_copy


def domain_xml(*disks: str) -> str:
    return f"<domain><devices>{''.join(disks)}</devices></domain>"


FILE_VDA = "<disk type='file'><source file='/pool/a.qcow2' index='2'/><target dev='vda'/></disk>"
FILE_VDB = "<disk type='file'><source file='/pool/b.qcow2'/><target dev='vdb'/></disk>"
BLOCK_VDC = "<disk type='block'><source dev='/dev/sdc'/><target dev='vdc'/></disk>"
EMPTY_CDROM = "<disk type='file' device='cdrom'><target dev='sda'/></disk>"
NO_TARGET = "<disk type='file'><source file='/pool/odd.qcow2'/></disk>"


def mirrored(target: str, ready: str | None) -> str:
    state = "" if ready is None else f" ready='{ready}'"
    return (f"<disk type='file'><source file='/pool/{target}.qcow2'/><target dev='{target}'/>"
            f"<mirror type='file'{state}><source file='/new/{target}.qcow2'/></mirror></disk>")


def test_disk_source_reads_the_named_disk_among_several():
    xml = domain_xml(NO_TARGET, FILE_VDA, FILE_VDB, BLOCK_VDC)
    assert ["/pool/a.qcow2", "/pool/b.qcow2", "/dev/sdc"] == [
        block_copy.disk_source(xml, target) for target in ("vda", "vdb", "vdc")]


def test_a_disk_that_is_absent_or_has_no_source_has_no_source_path():
    xml = domain_xml(FILE_VDA, EMPTY_CDROM)
    assert [None, None] == [block_copy.disk_source(xml, target) for target in ("vdz", "sda")]


@pytest.mark.parametrize(("ready", "expected"), [
    ("yes", True), ("pivot", True), ("abort", False), (None, False)])
def test_a_copy_is_in_sync_only_when_libvirt_marks_its_mirror_ready_or_pivoting(ready, expected):
    xml = domain_xml(mirrored("vda", None), mirrored("vdb", ready))
    assert expected == block_copy.mirror_ready(xml, "vdb")


def test_a_disk_without_a_mirror_or_absent_is_not_in_sync():
    xml = domain_xml(FILE_VDA, mirrored("vdb", "yes"))
    assert [False, False] == [block_copy.mirror_ready(xml, target) for target in ("vda", "vdz")]


def source_of(xml: str, target: str) -> dict[str, str]:
    for disk in ET.fromstring(xml).iter("disk"):
        if disk.find("target").get("dev") == target:
            return dict(disk.find("source").attrib)
    raise AssertionError(target)


def test_the_rewritten_definition_names_the_copy_without_the_live_only_index():
    xml = domain_xml(FILE_VDA, FILE_VDB)
    rewritten = block_copy.with_disk_source(xml, "vda", "/new/a.qcow2")
    assert ({"file": "/new/a.qcow2"}, {"file": "/pool/b.qcow2"}) == (
        source_of(rewritten, "vda"), source_of(rewritten, "vdb"))


def test_a_disk_without_a_type_attribute_is_file_backed_and_rewritten():
    xml = domain_xml("<disk><source file='/pool/a.qcow2'/><target dev='vda'/></disk>")
    rewritten = block_copy.with_disk_source(xml, "vda", "/new/a.qcow2")
    assert {"file": "/new/a.qcow2"} == source_of(rewritten, "vda")


@pytest.mark.parametrize("target", ["vdz", "vdc", "sda"], ids=["absent", "block", "no-source"])
def test_a_definition_is_never_rewritten_for_a_disk_that_is_not_a_file_with_a_source(target):
    xml = domain_xml(FILE_VDA, BLOCK_VDC, EMPTY_CDROM)
    with pytest.raises(ValueError) as caught:
        block_copy.with_disk_source(xml, target, "/new/x.qcow2")
    assert f"no file-backed disk {target!r} in the definition" == str(caught.value)
