"""Leftovers a crash leaves outside any record (issue #11, part 4): a real agent, at its start,
removes the shared-storage probe tokens a coordinator killed mid-probe left in its pools, and
only the stale ones (a probe in flight takes seconds)."""

from __future__ import annotations

import os
import time

import pytest

from baton.agent.storage_probe import STALE_TOKEN_S, TOKEN_PREFIX

pytestmark = pytest.mark.lab


def test_a_restarted_agent_sweeps_stale_probe_tokens_and_keeps_fresh_ones(stack, lab):
    pool = lab.host_path("h1", "/var/lib/libvirt/images")
    stale, fresh = pool / f"{TOKEN_PREFIX}leftover0001", pool / f"{TOKEN_PREFIX}inflight0001"
    for token in (stale, fresh):
        token.write_text(token.name)
    old = time.time() - STALE_TOKEN_S - 60
    os.utime(stale, (old, old))
    try:
        stack.restart_agent("h1", crash=True)  # as after a host crash: it starts afresh
        lab._poll(lambda: not stale.exists(), 60, "the agent to sweep the stale token")
        assert fresh.exists()
        assert "probe_tokens_swept" in (stack.log_dir / "agent-h1.log").read_text()
    finally:
        for token in (stale, fresh):
            token.unlink(missing_ok=True)
