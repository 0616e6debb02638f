"""bench/run --quick for the lab benchmarks (c, e, g) writes well-formed JSON records.

They use their own lab prefix (``BATON_LAB_PREFIX``, default ``bn``), which a benchmark brings up
and down itself unless it is already up: here it is brought up once for the three and taken down
after them. Nothing here asserts a speed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_bench_smoke import assert_well_formed, run_quick
from tests.lab.conftest import lab_unavailable
from tests.lab.labctl import Lab

BENCH_LAB_HOSTS = 2  # bench/lab.py lab_stack()


@pytest.fixture(scope="module")
def bench_lab() -> Iterator[None]:
    if reason := lab_unavailable():
        pytest.skip(reason)
    lab = Lab(os.environ.get("BATON_LAB_PREFIX", "bn"))
    owned = not lab.healthy(BENCH_LAB_HOSTS)
    if owned:
        lab.up(BENCH_LAB_HOSTS, baton=True)
    try:
        yield
    finally:
        if owned:
            lab.down()


@pytest.mark.lab
@pytest.mark.parametrize("name", ["c", "e", "g"])
def test_quick_lab_benchmark_writes_a_well_formed_record(name: str, tmp_path: Path,
                                                         bench_lab: None) -> None:
    records = run_quick(name, tmp_path / "bench.json")
    assert_well_formed(records, name)
    if name == "e":  # the figures Baton reports agree with libvirt's own record of the same job
        assert records[0]["figures"]["max_deviation_from_libvirt_pct"] <= 5.0, records[0]["figures"]
        [run] = records[0]["figures"]["migrations"]  # and virsh ran beside Baton at that cap
        assert run["virsh_libvirt_mib_s"] > 0, run
        disks = records[0]["figures"]["blockcopy"]  # move-disk and blockcopy, both from libvirt
        assert disks["achieved_mib_s"] > 0 and disks["move_disk_mib_s"] > 0, disks
        assert min(run["vs_virsh"], disks["move_disk_vs_blockcopy"]) == records[0]["ratio"]
    if name == "g":  # a prediction was made and the migration it predicted ran
        [run] = records[0]["figures"]["runs"]
        assert run["predicted_s"] is not None and run["measured_s"] > 0, run
