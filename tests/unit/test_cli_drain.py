"""When ``baton drain`` says the host is empty (cli/drain.py, pure)."""

from __future__ import annotations

import msgspec

from baton.cli.drain import drained, plan_table
from baton.schemas.migration import DrainItem, DrainReply, MigrationRecord, Phase
from tests.support.samples import sample
from tests.unit.test_cli_render import rendered


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


def test_a_timed_plan_shows_when_each_move_is_expected_and_the_bound():
    reply = DrainReply(host="h1", total_s=12.0, lower_bound_s=12.0, items=[
        DrainItem(vm="a", state="running", destination="h2", start_s=0.0, end_s=11.0),
        DrainItem(vm="off", state="shutoff", active=False)])
    text = rendered(plan_table(reply, "plan"))
    assert "expected 12 s, no plan under 12 s" in text
    assert "0-11 s" in text
    untimed = rendered(plan_table(DrainReply(host="h1", items=reply.items[1:]), "plan"))
    assert "expected" not in untimed
