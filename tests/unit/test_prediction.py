"""The source agent's prediction (agent/prediction.py): the model's answer in the wire's terms,
at the downtime limit and ramp the migration itself would use; the dirty-rate modes tried."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest

from baton.agent.hypervisor import DirtyRate
from baton.agent.libvirt.dirtyrate import modes_for
from baton.agent.memory_sample import Sampled
from baton.agent.prediction import (
    MEMORY_PEEK,
    SAMPLE_PAGES,
    PassClock,
    Predictor,
    eta_of,
    first_pass_left,
    modelled,
    sampled_rate,
    whole_page_share,
    working_set,
)
from baton.agent.start_cost import PRIOR_S, StartCost
from baton.schemas.agent import DomainInfo, DomainState
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import JobStats
from baton.schemas.migration import Prediction, PredictRequest, StartRequest, Strategy

MIB = 1 << 20


def predict(dirty_mib_s: float, **options) -> Prediction:
    return modelled(PredictRequest(vm="g1", **options), 128 * MIB, dirty_mib_s, "page-sampling")


def test_without_a_link_rate_only_the_measurement_is_given():
    assert Prediction(dirty_rate_mib_s=12.3, dirty_rate_mode="page-sampling", memory_mib=128) == \
        modelled(PredictRequest(vm="g1"), 128 * MIB, 12.34, "page-sampling")


def test_an_idle_guest_converges_after_one_pass_at_the_cap():
    p = predict(0, link_mib_s=32)
    assert (True, 4.0, 0, Strategy.PRECOPY, 32.0) == (p.converges, p.total_s, p.downtime_ms,
                                                      p.strategy, p.link_mib_s)


def test_a_guest_that_converges_at_300_ms():
    # 128 MiB at 32 MiB/s: 4 s, dirtying 4 MiB/s leaves 16 MiB (0.5 s), which leaves 2 MiB:
    # a 62.5 ms pause; 4.5625 s in all, given to a tenth.
    p = predict(4, link_mib_s=32)
    assert (True, Strategy.PRECOPY, 62, 4.6) == (p.converges, p.strategy, p.downtime_ms,
                                                 p.total_s)


def test_a_copys_disks_are_part_of_its_total_and_the_working_set_is_in_whole_mib():
    # 64 MiB of disk then 128 MiB of memory at 32 MiB/s, nothing dirtied: 2 s + 4 s
    p = modelled(PredictRequest(vm="g1", link_mib_s=32, disk_bytes=64 * MIB), 128 * MIB, 0,
                 "page-sampling", working_set_bytes=16 * MIB + MIB // 2)
    assert (6.0, 16) == (p.total_s, p.working_set_mib)


def test_the_moves_fixed_start_is_part_of_its_total_and_reported():
    plain = predict(0, link_mib_s=32)
    started = modelled(PredictRequest(vm="g1", link_mib_s=32), 128 * MIB, 0, "page-sampling",
                       start_s=0.44)
    assert (4.4, 0.4, 0.0) == (started.total_s, started.start_s, plain.start_s)
    ramped = modelled(PredictRequest(vm="g1", link_mib_s=32), 128 * MIB, 30, "page-sampling",
                      start_s=0.5)
    assert ramped.total_s == pytest.approx(predict(30, link_mib_s=32).total_s + 0.5)
    assert None is modelled(PredictRequest(vm="g1"), 128 * MIB, 0, "page-sampling",
                            start_s=0.5).start_s  # no link rate: no times at all


@pytest.mark.parametrize(("disk_bytes", "start_s"), [(0, 0.2), (1, 0.9), (64 * MIB, 0.9)])
async def test_the_predictor_adds_the_start_its_host_learned_for_the_kind_of_move(disk_bytes,
                                                                                 start_s):
    start = StartCost()
    for copy, learned_s in ((False, 0.2), (True, 0.9)):
        start.observe(copy, JobStats(time_elapsed_ms=round((2 + learned_s) * 1000),
                                     data_processed_bytes=64 * MIB), 32)
    hv = Measured(DomainState.RUNNING, {1: 0.0, 2: 0.0})
    request = PredictRequest(vm="g1", link_mib_s=48, disk_bytes=disk_bytes)
    found = await Predictor(hv, start=start).predict(request)
    assert found == modelled(request, 128 * MIB, 0.0, "page-sampling", start_s=start_s)
    assert start_s == found.start_s


@pytest.mark.parametrize(("max_downtime", "allow_postcopy", "strategy", "converges"), [
    (None, False, Strategy.AUTO_CONVERGE, False),  # dirtying faster than the link
    (None, True, Strategy.POSTCOPY, False),
])
def test_a_guest_faster_than_the_link(max_downtime, allow_postcopy, strategy, converges):
    p = predict(40, link_mib_s=30, max_downtime_ms=max_downtime, allow_postcopy=allow_postcopy)
    assert (converges, strategy) == (p.converges, p.strategy)


def test_the_ramp_is_the_migrations_own_and_named_as_strategy_auto():
    # 16 MiB/s at 20 MiB/s: pre-copy shrinks by 0.8 a pass and reaches 0.3 s only after many
    # passes; the model says so; an operator's 100 ms limit with no ramp above it does not.
    assert Strategy.PRECOPY == predict(16, link_mib_s=20).strategy
    strict = predict(16, link_mib_s=20, max_downtime_ms=1)
    assert (False, Strategy.AUTO_CONVERGE) == (strict.converges, strict.strategy)
    slow = predict(30, link_mib_s=32)  # pass ratio ~0.94: not by 300 ms in 30 passes
    assert (False, Strategy.AUTO) == (slow.converges, slow.strategy)


@pytest.mark.parametrize(("domain_type", "modes"), [
    ("kvm", ["dirty-ring", "dirty-bitmap", "page-sampling"]),
    ("qemu", ["dirty-ring", "page-sampling"]),  # TCG: dirty-bitmap reads 0
    (None, ["dirty-ring", "page-sampling"]),
])
def test_dirty_bitmap_is_asked_of_kvm_guests_only(domain_type, modes):
    assert modes == [name for name, _ in modes_for(domain_type)]


def start(**options) -> StartRequest:
    return StartRequest(migration_id="m1", vm="g1", destination_uri="qemu+tcp://h2/system",
                        **options)


def figures(**fields) -> JobStats:
    return JobStats(**({"memory_total_bytes": 128 * MIB} | fields))


@pytest.mark.parametrize(("name", "stats", "request_", "downtime_ms", "postcopy", "eta"), [
    ("no figures yet", JobStats(), start(bandwidth_mib_s=32), 300, False, None),
    ("the memory but no remainder yet", figures(), start(bandwidth_mib_s=32), 300, False, None),
    ("a remainder but not the memory", JobStats(memory_remaining_bytes=64 * MIB),
     start(bandwidth_mib_s=32), 300, False, None),
    # pass 2 and libvirt gave no dirty rate: nothing dirtied, 64 MiB at 1 MiB/s (a rate of
    # even one page a second would add a last pass: 64 pages, 0.25 s)
    ("pass 2 without libvirt's dirty rate", figures(memory_remaining_bytes=64 * MIB,
                                                    memory_iteration=2),
     start(bandwidth_mib_s=1), 300, False, 64.0),
    ("no rate and no cap", figures(memory_remaining_bytes=64 * MIB), start(), 300, False, None),
    # half of pass 1 left at the cap, nothing dirtied: 2 s
    ("first pass, idle guest, the cap as the rate", figures(memory_remaining_bytes=64 * MIB),
     start(bandwidth_mib_s=32), 300, False, 2.0),
    # the measured rate wins over the cap: 64 MiB at 16 MiB/s = 4 s
    ("libvirt's rate over the cap", figures(memory_remaining_bytes=64 * MIB,
                                            memory_bps=16 * MIB),
     start(bandwidth_mib_s=32), 300, False, 4.0),
    # pass 1 with pre-flight's 4 MiB/s: 2 s, leaving 8 MiB, which fits the 300 ms pause
    # (0.25 s): 2.25 s, given to a tenth
    ("first pass, pre-flight's dirty rate", figures(memory_remaining_bytes=64 * MIB),
     start(bandwidth_mib_s=32, expected_dirty_rate_mib_s=4), 300, False, 2.2),
    # from pass 2 libvirt's own rate: 1024 pages/s = 4 MiB/s, the same course
    ("pass 2, libvirt's dirty rate", figures(memory_remaining_bytes=64 * MIB,
                                             memory_dirty_rate_pages_s=1024, memory_iteration=2),
     start(bandwidth_mib_s=32, expected_dirty_rate_mib_s=100), 300, False, 2.2),
    # a 200 ms limit: the 8 MiB take one more pass (0.25 s, leaving 1 MiB: 31 ms)
    ("a lower limit, one pass more", figures(memory_remaining_bytes=64 * MIB,
                                             memory_dirty_rate_pages_s=1024, memory_iteration=2),
     start(bandwidth_mib_s=32), 200, False, 2.3),
    ("dirtying faster than the link", figures(memory_remaining_bytes=64 * MIB,
                                              memory_dirty_rate_pages_s=16384,
                                              memory_iteration=3),
     start(bandwidth_mib_s=32), 300, False, None),
    # the same, after the switch: 64 MiB once, at 32 MiB/s
    ("post-copy sends the rest once", figures(memory_remaining_bytes=64 * MIB,
                                              memory_dirty_rate_pages_s=16384,
                                              memory_iteration=3),
     start(bandwidth_mib_s=32), 300, True, 2.0),
    # the memory and any disk left, once each: 52 MiB at 32 MiB/s, to a tenth
    ("post-copy with a disk left", figures(memory_remaining_bytes=50 * MIB,
                                           disk_remaining_bytes=2 * MIB),
     start(bandwidth_mib_s=32), 300, True, 1.6),
    # a copy's disk phase: 96 MiB of disk at 32 MiB/s (libvirt's disk rate), then 128 MiB
    ("disks first, at the disks' rate", figures(memory_remaining_bytes=128 * MIB,
                                                disk_remaining_bytes=96 * MIB,
                                                disk_bps=32 * MIB),
     start(), 300, False, 7.0),
])
def test_eta(name, stats, request_, downtime_ms, postcopy, eta):
    assert eta == eta_of(stats, request_, downtime_ms, postcopy), name


@pytest.mark.parametrize(("name", "short", "long", "bound"), [
    ("a 32 MiB working set rewritten fast: 32/s over 1 s, 16/s over 2 s", 32, 16, 32 * MIB),
    ("a slow guest over 32 MiB: 20/s over 1 s, 16/s over 2 s", 20, 16, 32 * MIB),
    ("proportional: no bound seen", 8, 8, None),
    ("within the noise: 0.9 of proportional", 10, 9, None),
    ("just past the noise", 10, 8.9, int(17.8 * MIB)),
    ("nothing dirtied", 0, 0, None),
    ("never more than the memory", 200, 80, 128 * MIB),
])
def test_the_working_set_is_bounded_only_when_the_longer_window_finds_fewer_pages(
        name, short, long, bound):
    assert bound == working_set(short, long, 1, 2, 128 * MIB), name


def test_a_working_set_lets_a_guest_faster_than_the_link_converge():
    # 40 MiB/s over a 16 MiB working set at 30 MiB/s: each pass leaves at most 16 MiB, and
    # 16 MiB at 30 MiB/s is 533 ms: not within 300 ms, but within the ramp's 1000 ms step.
    unbounded = predict(40, link_mib_s=30)
    bounded = modelled(PredictRequest(vm="g1", link_mib_s=30), 128 * MIB, 40, "page-sampling",
                       16 * MIB)
    assert (Strategy.AUTO_CONVERGE, None) == (unbounded.strategy, unbounded.working_set_mib)
    assert (Strategy.AUTO, 16, 533) == (bounded.strategy, bounded.working_set_mib,
                                        bounded.downtime_ms)


def test_the_pass_clock_restarts_at_each_new_pass_half_way_between_readings():
    clock = PassClock()
    readings = [(500, 1), (1000, 1), (1500, 2), (2000, 2), (3000, 4), (3200, 4)]
    assert [0.5, 1.0, 0.25, 0.75, 0.5, 0.7] == [
        pytest.approx(clock.pass_elapsed_s(JobStats(time_elapsed_ms=ms, memory_iteration=it)))
        for ms, it in readings]


def test_a_clock_first_read_in_a_later_pass_takes_it_to_have_begun_half_way_there():
    # the agent's first reading falls in pass 2 (the readings began late): it began between
    # the job's start and this reading
    clock = PassClock()
    assert 2.0 == clock.pass_elapsed_s(JobStats(time_elapsed_ms=4000, memory_iteration=2))


def test_a_reading_without_libvirts_elapsed_time_is_at_the_start():
    assert 0.0 == PassClock().pass_elapsed_s(JobStats(memory_iteration=1))


def test_a_copys_disk_phase_counts_no_time_spent_in_a_memory_pass():
    # 96 MiB of disk at 32 MiB/s (3 s), then 128 MiB of memory (4 s) with pre-flight's
    # 4 MiB/s dirtied meanwhile (16 MiB: 0.5 s, then 2 MiB fits 300 ms: 62.5 ms). The clock
    # runs from the job's start, but no memory pass has begun: its seconds dirty nothing yet.
    stats = figures(memory_remaining_bytes=128 * MIB, disk_remaining_bytes=96 * MIB,
                    disk_bps=32 * MIB)
    request = start(expected_dirty_rate_mib_s=4)
    assert [7.6] * 3 == [eta_of(stats, request, 300, False, pass_elapsed_s=s)
                         for s in (0.0, 1.0, 5.0)]


def test_a_copys_memory_passes_start_after_its_disks():
    clock = PassClock()
    assert [2.0, 4.0, 0.5] == [pytest.approx(clock.pass_elapsed_s(JobStats(
        time_elapsed_ms=ms, memory_iteration=it))) for ms, it in ((2000, 0), (4000, 0),
                                                                  (5000, 1))]


def test_late_in_a_pass_the_eta_counts_what_the_guest_dirtied_since_it_began():
    # 2 s into pass 1 at 32 MiB/s with 16 MiB left (0.5 s more) and 16 MiB/s dirtied all along
    # over a 32 MiB working set: pass 2 re-sends 32 MiB (1 s), which leaves 16 MiB (0.5 s),
    # then 8 MiB fits 300 ms (0.25 s): 0.5 + 1 + 0.5 + 0.25 = 2.25 s. Counting only the last
    # 0.5 s, 8 MiB would seem left: 0.75 s.
    stats = figures(memory_remaining_bytes=16 * MIB, memory_bps=32 * MIB)
    request = start(expected_dirty_rate_mib_s=16, expected_working_set_mib=32)
    assert 2.2 == eta_of(stats, request, 300, False, pass_elapsed_s=2.0)
    assert 0.8 == eta_of(stats, request, 300, False, pass_elapsed_s=0.0)


@pytest.mark.parametrize(("constant_pages", "normal_bytes", "share"), [
    (None, None, 1.0), (0, 0, 1.0), (0, 64 * MIB, 1.0), (8192, 32 * MIB, 0.5),
    (16384, 0, 0.0)])
def test_the_whole_page_share(constant_pages, normal_bytes, share):
    assert share == whole_page_share(figures(memory_constant_pages=constant_pages,
                                             memory_normal_bytes=normal_bytes))


def test_in_the_first_pass_zero_pages_left_count_for_nothing():
    # half of what was sent were zero pages: of the 64 MiB left, 32 MiB will cross: 1 s at 32
    half_zero = figures(memory_remaining_bytes=64 * MIB, memory_constant_pages=4096,
                        memory_normal_bytes=16 * MIB)
    assert 1.0 == eta_of(half_zero, start(bandwidth_mib_s=32), 300, False)
    later = msgspec.structs.replace(half_zero, memory_iteration=2)  # dirty pages are not zero
    assert 2.0 == eta_of(later, start(bandwidth_mib_s=32), 300, False)


class Measured:
    """The part of the Hypervisor port a Predictor uses: one guest, and the rate libvirt reads
    for each window length (seconds -> MiB/s); its memory cannot be read (as on a driver
    without memory peeking), so libvirt's calculation is what measures."""

    def __init__(self, state: DomainState, rates: dict[int, float], memory_mib: int = 128):
        self.guest = DomainInfo(name="g1", uuid="u1", state=state,
                                active=state != DomainState.SHUTOFF, persistent=True,
                                memory_kib=memory_mib * 1024, max_memory_kib=memory_mib * 1024,
                                vcpus=1)
        self.rates = rates
        self.windows: list[tuple[str, int]] = []

    async def domains(self, names, include_cpu_xml):
        assert (["g1"], False) == (names, include_cpu_xml)
        return [self.guest]

    async def dirty_rate(self, vm: str, seconds: int) -> DirtyRate:
        self.windows.append((vm, seconds))
        return DirtyRate(self.rates[seconds], "page-sampling" if seconds == 1 else "other")

    async def page_digests(self, vm: str, pages) -> list[bytes]:
        raise BatonError(ErrorCode.UNSUPPORTED, "reading the memory of g1: this function is "
                         "not supported by the connection driver")


async def test_the_predictor_measures_two_windows_and_bounds_the_working_set():
    hv = Measured(DomainState.RUNNING, {1: 32.0, 2: 16.0}, memory_mib=256)
    found = await Predictor(hv).predict(PredictRequest(vm="g1", link_mib_s=48))
    assert [("g1", 1), ("g1", 2)] == hv.windows
    assert (32.0, "page-sampling", 256, 32, 48.0) == (
        found.dirty_rate_mib_s, found.dirty_rate_mode, found.memory_mib, found.working_set_mib,
        found.link_mib_s)
    assert found == modelled(PredictRequest(vm="g1", link_mib_s=48), 256 * MIB, 32.0,
                             "page-sampling", 32 * MIB, start_s=PRIOR_S)


async def test_the_predictor_scales_both_windows_with_measure_s():
    hv = Measured(DomainState.RUNNING, {3: 8.0, 6: 8.0})
    found = await Predictor(hv).predict(PredictRequest(vm="g1", measure_s=3))
    assert ([("g1", 3), ("g1", 6)], None, 8.0) == (hv.windows, found.working_set_mib,
                                                   found.dirty_rate_mib_s)


async def test_the_longer_windows_pages_bound_the_working_set_at_its_own_length():
    # 4 MiB/s over 3 s and 3 MiB/s over 6 s: 12 then 18 MiB of distinct pages, fewer than the
    # 24 a guest dirtying new pages would show: the working set is the 18 MiB
    hv = Measured(DomainState.RUNNING, {3: 4.0, 6: 3.0})
    found = await Predictor(hv).predict(PredictRequest(vm="g1", measure_s=3))
    assert 18 == found.working_set_mib


async def test_the_prediction_sends_the_guests_memory_in_bytes():
    hv = Measured(DomainState.RUNNING, {1: 0.0, 2: 0.0}, memory_mib=16384)
    request = PredictRequest(vm="g1", link_mib_s=48)
    found = await Predictor(hv).predict(request)
    assert found == modelled(request, 16384 * MIB, 0.0, "page-sampling", start_s=PRIOR_S)
    assert found.total_s != modelled(request, 16384 * 1025 * 1024, 0.0, "page-sampling",
                                     start_s=PRIOR_S).total_s


@pytest.mark.parametrize("state", [DomainState.PAUSED, DomainState.SHUTOFF])
async def test_the_predictor_refuses_a_guest_that_does_not_run(state):
    hv = Measured(state, {})
    with pytest.raises(BatonError) as caught:
        await Predictor(hv).predict(PredictRequest(vm="g1"))
    assert ErrorCode.PRECONDITION_FAILED == caught.value.code
    assert f"g1 is {state}: only a running guest dirties memory; nothing to predict" == \
        caught.value.message
    assert [] == hv.windows


class OneAtATime(Measured):
    """Like QEMU: a second dirty-rate measurement of a guest while one runs fails."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.busy = False
        self.release = asyncio.Event()

    async def dirty_rate(self, vm: str, seconds: int) -> DirtyRate:
        if self.busy:
            raise BatonError(ErrorCode.HYPERVISOR, "the dirty rate is already being measured")
        self.busy = True
        try:
            await self.release.wait()
            await asyncio.sleep(0)  # a measurement takes time: others run meanwhile
            return await super().dirty_rate(vm, seconds)
        finally:
            self.busy = False


async def test_predictions_asked_together_for_one_guest_share_one_measurement():
    hv = OneAtATime(DomainState.RUNNING, {1: 32.0, 2: 16.0}, memory_mib=256)
    predictor = Predictor(hv)
    first = asyncio.create_task(predictor.predict(PredictRequest(vm="g1", link_mib_s=48)))
    second = asyncio.create_task(predictor.predict(PredictRequest(vm="g1", link_mib_s=8)))
    await asyncio.sleep(0)  # both asked before the measurement ends
    hv.release.set()
    fast, slow = await asyncio.gather(first, second)
    assert [("g1", 1), ("g1", 2)] == hv.windows  # measured once
    assert (48.0, 8.0, 32.0, 32.0) == (fast.link_mib_s, slow.link_mib_s,
                                       fast.dirty_rate_mib_s, slow.dirty_rate_mib_s)


async def test_a_prediction_with_other_windows_waits_for_the_guest_then_measures_its_own():
    hv = OneAtATime(DomainState.RUNNING, {1: 32.0, 2: 16.0, 3: 8.0, 6: 8.0})
    predictor = Predictor(hv)
    first = asyncio.create_task(predictor.predict(PredictRequest(vm="g1")))
    second = asyncio.create_task(predictor.predict(PredictRequest(vm="g1", measure_s=3)))
    await asyncio.sleep(0)
    hv.release.set()
    short, long = await asyncio.gather(first, second)
    assert [("g1", 1), ("g1", 2), ("g1", 3), ("g1", 6)] == hv.windows
    assert (32.0, 8.0) == (short.dirty_rate_mib_s, long.dirty_rate_mib_s)


async def test_when_the_measuring_caller_is_cancelled_a_waiting_one_measures_anew():
    hv = OneAtATime(DomainState.RUNNING, {1: 32.0, 2: 16.0})
    predictor = Predictor(hv)
    first = asyncio.create_task(predictor.predict(PredictRequest(vm="g1")))
    await asyncio.sleep(0)
    second = asyncio.create_task(predictor.predict(PredictRequest(vm="g1")))
    await asyncio.sleep(0)
    first.cancel()
    hv.release.set()
    found = await second
    assert first.cancelled()
    assert (32.0, [("g1", 1), ("g1", 2)]) == (found.dirty_rate_mib_s, hv.windows)


class FailsOnce(OneAtATime):
    """The first measurement fails as libvirt would; later ones answer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failures = 1

    async def dirty_rate(self, vm: str, seconds: int) -> DirtyRate:
        if self.failures:
            self.failures -= 1
            await self.release.wait()
            raise BatonError(ErrorCode.HYPERVISOR, "guest agent went away")
        return await super().dirty_rate(vm, seconds)


async def test_a_failed_shared_measurement_fails_every_caller_that_shared_it():
    hv = FailsOnce(DomainState.RUNNING, {1: 32.0, 2: 16.0})
    predictor = Predictor(hv)
    first = asyncio.create_task(predictor.predict(PredictRequest(vm="g1")))
    await asyncio.sleep(0)
    second = asyncio.create_task(predictor.predict(PredictRequest(vm="g1", link_mib_s=8)))
    await asyncio.sleep(0)
    hv.release.set()
    outcomes = await asyncio.gather(first, second, return_exceptions=True)
    assert [("guest agent went away", ErrorCode.HYPERVISOR)] * 2 == [
        (e.message, e.code) for e in outcomes if isinstance(e, BatonError)]
    assert [] == hv.windows  # nobody measured again behind the failure


async def test_callers_left_by_a_cancelled_measurement_share_the_next_one():
    hv = OneAtATime(DomainState.RUNNING, {1: 32.0, 2: 16.0})
    predictor = Predictor(hv)
    owner = asyncio.create_task(predictor.predict(PredictRequest(vm="g1")))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(predictor.predict(PredictRequest(vm="g1"))) for _ in range(2)]
    await asyncio.sleep(0)
    owner.cancel()
    hv.release.set()
    found = await asyncio.gather(*waiting)  # a second measurement at once would have failed
    assert [32.0, 32.0] == [p.dirty_rate_mib_s for p in found]
    assert [("g1", 1), ("g1", 2)] == hv.windows


async def test_callers_of_other_windows_left_by_a_failed_measurement_share_the_next_one():
    hv = FailsOnce(DomainState.RUNNING, {1: 32.0, 2: 16.0, 3: 8.0, 6: 8.0})
    predictor = Predictor(hv)
    owner = asyncio.create_task(predictor.predict(PredictRequest(vm="g1")))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(predictor.predict(PredictRequest(vm="g1", measure_s=3)))
               for _ in range(2)]
    await asyncio.sleep(0)
    hv.release.set()
    with pytest.raises(BatonError):
        await owner
    found = await asyncio.gather(*waiting)
    assert [8.0, 8.0] == [p.dirty_rate_mib_s for p in found]
    assert [("g1", 3), ("g1", 6)] == hv.windows


class Peeked(Measured):
    """A guest whose memory libvirt can read: every fourth page is zero, and every eighth
    (from page 1) is rewritten between any two reads; ``fails`` raises instead."""

    def __init__(self, fails: BatonError | None = None, read_s: float = 0.0,
                 changed=lambda page, read: read if page % 8 == 1 else 0):
        super().__init__(DomainState.RUNNING, {1: 99.0, 2: 99.0})
        self.reads: list[list[int]] = []
        self.read_at: list[float] = []
        self.fails = fails
        self.read_s = read_s  # how long one read takes
        self.changed = changed  # (page, read number from 1) -> the page's version then

    async def page_digests(self, vm: str, pages) -> list[bytes]:
        if vm != "g1":
            raise BatonError(ErrorCode.NOT_FOUND, f"no domain named {vm!r} on this host")
        if self.fails is not None:
            raise self.fails
        self.read_at.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.read_s)
        self.reads.append(list(pages))
        version = len(self.reads)
        return [b"" if p % 4 == 0 else f"{p}:{self.changed(p, version)}".encode()
                for p in pages]


async def test_a_guest_whose_memory_libvirt_reads_is_sampled_not_calculated():
    hv = Peeked()
    found = await Predictor(hv, random.Random(3)).predict(PredictRequest(vm="g1", link_mib_s=48))
    assert [] == hv.windows  # libvirt's own calculation was not asked
    assert 3 == len(hv.reads) and hv.reads[0] == hv.reads[1] == hv.reads[2]
    assert (SAMPLE_PAGES, hv.reads[0]) == (len(set(hv.reads[0])), sorted(hv.reads[0]))
    assert MEMORY_PEEK == found.dirty_rate_mode
    # a quarter of the pages is zero: the first pass sends about 96 of the 128 MiB
    assert 90 <= found.whole_mib <= 102
    # an eighth of memory (16 MiB) changed over the 1 s window and no more over 2 s
    assert found.dirty_rate_mib_s == pytest.approx(16, rel=0.2)
    assert found.working_set_mib == pytest.approx(16, rel=0.2)
    rounded = modelled(PredictRequest(vm="g1", link_mib_s=48), 128 * MIB,
                       found.dirty_rate_mib_s, MEMORY_PEEK, found.working_set_mib * MIB,
                       found.whole_mib * MIB, PRIOR_S)  # from the figures as reported (rounded)
    assert (rounded.strategy, rounded.total_s) == (found.strategy, found.total_s)


async def test_a_sampled_prediction_prices_the_first_pass_at_its_whole_pages():
    found = await Predictor(Peeked(), random.Random(3)).predict(
        PredictRequest(vm="g1", link_mib_s=48))
    everything = modelled(PredictRequest(vm="g1", link_mib_s=48), 128 * MIB,
                          found.dirty_rate_mib_s, MEMORY_PEEK, found.working_set_mib * MIB,
                          start_s=PRIOR_S)
    assert found.total_s < everything.total_s - 0.4  # about 32 MiB less at 48 MiB/s


async def test_where_libvirt_cannot_read_memory_its_calculation_measures():
    hv = Measured(DomainState.RUNNING, {1: 32.0, 2: 16.0})
    found = await Predictor(hv).predict(PredictRequest(vm="g1", link_mib_s=48))
    assert ([("g1", 1), ("g1", 2)], "page-sampling", None) == (
        hv.windows, found.dirty_rate_mode, found.whole_mib)


@pytest.mark.parametrize("code", [ErrorCode.NOT_FOUND, ErrorCode.HYPERVISOR, ErrorCode.TIMEOUT])
async def test_a_failed_read_of_memory_that_is_not_unsupported_fails_the_prediction(code):
    hv = Peeked(fails=BatonError(code, "the guest went away"))
    with pytest.raises(BatonError) as caught:
        await Predictor(hv).predict(PredictRequest(vm="g1", link_mib_s=48))
    assert (code, [], []) == (caught.value.code, hv.windows, hv.reads)


def test_the_first_pass_left_is_the_whole_pages_expected_less_those_sent():
    stats = JobStats(memory_normal_bytes=40 * MIB, memory_constant_pages=2560)
    assert 56 * MIB == first_pass_left(stats, 100 * MIB, 96)
    assert 30 * MIB == first_pass_left(stats, 30 * MIB, 96)  # never more than is left
    assert 0 == first_pass_left(stats, 100 * MIB, 32)  # more sent than expected: none left
    # not sampled: the memory left weighed by the share of whole pages so far (40 of 50 MiB)
    assert 80 * MIB == first_pass_left(stats, 100 * MIB, None)


def test_the_eta_of_a_first_pass_counts_the_whole_pages_pre_flight_expected():
    stats = JobStats(memory_total_bytes=128 * MIB, memory_remaining_bytes=100 * MIB,
                     memory_normal_bytes=8 * MIB, memory_constant_pages=20 * 256,
                     memory_iteration=1, memory_bps=8 * MIB, time_elapsed_ms=3000)
    request = StartRequest(migration_id="m1", vm="g1", destination_uri="qemu://h2/system",
                           destination_host="h2", bandwidth_mib_s=8,
                           expected_dirty_rate_mib_s=0.0, expected_whole_mib=88)
    # 80 MiB of whole pages left at 8 MiB/s, nothing dirtied: 10 s (the share so far, 8 of
    # 28 MiB, would have said about 3.6 s)
    assert 10.0 == eta_of(stats, request, downtime_ms=300, postcopy=False)
    unsampled = msgspec.structs.replace(request, expected_whole_mib=None)
    assert eta_of(stats, unsampled, downtime_ms=300, postcopy=False) < 4.0


@pytest.mark.parametrize(("short", "long", "bounded"), [
    (20, 36, False),  # a 2 MiB/s guest: 20 and 36 of 1024 pages is noise, not a bound
    (20, 16, True),  # fewer pages over the longer window: bounded whatever the noise
    (256, 256, True),  # 32 MiB rewritten within both windows: the working set
    (166, 256, True),  # 16 MiB/s over 32 MiB: the long window saturates
    (166, 300, False),  # within two deviations of the 332 a guest dirtying new pages gives
    (100, 160, False),  # 2 x sqrt(4 x 100 + 160) = 47: 160 is within 200 - 47
])
def test_a_sampled_working_set_must_stand_clear_of_the_counts_noise(short, long, bounded):
    per_page = 128 * MIB / 1024
    found = working_set(short * per_page / MIB / 1.0, long * per_page / MIB / 2.0, 1.0, 2.0,
                        128 * MIB, samples=1024)
    assert bounded == (found is not None)
    if bounded:
        assert max(short, long) * per_page == found


def test_an_unbounded_sampled_rate_pools_both_windows_and_a_bounded_one_keeps_the_short():
    found = Sampled(zero_share=0.3, short_mib_s=3.0, long_mib_s=1.5, short_s=2.0, long_s=4.0,
                    pages=1024)
    assert 2.0 == sampled_rate(found, None)  # 6 + 6 MiB over 6 s
    assert 3.0 == sampled_rate(found, 3 * MIB)


def test_the_first_pass_left_without_whole_bytes_reported_is_all_expected():
    assert 96 * MIB == first_pass_left(JobStats(), 100 * MIB, 96)


async def test_each_read_begins_a_window_after_the_first_or_at_once_when_reads_are_slower():
    fast = Peeked()
    await Predictor(fast, random.Random(1)).predict(PredictRequest(vm="g1", measure_s=2))
    slow = Peeked(read_s=1.2)
    await Predictor(slow, random.Random(1)).predict(PredictRequest(vm="g1"))
    for hv, expected in ((fast, [0, 2, 4]), (slow, [0, 1.2, 2.4])):
        began = [t - hv.read_at[0] for t in hv.read_at]
        assert began == pytest.approx(expected, abs=0.15)


async def test_few_changed_pages_a_little_short_of_proportional_are_no_working_set():
    # every read rewrites 1 page in 64; the third also 1 in 256 more: about 16 and 20 of the
    # 1024 pages, 20 of the 32 a proportional long window gives: noise, not a bound
    hv = Peeked(changed=lambda page, read: read if page % 64 == 1 else
                int(read >= 3) if page % 256 == 2 else 0)
    found = await Predictor(hv, random.Random(3)).predict(PredictRequest(vm="g1"))
    assert None is found.working_set_mib
    # pooled: about 36 changed pages of 1024 (4.5 MiB) over 3 s
    assert found.dirty_rate_mib_s == pytest.approx(1.5, rel=0.35)
