"""The Baton stack on a lab, as real processes: nats-server on the lab bridge, one ``baton-agent``
inside each host's namespaces (talking to that host's own libvirtd), and ``baton-coordinator``
in the root namespace. Every process is started here and stopped by its pid.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from baton.mesh.access import NatsAccess
from tests.lab.labctl import Lab
from tests.support.secured import SecuredNats, start_secured_nats

BIN = Path(sys.executable).parent
STOP_GRACE_S = 15


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class BatonStack:
    lab: Lab
    log_dir: Path
    hosts: tuple[str, ...] = ("h1", "h2", "h3")
    nats: SecuredNats | None = None  # auth and TLS on, as in `deploy/lab up`
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    coordinator: subprocess.Popen[bytes] | None = None
    standbys: list[subprocess.Popen[bytes]] = field(default_factory=list)
    nats_nodes: int = 1  # 3: a NATS cluster, the coordinator's buckets with three copies

    @property
    def url(self) -> str:
        assert self.nats is not None
        return self.nats.url

    def access(self, user: str = "operator") -> NatsAccess:
        """How a test signs in as ``user`` (``coordinator`` to call an agent's job endpoints)."""
        assert self.nats is not None
        return self.nats.access(user)

    def start(self, coordinator: bool = True) -> None:
        self.nats = start_secured_nats(self.log_dir / "nats", self.hosts, host=self.lab.bridge_ip,
                                       jetstream=True,  # the coordinator's record store
                                       nodes=self.nats_nodes)
        for host in self.hosts:
            self.start_agent(host)
        if coordinator and (BIN / "baton-coordinator").exists():
            self.coordinator = self._spawn("coordinator", self._coordinator_argv())
        self.wait_for_agents(self.hosts)
        if self.coordinator is not None:
            self.wait_for_coordinator()

    def start_agent(self, host: str, *extra: str) -> None:
        argv = self.lab.exec_argv(
            host, str(BIN / "baton-agent"), "--host-id", host, "--libvirt-uri", "qemu:///system",
            *self._nats().flags(f"agent-{host}"), "--migration-uri", self.lab.uri(host),
            "--state-dir", str(self.log_dir / f"state-{host}"), *extra)  # kept over restarts
        self.agents[host] = self._spawn(f"agent-{host}", argv)

    def restart_agent(self, host: str, *extra: str, crash: bool = False) -> None:
        """Restart one agent with other options (e.g. a memory reserve) and wait until it serves
        (``crash``: SIGKILL first, so it says and cleans nothing)."""
        agent = self.agents.pop(host)
        if crash:
            agent.kill()
            agent.wait()
        _stop(agent)
        self.start_agent(host, *extra)
        self.wait_for_agents((host,))

    def restart_coordinator(self, crash: bool = False, hold_at: str | None = None,
                            env: dict[str, str] | None = None) -> None:
        """Stop the coordinator (SIGTERM, or SIGKILL for ``crash``: no clean-up of any kind)
        and start a new one on the same NATS (``hold_at``: one that holds its migrations at that
        point, see coordinator/holds.py; ``env``: more of its environment, e.g. its limits)."""
        assert self.coordinator is not None and self.nats is not None
        if crash:
            self.coordinator.kill()
            self.coordinator.wait()
        _stop(self.coordinator)
        self.coordinator = self._spawn("coordinator", self._coordinator_argv(),
                                       ({"BATON_HOLD_AT": hold_at} if hold_at else {})
                                       | (env or {}))
        self.wait_for_coordinator()

    def _coordinator_argv(self) -> list[str]:
        return [str(BIN / "baton-coordinator"), *self._nats().flags("coordinator"),
                "--kv-replicas", str(self.nats_nodes)]

    def agents_alive(self) -> bool:
        return all(proc.poll() is None for proc in self.agents.values())

    def coordinator_alive(self) -> bool:
        return self.coordinator is not None and self.coordinator.poll() is None

    def _spawn(self, name: str, argv: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    env={**self.lab.popen_env(), **(env or {})})

    def wait_for_agents(self, hosts: tuple[str, ...], timeout: float = 60) -> None:
        """Poll each agent's status endpoint until it answers with libvirt connected."""
        deadline = time.monotonic() + timeout
        pending = set(hosts)
        while pending and time.monotonic() < deadline:
            pending = {h for h in pending if not self._agent_ready(h)}
            if pending:
                time.sleep(0.5)
        if pending:
            raise RuntimeError(f"agents never became ready: {sorted(pending)}; logs in {self.log_dir}")

    def wait_for_coordinator(self, timeout: float = 60) -> None:
        """Poll the coordinator's jobs endpoint until it answers: started is not serving."""
        deadline = time.monotonic() + timeout
        while self.baton("jobs", "-o", "json", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the coordinator never answered; log in {self.log_dir}")
            time.sleep(0.5)

    def _agent_ready(self, host: str) -> bool:
        out = self.baton("caps", host, "-o", "json", check=False)
        return out.returncode == 0 and json.loads(out.stdout).get("host_id") == host

    def _nats(self) -> SecuredNats:
        assert self.nats is not None
        return self.nats

    def baton_argv(self) -> list[str]:
        return [str(BIN / "baton")]

    def baton_env(self, user: str = "operator") -> dict[str, str]:
        """The environment the ``baton`` CLI needs to reach this stack as ``user``."""
        return {**self.lab.popen_env(), **self._nats().env(user)}

    def baton(self, *args: str, check: bool = True, timeout: float = 600, user: str = "operator",
              ) -> subprocess.CompletedProcess[str]:
        """Run the real ``baton`` CLI against this stack, signed in as ``user``."""
        proc = subprocess.run([*self.baton_argv(), *args], capture_output=True,
                              env=self.baton_env(user), text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"baton {' '.join(args)} -> {proc.returncode}\n{proc.stdout}"
                                 f"{proc.stderr}")
        return proc

    def start_standby(self) -> subprocess.Popen[bytes]:
        """A second coordinator on the same NATS: it waits for the leadership lease."""
        proc = self._spawn("coordinator-2", self._coordinator_argv())
        self.standbys.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.standbys:
            _stop(proc)
        if self.coordinator is not None:
            _stop(self.coordinator)
        for proc in self.agents.values():
            _stop(proc)
        if self.nats is not None:
            self.nats.stop()
