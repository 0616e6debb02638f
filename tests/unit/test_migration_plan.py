"""How a start request maps onto libvirt migration flags and parameters."""

from __future__ import annotations

import pytest

from baton.agent.migration_plan import MigrationFlag as F
from baton.agent.migration_plan import plan_migration
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import PostcopySwitch, StartRequest


def start(**options) -> StartRequest:
    return StartRequest(migration_id="m1", vm="g1", destination_uri="qemu+tcp://10.77.0.2/system",
                        destination_address="10.77.0.2", **options)


def test_default_live_move_is_peer_to_peer_persistent_and_undefines_the_source():
    plan = plan_migration(start(), domain_active=True)
    assert "qemu+tcp://10.77.0.2/system" == plan.destination_uri
    assert {F.LIVE, F.PEER2PEER, F.PERSIST_DEST, F.UNDEFINE_SOURCE} == plan.flags
    assert {"migrate_uri": "tcp://10.77.0.2"} == plan.params


def test_a_tls_request_asks_libvirt_for_an_encrypted_stream():
    assert {F.LIVE, F.PEER2PEER, F.PERSIST_DEST, F.UNDEFINE_SOURCE, F.TLS} == plan_migration(
        start(tls=True), domain_active=True).flags


def test_copy_storage_copies_exactly_the_named_disks_with_every_tuning_option():
    plan = plan_migration(start(copy_disks=["vda"], auto_converge=True, auto_converge_initial_pct=20,
                                auto_converge_increment_pct=10, bandwidth_mib_s=30,
                                max_downtime_ms=800, persistent=False, undefine_source=False),
                          domain_active=True)
    assert {F.LIVE, F.PEER2PEER, F.NON_SHARED_DISK, F.AUTO_CONVERGE} == plan.flags
    assert {"migrate_uri": "tcp://10.77.0.2", "bandwidth": 30, "migrate_disks": ["vda"],
            "auto_converge.initial": 20, "auto_converge.increment": 10} == plan.params
    assert 800 == plan.max_downtime_ms


@pytest.mark.parametrize("switch", [PostcopySwitch.AFTER_FIRST_PASS,
                                    PostcopySwitch.WHEN_STALLED])
def test_a_postcopy_switch_asks_libvirt_to_permit_postcopy(switch):
    assert F.POSTCOPY in plan_migration(start(postcopy=switch), domain_active=True).flags
    assert F.POSTCOPY not in plan_migration(start(), domain_active=True).flags


def test_the_cap_holds_after_a_postcopy_switch_too():
    capped = plan_migration(start(postcopy=PostcopySwitch.AFTER_FIRST_PASS, bandwidth_mib_s=30),
                            domain_active=True)
    assert (30, 30) == (capped.params["bandwidth"], capped.params["bandwidth.postcopy"])
    assert "bandwidth.postcopy" not in plan_migration(start(bandwidth_mib_s=30),
                                                      domain_active=True).params
    assert "bandwidth.postcopy" not in plan_migration(
        start(postcopy=PostcopySwitch.AFTER_FIRST_PASS), domain_active=True).params


def test_post_copy_of_a_shut_off_domain_is_refused():
    with pytest.raises(BatonError) as caught:
        plan_migration(start(live=False, postcopy=PostcopySwitch.AFTER_FIRST_PASS),
                       domain_active=False)
    assert ErrorCode.BAD_REQUEST == caught.value.code


def test_a_shut_off_domain_moves_offline_and_a_paused_one_moves_without_live():
    offline = plan_migration(start(live=False), domain_active=False)
    paused = plan_migration(start(live=False), domain_active=True)
    assert {F.OFFLINE, F.PEER2PEER, F.PERSIST_DEST, F.UNDEFINE_SOURCE} == offline.flags
    assert {} == offline.params
    assert {F.PEER2PEER, F.PERSIST_DEST, F.UNDEFINE_SOURCE} == paused.flags


@pytest.mark.parametrize(("options", "code"), [
    ({}, ErrorCode.PRECONDITION_FAILED),  # live move of a shut-off domain
    ({"live": False, "persistent": False}, ErrorCode.BAD_REQUEST),
    ({"live": False, "copy_disks": ["vda"]}, ErrorCode.UNSUPPORTED),
])
def test_impossible_combinations_for_a_shut_off_domain_are_refused(options, code):
    with pytest.raises(BatonError) as caught:
        plan_migration(start(**options), domain_active=False)
    assert code == caught.value.code


@pytest.mark.parametrize(("options", "message"), [
    ({}, "g1 is not running: a live migration needs a running guest; ask for an offline "
         "migration (live=false, `baton migrate --offline`)"),
    ({"live": False, "persistent": False}, "an offline migration moves the definition only: it "
                                           "must be persistent on the destination"),
    ({"live": False, "copy_disks": ["vda"]}, "libvirt cannot copy disks of a shut-off domain; use "
                                             "shared storage, or start the VM and migrate it live "
                                             "with copy"),
], ids=["live", "transient", "copy"])
def test_a_refused_offline_plan_tells_the_operator_what_to_ask_for_instead(options, message):
    with pytest.raises(BatonError) as caught:
        plan_migration(start(**options), domain_active=False)
    assert message == caught.value.message


def test_auto_converge_throttle_figures_are_not_passed_without_auto_converge():
    plan = plan_migration(start(auto_converge_initial_pct=20, auto_converge_increment_pct=10),
                          domain_active=True)
    assert (False, {"migrate_uri": "tcp://10.77.0.2"}) == (F.AUTO_CONVERGE in plan.flags,
                                                           plan.params)
