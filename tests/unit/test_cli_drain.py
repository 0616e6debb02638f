"""When ``baton drain`` says the host is empty (cli/drain.py, pure)."""

from __future__ import annotations

import msgspec

from baton.cli.drain import drained
from baton.schemas.migration import DrainItem, DrainReply, MigrationRecord, Phase
from tests.support.samples import sample


def record(phase: Phase) -> MigrationRecord:
    return msgspec.structs.replace(sample(MigrationRecord), phase=phase)


def test_drained_only_when_every_running_vm_moved():
    items = [DrainItem(vm="a", state="running", destination="h2", migration_id="m1"),
             DrainItem(vm="off", state="shutoff", active=False)]
    reply = DrainReply(host="h1", drain_id="d", items=items)
    assert drained(reply, {"m1": record(Phase.SUCCEEDED)})
    assert not drained(reply, {"m1": record(Phase.FAILED)})
    assert not drained(reply, {})
    stays = DrainReply(host="h1", items=[*items, DrainItem(vm="big", state="running",
                                                           reason="no host can take big")])
    assert not drained(stays, {"m1": record(Phase.SUCCEEDED)})
