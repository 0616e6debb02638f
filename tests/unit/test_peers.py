"""A source agent sends a VM only to the URI its peer agent announces."""

from __future__ import annotations

import pytest

from baton.agent.peers import peer_checker
from baton.schemas.errors import BatonError, ErrorCode
from tests.integration.fake_agents import host_caps

H2_URI = "qemu+tcp://10.77.0.2/system"  # what host_caps("h2") announces


async def ask(host: str):
    if host == "gone":
        raise BatonError(ErrorCode.NOT_FOUND, "no responders")
    return host_caps(host)


async def test_the_uri_the_destination_agent_announces_is_accepted():
    assert None is await peer_checker("h1", ask)("h2", H2_URI)


@pytest.mark.parametrize("host, uri, code, words", [
    ("h2", "qemu+tcp://attacker.example/system", ErrorCode.FORBIDDEN, "not the migration URI"),
    ("h3", H2_URI, ErrorCode.FORBIDDEN, "not the migration URI"),
    (None, H2_URI, ErrorCode.FORBIDDEN, "must name the destination host"),
    ("h1", "qemu+tcp://10.77.0.1/system", ErrorCode.FORBIDDEN, "is this host"),
    ("gone", H2_URI, ErrorCode.UNAVAILABLE, "cannot confirm gone's migration URI"),
])
async def test_any_other_destination_is_refused(host, uri, code, words):
    with pytest.raises(BatonError) as refused:
        await peer_checker("h1", ask)(host, uri)
    assert code == refused.value.code
    assert words in refused.value.message


async def test_caps_that_claim_another_host_are_not_trusted():
    async def impostor(host: str):
        return host_caps("h9")  # announces h9's id
    with pytest.raises(BatonError) as refused:
        await peer_checker("h1", impostor)("h2", "qemu+tcp://10.77.0.9/system")
    assert ErrorCode.FORBIDDEN == refused.value.code
