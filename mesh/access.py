"""How a process proves who it is to NATS and checks who NATS is: nkey or credentials, TLS CA.

Every Baton process (agent, coordinator, CLI) takes the same four settings, as flags and as
environment variables:

- ``BATON_NATS``        the server URL (``tls://`` for TLS), or several, comma-separated, for a
  NATS cluster: the client picks one and moves to another when it goes down;
- ``BATON_NATS_NKEY``   a file holding this client's nkey seed (``baton-keys`` makes one per role);
- ``BATON_NATS_CREDS``  a NATS credentials file (JWT + seed) instead, for decentralized auth;
- ``BATON_NATS_CA``     the CA that signed the server's certificate (verification stays on).

The server enforces the role (``baton.schemas.roles``); this module only presents the key.
With a key, the client's inbox is ``_INBOX.<its public key>``: the only inbox its role may
subscribe to, so no client can read another one's replies.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]

from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.roles import inbox_prefix

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
ENV_URL = "BATON_NATS"
ENV_NKEY = "BATON_NATS_NKEY"
ENV_CREDS = "BATON_NATS_CREDS"
ENV_CA = "BATON_NATS_CA"
_CREDS_SEED = re.compile(rb"-+BEGIN USER NKEY SEED-+\s*(\S+)\s*")


@dataclass(frozen=True)
class NatsAccess:
    """Where NATS is and how to get in; every field but ``url`` is optional."""

    url: str = DEFAULT_NATS_URL
    nkey_file: str | None = None
    creds_file: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.nkey_file and self.creds_file:
            raise BatonError(ErrorCode.BAD_REQUEST,
                             f"give either an nkey seed file ({ENV_NKEY}) or a credentials file "
                             f"({ENV_CREDS}), not both")

    @property
    def servers(self) -> list[str]:
        """Every server URL in ``url`` (one, or a comma-separated list of a cluster's nodes)."""
        found = [part.strip() for part in self.url.split(",") if part.strip()]
        if not found:
            raise BatonError(ErrorCode.BAD_REQUEST, f"no NATS server URL in {self.url!r} "
                             f"(set --nats / {ENV_URL}, e.g. tls://10.0.0.1:4222)")
        return found

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (besides the URL)."""
        options: dict[str, Any] = {}
        seed: bytes | None = None
        if self.nkey_file:
            seed = _read(self.nkey_file, "nkey seed").strip()
            options["nkeys_seed"] = self.nkey_file
        elif self.creds_file:
            found = _CREDS_SEED.search(_read(self.creds_file, "credentials"))
            if found is None:
                raise BatonError(ErrorCode.BAD_REQUEST,
                                 f"{self.creds_file} holds no user nkey seed: not a NATS "
                                 "credentials file")
            seed = found.group(1)
            options["user_credentials"] = self.creds_file
        if seed is not None:
            options["inbox_prefix"] = inbox_prefix(public_key(seed, self.nkey_file
                                                              or self.creds_file or ""))
        if self.ca_file:
            _read(self.ca_file, "CA certificate")
            options["tls"] = ssl.create_default_context(cafile=self.ca_file)
        return options


def public_key(seed: bytes, source: str = "") -> str:
    """The public key (``U...``) of a user nkey seed (``SU...``)."""
    try:
        pair = nkeys.from_seed(bytearray(seed))
        key = pair.public_key.decode()
        pair.wipe()
    except Exception as exc:  # nkeys raises its own types and binascii errors alike
        where = f" in {source}" if source else ""
        raise BatonError(ErrorCode.BAD_REQUEST,
                         f"not a valid nkey seed{where}: {exc or type(exc).__name__}") from None
    return str(key)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BatonError(ErrorCode.BAD_REQUEST,
                         f"cannot read the NATS {what} file {path}: {exc.strerror}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemons' NATS flags, each defaulting to its environment variable."""
    env = os.environ.get
    parser.add_argument("--nats", default=env(ENV_URL, DEFAULT_NATS_URL), metavar="URL",
                        help=f"NATS server URL, tls:// for TLS; comma-separated URLs for a "
                        f"cluster's nodes (env {ENV_URL}; default: %(default)s)")
    parser.add_argument("--nats-nkey", default=env(ENV_NKEY), metavar="FILE",
                        help=f"nkey seed file this daemon's role signs in with (env {ENV_NKEY})")
    parser.add_argument("--nats-creds", default=env(ENV_CREDS), metavar="FILE",
                        help=f"NATS credentials file, instead of --nats-nkey (env {ENV_CREDS})")
    parser.add_argument("--nats-ca", default=env(ENV_CA), metavar="FILE",
                        help=f"CA certificate that signed the NATS server's (env {ENV_CA})")


def from_arguments(args: argparse.Namespace) -> NatsAccess:
    return NatsAccess(url=args.nats, nkey_file=args.nats_nkey or None,
                      creds_file=args.nats_creds or None, ca_file=args.nats_ca or None)


def from_environment() -> NatsAccess:
    """What the environment variables alone say (for code without flags, e.g. completion)."""
    env = os.environ.get
    return NatsAccess(url=env(ENV_URL, DEFAULT_NATS_URL), nkey_file=env(ENV_NKEY) or None,
                      creds_file=env(ENV_CREDS) or None, ca_file=env(ENV_CA) or None)


class _TlsCloseNoise(logging.Filter):
    """asyncio warns on every TLS connection nats-py closes ("returning true from
    eof_received() has no effect when using ssl"): harmless, and one per CLI command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received()" not in record.getMessage()


def quiet_tls_close_noise() -> None:
    logging.getLogger("asyncio").addFilter(_TlsCloseNoise())
