"""The ``baton`` command against a real nats-server and canned agents: output for people and
scripts, one clear stderr line and a documented exit code for every failure."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner, Result
from nats.aio.client import Client

from baton.cli.common import ExitCode
from baton.cli.main import cli
from baton.schemas import codec, timeouts
from baton.schemas.agent import HostCaps
from baton.schemas.errors import ErrorCode, ErrorReply
from baton.schemas.subjects import AgentEndpoint
from tests.support.canned_agent import SILENT, canned_caps, start_canned_agent
from tests.support.natsserver import NatsServer
from tests.unit.test_cli_client import unused_port


async def baton(*args: str, nats_url: str) -> Result:
    """Run ``baton ARGS`` in a worker thread (it runs its own event loop) with BATON_NATS set."""
    env: dict[str, str | None] = {"BATON_NATS": nats_url, "BATON_PREFIX": None, "COLUMNS": "200"}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


@pytest.fixture
async def two_agents(nats_client: Client) -> None:
    await start_canned_agent(nats_client, "h1")
    await start_canned_agent(nats_client, "h2")


def stderr_line(result: Result) -> str:
    """The single line a failing command writes to stderr."""
    lines = result.stderr.splitlines()
    assert 1 == len(lines), result.stderr
    return lines[0]


@pytest.mark.usefixtures("two_agents")
async def test_hosts_lists_every_agent_in_a_table(nats_server: NatsServer) -> None:
    result = await baton("hosts", nats_url=nats_server.url)
    assert ExitCode.OK == result.exit_code, result.stderr
    rows = [line for line in result.stdout.splitlines() if " h1 " in line or " h2 " in line]
    assert 2 == len(rows)
    assert all("Skylake-Client-IBRS" in row and "10.0.0" in row and "yes" in row for row in rows)


@pytest.mark.usefixtures("two_agents")
async def test_hosts_json_is_a_list_of_records(nats_server: NatsServer) -> None:
    result = await baton("hosts", "-o", "json", nats_url=nats_server.url)
    records = json.loads(result.stdout)
    assert ["h1", "h2"] == [record["host_id"] for record in records]
    assert {(True, "8.2.2", "0.1.0-test")} == {
        (r["libvirt_connected"], r["hypervisor_version"], r["agent_version"]) for r in records
    }
    assert all(record["heartbeat_age_s"] > 0 for record in records)


async def test_hosts_without_agents_exits_not_found(nats_server: NatsServer) -> None:
    result = await baton("hosts", nats_url=nats_server.url)
    assert (ExitCode.NOT_FOUND, "") == (result.exit_code, result.stdout)
    assert "no baton agents answer on NATS at" in stderr_line(result)


async def test_hosts_shows_an_agent_whose_status_fails(nats_client: Client, nats_server: NatsServer) -> None:
    down = ErrorReply(code=ErrorCode.UNAVAILABLE, message="libvirt down")
    await start_canned_agent(nats_client, "h1", {AgentEndpoint.STATUS: down})
    result = await baton("hosts", "-o", "json", nats_url=nats_server.url)
    [record] = json.loads(result.stdout)
    assert (None, "unavailable: libvirt down") == (record["libvirt_connected"], record["status_error"])


@pytest.mark.usefixtures("two_agents")
async def test_caps_json_is_the_agent_s_host_caps(nats_server: NatsServer) -> None:
    result = await baton("caps", "h1", "-o", "json", nats_url=nats_server.url)
    assert ExitCode.OK == result.exit_code, result.stderr
    assert canned_caps("h1") == codec.decode_reply(result.stdout.strip().encode(), HostCaps)


@pytest.mark.usefixtures("two_agents")
async def test_caps_shows_cpu_memory_bridges_networks_and_pools(nats_server: NatsServer) -> None:
    result = await baton("caps", "h2", nats_url=nats_server.url)
    assert ExitCode.OK == result.exit_code, result.stderr
    for expected in ("x86_64 Intel Skylake-Client-IBRS, 3 features", "6.0 GiB free of 16.0 GiB",
                     "br-lab", "9000", "virbr0", "/var/lib/libvirt/images", "60.0 GiB",
                     "qemu+tcp://h2/system"):  # fmt: skip
        assert expected in result.stdout


@pytest.mark.usefixtures("two_agents")
async def test_caps_for_a_host_without_agent_exits_not_found(nats_server: NatsServer) -> None:
    result = await baton("caps", "nosuch", nats_url=nats_server.url)
    assert ExitCode.NOT_FOUND == result.exit_code
    assert "no agent answers for host 'nosuch'" in stderr_line(result)
    assert "`baton hosts` lists the live ones" in stderr_line(result)


async def test_caps_from_an_agent_that_does_not_answer_exits_unavailable(
    nats_client: Client, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeouts, "AGENT_CAPS", 0.3)
    await start_canned_agent(nats_client, "h1", {AgentEndpoint.CAPS: SILENT})
    result = await baton("caps", "h1", nats_url=nats_server.url)
    assert ExitCode.UNAVAILABLE == result.exit_code
    assert "no agent answers for host 'h1' (no reply in time" in stderr_line(result)


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (ErrorCode.NOT_FOUND, ExitCode.NOT_FOUND),
        (ErrorCode.UNAVAILABLE, ExitCode.UNAVAILABLE),
        (ErrorCode.HYPERVISOR, ExitCode.FAILED),
        (ErrorCode.INTERNAL, ExitCode.INTERNAL),
        (ErrorCode.BAD_REQUEST, ExitCode.USAGE),
    ],
)
async def test_an_error_reply_prints_code_and_message_and_maps_the_exit_code(
    nats_client: Client, nats_server: NatsServer, code: ErrorCode, exit_code: ExitCode
) -> None:
    await start_canned_agent(nats_client, "h1", {AgentEndpoint.CAPS: ErrorReply(code=code, message="boom")})
    result = await baton("caps", "h1", nats_url=nats_server.url)
    assert exit_code == result.exit_code
    assert f"baton: agent on 'h1' answered {code}: boom" == stderr_line(result)


@pytest.mark.parametrize("args", [["hosts"], ["caps", "h1"], ["caps", "h1", "-o", "json"]])
async def test_unreachable_nats_exits_unavailable_with_one_clear_line(args: list[str]) -> None:
    url = f"nats://127.0.0.1:{unused_port()}"
    result = await baton(*args, nats_url=url)
    assert (ExitCode.UNAVAILABLE, "") == (result.exit_code, result.stdout)
    line = stderr_line(result)
    assert line.startswith(f"baton: cannot reach NATS at {url}: ")
    assert line.endswith("; is nats-server running? set --nats or BATON_NATS")


async def test_the_nats_option_overrides_the_environment(nats_server: NatsServer) -> None:
    result = await baton("hosts", "--nats", nats_server.url, nats_url="nats://127.0.0.1:1")
    assert ExitCode.NOT_FOUND == result.exit_code  # reached NATS; merely no agents


@pytest.mark.usefixtures("two_agents")
async def test_another_prefix_sees_none_of_these_agents(nats_server: NatsServer) -> None:
    result = await baton("hosts", "--prefix", "acme.baton", nats_url=nats_server.url)
    assert ExitCode.NOT_FOUND == result.exit_code


@pytest.mark.parametrize(
    "args", [["caps", "bad.host"], ["hosts", "--prefix", "a..b"], ["hosts", "-o", "yaml"], ["nosuch"]]
)
async def test_usage_errors_exit_2(args: list[str]) -> None:
    result = await baton(*args, nats_url="nats://127.0.0.1:1")
    assert ExitCode.USAGE == result.exit_code


@pytest.mark.parametrize("args", [["--help"], ["hosts", "--help"], ["caps", "--help"]])
def test_help_documents_environment_and_exit_codes(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert ExitCode.OK == result.exit_code
    for expected in ("BATON_NATS", "BATON_PREFIX", "4 unavailable", "3 not found"):
        assert expected in result.stdout


def test_command_help_shows_examples() -> None:
    assert "baton caps node1 -o json" in CliRunner().invoke(cli, ["caps", "--help"]).stdout


def test_the_module_runs_as_a_program_without_a_traceback() -> None:
    command: list[Any] = [sys.executable, "-m", "baton.cli.main", "hosts"]
    command += ["--nats", f"nats://127.0.0.1:{unused_port()}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert ExitCode.UNAVAILABLE == done.returncode
    assert "Traceback" not in done.stderr
    assert 1 == len(done.stderr.splitlines())
