"""Migration records outlive the coordinator: they are kept in JetStream (issue #11, part 1)."""

from __future__ import annotations

import pytest

from tests.lab.migrations import migrate, record

pytestmark = pytest.mark.lab


def test_a_record_written_before_a_coordinator_restart_is_listed_after_it(stack, lab, guest):
    vm = guest("h1")
    code, before = migrate(stack, vm, "--to", "h2")
    stack.restart_coordinator()
    after = record(stack, before["migration_id"])
    assert (0, "succeeded") == (code, before["phase"])
    assert before == after
