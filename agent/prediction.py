"""The source agent's prediction of a live migration (issue #12): measure the guest's dirty rate
with libvirt, then run the pre-copy model (agent/precopy_model.py) at the link rate asked for.

The downtime limit and its ramp are the ones the migration itself would use (the operator's
``max_downtime_ms``, else QEMU's 300 ms; steps as agent/convergence.py takes them), so the
strategy named is the one the source's escalations would reach. Without a link rate there is
nothing to divide by: the reply carries the measurement only.
"""

from __future__ import annotations

import msgspec

from baton.agent import convergence, precopy_model
from baton.agent.hypervisor import Hypervisor
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


def modelled(request: PredictRequest, memory_bytes: int, dirty_mib_s: float,
             mode: str) -> Prediction:
    """The prediction for a measured guest (pure)."""
    measured = Prediction(dirty_rate_mib_s=round(dirty_mib_s, 1), dirty_rate_mode=mode,
                          memory_mib=memory_bytes // MIB)
    if request.link_mib_s is None:
        return measured
    model = precopy_model.predict(
        memory_bytes, dirty_mib_s * MIB, request.link_mib_s * MIB,
        downtime_ms=request.max_downtime_ms or convergence.QEMU_DEFAULT_DOWNTIME_MS,
        ramp_ms=convergence.ramp_up_to(request.max_downtime_ms).steps_ms,
        allow_postcopy=request.allow_postcopy, disk_bytes=request.disk_bytes)
    return msgspec.structs.replace(
        measured, link_mib_s=float(request.link_mib_s), converges=model.converges,
        total_s=None if model.total_s is None else round(model.total_s, 1),
        downtime_ms=model.downtime_ms, strategy=STRATEGY_OF[model.strategy])


def eta_of(stats: JobStats, request: StartRequest, downtime_ms: int,
           postcopy: bool) -> float | None:
    """Seconds left of a running migration, from its latest job figures (pure).

    The link rate is what libvirt measured for the memory (or, in a copy's disk phase, the
    disks), else the cap; the dirty rate is libvirt's from pass 2 on, and pre-flight's during
    the first pass (libvirt reports none yet). In post-copy nothing is sent twice: the rest
    moves once at the link rate."""
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
    if (stats.memory_iteration or 0) < 2 and request.expected_dirty_rate_mib_s is not None:
        dirty = max(dirty, request.expected_dirty_rate_mib_s * MIB)
    eta = precopy_model.eta_s(total, left, dirty, link, downtime_ms,
                              disk_remaining_bytes=disk_left)
    return None if eta is None else round(eta, 1)


class Predictor:
    def __init__(self, hv: Hypervisor) -> None:
        self._hv = hv

    async def predict(self, request: PredictRequest) -> Prediction:
        [domain] = await self._hv.domains([request.vm], include_cpu_xml=False)
        if domain.state != DomainState.RUNNING:
            raise BatonError(ErrorCode.PRECONDITION_FAILED, f"{request.vm} is {domain.state}: "
                             "only a running guest dirties memory; nothing to predict")
        rate = await self._hv.dirty_rate(request.vm, request.measure_s)
        return modelled(request, domain.memory_kib * 1024, rate.mib_s, rate.mode)
