"""Work units and leases: claims are exclusive, stale leases are taken over, done units stay done."""

from __future__ import annotations

import os
import time
from array import array
from pathlib import Path

from slurm.units import (
    DatasetEntry,
    Leases,
    Unit,
    WorkTable,
    done_ids,
    leased_ids,
    split_units,
)

ENTRY = DatasetEntry(job=0, path="/d.jsonl", name="d", output="/o.parquet", config_hash="c1",
                     prompts=10, n=4)


def units(count: int) -> list[Unit]:
    return [Unit(f"u{i:03d}", 0, i, i + 1) for i in range(count)]


def test_units_are_fixed_ranges_addressed_by_content() -> None:
    digests = array("Q", range(100, 110))
    split = split_units(0, ENTRY, digests, 4)
    assert [(u.start, u.stop) for u in split] == [(0, 4), (4, 8), (8, 10)]
    assert split_units(0, ENTRY, digests, 4) == split  # the same work, the same ids
    other_prompts = split_units(0, ENTRY, array("Q", range(200, 210)), 4)
    other_config = split_units(0, ENTRY.__class__(**{**ENTRY.__dict__, "config_hash": "c2"}),
                               digests, 4)
    assert not {u.id for u in split} & ({u.id for u in other_prompts} | {u.id for u in other_config})


def test_work_table_round_trips(tmp_path: Path) -> None:
    table = WorkTable((ENTRY,), tuple(split_units(0, ENTRY, array("Q", range(10)), 3)))
    table.save(tmp_path)
    assert WorkTable.load(tmp_path) == table
    assert table.total_samples() == 40 and table.samples(table.units[-1]) == 4


def test_two_holders_never_claim_the_same_unit(tmp_path: Path) -> None:
    first = Leases(tmp_path, timeout=60)
    second = Leases(tmp_path, timeout=60)
    first.offer(units(5))
    second.offer(units(5))
    claimed = [first.claim(), second.claim(), first.claim(), second.claim(), first.claim()]
    ids = [u.id for u in claimed if u is not None]
    assert sorted(ids) == [u.id for u in units(5)]
    assert first.claim() is None and second.claim() is None


def test_done_units_are_skipped_and_finish_drops_the_lease(tmp_path: Path) -> None:
    holder = Leases(tmp_path, timeout=60)
    holder.offer(units(2))
    unit = holder.claim()
    assert unit is not None
    holder.finish(unit.id, {"rows": 4})
    assert done_ids(tmp_path) == {unit.id}
    assert not (tmp_path / "leases" / unit.id).exists()
    other = Leases(tmp_path, timeout=60)
    other.offer(units(2))
    remaining = other.claim()
    assert remaining is not None and remaining.id != unit.id
    assert other.claim() is None


def test_a_stale_lease_is_taken_over_and_its_old_holder_learns_it(tmp_path: Path) -> None:
    dead = Leases(tmp_path, timeout=5)
    dead.offer(units(1))
    unit = dead.claim()
    assert unit is not None
    live = Leases(tmp_path, timeout=5)
    live.offer(units(1))
    assert live.claim() is None  # fresh: not taken
    old = time.time() - 10
    os.utime(tmp_path / "leases" / unit.id, (old, old))
    live.offer(units(1))
    taken = live.claim()
    assert taken == unit and live.takeovers == 1
    assert dead.heartbeat() == [unit.id]  # the old holder stops working it
    dead.release(unit.id)  # and cannot remove the new holder's lease
    assert (tmp_path / "leases" / unit.id).exists()
    assert live.heartbeat() == []


def test_heartbeat_keeps_a_lease_fresh(tmp_path: Path) -> None:
    holder = Leases(tmp_path, timeout=5)
    holder.offer(units(1))
    unit = holder.claim()
    assert unit is not None
    old = time.time() - 4
    os.utime(tmp_path / "leases" / unit.id, (old, old))
    holder.heartbeat()
    assert time.time() - (tmp_path / "leases" / unit.id).stat().st_mtime < 2


def test_a_lease_whose_job_no_longer_runs_is_taken_over_at_once(tmp_path: Path) -> None:
    # Which runs of which jobs are going: what scheduler.holder_alive asks SLURM (pure logic here).
    running = {("7_0", 0), ("7_1", 0)}

    def alive(job: str, restart: int) -> bool:
        return (job, restart) in running

    crashed = Leases(tmp_path, timeout=300, job="7_0", restart=0, holder_alive=alive)
    crashed.offer(units(1))
    unit = crashed.claim()
    assert unit is not None
    other = Leases(tmp_path, timeout=300, job="7_1", restart=0, holder_alive=alive)
    other.offer(units(1))
    assert other.claim() is None  # its holder's job runs: the lease is live
    assert leased_ids(tmp_path, timeout=300, holder_alive=alive) == {unit.id: True}
    running.discard(("7_0", 0))  # 7_0 crashed, seconds ago (its lease's heartbeat is fresh)
    assert leased_ids(tmp_path, timeout=300, holder_alive=alive) == {unit.id: False}
    newcomer = Leases(tmp_path, timeout=300, job="8_0", restart=0, holder_alive=alive)
    newcomer.offer(units(1))
    assert newcomer.claim() == unit and newcomer.takeovers == 1


def test_the_same_task_requeued_takes_over_its_own_earlier_leases(tmp_path: Path) -> None:
    running = {("9_0", 1)}  # restart 1 runs now; restart 0 was killed

    def alive(job: str, restart: int) -> bool:
        return (job, restart) in running

    before = Leases(tmp_path, timeout=300, job="9_0", restart=0, holder_alive=alive)
    before.offer(units(1))
    unit = before.claim()
    after = Leases(tmp_path, timeout=300, job="9_0", restart=1, holder_alive=alive)
    after.offer(units(1))
    assert unit is not None and after.claim() == unit
    # Outside SLURM (no job in the lease) only the heartbeat counts.
    local = Leases(tmp_path / "local", timeout=300, holder_alive=alive)
    local.offer(units(1))
    assert local.claim() is not None
    assert leased_ids(tmp_path / "local", timeout=300, holder_alive=alive) == {unit.id: True}
