"""Shell completion against the running lab: a real bash in tmux, with ``baton completion bash``
loaded, completes ``baton migrate <Tab>`` with a VM name that real libvirt on h1 reports, and a
host id after ``--to``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid

import pytest

from tests.lab.stack import BIN

pytestmark = pytest.mark.lab
SETTLE_S = 0.2  # between polls of the pane: sampling the screen, not waiting for an event


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def pane_shows(session: str, text: str, within_s: float = 20) -> str:
    deadline = time.monotonic() + within_s
    while True:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen or time.monotonic() > deadline:
            return screen
        time.sleep(SETTLE_S)


def test_tab_completes_a_vm_name_and_a_host_id_from_the_live_system(stack, lab, guest):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is missing: deploy/bootstrap installs it")
    vm = guest("h1")
    session = f"baton-{uuid.uuid4().hex[:6]}"
    env = stack.baton_env() | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    # tmux keeps its own PATH for a new pane: the shell gets the environment through env(1)
    wanted = {k: v for k, v in env.items() if k.startswith(("BATON_", "PATH"))}
    tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "40", shlex.join(
        ["env", *[f"{k}={v}" for k, v in wanted.items()], "bash", "--norc", "--noprofile"]))
    try:
        tmux("send-keys", "-t", session, 'eval "$(baton completion bash)"', "Enter")
        tmux("send-keys", "-t", session, f"baton migrate {vm[:-3]}", "Tab")
        completed = pane_shows(session, f"baton migrate {vm}")  # (the pane drops end spaces)
        tmux("send-keys", "-t", session, "--", "--to h", "Tab", "Tab")
        hosts = pane_shows(session, "h3")
    finally:
        tmux("kill-session", "-t", session)
    assert f"baton migrate {vm}" in completed, completed
    assert {"h1", "h2", "h3"} <= set(hosts.split()), hosts
