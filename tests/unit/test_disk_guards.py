"""The guards in agent/disks.py that stand between a bug and a lost disk file: the in-use check
before a delete, the refusal to create over an existing file, and the verification of a copy
(qemu-img info/check) that decides whether an old file may go. Real files, real qemu-img.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from baton.agent import disks
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import DiskPlan
from tests.support.images import MIB, corrupt, leak, make_image, needs_qemu_img, needs_qemu_io


def file_with(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


# --- delete_unused: the in-use guard ----------------------------------------------------------


def test_a_file_a_domain_uses_is_kept_with_the_reason(tmp_path):
    used = file_with(tmp_path / "vm1.qcow2", b"data")
    deleted, kept, reasons = disks.delete_unused([str(used)], {str(used)})
    assert ([], [str(used)], True) == (deleted, kept, used.exists())
    assert [f"{used} is still used by a domain on this host"] == reasons


def test_an_unused_file_is_deleted_and_a_used_one_beside_it_kept(tmp_path):
    used = file_with(tmp_path / "used.qcow2", b"a")
    free = file_with(tmp_path / "free.qcow2", b"b")
    deleted, kept, _ = disks.delete_unused([str(free), str(used)], {str(used)})
    assert ([str(free)], [str(used)]) == (deleted, kept)
    assert (False, True) == (free.exists(), used.exists())


def test_a_used_file_named_by_another_spelling_of_its_path_is_kept(tmp_path):
    (tmp_path / "pool").mkdir()
    used = file_with(tmp_path / "pool" / "vm1.qcow2", b"data")
    other_spelling = str(tmp_path / "pool" / ".." / "pool" / "vm1.qcow2")
    deleted, kept, _ = disks.delete_unused([other_spelling], {os.path.realpath(used)})
    assert ([], [other_spelling], b"data") == (deleted, kept, used.read_bytes())


def test_a_symlink_a_domain_names_as_its_disk_is_kept(tmp_path):
    real = file_with(tmp_path / "real.qcow2", b"data")
    link = tmp_path / "vm1.qcow2"
    link.symlink_to(real)
    deleted, kept, _ = disks.delete_unused([str(link)], {str(link)})
    assert ([], [str(link)], True) == (deleted, kept, link.is_symlink())


def test_a_file_a_domain_uses_through_a_symlink_is_kept(tmp_path):
    real = file_with(tmp_path / "real.qcow2", b"data")
    link = tmp_path / "vm1.qcow2"
    link.symlink_to(real)
    deleted, kept, _ = disks.delete_unused([str(real)], {str(link)})
    assert ([], [str(real)], True) == (deleted, kept, real.exists())


def test_a_file_already_gone_is_reported_kept_not_deleted(tmp_path):
    gone = str(tmp_path / "gone.qcow2")
    assert ([], [gone], [f"{gone} was already gone"]) == disks.delete_unused([gone], set())


def test_a_path_that_cannot_be_unlinked_is_kept_with_the_systems_reason(tmp_path):
    directory = tmp_path / "dir.qcow2"
    directory.mkdir()
    deleted, kept, reasons = disks.delete_unused([str(directory)], set())
    assert ([], [str(directory)], True) == (deleted, kept, directory.is_dir())
    assert 1 == len(reasons) and str(directory) in reasons[0]


# --- create_disk: never over an existing file --------------------------------------------------


@needs_qemu_img
async def test_creating_a_disk_over_an_existing_file_is_refused_and_leaves_it_untouched(tmp_path):
    existing = file_with(tmp_path / "vm1.qcow2", b"somebody's data")
    with pytest.raises(BatonError) as caught:
        await disks.create_disk(DiskPlan(target="vda", path=str(existing), format="qcow2",
                                         capacity_bytes=4 * MIB))
    assert (ErrorCode.CONFLICT, b"somebody's data") == (caught.value.code, existing.read_bytes())


def test_a_file_that_appears_after_the_check_is_not_taken_over(tmp_path, monkeypatch):
    """O_EXCL is the guard once the existence check has passed (a race with another writer)."""
    raced = file_with(tmp_path / "vm1.qcow2", b"written in between")
    monkeypatch.setattr(disks, "_check_target", lambda plan: Path(plan.path))  # check passed
    with pytest.raises(BatonError) as caught:
        disks.reserve_disk(DiskPlan(target="vda", path=str(raced), format="qcow2",
                                    capacity_bytes=MIB))
    assert (ErrorCode.CONFLICT, b"written in between") == (caught.value.code, raced.read_bytes())
    assert str(raced) in caught.value.message


def test_a_symlink_that_appears_after_the_check_is_not_written_through(tmp_path, monkeypatch):
    target = file_with(tmp_path / "precious", b"keep")
    link = tmp_path / "vm1.qcow2"
    link.symlink_to(target)
    monkeypatch.setattr(disks, "_check_target", lambda plan: Path(plan.path))
    with pytest.raises(BatonError):
        disks.reserve_disk(DiskPlan(target="vda", path=str(link), format="qcow2",
                                    capacity_bytes=MIB))
    assert b"keep" == target.read_bytes()


def test_a_reserved_disk_file_is_private_to_root(tmp_path):
    path = tmp_path / "vm1.qcow2"
    disks.reserve_disk(DiskPlan(target="vda", path=str(path), format="qcow2", capacity_bytes=MIB))
    assert 0o600 == path.stat().st_mode & 0o777


async def test_a_failed_fill_of_a_file_already_gone_raises_the_fills_error(tmp_path, monkeypatch):
    path = tmp_path / "vm1.qcow2"

    async def fill_fails(plan):
        os.unlink(plan.path)  # someone removed it meanwhile: the clean-up's unlink fails too
        raise BatonError(ErrorCode.HYPERVISOR, "qemu-img create failed")

    monkeypatch.setattr(disks, "fill_disk", fill_fails)
    with pytest.raises(BatonError, match="qemu-img create failed"):
        await disks.create_disk(DiskPlan(target="vda", path=str(path), format="qcow2",
                                         capacity_bytes=MIB))


@pytest.mark.parametrize(("path", "code"), [
    ("relative/vm1.qcow2", ErrorCode.BAD_REQUEST),
    ("/nonexistent-baton-dir/vm1.qcow2", ErrorCode.PRECONDITION_FAILED),
])
async def test_a_disk_path_that_is_relative_or_has_no_directory_is_refused(path, code):
    with pytest.raises(BatonError) as caught:
        await disks.create_disk(DiskPlan(target="vda", path=path, format="qcow2",
                                         capacity_bytes=MIB))
    assert code == caught.value.code


@needs_qemu_img
async def test_a_created_disk_is_thin_and_of_the_planned_format_and_size(tmp_path):
    path = tmp_path / "vm1.qcow2"
    await disks.create_disk(DiskPlan(target="vda", path=str(path), format="qcow2",
                                     capacity_bytes=64 * MIB))
    assert ("qcow2", 64 * MIB) == await disks.image_info(str(path))
    assert path.stat().st_size < MIB


# --- verifying a copy ---------------------------------------------------------------------------


@needs_qemu_img
async def test_image_info_of_a_missing_file_is_a_hypervisor_error(tmp_path):
    with pytest.raises(BatonError) as caught:
        await disks.image_info(str(tmp_path / "missing.qcow2"))
    assert ErrorCode.HYPERVISOR == caught.value.code


@needs_qemu_img
async def test_a_clean_qcow2_passes_the_check(tmp_path):
    assert None is await disks.check_image(str(make_image(tmp_path / "a.qcow2")), "qcow2")


@needs_qemu_img
async def test_a_corrupt_qcow2_fails_the_check_with_qemu_imgs_exit_code(tmp_path):
    problem = await disks.check_image(str(corrupt(make_image(tmp_path / "a.qcow2"))), "qcow2")
    assert problem is not None and "exited 2" in problem


@needs_qemu_img
@needs_qemu_io
async def test_leaked_clusters_alone_pass_the_check(tmp_path):
    assert None is await disks.check_image(str(leak(make_image(tmp_path / "a.qcow2"))), "qcow2")


@needs_qemu_img
async def test_a_raw_image_has_no_metadata_to_check(tmp_path):
    assert None is await disks.check_image(str(file_with(tmp_path / "a.raw", b"\0" * 512)), "raw")


# --- what an operator reads, and every path of a list handled --------------------------------


def test_a_used_file_first_in_the_list_does_not_stop_the_unused_ones_after_it(tmp_path):
    used = file_with(tmp_path / "used.qcow2", b"a")
    free = file_with(tmp_path / "free.qcow2", b"b")
    deleted, kept, _ = disks.delete_unused([str(used), str(free)], {str(used)})
    assert ([str(free)], [str(used)], False) == (deleted, kept, free.exists())


def test_a_file_already_gone_first_in_the_list_does_not_stop_the_ones_after_it(tmp_path):
    gone = str(tmp_path / "gone.qcow2")
    free = file_with(tmp_path / "free.qcow2", b"b")
    deleted, kept, _ = disks.delete_unused([gone, str(free)], set())
    assert ([str(free)], [gone], False) == (deleted, kept, free.exists())


def test_a_path_that_cannot_be_unlinked_first_does_not_stop_the_ones_after_it(tmp_path):
    directory = tmp_path / "dir.qcow2"
    directory.mkdir()
    free = file_with(tmp_path / "free.qcow2", b"b")
    deleted, kept, _ = disks.delete_unused([str(directory), str(free)], set())
    assert ([str(free)], [str(directory)], False) == (deleted, kept, free.exists())


async def test_a_refused_disk_path_says_why_in_the_error_message(tmp_path):
    existing = file_with(tmp_path / "vm1.qcow2", b"data")
    messages = []
    for path in ("relative/vm1.qcow2", str(existing), "/nonexistent-baton-dir/vm1.qcow2"):
        with pytest.raises(BatonError) as caught:
            await disks.create_disk(DiskPlan(target="vda", path=path, format="qcow2",
                                             capacity_bytes=MIB))
        messages.append(caught.value.message)
    assert ["disk path must be absolute: relative/vm1.qcow2",
            f"{existing} already exists on this host; refusing to overwrite it (remove it or "
            "pick another destination)",
            "directory /nonexistent-baton-dir does not exist on this host"] == messages


@needs_qemu_img
async def test_a_failed_qemu_img_create_is_a_hypervisor_error_with_qemu_imgs_message(tmp_path):
    path = tmp_path / "vm1.img"
    with pytest.raises(BatonError) as caught:
        await disks.create_disk(DiskPlan(target="vda", path=str(path), format="nonsense",
                                         capacity_bytes=MIB))
    assert (ErrorCode.HYPERVISOR, f"qemu-img create {path} failed: qemu-img: {path}: Unknown "
            "file format 'nonsense'", False) == (caught.value.code, caught.value.message,
                                                 path.exists())


@needs_qemu_img
async def test_image_info_of_a_missing_file_says_which_file_and_qemu_imgs_reason(tmp_path):
    missing = tmp_path / "missing.qcow2"
    with pytest.raises(BatonError) as caught:
        await disks.image_info(str(missing))
    assert caught.value.message.startswith(f"qemu-img info {missing} failed: qemu-img: ")
    assert "No such file or directory" in caught.value.message


@needs_qemu_img
async def test_qemu_img_not_answering_in_time_is_a_timeout_naming_the_command(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(disks, "QEMU_IMG_TIMEOUT_S", 0)
    with pytest.raises(BatonError) as caught:
        await disks.image_info(str(make_image(tmp_path / "a.qcow2")))
    assert (ErrorCode.TIMEOUT, "qemu-img info took too long") == (caught.value.code,
                                                                   caught.value.message)


@contextlib.contextmanager
def in_use_by_qemu(path: Path) -> Iterator[Path]:
    """``path`` opened read-write by a QEMU process (qemu-io), which locks it as a running VM
    does, until the block ends."""
    proc = subprocess.Popen(["qemu-io", "-f", "qcow2", str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        seen = b""
        while b"qemu-io> " not in seen:  # the prompt: the image is open and locked
            chunk = proc.stdout.read1(256)
            assert chunk, seen
            seen += chunk
        yield path
    finally:
        proc.communicate(b"quit\n")


@needs_qemu_img
@needs_qemu_io
async def test_an_image_a_running_qemu_holds_is_still_read_and_checked(tmp_path):
    with in_use_by_qemu(make_image(tmp_path / "a.qcow2", size=8 * MIB)) as path:
        info = await disks.image_info(str(path))
        problem = await disks.check_image(str(path), "qcow2")
    assert (("qcow2", 8 * MIB), None) == (info, problem)


def with_data(path: Path) -> Path:
    subprocess.run(["qemu-io", "-c", "write 0 2M", str(path)], check=True, capture_output=True)
    return path


@needs_qemu_img
@needs_qemu_io
async def test_a_check_failure_quotes_qemu_imgs_report_cut_to_500_characters(tmp_path):
    path = with_data(make_image(tmp_path / "a.qcow2", size=8 * MIB))  # many clusters to report
    problem = await disks.check_image(str(corrupt(path)), "qcow2")
    prefix = f"qemu-img check {path} exited 2: "
    assert problem is not None
    assert (True, 500) == (problem.startswith(prefix + "ERROR cluster 0 refcount=0 reference=1"),
                           len(problem) - len(prefix))
