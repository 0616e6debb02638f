"""The source agent's prediction of a live migration (issue #12): measure the guest's memory,
then run the pre-copy model (agent/precopy_model.py) at the link rate asked for.

The measurement reads about a thousand sampled pages of the guest three times through libvirt
(agent/memory_sample.py): the first read says how much of memory is zero pages (the first pass
sends those as markers), and the pages changed by the second and third reads give the dirty
rate over two windows, the second twice as long. Where libvirt cannot read guest memory, its own
dirty-rate calculation is asked for the two windows instead (no zero-page share then).
The rate is the first window's, and a second that found clearly fewer pages than twice the
first's bounds the working set (a guest rewriting 32 MiB reads 32 MiB/s over 1 s but 16 MiB/s
over 2 s), so a pass never re-sends more than it.

The downtime limit and its ramp are the ones the migration itself would use (the operator's
``max_downtime_ms``, else QEMU's 300 ms; steps as agent/convergence.py takes them), so the
strategy named is the one the source's escalations would reach. Without a link rate there is
nothing to divide by: the reply carries the measurement only.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass

import msgspec

from baton.agent import convergence, memory_sample, precopy_model
from baton.agent.hypervisor import DirtyRate, Hypervisor
from baton.agent.start_cost import StartCost
from baton.schemas.agent import DomainState
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.events import JobStats
from baton.schemas.migration import Prediction, PredictRequest, StartRequest, Strategy

MIB = precopy_model.MIB

# The model's strategy -> the --strategy that takes it.
STRATEGY_OF = {
    precopy_model.Strategy.PRECOPY: Strategy.PRECOPY,
    precopy_model.Strategy.DOWNTIME_RAMP: Strategy.AUTO,
    precopy_model.Strategy.POSTCOPY: Strategy.POSTCOPY,
    precopy_model.Strategy.AUTO_CONVERGE: Strategy.AUTO_CONVERGE,
}


# A second window twice as long that finds less than this share of twice the first window's
# pages: the guest rewrites the same pages (page-sampling's counts are noisy by about a tenth).
BOUNDED_SHARE = 0.9
SIGNIFICANT = 2.0  # standard deviations a sampled working set must stand below proportional
# Pages read per pass: one changed page of a 128 MiB guest is 0.125 MiB/s over 1 s; a pass takes
# about 1.3 s under TCG (libvirt reads a page per monitor command).
SAMPLE_PAGES = 1024
MEMORY_PEEK = "memory-peek"


def working_set(short_mib_s: float, long_mib_s: float, short_s: float, long_s: float,
                memory_bytes: int, samples: int | None = None) -> int | None:
    """The bytes a guest keeps rewriting, from two measurements (pure): each counts the
    distinct pages dirtied in its window, so a guest confined to a working set reads a lower rate
    over the longer window. None when the longer window found about proportionally more.

    With the number of pages sampled known (``samples``), "clearly fewer" is judged against the
    counts' own noise: each count of changed pages varies by about its square root, and a low
    rate changes few pages (a 2 MiB/s guest about 20 of 1024 over 1.3 s), whose ratio a fixed
    share took for a bound one time in four."""
    short_bytes, long_bytes = short_mib_s * MIB * short_s, long_mib_s * MIB * long_s
    if short_bytes <= 0:
        return None
    ratio = long_s / short_s
    if samples is None:
        bounded = long_bytes < BOUNDED_SHARE * short_bytes * ratio
    else:
        page = memory_bytes / samples  # the memory one sampled page stands for
        short_count, long_count = short_bytes / page, long_bytes / page
        noise = math.sqrt(ratio * ratio * short_count + long_count)
        bounded = long_count < ratio * short_count - SIGNIFICANT * noise
    if not bounded:
        return None
    return int(min(max(short_bytes, long_bytes), memory_bytes))


def sampled_rate(found: memory_sample.Sampled, working_set_bytes: int | None) -> float:
    """The dirty rate of a sampled guest (pure). Unbounded, both windows measured the same rate
    over the same pages: pooled, the changed pages of both count (a 2 MiB/s guest changes about
    20 of 1024 pages in 1.3 s, a noise of a fifth; pooled, about 60). Bounded, the long window
    only says the working set: the short one's rate stands."""
    if working_set_bytes is not None:
        return found.short_mib_s
    return (found.short_mib_s * found.short_s + found.long_mib_s * found.long_s) \
        / (found.short_s + found.long_s)


def modelled(request: PredictRequest, memory_bytes: int, dirty_mib_s: float,
             mode: str, working_set_bytes: int | None = None,
             whole_bytes: int | None = None, start_s: float = 0.0) -> Prediction:
    """The prediction for a measured guest (pure); ``start_s``, the move's fixed start
    (agent/start_cost.py), is part of its total."""
    measured = Prediction(
        dirty_rate_mib_s=round(dirty_mib_s, 1), dirty_rate_mode=mode,
        memory_mib=memory_bytes // MIB,
        working_set_mib=None if working_set_bytes is None else working_set_bytes // MIB,
        whole_mib=None if whole_bytes is None else whole_bytes // MIB)
    if request.link_mib_s is None:
        return measured
    model = precopy_model.predict(
        memory_bytes, dirty_mib_s * MIB, request.link_mib_s * MIB,
        downtime_ms=request.max_downtime_ms or convergence.QEMU_DEFAULT_DOWNTIME_MS,
        ramp_ms=convergence.ramp_up_to(request.max_downtime_ms).steps_ms,
        allow_postcopy=request.allow_postcopy, disk_bytes=request.disk_bytes,
        working_set_bytes=working_set_bytes, first_pass_bytes=whole_bytes)
    return msgspec.structs.replace(
        measured, link_mib_s=float(request.link_mib_s), converges=model.converges,
        total_s=None if model.total_s is None else round(start_s + model.total_s, 1),
        start_s=round(start_s, 1), downtime_ms=model.downtime_ms,
        strategy=STRATEGY_OF[model.strategy])


def whole_page_share(stats: JobStats) -> float:
    """The share of the first pass's pages so far that crossed as whole pages: a zero page
    crosses as a marker, so that much of the memory left costs next to nothing (1.0 while
    nothing has been sent)."""
    zero = precopy_model.pages_to_bytes(stats.memory_constant_pages or 0)
    whole = stats.memory_normal_bytes or 0
    return whole / (zero + whole) if zero + whole > 0 else 1.0


def first_pass_left(stats: JobStats, left: int, expected_whole_mib: int | None) -> int:
    """The bytes the first pass has still to send as whole pages, of the ``left`` it has still
    to go through."""
    if expected_whole_mib is None:
        return int(left * whole_page_share(stats))
    return max(0, min(left, expected_whole_mib * MIB - (stats.memory_normal_bytes or 0)))


class PassClock:
    """How long libvirt's current memory pass has run, from the readings' iteration changes
    (a pass that began between two readings is taken to have begun half-way)."""

    def __init__(self) -> None:
        self._iteration: int | None = None
        self._started_s = 0.0
        self._last_s = 0.0

    def pass_elapsed_s(self, stats: JobStats) -> float:
        now = (stats.time_elapsed_ms or 0) / 1000
        iteration = stats.memory_iteration or 0
        if iteration != self._iteration:
            first = self._iteration is None and iteration <= 1
            self._started_s = 0.0 if first else (self._last_s + now) / 2
            self._iteration = iteration
        self._last_s = now
        return now - self._started_s


def eta_of(stats: JobStats, request: StartRequest, downtime_ms: int,
           postcopy: bool, pass_elapsed_s: float = 0.0) -> float | None:
    """Seconds left of a running migration, from its latest job figures (pure).

    The link rate is what libvirt measured for the memory (or, in a copy's disk phase, the
    disks), else the cap; the dirty rate is libvirt's from pass 2 on, and pre-flight's during
    the first pass (libvirt reports none yet), bounded by pre-flight's working set; the memory
    dirtied since the current pass began (``pass_elapsed_s``) is sent again in the next. In the
    first pass zero pages cross as markers: what is left to send is pre-flight's whole pages
    less those sent so far when pre-flight sampled them (a guest's zero pages lie in runs, so
    the share so far misleads), else the memory left weighed by the share of whole pages so
    far. In post-copy nothing is sent twice: the rest moves once at the link rate."""
    total, left = stats.memory_total_bytes, stats.memory_remaining_bytes
    if total is None or left is None:
        return None
    cap = request.bandwidth_mib_s * MIB if request.bandwidth_mib_s else None
    link = stats.memory_bps or stats.disk_bps or cap
    if not link:
        return None
    disk_left = stats.disk_remaining_bytes or 0
    if postcopy:
        return round((left + disk_left) / link, 1)
    dirty = precopy_model.pages_to_bytes(stats.memory_dirty_rate_pages_s or 0)
    first_pass = (stats.memory_iteration or 0) < 2
    if first_pass and request.expected_dirty_rate_mib_s is not None:
        dirty = max(dirty, request.expected_dirty_rate_mib_s * MIB)
    if first_pass:
        left = first_pass_left(stats, left, request.expected_whole_mib)
    bound = request.expected_working_set_mib
    eta = precopy_model.eta_s(total, left, dirty, link, downtime_ms,
                              disk_remaining_bytes=disk_left,
                              pass_elapsed_s=0.0 if disk_left else pass_elapsed_s,
                              working_set_bytes=None if bound is None else bound * MIB)
    return None if eta is None else round(eta, 1)


@dataclass(frozen=True)
class _Measurement:
    rate: DirtyRate  # the first (short) window's
    working_set_bytes: int | None
    whole_bytes: int | None = None  # what the first pass sends as whole pages, when sampled


class Predictor:
    """Predictions for the agent's guests. QEMU measures one dirty rate per guest at a time
    (a second ``calc-dirty-rate`` fails: "the dirty rate is already being measured"), so
    predictions asked together for one guest (two operators' checks, a check beside a
    migration's pre-flight) share one measurement instead of failing each other."""

    def __init__(self, hv: Hypervisor, rng: random.Random | None = None,
                 start: StartCost | None = None) -> None:
        self._hv = hv
        self._rng = rng or random.Random()
        self._start = start or StartCost()
        self._measuring: dict[str, tuple[int, asyncio.Future[_Measurement]]] = {}

    async def predict(self, request: PredictRequest) -> Prediction:
        [domain] = await self._hv.domains([request.vm], include_cpu_xml=False)
        if domain.state != DomainState.RUNNING:
            raise BatonError(ErrorCode.PRECONDITION_FAILED, f"{request.vm} is {domain.state}: "
                             "only a running guest dirties memory; nothing to predict")
        memory = domain.memory_kib * 1024
        found = await self._measurement(request.vm, request.measure_s, memory)
        return modelled(request, memory, found.rate.mib_s, found.rate.mode,
                        found.working_set_bytes, found.whole_bytes,
                        self._start.seconds(copy=request.disk_bytes > 0))

    async def _measurement(self, vm: str, measure_s: int, memory: int) -> _Measurement:
        while (running := self._measuring.get(vm)) is not None:
            windows, future = running
            try:
                # shielded: one caller giving up does not end the others' measurement
                found = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this caller was cancelled
                continue  # the measuring caller was: measure anew
            except Exception:
                if windows == measure_s:
                    raise
                continue
            if windows == measure_s:
                return found
            # other windows: the guest is free again; measure with this caller's own
        future = asyncio.get_running_loop().create_future()
        self._measuring[vm] = (measure_s, future)
        try:
            found = await self._measure(vm, measure_s, memory)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: nobody else may be waiting
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(found)
            return found
        finally:
            del self._measuring[vm]

    async def _measure(self, vm: str, measure_s: int, memory: int) -> _Measurement:
        try:
            found = await self._sample(vm, measure_s, memory)
        except BatonError as exc:
            if exc.code is not ErrorCode.UNSUPPORTED:
                raise
        else:
            bound = working_set(found.short_mib_s, found.long_mib_s, found.short_s,
                                found.long_s, memory, found.pages)
            return _Measurement(DirtyRate(sampled_rate(found, bound), MEMORY_PEEK), bound,
                                found.whole_bytes(memory))
        short = await self._hv.dirty_rate(vm, measure_s)
        long = await self._hv.dirty_rate(vm, 2 * measure_s)
        return _Measurement(short, working_set(short.mib_s, long.mib_s, measure_s,
                                               2 * measure_s, memory))

    async def _sample(self, vm: str, measure_s: int, memory: int) -> memory_sample.Sampled:
        """Three reads of the same sampled pages, begun ``measure_s`` apart (or back to back
        when a read takes longer)."""
        pages = memory_sample.sample_pages(memory, SAMPLE_PAGES, self._rng)
        loop = asyncio.get_running_loop()

        async def read(not_before_s: float) -> memory_sample.Pass:
            await asyncio.sleep(max(0.0, not_before_s - loop.time()))
            started = loop.time()
            digests = await self._hv.page_digests(vm, pages)
            return memory_sample.Pass(digests, started, loop.time())

        first = await read(loop.time())
        second = await read(first.started_s + measure_s)
        third = await read(first.started_s + 2 * measure_s)
        return memory_sample.sampled(first, second, third, memory)
