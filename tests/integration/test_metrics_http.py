"""The coordinator's metrics over HTTP (--metrics-port) while a migration runs and after it, with
scripted fake agents on a real nats-server; the agent's side is proven in the lab
(tests/lab/test_metrics.py)."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from baton.coordinator.core import Coordinator
from baton.coordinator.main import CoordinatorConfig, run_coordinator
from baton.schemas.codec import decode_any, encode
from baton.schemas.migration import AbortRequest, MigrateAccepted, MigrateRequest, MigrationRecord
from baton.schemas.subjects import CoordinatorEndpoint as C
from baton.schemas.subjects import Subjects
from tests.integration.fake_agents import SHARED, Mesh, Script, domain

pytestmark = pytest.mark.integration
S = Subjects()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_coordinators_metrics_show_a_migration_running_then_its_end(nats_server):
    mesh = Mesh()
    mesh.add("h1").add_domain(domain("vm1", directory=SHARED))
    mesh.add("h2")
    port = free_port()
    async with mesh.serving(nats_server.url):
        config = CoordinatorConfig(nats_url=nats_server.url, grace_s=0.2, rollback_s=5,
                                   metrics_port=port)
        stop = asyncio.Event()
        started: asyncio.Future[Coordinator] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(run_coordinator(config, stop, started))
        nc = await nats.connect(nats_server.url)
        try:
            await asyncio.wait_for(started, 10)
            before = await asyncio.to_thread(scrape, port)
            mesh["h1"].script = Script(outcome="hang")
            reply = await nc.request(S.coordinator(C.MIGRATE), encode(
                MigrateRequest(vm="vm1", destination="h2")), timeout=15)
            migration_id = decode_any(reply.data, MigrateAccepted).migration_id
            async with asyncio.timeout(10):  # polling the fact, with a deadline
                while True:
                    during = await asyncio.to_thread(scrape, port)
                    if during[("baton_jobs_active", ())] >= 1:
                        break
                    await asyncio.sleep(0.05)
            reply = await nc.request(S.coordinator(C.ABORT), encode(
                AbortRequest(migration_id=migration_id)), timeout=40)
            assert isinstance(decode_any(reply.data, MigrationRecord), MigrationRecord)
            after = await asyncio.to_thread(scrape, port)
        finally:
            stop.set()
            await task
            await nc.drain()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert 1 == grew("baton_jobs_started_total", kind="migration")
    assert 1 == grew("baton_jobs_finished_total", kind="migration", outcome="aborted")
    assert 1 == grew("baton_job_duration_seconds_count", kind="migration", outcome="aborted")
    assert 1 == grew("baton_requests_total", endpoint="migrate", outcome="ok")
    assert 1 == grew("baton_requests_total", endpoint="abort", outcome="ok")
    assert (1, 0) == (during[("baton_jobs_active", ())], after[("baton_jobs_active", ())])
