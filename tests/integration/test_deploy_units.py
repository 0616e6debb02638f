"""deploy/systemd: the service units pass ``systemd-analyze verify`` (with the install prefix
pointed at this interpreter's, so the binaries they start exist), and the sample nats-server.conf is
accepted by the pinned nats-server with real keys and certificates beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from baton.cli.keys import write_auth_conf
from tests.support.natsserver import find_binary
from tests.support.secured import CERTS

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"


def installed(unit: str, where: Path) -> Path:
    """The unit as if Baton were installed where this interpreter runs (the units say
    /opt/baton/.venv/bin)."""
    path = where / unit
    path.write_text((UNITS / unit).read_text().replace("/opt/baton/.venv/bin",
                                                       str(Path(sys.executable).parent)))
    return path


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing under CI (Debian 12 has it in systemd)")
        pytest.skip("no systemd-analyze here")
    installed("baton-agent@.service", tmp_path)
    agent = tmp_path / "baton-agent@h1.service"  # an instance: verify needs a concrete name
    agent.write_text((tmp_path / "baton-agent@.service").read_text())
    coordinator = installed("baton-coordinator.service", tmp_path)
    verified = subprocess.run(["systemd-analyze", "verify", str(agent), str(coordinator)],
                              capture_output=True, text=True, check=False)
    assert (0, "") == (verified.returncode, verified.stderr)


def test_every_unit_is_hardened_and_reads_its_key_as_a_credential() -> None:
    for unit in ("baton-agent@.service", "baton-coordinator.service"):
        text = (UNITS / unit).read_text()
        settings = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line
                    and not line.startswith("#")}
        assert {"NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "Restart",
                "LoadCredential"} <= settings, unit
        assert "${CREDENTIALS_DIRECTORY}/nkey" in text, unit
    assert "DynamicUser=yes" in (UNITS / "baton-coordinator.service").read_text()


def test_the_sample_nats_config_is_accepted_by_the_pinned_server(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    write_auth_conf(keys, ["h1", "h2"], "baton")
    subprocess.run([str(CERTS), str(tmp_path / "tls"), "server", "DNS:localhost"], check=True,
                   capture_output=True)
    config = (UNITS / "nats-server.conf").read_text()
    for name, there in (("server.pem", "server.pem"), ("server-key.pem", "server-key.pem"),
                        ("ca.pem", "ca.pem")):
        config = config.replace(f"/etc/nats/{name}", str(tmp_path / "tls" / there))
    config = config.replace("/var/lib/nats/jetstream", str(tmp_path / "js"))
    (tmp_path / "nats-server.conf").write_text(config)
    shutil.copy(keys / "auth.conf", tmp_path / "auth.conf")
    tested = subprocess.run([str(find_binary()), "-t", "-c", str(tmp_path / "nats-server.conf")],
                            capture_output=True, text=True, check=False)
    assert 0 == tested.returncode, tested.stdout + tested.stderr
