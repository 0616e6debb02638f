"""Baton's Cockpit page in a real browser: deploy/lib/console-ui (cockpit-ws with a local
session) serving it with a given environment, and headless Chromium (Debian's, driven by
Playwright) on it. Screenshots go to $BATON_TEST_ARTIFACTS/console-ui (default
/var/tmp/baton-test-artifacts)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
PAGE = "/cockpit/@localhost/baton/index.html"
ARTIFACTS = Path(os.environ.get("BATON_TEST_ARTIFACTS", "/var/tmp/baton-test-artifacts")) / "console-ui"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "deploy/lib/console-ui exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"cockpit-ws did not listen on {port} within {timeout} s")


@contextmanager
def serve_console(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """The page's URL, served by deploy/lib/console-ui; its `baton` commands get ``env``
    (BATON_NATS*, PATH)."""
    port = free_port()
    with (log_dir / "console-ui.log").open("wb") as log:
        proc = subprocess.Popen([str(REPO / "deploy/lib/console-ui"), str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_listening(port, proc)
            yield f"http://127.0.0.1:{port}{PAGE}"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)


@contextmanager
def open_page(url: str, timeout_ms: int) -> Iterator[Any]:
    """A headless Chromium page on ``url``; fails the test if the page's JavaScript threw."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: deploy/lab install puts Debian's chromium there")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_default_timeout(timeout_ms)
            # expect() keeps its own 5 s default otherwise: too short for checks that measure
            # the guest's dirty rate while the other test worker boots guests (seen in CI)
            expect.set_options(timeout=timeout_ms)
            page.goto(url)
            yield page
            assert [] == errors, "the page's JavaScript failed"
        finally:
            browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
