"""Option-combination validation, the migration plan, and how completion is judged (pure)."""

from __future__ import annotations

import msgspec
import pytest

from baton.coordinator.completion import confirmation_problems, source_intact
from baton.coordinator.core import pick_source
from baton.coordinator.options import (
    Choice,
    auto_choice,
    check_against_domain,
    option_problems,
    postcopy_switch,
)
from baton.coordinator.plan import PROGRESS_INTERVAL_MS, host_of, make_plan, start_request
from baton.coordinator.preflight import DiskView, Facts, intent_of
from baton.schemas.agent import DomainState as D
from baton.schemas.agent import HostCaps
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    MigrateRequest,
    PostcopySwitch,
    Prediction,
    StorageMode,
    Strategy,
)
from tests.integration.fake_agents import IMAGES, SHARED, domain, host_caps


def req(**options) -> MigrateRequest:
    return MigrateRequest(**({"vm": "vm1", "destination": "h2"} | options))


@pytest.mark.parametrize("options", [
    {}, {"storage": StorageMode.COPY}, {"live": False}, {"auto_converge": True,
                                                          "auto_converge_initial_pct": 20},
    {"persistent": False, "undefine_source": False},
    {"strategy": Strategy.AUTO, "allow_postcopy": True}, {"strategy": Strategy.POSTCOPY},
    {"strategy": Strategy.AUTO_CONVERGE, "auto_converge_initial_pct": 20},
    {"live": False, "strategy": Strategy.AUTO}, {"live": False, "strategy": Strategy.PRECOPY}])
def test_valid_combinations_have_no_problems(options):
    assert [] == option_problems(req(**options))


@pytest.mark.parametrize(("options", "words"), [
    ({"source": "h2"}, "both 'h2'"),
    ({"live": False, "persistent": False, "storage": StorageMode.COPY}, "cannot be transient"),
    ({"auto_converge_increment_pct": 5}, "need auto_converge"),
    ({"live": False, "auto_converge": True}, "means nothing offline"),
    ({"live": False, "max_downtime_ms": 300}, "live migration only"),
    ({"strategy": Strategy.PRECOPY, "allow_postcopy": True},
     "with strategy precopy it means nothing"),
    ({"strategy": Strategy.POSTCOPY, "allow_postcopy": True}, "with strategy postcopy"),
    ({"live": False, "strategy": Strategy.POSTCOPY}, "an offline migration has none"),
    ({"live": False, "strategy": Strategy.AUTO_CONVERGE}, "an offline migration has none"),
])
def test_invalid_combinations_say_what_to_change(options, words):
    [problem] = option_problems(req(**options))
    assert words in problem


@pytest.mark.parametrize(("options", "state", "source"), [
    ({"live": False}, D.RUNNING, "h1"), ({}, D.SHUTOFF, "h1"), ({}, D.RUNNING, "h2")])
def test_options_that_contradict_the_vm_state_are_bad_requests(options, state, source):
    with pytest.raises(BatonError) as caught:
        check_against_domain(req(**options), source, domain("vm1", state=state))
    assert ErrorCode.BAD_REQUEST == caught.value.code


def facts(shared: bool, source_caps: HostCaps | None = None,
          request: MigrateRequest | None = None, prediction: Prediction | None = None) -> Facts:
    vm = domain("vm1", directory=SHARED if shared else IMAGES)
    return Facts(vm="vm1", source="h1", destination="h2", live=True,
                 requested_storage=StorageMode.AUTO, domain=vm,
                 destination_caps=host_caps("h2"), on_destination=None,
                 disks=[DiskView(vm.disks[0], shared=shared)],
                 source_caps=source_caps or host_caps("h1"),
                 intent=intent_of(request or req(), predict=True), prediction=prediction)


def test_a_copy_plan_names_exactly_the_local_disks_and_maps_every_option():
    plan = make_plan(facts(shared=False))
    start = start_request("m1", req(auto_converge=True, auto_converge_initial_pct=30,
                                    auto_converge_increment_pct=15, max_downtime_ms=500,
                                    undefine_source=False), plan, 40)
    assert (["vda"], "10.77.0.2", "h2", 40) == (start.copy_disks, start.destination_address,
                                                start.destination_host, start.bandwidth_mib_s)
    assert (True, 30, 15, 500, False) == (start.auto_converge, start.auto_converge_initial_pct,
                                          start.auto_converge_increment_pct, start.max_downtime_ms,
                                          start.undefine_source)


@pytest.mark.parametrize(("strategy", "allow_postcopy", "switch"), [
    (Strategy.PRECOPY, False, PostcopySwitch.OFF),
    (Strategy.AUTO, False, PostcopySwitch.OFF),
    (Strategy.AUTO, True, PostcopySwitch.WHEN_STALLED),
    (Strategy.AUTO_CONVERGE, False, PostcopySwitch.OFF),
    (Strategy.POSTCOPY, False, PostcopySwitch.AFTER_FIRST_PASS),
])
def test_the_strategy_says_when_the_source_switches_to_postcopy(strategy, allow_postcopy, switch):
    assert switch == postcopy_switch(strategy, allow_postcopy)
    request = req(strategy=strategy, allow_postcopy=allow_postcopy)
    start = start_request("m1", request, make_plan(facts(shared=True, request=request)), None)
    assert (switch, strategy == Strategy.AUTO) == (start.postcopy, start.downtime_ramp)


def test_strategy_auto_converge_asks_for_auto_converge_with_its_percentages():
    start = start_request("m1", req(strategy=Strategy.AUTO_CONVERGE, auto_converge_initial_pct=30),
                          make_plan(facts(shared=True)), None)
    assert (True, 30, PostcopySwitch.OFF) == (start.auto_converge,
                                              start.auto_converge_initial_pct, start.postcopy)
    assert False is start_request("m1", req(), make_plan(facts(shared=True)), None).auto_converge


def test_a_shared_plan_copies_nothing_and_never_a_shared_disk():
    assert ([], StorageMode.SHARED) == (make_plan(facts(shared=True)).disks,
                                        make_plan(facts(shared=True)).storage)


def test_the_plan_encrypts_only_when_preflight_says_both_hosts_can():
    both = make_plan(facts(shared=True))
    without = make_plan(facts(shared=True, source_caps=host_caps("h1", migration_tls=False)))
    assert (True, False) == (start_request("m1", req(), both, None).tls,
                             start_request("m1", req(), without, None).tls)


def test_host_of_takes_the_address_out_of_a_libvirt_uri():
    assert ("10.77.0.2", "h3", "10.77.0.3") == (
        host_of("qemu+tcp://10.77.0.2/system"), host_of("qemu+ssh://root@h3/system"),
        host_of("qemu+tls://10.77.0.3/system?pkipath=/var/lib/baton-lab/lab/tls/libvirt-client"))


def test_completion_needs_the_vm_running_and_persistent_on_the_destination_and_gone_at_source():
    running = domain("vm1")
    assert [] == confirmation_problems(req(), "h2", running, None)
    assert 1 == len(confirmation_problems(req(), "h2", None, None))
    transient = msgspec.structs.replace(running, persistent=False)
    assert 1 == len(confirmation_problems(req(), "h2", transient, None))


def test_keep_source_expects_an_inactive_definition_left_behind():
    kept = domain("vm1", state=D.SHUTOFF)
    keep = req(undefine_source=False, persistent=False)
    dest = msgspec.structs.replace(domain("vm1"), persistent=False)
    assert [] == confirmation_problems(keep, "h2", dest, kept)
    assert 1 == len(confirmation_problems(keep, "h2", dest, None))
    assert [] == confirmation_problems(keep, "h2", dest, None, source_persistent=False)
    assert 1 == len(confirmation_problems(keep, "h2", dest, domain("vm1")))


def test_roll_back_is_only_safe_while_the_source_holds_the_vm_as_before():
    before = domain("vm1")
    assert source_intact(before, domain("vm1"))
    assert not source_intact(before, None)
    assert not source_intact(before, domain("vm1", state=D.PAUSED))
    assert source_intact(domain("vm1", state=D.SHUTOFF), domain("vm1", state=D.SHUTOFF))


def test_the_source_is_the_one_host_running_the_vm():
    holders = [("h1", domain("vm1", state=D.SHUTOFF)), ("h2", domain("vm1"))]
    assert "h2" == pick_source("vm1", holders)[0]
    with pytest.raises(BatonError) as caught:
        pick_source("vm1", [("h1", domain("vm1")), ("h2", domain("vm1"))])
    assert ErrorCode.BAD_REQUEST == caught.value.code
    with pytest.raises(BatonError):
        pick_source("vm1", [])


def prediction_of(strategy: Strategy | None, total_s: float | None = None,
                  downtime_ms: int | None = None) -> Prediction:
    return Prediction(dirty_rate_mib_s=12.5, dirty_rate_mode="memory-peek", memory_mib=128,
                      link_mib_s=None if strategy is None else 30,
                      converges=strategy is Strategy.PRECOPY, total_s=total_s,
                      downtime_ms=downtime_ms, strategy=strategy)


SAID = "predicted at 30 MiB/s for a guest dirtying 12.5 MiB/s"
STUCK = f"{SAID}, neither pre-copy nor raising the downtime limit ends it"
OFF, STALLED, FIRST = (PostcopySwitch.OFF, PostcopySwitch.WHEN_STALLED,
                       PostcopySwitch.AFTER_FIRST_PASS)


@pytest.mark.parametrize(("strategy", "asked", "prediction", "chosen"), [
    (Strategy.AUTO, OFF, prediction_of(Strategy.PRECOPY, 4.6, 120), Choice(
        OFF, reason=f"pre-copy: {SAID}, it converges at the downtime limit asked for in 4.6 s "
        "with a 120 ms pause")),
    (Strategy.AUTO, STALLED, prediction_of(Strategy.AUTO, 25.1, 1200), Choice(
        STALLED, reason=f"pre-copy with the downtime ramp: {SAID}, it converges once the limit "
        "is raised, in 25.1 s with a 1200 ms pause")),
    (Strategy.AUTO, STALLED, prediction_of(Strategy.POSTCOPY, 8.5, 50), Choice(
        FIRST, reason=f"post-copy after the first pass: {STUCK}")),
    (Strategy.AUTO, OFF, prediction_of(Strategy.AUTO_CONVERGE), Choice(
        OFF, auto_converge=True, reason=f"auto-converge from the start: {STUCK} "
        "(--allow-postcopy would let it switch to post-copy instead)")),
    # never for another strategy, nor without a strategy predicted (no link rate) or at all
    (Strategy.PRECOPY, OFF, prediction_of(Strategy.AUTO_CONVERGE), Choice(OFF)),
    (Strategy.POSTCOPY, FIRST, prediction_of(Strategy.POSTCOPY, 8.5, 50), Choice(FIRST)),
    (Strategy.AUTO_CONVERGE, OFF, prediction_of(Strategy.AUTO_CONVERGE), Choice(OFF)),
    (Strategy.AUTO, STALLED, prediction_of(None), Choice(STALLED)),
    (Strategy.AUTO, OFF, None, Choice(OFF)),
])
def test_strategy_auto_starts_with_what_the_prediction_says_ends_the_move(
        strategy, asked, prediction, chosen):
    assert chosen == auto_choice(strategy, asked, prediction)


def test_the_start_request_carries_what_strategy_auto_chose():
    request = req(allow_postcopy=True, bandwidth_mib_s=30)
    switched = start_request("m1", request, make_plan(facts(
        shared=True, request=request, prediction=prediction_of(Strategy.POSTCOPY, 8.5, 50))), 30)
    assert (FIRST, False, True) == (switched.postcopy, switched.auto_converge,
                                    switched.downtime_ramp)
    request = req(bandwidth_mib_s=30)
    plan = make_plan(facts(shared=True, request=request,
                           prediction=prediction_of(Strategy.AUTO_CONVERGE)))
    throttled = start_request("m1", request, plan, 30)
    assert (OFF, True, True) == (throttled.postcopy, throttled.auto_converge,
                                 throttled.downtime_ramp)
    assert plan.auto_choice.startswith("auto-converge from the start: ")


def test_the_start_request_carries_pre_flights_measurement_and_the_progress_interval():
    measured = msgspec.structs.replace(prediction_of(Strategy.PRECOPY, 4.6, 120),
                                       working_set_mib=24, whole_mib=96)
    plan = make_plan(facts(shared=True, prediction=measured))
    start = start_request("m1", req(), plan, None)
    assert (12.5, 24, 96, PROGRESS_INTERVAL_MS) == (
        start.expected_dirty_rate_mib_s, start.expected_working_set_mib,
        start.expected_whole_mib, start.progress_interval_ms)
    unmeasured = start_request("m1", req(), make_plan(facts(shared=True)), None)
    assert (None, None, None) == (unmeasured.expected_dirty_rate_mib_s,
                                  unmeasured.expected_working_set_mib,
                                  unmeasured.expected_whole_mib)
