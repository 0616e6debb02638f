"""bench/run --quick keeps working: each local benchmark writes a well-formed JSON record.

Benchmarks are not tests: nothing here asserts a speed, only that the suite runs and reports.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_quick(name: str, out: Path) -> list[dict]:
    proc = subprocess.run([str(REPO / "bench" / "run"), "--quick", "--only", name, "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert 0 == proc.returncode, f"bench/run --only {name} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return json.loads(out.read_text())["records"]


def assert_well_formed(records: list[dict], name: str) -> None:
    assert [name] == [r["name"] for r in records]
    record = records[0]
    assert isinstance(record["ratio"], float) and math.isfinite(record["ratio"]) and record["ratio"] > 0
    assert record["goal"] and isinstance(record["figures"], dict) and isinstance(record["met"], bool)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["a", "b", "d", "f"])
def test_quick_benchmark_writes_a_well_formed_record(name: str, tmp_path: Path) -> None:
    assert_well_formed(run_quick(name, tmp_path / "bench.json"), name)
