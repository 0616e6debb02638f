"""The README's first command, ``deploy/demo``, run end to end as a user runs it.

It gets a lab of its own (prefix ``<test prefix>demo``) so it cannot disturb the session lab,
and the outcome is checked outside the script: the coordinator's record, virsh on both hosts and
the guest's console files on both hosts.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.conftest import LAB_PREFIX, lab_unavailable
from tests.lab.labctl import ALIVE_RE, REPO, Lab

pytestmark = pytest.mark.lab
DEMO_PREFIX = f"{LAB_PREFIX}demo"[:8]
DEMO_VM = "demo"


@pytest.fixture
def demo_lab() -> Iterator[Lab]:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    the_lab = Lab(DEMO_PREFIX)
    the_lab.down()
    try:
        yield the_lab
    finally:
        the_lab.down()


def console_seqs(lab: Lab, host: str) -> list[int]:
    """Every heartbeat counter in the guest's console file on ``host`` (read from disk)."""
    path = Path(f"/var/lib/baton-lab/{lab.prefix}/hosts/{host}/log-libvirt/qemu/{DEMO_VM}-console.log")
    return [int(seq) for seq in ALIVE_RE.findall(path.read_text(errors="replace"))]


def demo_record(lab: Lab) -> dict[str, object]:
    env = {**os.environ, **lab.env()}
    proc = subprocess.run([str(REPO / ".venv/bin/baton"), "jobs", "-o", "json"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    jobs = json.loads(proc.stdout)
    rows = jobs["migrations"] if isinstance(jobs, dict) else jobs
    return next(r for r in rows if r["vm"] == DEMO_VM)


def test_the_demo_live_migrates_a_counting_guest_from_h1_to_h2(demo_lab):
    env = {**os.environ, "BATON_LAB_PREFIX": DEMO_PREFIX, "BATON_DEMO_VM": DEMO_VM}
    proc = subprocess.run([str(REPO / "deploy/demo")], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert 0 == proc.returncode, f"deploy/demo exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    rec = demo_record(demo_lab)
    assert ("succeeded", "h1", "h2") == (rec["phase"], rec["source"], rec["destination"])
    assert ("running", None) == (demo_lab.domstate("h2", DEMO_VM), demo_lab.domstate("h1", DEMO_VM))
    on_h1, on_h2 = console_seqs(demo_lab, "h1"), console_seqs(demo_lab, "h2")
    assert on_h1 and on_h2, f"no heartbeat on a console: h1 {on_h1}, h2 {on_h2}"
    assert min(on_h2) > max(on_h1)  # the same guest kept counting on h2
    h2_console = demo_lab.console(DEMO_VM)
    assert "GUEST-READY" not in h2_console  # ...without booting again there
    assert not any(bad in h2_console for bad in ("BUG", "Oops", "panic"))
