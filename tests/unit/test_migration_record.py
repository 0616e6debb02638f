"""A migration's first record (coordinator/runner.py ``new_record``)."""

from __future__ import annotations

import pytest

from baton.coordinator.runner import new_record
from baton.schemas.migration import MigrateRequest, Phase, StorageMode


def test_a_new_record_is_pending_from_the_source_to_the_destination_at_the_cap_asked():
    request = MigrateRequest(vm="vm1", destination="h2", storage=StorageMode.COPY,
                             bandwidth_mib_s=40)
    record = new_record("m1", request, "h1")
    assert ("m1", "vm1", "h1", "h2", Phase.PENDING, StorageMode.COPY, 40, request) == (
        record.migration_id, record.vm, record.source, record.destination, record.phase,
        record.storage, record.bandwidth_mib_s, record.request)
    assert record.created_at == record.updated_at


def test_a_request_without_a_destination_must_be_placed_first():
    with pytest.raises(ValueError) as refused:
        new_record("m1", MigrateRequest(vm="vm1"), "h1")
    assert "a migration record needs a destination: place the VM first" == str(refused.value)
