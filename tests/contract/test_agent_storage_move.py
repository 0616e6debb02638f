"""The agent's storage-move endpoints (storage.move, storage.abort): every implementation answers
each request with the real agent's reply type, error code and facts.

libvirt's test driver has no block-job API, so only what the real agent decides before it asks
libvirt to copy is covered: ``storage.move`` answers (or refuses) first, and the copy then fails
in the background; ``storage.abort`` only where it refuses before reading a block job (an abort
naming the disks of a move this agent forgot is answered ``unsupported`` by the test driver).
"""

from __future__ import annotations

from typing import Any

import pytest

from baton.schemas.errors import ErrorCode
from baton.schemas.storage import (
    AgentStorageAbortRequest,
    AgentStorageMoveReply,
    AgentStorageMoveRequest,
    DiskMove,
)
from baton.schemas.subjects import AgentEndpoint as A
from tests.contract.cases import Case, answer, refuses, replies
from tests.contract.implementations import MISSING_DIR, Implementation

pytestmark = pytest.mark.integration


def disk(a: Implementation, **changes: Any) -> DiskMove:
    """vm1's disk, from its pool into the other pool."""
    fields = {"target": "vda", "source_path": a.disk("vm1"), "format": "qcow2",
              "destination_path": f"{a.other_pool_dir}/vm1.qcow2"} | changes
    return DiskMove(**fields)


def move(a: Implementation, vm: str = "vm1", **changes: Any) -> AgentStorageMoveRequest:
    return AgentStorageMoveRequest(migration_id="m1", vm=vm, disks=[disk(a, **changes)])


MOVED = (A.STORAGE_MOVE, move)
REFUSED = refuses(ErrorCode.PRECONDITION_FAILED)

CASES = [
    # --- storage.move: answered before libvirt's block copy -------------------------------------
    Case("storage.move", A.STORAGE_MOVE, move, replies(AgentStorageMoveReply, "m1"),
         facts=lambda r: r.migration_id),
    Case("storage.move-outside-every-pool", A.STORAGE_MOVE,  # libvirt would write it as root
         lambda a: move(a, destination_path=f"{a.outside_dir}/vm1.qcow2"),
         refuses(ErrorCode.FORBIDDEN)),
    Case("storage.move-no-disks", A.STORAGE_MOVE,
         lambda a: AgentStorageMoveRequest(migration_id="m1", vm="vm1", disks=[]),
         refuses(ErrorCode.BAD_REQUEST)),
    Case("storage.move-unknown-vm", A.STORAGE_MOVE, lambda a: move(a, "nosuch"),
         refuses(ErrorCode.NOT_FOUND)),
    Case("storage.move-shut-off-vm", A.STORAGE_MOVE,
         lambda a: move(a, "vmoff", source_path=a.disk("vmoff"),
                        destination_path=f"{a.other_pool_dir}/vmoff.qcow2"), REFUSED),
    Case("storage.move-stale-source", A.STORAGE_MOVE,
         lambda a: move(a, source_path=f"{a.pool_dir}/old.qcow2"), REFUSED),
    Case("storage.move-unknown-target", A.STORAGE_MOVE, lambda a: move(a, target="vdz"), REFUSED),
    Case("storage.move-other-format", A.STORAGE_MOVE, lambda a: move(a, format="raw"), REFUSED),
    Case("storage.move-onto-an-existing-file", A.STORAGE_MOVE,
         lambda a: move(a, destination_path=a.disk("vm2")), REFUSED),
    Case("storage.move-into-a-missing-directory", A.STORAGE_MOVE,
         lambda a: move(a, destination_path=f"{MISSING_DIR}/vm1.qcow2"), REFUSED),
    Case("storage.move-to-a-relative-path", A.STORAGE_MOVE,  # refused: no directory "" exists
         lambda a: move(a, destination_path="vm1.qcow2"), REFUSED),
    Case("storage.move-without-disks", A.STORAGE_MOVE,
         lambda a: b'{"migration_id": "m1", "vm": "vm1"}', refuses(ErrorCode.BAD_REQUEST),
         canned=True),
    Case("storage.move-zero-bandwidth", A.STORAGE_MOVE,
         lambda a: b'{"migration_id": "m1", "vm": "vm1", "disks": [], "bandwidth_mib_s": 0}',
         refuses(ErrorCode.BAD_REQUEST), canned=True),
    # --- storage.abort --------------------------------------------------------------------------
    Case("storage.abort-nothing-running", A.STORAGE_ABORT,
         lambda a: AgentStorageAbortRequest(migration_id="m1", vm="vm1"),
         refuses(ErrorCode.NOT_FOUND)),
    Case("storage.abort-forgotten-move-of-unknown-vm", A.STORAGE_ABORT,
         lambda a: AgentStorageAbortRequest(migration_id="m1", vm="nosuch", disks=[disk(a)]),
         refuses(ErrorCode.FORBIDDEN)),
    Case("storage.abort-copies-this-agent-never-made", A.STORAGE_ABORT,
         lambda a: AgentStorageAbortRequest(migration_id="m1", vm="vm1", disks=[disk(a)]),
         refuses(ErrorCode.FORBIDDEN)),
    Case("storage.abort-another-vms-move", A.STORAGE_ABORT,
         lambda a: AgentStorageAbortRequest(migration_id="m1", vm="vm2"),
         refuses(ErrorCode.NOT_FOUND), before=(MOVED,)),
    Case("storage.abort-empty-vm-name", A.STORAGE_ABORT,
         lambda a: b'{"migration_id": "m1", "vm": ""}', refuses(ErrorCode.BAD_REQUEST),
         canned=True),
]


async def test_every_implementation_answers_a_storage_move_request_as_the_real_agent_does(
        implementation, case):
    assert case.expected == await answer(implementation, case)
