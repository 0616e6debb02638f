"""Baton's Cockpit page in a real browser against the lab: cockpit-ws (a local session, as
`deploy/lab console-ui` runs it) serves the page, headless Chromium (Debian's, driven by
Playwright) uses it as an operator would, and libvirt and QEMU say what happened.

Screenshots of each step are kept (tests/support/console.py says where)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.lab.stack import BIN
from tests.lab.test_storage_move import FAST, HOST, SLOW, assert_alive, live_disks, saved_disk
from tests.support.console import open_page, serve_console, shot

pytestmark = pytest.mark.lab

MIB = 1024 * 1024
UI_TIMEOUT_MS = 60_000  # a check measures the dirty rate; TCG on 2 shared cores is slow


@pytest.fixture
def page(stack, tmp_path: Path) -> Iterator[Any]:
    """The page, served with the operator's key to this lab's stack, in headless Chromium."""
    env = os.environ | stack.baton_env() | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    with serve_console(env, tmp_path) as url, open_page(url, UI_TIMEOUT_MS) as the_page:
        yield the_page


def progress_values(row, phase: str, wanted: int, timeout: float = 120) -> list[float]:
    """Distinct values the row's progress bar shows while the job is in ``phase``."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while len(seen) < wanted and time.monotonic() < deadline:
        value = row.locator("progress").evaluate("bar => bar.hasAttribute('value') ? bar.value : null")
        if value is not None and row.get_attribute("data-phase") == phase and value not in seen:
            seen.append(value)
        time.sleep(0.25)  # sampling the bar, not waiting for an event
    return seen


def test_an_operator_checks_and_migrates_a_vm_from_the_cockpit_page(stack, lab, guest, page):
    vm = guest("h1", nic=True, dirty_rate_mib_s=8)

    # hosts and the VM, as the agents report them
    for host in ("h1", "h2", "h3"):
        expect(page.locator(f"#hosts tr[data-host={host}]")).to_contain_text("connected")
    vm_row = page.locator(f"#vms tr[data-vm='{vm}']")
    expect(vm_row).to_have_attribute("data-host", "h1")
    # as an operator would, wait for the page to show it running: the dialog offers a live
    # move only for a running VM (seen in CI: opened while the page still had it starting)
    expect(vm_row).to_have_attribute("data-state", "running")
    shot(page, "1-hosts-and-vms")

    # the checks run before Migrate can be pressed: h3 lacks the guest's bridge
    vm_row.locator("button.migrate").click()
    dialog = page.locator("#migrate-dialog")
    dialog.locator("#migrate-destination").select_option("h3")
    network = dialog.locator("#migrate-checks li[data-check=network]")
    expect(network).to_have_attribute("data-status", "fail")
    expect(network).to_contain_text("br-vm")
    expect(dialog.locator("#migrate-start")).to_be_disabled()
    shot(page, "2-checks-fail-for-h3")

    # h2 passes; a 4 MiB/s cap (half what the guest dirties) keeps it copying until raised
    dialog.locator("#migrate-destination").select_option("h2")
    dialog.locator("#migrate-bandwidth").fill("4")
    expect(dialog.locator("#migrate-checks li[data-check=convergence]")).to_contain_text("at 4 MiB/s")
    expect(dialog.locator("#migrate-checks li[data-check=network]")).to_have_attribute("data-status", "pass")
    expect(dialog.locator("#migrate-start")).to_be_enabled()
    shot(page, "3-checks-pass-for-h2")
    dialog.locator("#migrate-start").click()
    expect(dialog).to_be_hidden()

    job = page.locator("#jobs tbody tr").first
    expect(job).to_have_attribute("data-phase", "migrating")
    migration_id = job.get_attribute("data-id")
    assert vm in job.inner_text() and "h1 → h2" in job.inner_text()
    lab._poll(lambda: lab.qemu_migration("h1", vm)["max-bandwidth"] == 4 * MIB, 60,
              "QEMU's max-bandwidth on h1 to become 4 MiB/s")
    moving = progress_values(job, "migrating", 3)
    assert len(moving) == 3 and max(moving) > min(moving), moving
    shot(page, "4-progress")

    # Change bandwidth: a bad value gets the CLI's own message; a good one reaches QEMU
    job.locator("button.bandwidth").click()
    bandwidth = page.locator("#bandwidth-dialog")
    bandwidth.locator("#bandwidth-value").fill("2000000")
    bandwidth.locator("#bandwidth-apply").click()
    expect(bandwidth.locator(".dialog-error")).to_contain_text("not in the range")
    shot(page, "5-bandwidth-error")
    bandwidth.locator("#bandwidth-value").fill("64")
    bandwidth.locator("#bandwidth-apply").click()
    expect(bandwidth).to_be_hidden()
    expect(page.locator(f"#jobs tr[data-id='{migration_id}']")).to_have_attribute(
        "data-phase", "succeeded", timeout=240_000)
    shot(page, "6-succeeded")

    assert "Traceback" not in page.inner_text("body")
    records = {r["migration_id"]: r for r in json.loads(stack.baton("jobs", "-o", "json").stdout)}
    assert ("succeeded", 64) == (records[migration_id]["phase"], records[migration_id]["bandwidth_mib_s"])
    lab.wait_domstate("h2", vm, "running", timeout=60)
    assert vm not in lab.domains("h1", all_=True), "the source still has the VM"
    expect(vm_row).to_have_count(1, timeout=30_000)  # listed once more, on h2 alone
    expect(vm_row).to_have_attribute("data-host", "h2")


def test_an_operator_moves_a_disk_and_aborts_it_from_the_cockpit_page(stack, lab, guest, page):
    """The Move disk dialog shows a refusal with the agent's reason and enables Move only for a
    pool that passes; Abort mid-copy leaves the guest on its old file (libvirt's live and saved
    definitions) and removes the partial copy."""
    vm = guest(HOST, pool="slow")
    old, new = f"{SLOW}/{vm}.qcow2", f"{FAST}/{vm}.qcow2"
    page.locator(f"#vms tr[data-vm='{vm}'] button.move-disk").click()
    dialog = page.locator("#move-dialog")
    dialog.locator("#move-pool").select_option("slow")  # where the disk already is
    refused = dialog.locator("#move-checks li[data-status=fail]")
    expect(refused).to_contain_text("already in pool slow")
    expect(dialog.locator("#move-start")).to_be_disabled()
    shot(page, "7-move-refused")

    dialog.locator("#move-pool").select_option("fast")
    dialog.locator("#move-bandwidth").fill("2")  # 64 MiB at 2 MiB/s: half a minute to abort in
    expect(dialog.locator("#move-checks li[data-status=fail]")).to_have_count(0)
    expect(dialog.locator("#move-start")).to_be_enabled()
    dialog.locator("#move-start").click()
    expect(dialog).to_be_hidden()

    job = page.locator("#jobs tbody tr").first
    expect(job).to_have_attribute("data-phase", "migrating")
    assert "disk move" in job.inner_text() and "pool fast" in job.inner_text()
    lab._poll(lambda: lab.host_path(HOST, new).exists(), 60, "the copy to start")
    shot(page, "8-move-copying")
    job.locator("button.abort").click()
    expect(job).to_have_attribute("data-phase", "aborted")
    shot(page, "9-move-aborted")

    assert ({"vda": old}, old) == (live_disks(lab, vm), saved_disk(lab, vm))
    assert (True, False) == (lab.host_path(HOST, old).exists(), lab.host_path(HOST, new).exists())
    assert_alive(lab, vm)
