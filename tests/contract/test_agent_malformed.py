"""Malformed and wrongly typed requests, on every agent endpoint of every implementation: each is
refused as ``bad_request`` with the micro error header, and the implementation keeps serving."""

from __future__ import annotations

import pytest

from baton.schemas.agent import AgentStatus, StatusRequest
from baton.schemas.codec import encode
from baton.schemas.errors import ErrorCode
from baton.schemas.subjects import AgentEndpoint as A
from tests.contract import test_agent_migration, test_agent_queries, test_agent_storage_move
from tests.contract.cases import answer_of, ask, refuses, replies

pytestmark = pytest.mark.integration

MALFORMED = [b"{not json", b"[1, 2]", b"\xff\xfe", b'{"kind": "agent.no_such.request"}']
WRONGLY_TYPED = {
    A.CAPS: b'{"refresh": "yes"}',
    A.CPU_COMPARE: b'{"domain": 5}',
    A.CPU_BASELINE: b'{"host_cpus": "<cpu/>"}',
    A.STORAGE_PROBE: b'{"paths": "/var/lib/libvirt/images"}',
    A.DOMAINS: b'{"names": "vm1"}',
    A.STATUS: b'{"kind": "agent.caps.request"}',  # another endpoint's request
    A.MIGRATION_PREPARE: b'{"migration_id": "m1", "vm": "vm1", "disks": [{"path": "/x/y"}]}',
    A.MIGRATION_START: b'{"migration_id": "m1", "vm": "vm1", "destination_uri": "x", "live": "y"}',
    A.MIGRATION_SPEED: b'{"migration_id": "m1", "vm": "vm1", "bandwidth_mib_s": "fast"}',
    A.MIGRATION_ABORT: b'{"migration_id": 7, "vm": "vm1"}',
    A.MIGRATION_CLEANUP: b'{"migration_id": "m1", "vm": "vm1", "remove_domain": 1}',
    A.MIGRATION_STATUS: b'{"migration_id": "m1", "vm": 7}',
    A.MIGRATION_PREDICT: b'{"vm": "vm1", "measure_s": 60}',
    A.STORAGE_MOVE: b'{"migration_id": "m1", "vm": "vm1", "disks": {}}',
    A.STORAGE_ABORT: b'{"migration_id": "m1", "vm": ["vm1"]}',
}


def test_every_agent_endpoint_has_contract_cases():
    modules = (test_agent_queries, test_agent_migration, test_agent_storage_move)
    covered = {case.endpoint for module in modules for case in module.CASES}
    assert set(A) == covered
    assert set(A) == set(WRONGLY_TYPED)


@pytest.mark.parametrize("endpoint", list(A), ids=str)
async def test_every_implementation_refuses_malformed_requests_as_the_real_agent_does(
        implementation, endpoint):
    bodies = [*MALFORMED, WRONGLY_TYPED[endpoint]]
    answers = [answer_of(await ask(implementation, endpoint, body)) for body in bodies]
    still_serving = answer_of(await ask(implementation, A.STATUS, encode(StatusRequest())))
    assert [refuses(ErrorCode.BAD_REQUEST)] * len(bodies) == answers
    assert replies(AgentStatus) == still_serving
