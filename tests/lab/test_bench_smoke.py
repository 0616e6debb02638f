"""bench/run --quick for the lab benchmarks (c, e, g) writes well-formed JSON records.

They use their own lab prefix (``BATON_LAB_PREFIX``, default ``bn``): brought up and down by the
benchmark unless already up. Nothing here asserts a speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_bench_smoke import assert_well_formed, run_quick
from tests.lab.conftest import lab_unavailable


@pytest.mark.lab
@pytest.mark.parametrize("name", ["c", "e", "g"])
def test_quick_lab_benchmark_writes_a_well_formed_record(name: str, tmp_path: Path) -> None:
    if reason := lab_unavailable():
        pytest.skip(reason)
    records = run_quick(name, tmp_path / "bench.json")
    assert_well_formed(records, name)
    if name == "e":  # the figures Baton reports agree with libvirt's own record of the same job
        assert records[0]["figures"]["max_deviation_from_libvirt_pct"] <= 5.0, records[0]["figures"]
        [run] = records[0]["figures"]["migrations"]  # and virsh ran beside Baton at that cap
        assert run["virsh_libvirt_mib_s"] > 0 and run["vs_virsh"] == records[0]["ratio"], run
    if name == "g":  # a prediction was made and the migration it predicted ran
        [run] = records[0]["figures"]["runs"]
        assert run["predicted_s"] is not None and run["measured_s"] > 0, run
