"""libvirt job statistics (typed parameters) as a :class:`JobStats` message.

libvirt reports the same key ``downtime`` as the *expected* downtime of a running job and the
*actual* downtime of a completed one, so the caller says which it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baton.agent.event_names import job_operation
from baton.schemas.events import JobStats

# libvirt typed-parameter name -> JobStats field (integers, same unit).
_INT_FIELDS = {
    "time_elapsed": "time_elapsed_ms",
    "data_total": "data_total_bytes",
    "data_processed": "data_processed_bytes",
    "data_remaining": "data_remaining_bytes",
    "memory_total": "memory_total_bytes",
    "memory_processed": "memory_processed_bytes",
    "memory_remaining": "memory_remaining_bytes",
    "memory_dirty_rate": "memory_dirty_rate_pages_s",
    "memory_bps": "memory_bps",
    "memory_iteration": "memory_iteration",
    "memory_constant": "memory_constant_pages",
    "memory_normal_bytes": "memory_normal_bytes",
    "disk_total": "disk_total_bytes",
    "disk_processed": "disk_processed_bytes",
    "disk_remaining": "disk_remaining_bytes",
    "disk_bps": "disk_bps",
    "auto_converge_throttle": "auto_converge_throttle_pct",
}


def job_stats(params: Mapping[str, Any], *, completed: bool) -> JobStats:
    fields: dict[str, Any] = {
        name: int(params[key]) for key, name in _INT_FIELDS.items() if _is_count(params.get(key))
    }
    if _is_count(params.get("downtime")):
        fields["downtime_ms" if completed else "expected_downtime_ms"] = int(params["downtime"])
    if "operation" in params:
        fields["operation"] = job_operation(int(params["operation"]))
    if params.get("errmsg"):
        fields["error_message"] = str(params["errmsg"])
    return JobStats(**fields)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
