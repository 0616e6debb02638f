"""Prometheus metrics every Baton daemon serves on ``--metrics-port`` (the official
prometheus-client, its default registry, its HTTP server on a thread of its own).

Shared here: the NATS request metrics, recorded by the one request wrapper (baton.mesh.rpc) for
every endpoint of every service. The coordinator's and the agent's own metrics live beside them
(coordinator/metrics.py, agent/metrics.py). The names are pinned by tests/unit/test_metrics.py and
listed in the README.
"""

from __future__ import annotations

import argparse
import os
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Histogram, start_http_server

REQUESTS = Counter("baton_requests", "NATS requests served, by endpoint and outcome (ok, or the "
                   "error code of the reply)", ["endpoint", "outcome"])
REQUEST_SECONDS = Histogram("baton_request_seconds", "Time to serve a NATS request, by endpoint",
                            ["endpoint"])


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        default=os.environ.get("BATON_METRICS_PORT"),
                        help="serve Prometheus metrics over HTTP on this port, all addresses "
                        "(env BATON_METRICS_PORT; default: not served)")


class MetricsServer:
    """The HTTP endpoint (/metrics), on prometheus-client's thread, stopped with the daemon."""

    def __init__(self, port: int, address: str = "") -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=address or "0.0.0.0")

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
