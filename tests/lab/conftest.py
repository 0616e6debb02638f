"""Fixtures for lab tests: one 3-host lab (prefix ``bt``) per session, and guests.

The lab is brought up with ``--no-baton``: tests start their own nats-server and
agents (an agent runs inside a host with ``lab.exec_argv("h1", ...)``).
Teardown always runs ``deploy/lab down`` unless BATON_LAB_KEEP=1.
Without root or namespaces the tests are skipped, except under CI=true, where
a lab that cannot run is a failure.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.labctl import LAB_HOSTS, GuestFactory, Lab
from tests.lab.stack import BatonStack


def _lab_prefix() -> str:
    """``bt``, or BATON_TEST_LAB_PREFIX (a second test run, a CI rehearsal say, shares the machine).
    Under pytest-xdist each worker after the first gets a lab of its own: ``bt1``, ``bt2``..."""
    base = os.environ.get("BATON_TEST_LAB_PREFIX", "bt")
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    return base if worker == 0 else f"{base}{worker}"[:8]


LAB_PREFIX = _lab_prefix()
_counter = itertools.count(1)


# A real migration under TCG on 2 shared cores can take minutes; a hang still fails well before CI's limit.
LAB_TEST_TIMEOUT_S = 600


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: drives real libvirt + QEMU hosts in the lab (root, deploy/lab)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("lab") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(LAB_TEST_TIMEOUT_S))


def lab_unavailable() -> str | None:
    """Why this machine cannot run a lab, or None if it can."""
    if os.geteuid() != 0:
        return "lab tests need root"
    if not Path("/dev/net/tun").exists():
        return "lab tests need /dev/net/tun"
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"lab tests need {tool}"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"cannot create namespaces: {probe.stderr.decode().strip()}"
    return None


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A healthy 3-host lab ``bt`` (reused if already up), torn down at session end."""
    reason = lab_unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"lab unavailable under CI: {reason}")
        pytest.skip(reason)
    the_lab = Lab(LAB_PREFIX)
    try:
        if not the_lab.healthy(LAB_HOSTS):
            the_lab.down()
            the_lab.up(LAB_HOSTS, baton=False)
        yield the_lab
    finally:
        if os.environ.get("BATON_LAB_KEEP") != "1":
            the_lab.down()


@pytest.fixture
def guest(lab: Lab) -> Iterator[GuestFactory]:
    """``guest(host="h1", **options) -> name``: a uniquely named guest, removed after the test."""
    made: list[str] = []

    def make(host: str = "h1", **options: Any) -> str:
        name = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"
        made.append(name)
        lab.guest(name, host, **options)
        return name

    yield make
    for name in made:
        lab.guest_rm(name)


@pytest.fixture(scope="session")
def stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatonStack]:
    """nats-server on the lab bridge, an agent in every host, the coordinator (session-wide)."""
    the_stack = BatonStack(lab, tmp_path_factory.mktemp("baton-stack"))
    try:
        the_stack.start()
        yield the_stack
    finally:
        the_stack.stop()
