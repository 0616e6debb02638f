"""The agent's Prometheus metrics, beside the request metrics every daemon serves (mesh/metrics.py):
whether it holds its libvirt connection, and the jobs it runs now."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Gauge

LIBVIRT_CONNECTED = Gauge("baton_agent_libvirt_connected",
                          "1 while the agent holds its libvirt connection, else 0")
JOBS_RUNNING = Gauge("baton_agent_jobs_running",
                     "Migrations (source side) and disk moves this agent runs now")


def watch(connected: Callable[[], bool], running: Callable[[], int]) -> None:
    """The gauges read these when scraped."""
    LIBVIRT_CONNECTED.set_function(lambda: 1.0 if connected() else 0.0)
    JOBS_RUNNING.set_function(running)
