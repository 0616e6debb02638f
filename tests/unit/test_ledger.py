"""The agent's ledger (agent/ledger.py) and the ownership rules read from it (agent/ownership.py)."""

from __future__ import annotations

import pytest

from baton.agent import ownership
from baton.agent.ledger import Entry, Ledger
from baton.coordinator.store import MemoryStore
from baton.schemas.agent import StoragePool
from baton.schemas.base import utc_now
from baton.schemas.migration import MigrateRequest, MigrationRecord, Phase, StorageMode


def test_a_ledger_refuses_a_job_id_that_is_not_a_migration_id(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.open()
    with pytest.raises(ValueError) as caught:
        ledger.put(Entry(migration_id="../../etc/cron.d/x", vm="vm1"))
    assert "not a migration id: '../../etc/cron.d/x'" == str(caught.value)
    assert [] == list(tmp_path.iterdir())


def test_an_inactive_pools_directory_is_no_place_for_a_disk(tmp_path):
    active, inactive = tmp_path / "active", tmp_path / "inactive"
    active.mkdir()
    inactive.mkdir()
    pools = [StoragePool(name="a", type="dir", target_path=str(active), active=True),
             StoragePool(name="i", type="dir", target_path=str(inactive), active=False),
             StoragePool(name="n", type="rbd", target_path=None, active=True)]
    assert [str(inactive / "x.qcow2")] == ownership.outside_pools(
        [str(active / "x.qcow2"), str(inactive / "x.qcow2")], pools)


def record(migration_id: str) -> MigrationRecord:
    now = utc_now()
    return MigrationRecord(migration_id=migration_id, vm="vm1", source="h1", destination="h2",
                           phase=Phase.PENDING, storage=StorageMode.AUTO,
                           request=MigrateRequest(vm="vm1", destination="h2"),
                           created_at=now, updated_at=now)


async def test_the_memory_store_gives_back_what_it_was_given():
    store = MemoryStore()
    await store.put(record("m1"))
    await store.put(record("m2"))
    assert ["m1", "m2"] == [r.migration_id for r in await store.load()]


def test_a_probe_looks_at_a_pool_its_files_and_the_hosts_disks_only(tmp_path):
    pool, other = tmp_path / "pool", tmp_path / "elsewhere"
    pool.mkdir()
    other.mkdir()
    (pool / "escape").symlink_to(other / "secret")  # a link in a pool leads out of it
    disk = other / "vm1.qcow2"
    paths = [str(pool), str(pool / "vm.qcow2"), str(disk), str(pool / "escape"),
             str(other / "x"), str(pool / ".." / "elsewhere" / "x"), str(other)]
    assert [str(pool / "escape"), str(other / "x"), str(pool / ".." / "elsewhere" / "x"),
            str(other)] == ownership.outside_storage(paths, [str(pool)], [str(disk)])
