"""Baton's Cockpit page when Baton cannot answer: the page shows the CLI's own one-line error
(the same words `baton hosts` prints), keeps its tables empty, and its JavaScript never throws.
A real nats-server with Baton's roles and TLS, cockpit-ws and headless Chromium; no lab."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.console import free_port, open_page, serve_console, shot
from tests.support.secured import start_secured_nats

BIN = Path(sys.executable).parent
PAGE_TIMEOUT_MS = 30_000


def cli_error(env: dict[str, str]) -> str:
    """What `baton hosts` says on stderr with this environment, without its `baton: `."""
    out = subprocess.run([str(BIN / "baton"), "hosts", "-o", "json"], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode != 0, out.stdout
    return out.stderr.strip().removeprefix("baton: ")


@pytest.mark.parametrize("case", ["no agents answer", "NATS unreachable"])
def test_the_page_shows_the_clis_own_error_and_keeps_working(case: str, tmp_path: Path) -> None:
    nats = start_secured_nats(tmp_path / "nats", ("h1",))
    try:
        env = os.environ | nats.env("operator") | {"PATH": f"{BIN}:{os.environ['PATH']}"}
        if case == "NATS unreachable":
            env["BATON_NATS"] = f"tls://127.0.0.1:{free_port()}"
        message = cli_error(env)
        with serve_console(env, tmp_path) as url, open_page(url, PAGE_TIMEOUT_MS) as page:
            banner = page.locator("#error")
            expect(banner).to_contain_text(message)
            expect(page.locator("#connection")).to_have_text("not connected")
            expect(page.locator("#hosts tbody td.empty")).to_have_text("no agent answers")
            stream = page.locator("#stream-error")  # baton watch: its own box, not the listings'
            if case == "NATS unreachable":
                expect(stream).to_contain_text("live progress stopped: cannot reach NATS")
            else:
                expect(stream).to_be_hidden()
            shot(page, f"error-{case.replace(' ', '-')}")
            assert "Traceback" not in page.inner_text("body")
    finally:
        nats.stop()
