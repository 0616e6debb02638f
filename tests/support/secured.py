"""A real nats-server with Baton's roles (nkeys, permissions) and TLS, for tests.

The keys come from ``baton-keys``' own code (``baton.cli.keys``), the certificates from
``deploy/lib/certs`` (the lab's CA tool), so a test exercises what an operator deploys.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baton.cli.keys import SEED_SUFFIX, authorization, ensure_seed, write_auth_conf
from baton.mesh.access import NatsAccess
from tests.support.natsserver import NatsServer

REPO = Path(__file__).resolve().parents[2]
CERTS = REPO / "deploy" / "lib" / "certs"


@dataclass(frozen=True)
class SecuredNats:
    """One server, or the nodes of a cluster (``url`` then lists them all, comma-separated)."""

    nodes: tuple[NatsServer, ...]
    keys: Path
    ca: Path | None

    @property
    def server(self) -> NatsServer:
        return self.nodes[0]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def seed(self, user: str) -> Path:
        return self.keys / f"{user}{SEED_SUFFIX}"

    def env(self, user: str | None) -> dict[str, str]:
        """The environment a Baton process of ``user``'s role needs (``BATON_NATS``...)."""
        env = {"BATON_NATS": self.url}
        if user:
            env["BATON_NATS_NKEY"] = str(self.seed(user))
        if self.ca:
            env["BATON_NATS_CA"] = str(self.ca)
        return env

    def flags(self, user: str) -> list[str]:
        """The same as daemon flags."""
        flags = ["--nats", self.url, "--nats-nkey", str(self.seed(user))]
        return flags + (["--nats-ca", str(self.ca)] if self.ca else [])

    def access(self, user: str | None) -> NatsAccess:
        """How ``user`` (``operator``, ``agent-h1``...; None: anonymous) connects."""
        return NatsAccess(url=self.url, nkey_file=str(self.seed(user)) if user else None,
                          ca_file=str(self.ca) if self.ca else None)


def server_config(auth_conf: Path, certs: Path | None) -> str:
    # nats-server resolves `include` relative to the config file, which lives elsewhere here.
    lines = [auth_conf.read_text()]
    if certs is not None:
        lines.append(f'tls {{ cert_file: "{certs}/nats.pem", key_file: "{certs}/nats-key.pem", '
                     "timeout: 2 }")
    return "\n".join(lines) + "\n"


def start_secured_nats(workdir: Path, hosts: Sequence[str] = ("h1", "h2"), *,
                       host: str = "127.0.0.1", tls: bool = True, prefix: str = "baton",
                       jetstream: bool = False, nodes: int = 1,
                       extra_users: Sequence[tuple[str, dict[str, Any]]] = ()) -> SecuredNats:
    """Keys for ``hosts``' agents and the other roles, a CA and a certificate for ``host``, and
    a started server that enforces them (stop it with ``.stop()``). ``nodes`` > 1: a cluster of
    that many servers with JetStream, as ``deploy/lab up --nats N`` runs it."""
    keys = workdir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    auth_conf = write_auth_conf(keys, list(hosts), prefix)
    if extra_users:  # users outside Baton's roles (a benchmark's baseline), with their own keys
        block = authorization(keys, list(hosts), prefix)
        users = list(block["users"])
        users += [{"nkey": ensure_seed(keys, name), "permissions": perms}
                  for name, perms in extra_users]
        block["users"] = users
        auth_conf.write_text(f"authorization: {json.dumps(block, indent=2)}\n")
    certs = None
    if tls:
        certs = workdir / "tls"
        subprocess.run([str(CERTS), str(certs), "nats", f"IP:{host}", "DNS:localhost"],
                       check=True)
    ca = certs / "ca.pem" if certs else None
    if nodes > 1:
        return _start_cluster(keys, ca, server_config(auth_conf, certs), host, nodes)
    server = NatsServer(host=host, jetstream=jetstream, config=server_config(auth_conf, certs))
    server.start()
    return SecuredNats(nodes=(server,), keys=keys, ca=ca)


def cluster_config(name: str, host: str, route_port: int, peers: Sequence[int], password: str,
                   certs: Path | None) -> str:
    """The cluster part of one node's config: routes to every peer, a route password (a node
    that does not know it cannot join), TLS on the routes when the clients have it."""
    routes = ", ".join(f'"nats-route://route:{password}@{host}:{port}"' for port in peers)
    tls = ""
    if certs is not None:
        tls = (f'tls {{ cert_file: "{certs}/nats.pem", key_file: "{certs}/nats-key.pem", '
               f'ca_file: "{certs}/ca.pem", timeout: 2 }}')
    return (f"server_name: {name}\n"
            f"cluster {{\n  name: baton\n  listen: \"{host}:{route_port}\"\n"
            f"  routes: [{routes}]\n"
            f"  authorization {{ user: route, password: \"{password}\" }}\n  {tls}\n}}\n")


def _start_cluster(keys: Path, ca: Path | None, base: str, host: str, size: int) -> SecuredNats:
    route_ports = [_free_port(host) for _ in range(size)]
    password = secrets.token_hex(16)
    certs = ca.parent if ca else None
    servers = [NatsServer(host=host, jetstream=True, config=base + cluster_config(
        f"n{i + 1}", host, port, [p for p in route_ports if p != port], password, certs))
        for i, port in enumerate(route_ports)]
    started: list[NatsServer] = []
    try:
        for server in servers:
            started.append(server.start())
    except BaseException:
        for server in started:
            server.stop()
        raise
    return SecuredNats(nodes=tuple(servers), keys=keys, ca=ca)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def secured_nats(workdir: Path, hosts: Sequence[str] = ("h1", "h2"), *, tls: bool = True,
                 prefix: str = "baton") -> Iterator[SecuredNats]:
    secured = start_secured_nats(workdir, hosts, tls=tls, prefix=prefix)
    try:
        yield secured
    finally:
        secured.stop()
