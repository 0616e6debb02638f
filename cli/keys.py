"""``baton-keys``: the nkeys of Baton's roles and the nats-server config that enforces them.

    baton-keys init DIR --host h1 --host h2 [--prefix baton]

writes one nkey seed file per role (``DIR/coordinator.nk``, ``operator.nk``, ``monitor.nk``,
``agent-<host>.nk``; mode 0600, never overwritten: run it again with more ``--host`` to add
hosts) and ``DIR/auth.conf``, the ``authorization`` block for nats-server (public keys and
permissions only, no secret: ``include`` it from the server's config). The permissions are
``baton.schemas.roles``. Give each process only its own seed file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import nkeys  # type: ignore[import-untyped]

from baton.mesh.access import public_key
from baton.schemas.roles import Role, permissions, user_name
from baton.schemas.subjects import DEFAULT_PREFIX, Subjects, is_host_id

SEED_SUFFIX = ".nk"
AUTH_CONF = "auth.conf"


def new_seed() -> bytes:
    """A fresh user nkey seed (``SU...``) from 32 random bytes."""
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def ensure_seed(directory: Path, name: str) -> str:
    """The public key of ``name``'s seed in ``directory``, made (0600, exclusively) if absent."""
    path = directory / f"{name}{SEED_SUFFIX}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return public_key(path.read_bytes().strip(), str(path))
    seed = new_seed()
    with os.fdopen(fd, "wb") as out:
        out.write(seed + b"\n")
    return public_key(seed)


def authorization(directory: Path, hosts: list[str], prefix: str) -> dict[str, object]:
    """The ``authorization`` block: one user per role, each with its role's permissions."""
    roles: list[tuple[Role, str | None]] = [(Role.COORDINATOR, None), (Role.OPERATOR, None),
                                            (Role.MONITOR, None)]
    roles += [(Role.AGENT, host) for host in hosts]
    users = []
    for role, host in roles:
        key = ensure_seed(directory, user_name(role, host))
        users.append({"nkey": key, "permissions": permissions(role, key, prefix=prefix,
                                                              host=host)})
    return {"users": users}


def write_auth_conf(directory: Path, hosts: list[str], prefix: str) -> Path:
    block = authorization(directory, hosts, prefix)
    path = directory / AUTH_CONF
    temporary = path.with_suffix(".tmp")
    # nats-server's config syntax accepts JSON values.
    temporary.write_text("# written by baton-keys: roles of Baton's NATS users (public keys only)\n"
                         f"authorization: {json.dumps(block, indent=2)}\n")
    temporary.replace(path)
    return path


def _check_hosts(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    for host in value:
        if not is_host_id(host):
            raise click.BadParameter(f"{host!r} is not a host id (letters, digits, '-', '_')")
    return sorted(set(value))


def _check_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        Subjects(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Make the NATS keys of Baton's roles and the server config that enforces them."""


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", "hosts", multiple=True, required=True, callback=_check_hosts,
              help="A hypervisor host id that runs baton-agent (repeat for each).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, callback=_check_prefix,
              help="Subject prefix of this Baton.")
def init(directory: Path, hosts: list[str], prefix: str) -> None:
    """Make (or complete) the keys in DIRECTORY and write DIRECTORY/auth.conf.

    Existing seed files are kept, so running it again with one more --host adds that host's
    agent and leaves every other key as it was. Include auth.conf from nats-server's config
    (`include auth.conf`) and reload the server.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = write_auth_conf(directory, hosts, prefix)
    click.echo(f"{path}: {3 + len(hosts)} users (coordinator, operator, monitor, "
               f"{', '.join('agent-' + h for h in hosts)})")
    click.echo(f"seeds: {directory}/<role>{SEED_SUFFIX} — give each process only its own "
               "(BATON_NATS_NKEY)")


if __name__ == "__main__":
    sys.exit(main())
