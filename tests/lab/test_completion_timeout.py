"""The completion timeout (issue #12, item 5), on real QEMU: a migration that cannot finish in its
time is aborted cleanly, the guest keeps running on the source, and the record says why, with the
figures it had reached."""

from __future__ import annotations

import pytest

from tests.lab.migrations import migrate

pytestmark = pytest.mark.lab


def test_a_migration_past_its_timeout_is_aborted_and_the_vm_stays_on_the_source(stack, lab, guest):
    vm = guest("h1", storage="shared")  # dirties 8 MiB/s: 2 MiB/s cannot carry it
    seq_before = lab.alive_seq(vm)
    code, rec = migrate(stack, vm, "--to", "h2", "--bandwidth", "2", "--timeout", "15",
                        "--strategy", "precopy")
    error = rec["error"]
    assert (1, "failed", "timeout") == (code, rec["phase"], error["code"])
    assert "within its 15 s timeout" in error["message"]
    assert int(error["details"]["processed_mib"]) > 0  # how far it got, for the operator
    assert ("running", None) == (lab.domstate("h1", vm), lab.domstate("h2", vm))
    assert vm not in lab.domains("h2", all_=True)
    assert "None" == lab.jobinfo("h1", vm).get("Job type", "None")  # libvirt's job is over
    lab.wait_alive_past(vm, seq_before + 2)  # the guest never stopped
