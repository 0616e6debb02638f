"""Prometheus metrics from the real coordinator and a real agent (``--metrics-port``), read with
curl during and after a real migration; the figures are checked against what happened (libvirt's
job, the record), not against each other."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.lab.migrations import final, start, wait_phase

pytestmark = pytest.mark.lab
AGENT_PORT = 9464  # inside h1's network namespace
COORDINATOR_PORT = 19464  # the coordinator runs in the root namespace


def curl(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = subprocess.run(["curl", "-sf", "--max-time", "5", url], check=True,
                          capture_output=True, text=True).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def at(scraped, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_coordinator_and_an_agent_serve_metrics_that_follow_a_migration(stack, lab, guest):
    stack.restart_coordinator(env={"BATON_METRICS_PORT": str(COORDINATOR_PORT)})
    stack.restart_agent("h1", "--metrics-port", str(AGENT_PORT))
    coordinator_url = f"http://{lab.bridge_ip}:{COORDINATOR_PORT}/metrics"
    agent_url = f"http://{lab.ip('h1')}:{AGENT_PORT}/metrics"
    try:
        vm = guest("h1", dirty_mb=16, dirty_rate_mib_s=8)  # more than 4 MiB/s carries
        before = curl(coordinator_url)
        migration_id = start(stack, vm, "--to", "h2", "--bandwidth", "4")
        wait_phase(stack, migration_id, {"migrating"})
        during, agent_during = curl(coordinator_url), curl(agent_url)
        stack.baton("bandwidth", migration_id, "256")
        rec = final(stack, migration_id)
        after, agent_after = curl(coordinator_url), curl(agent_url)
    finally:
        stack.restart_agent("h1")
        stack.restart_coordinator()
    assert "succeeded" == rec["phase"]
    assert (1.0, 0.0) == (at(during, "baton_jobs_active"), at(after, "baton_jobs_active"))
    assert 1 == at(after, "baton_jobs_finished_total", kind="migration", outcome="succeeded") \
        - at(before, "baton_jobs_finished_total", kind="migration", outcome="succeeded")
    assert 1 == at(after, "baton_migration_downtime_seconds_count") \
        - at(before, "baton_migration_downtime_seconds_count")
    assert rec["result"]["data_processed_bytes"] == at(after, "baton_job_bytes_total",
                                                        kind="migration")
    assert (1.0, 1.0) == (at(agent_during, "baton_agent_libvirt_connected"),
                          at(agent_during, "baton_agent_jobs_running"))
    assert 0.0 == at(agent_after, "baton_agent_jobs_running")
    assert 1 == at(agent_after, "baton_requests_total", endpoint="migration.start", outcome="ok")
    assert at(agent_after, "baton_requests_total", endpoint="migration.speed", outcome="ok") >= 1
