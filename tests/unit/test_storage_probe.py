"""Path facts and the shared-storage token files."""

from __future__ import annotations

from baton.agent import storage_probe
from baton.schemas.agent import TokenAction, TokenOp


def test_probe_reports_an_existing_file_and_a_missing_one(tmp_path):
    disk = tmp_path / "d.qcow2"
    disk.write_bytes(b"abc")
    present = storage_probe.probe_path(str(disk))
    missing = storage_probe.probe_path(str(tmp_path / "nope" / "x"))
    assert (True, False, True, 3) == (present.exists, present.is_dir, present.readable,
                                      present.size_bytes)
    assert (False, 0) == (missing.exists, missing.size_bytes)
    assert present.fs_free_bytes > 0 and missing.fs_free_bytes > 0


def test_token_write_read_remove_round_trip(tmp_path):
    disk = tmp_path / "d.qcow2"
    op = lambda action, token="abcdefgh": TokenOp(action=action, beside=str(disk), token=token)  # noqa: E731
    written = storage_probe.run_token_op(op(TokenAction.WRITE))
    assert [".baton-probe-abcdefgh"] == [p.name for p in tmp_path.iterdir()]
    read_ok = storage_probe.run_token_op(op(TokenAction.READ))
    read_other = storage_probe.run_token_op(op(TokenAction.READ, "zzzzzzzz"))
    removed = storage_probe.run_token_op(op(TokenAction.REMOVE))
    assert (True, True, False, True) == (written.ok, read_ok.ok, read_other.ok, removed.ok)
    assert "not found" in read_other.detail
    assert [] == list(tmp_path.iterdir())


def test_token_write_into_a_missing_directory_fails_with_a_reason(tmp_path):
    op = TokenOp(action=TokenAction.WRITE, beside=str(tmp_path / "gone" / "d"), token="abcdefgh")
    result = storage_probe.run_token_op(op)
    assert (False, True) == (result.ok, "No such file" in result.detail)


def test_filesystem_type_takes_the_longest_matching_mount_point(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nbindfs {tmp_path} fuse.glusterfs rw 0 0\n")
    assert "fuse.glusterfs" == storage_probe.filesystem_type(tmp_path / "x", mounts)
    assert "ext4" == storage_probe.filesystem_type(tmp_path.parent, mounts)


def _op(action: TokenAction, disk, token: str = "abcdefgh") -> TokenOp:
    return TokenOp(action=action, beside=str(disk), token=token)


def test_a_token_write_never_replaces_an_existing_file(tmp_path):
    (tmp_path / ".baton-probe-abcdefgh").write_text("someone's data")
    result = storage_probe.run_token_op(_op(TokenAction.WRITE, tmp_path / "disk.qcow2"))
    assert (False, "someone's data") == (result.ok, (tmp_path / ".baton-probe-abcdefgh").read_text())


def test_no_token_operation_follows_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("abcdefgh")
    (tmp_path / ".baton-probe-abcdefgh").symlink_to(victim)
    disk = tmp_path / "disk.qcow2"
    results = [storage_probe.run_token_op(_op(action, disk)).ok
               for action in (TokenAction.WRITE, TokenAction.READ, TokenAction.REMOVE)]
    assert ([False, False, False], "abcdefgh", True) == (
        results, victim.read_text(), (tmp_path / ".baton-probe-abcdefgh").is_symlink())


def test_a_token_file_with_more_than_the_token_does_not_match(tmp_path):
    (tmp_path / ".baton-probe-abcdefgh").write_text("abcdefgh" + "x" * 100_000)
    assert False is storage_probe.run_token_op(_op(TokenAction.READ, tmp_path / "d")).ok
