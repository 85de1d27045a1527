"""The simulator's disk (sim/disk.py): the durability contract, the disk faults, and a planted bug the swarm must catch.

Everything runs for real: real LMDB under the model, the real simulator, the production actors.
"""

from __future__ import annotations

import msgpack
import lmdb
import pytest

from petcd.actors.raft_actor import RaftActor
from petcd.sim import cluster as cluster_module
from petcd.sim.cluster import build
from petcd.sim.disk import PowerLoss, SimDisk, SimMvccStore, SimRaftLog
from petcd.sim.run import run
from petcd.store.errors import StoreError
from petcd.store.mvcc import MapFull
from petcd.store.records import CorruptRecord
from petcd.store.tables import StoreTxn
from tests.swarm import failed_verdicts


def _put(index: int, key: bytes, value: bytes = b"v") -> tuple[int, dict, bytes]:
    return index, {"op": "put", "key": key, "value": value}, msgpack.packb(["m1", "c0/client", index])


def test_a_power_loss_keeps_synced_commits_and_loses_unsynced_ones(tmp_path):
    """A synced MVCC store keeps all but its last commit, whose meta page only the next commit's sync
    would have carried (as its durable_applied_index said); an unsynced one loses everything."""
    disk = SimDisk("m1")
    synced = disk.open_mvcc(str(tmp_path / "synced"), map_size_bytes=1 << 24)
    unsynced = disk.open_mvcc(str(tmp_path / "unsynced"), map_size_bytes=1 << 24, sync=False)
    for store in (synced, unsynced):
        store.apply([_put(1, b"a"), _put(2, b"b")])
        store.apply([_put(3, b"c")])
    assert synced.durable_applied_index() == 2
    synced.close()
    unsynced.close()
    assert sorted(disk.power_loss()) == [str(tmp_path / "synced"), str(tmp_path / "unsynced")]
    synced = disk.open_mvcc(str(tmp_path / "synced"), map_size_bytes=1 << 24)
    unsynced = disk.open_mvcc(str(tmp_path / "unsynced"), map_size_bytes=1 << 24, sync=False)
    assert synced.applied_index() == 2 and synced.range({"key": b"b"})["count"] == 1 and synced.range({"key": b"c"})["count"] == 0
    assert unsynced.applied_index() == 0 and unsynced.range({"key": b"a"})["count"] == 0, "nothing of it was ever synced"
    # What the power loss undid comes back from the Raft log, applied again.
    assert synced.apply([_put(2, b"b"), _put(3, b"c")]) == [None, {"revision": 4}]
    assert synced.durable_applied_index() == 2, "reopening synced everything; the new commit's meta page is pending"
    synced.close()
    unsynced.close()


def test_the_mvcc_stores_last_commit_survives_once_a_later_one_or_a_sync_carried_its_meta_page(tmp_path):
    disk = SimDisk("m1")
    path = str(tmp_path / "s")

    def power_loss_and_reopen(store: SimMvccStore) -> SimMvccStore:
        store.close()
        disk.power_loss()
        return disk.open_mvcc(path, map_size_bytes=1 << 24)  # opening syncs what the file holds

    store = disk.open_mvcc(path, map_size_bytes=1 << 24)
    store.apply([_put(1, b"a")])
    store.apply([_put(2, b"b")])
    store.apply([_put(2, b"b")])  # nothing new: commits nothing, syncs nothing
    assert store.durable_applied_index() == 1
    store = power_loss_and_reopen(store)
    assert store.applied_index() == 1 and store.durable_applied_index() == 1
    store.apply([_put(2, b"b")])
    store.close()
    store = disk.open_mvcc(path, map_size_bytes=1 << 24)  # synced: entry 2 is durable now
    store.apply([_put(2, b"b")])  # nothing new: LMDB writes no meta page, so there is nothing to undo
    store = power_loss_and_reopen(store)
    assert store.applied_index() == 2, "a commit that wrote nothing left the synced one alone"
    store.apply([_put(3, b"c")])
    store.forget_raft_position()  # an explicit sync
    store = power_loss_and_reopen(store)
    assert store.range({"key": b"c"})["count"] == 1 and store.applied_index() == 0
    store.defragment()  # a new file (LMDB's compacting copy), synced
    store.apply([_put(1, b"d")])
    store = power_loss_and_reopen(store)
    assert (store.range({"key": b"c"})["count"], store.range({"key": b"d"})["count"], store.applied_index()) == (1, 0, 0)
    store.close()


def test_a_file_written_without_sync_is_lost_and_a_synced_one_kept(tmp_path):
    disk = SimDisk("m1")
    kept, lost = str(tmp_path / "kept"), str(tmp_path / "lost")
    disk.write_file(kept, b"one")
    disk.write_file(lost, b"old")
    disk.write_file(lost, b"new", sync=False)
    disk.write_file(kept, b"two", sync=False)
    disk.write_file(kept, b"three")  # synced: everything before it is durable too
    disk.power_loss()
    assert disk.read_file(kept) == b"three" and disk.read_file(lost) == b"old"


def test_power_loss_strikes_after_the_armed_write(tmp_path):
    disk = SimDisk("m1")
    store = disk.open_mvcc(str(tmp_path / "s"), map_size_bytes=1 << 24)
    disk.power_loss_after = 2
    store.apply([_put(1, b"a")])
    with pytest.raises(PowerLoss):
        store.apply([_put(2, b"b")])
    store.close()
    disk.power_loss()
    store = disk.open_mvcc(str(tmp_path / "s"), map_size_bytes=1 << 24)
    # The power went out after the second write, not the first: the first stays (the second's sync
    # carried its meta page); the second synced its pages, not its meta page, and is undone.
    assert store.applied_index() == 1 and store.range({"key": b"a"})["count"] == 1
    store.close()


def test_a_failed_fsync_raises_and_its_commit_is_not_durable(tmp_path):
    disk = SimDisk("m1")
    store = disk.open_mvcc(str(tmp_path / "s"), map_size_bytes=1 << 24)
    store.apply([_put(1, b"a")])
    disk.fail_next_sync = True
    with pytest.raises(lmdb.Error):
        store.apply([_put(2, b"b")])
    assert not disk.fail_next_sync, "one fsync fails, not every one after it"
    store.close()
    disk.power_loss()
    store = disk.open_mvcc(str(tmp_path / "s"), map_size_bytes=1 << 24)
    assert store.applied_index() == 0, "the failed sync was to carry the first commit's meta page too"
    store.close()


def test_a_full_disk_stops_the_store_and_applies_nothing_of_the_batch(tmp_path):
    """A full map is one member's disk, not the log: the store applies nothing and raises MapFull
    (the apply actor stops its member), and the batch applies once there is room again."""
    disk = SimDisk("m1")
    store = disk.open_mvcc(str(tmp_path / "s"), map_size_bytes=1 << 24)
    disk.full = True
    with pytest.raises(MapFull):
        store.apply([_put(1, b"a")])
    assert store.applied_index() == 0, "nothing of the batch is applied"
    with pytest.raises(OSError):
        disk.write_file(str(tmp_path / "f"), b"x")
    disk.full = False
    [resp] = store.apply([_put(1, b"a")])
    assert "error" not in resp and store.applied_index() == 1
    store.close()


def test_a_member_whose_fsync_fails_stops_and_the_cluster_carries_on(tmp_path):
    cluster = build(7, 3, str(tmp_path))
    rt = cluster.runtime
    cluster.add_clients(count=2, ops_per_client=200, keys=[b"k0", b"k1"])
    rt.run(until_ms=500)
    assert not cluster.clients_done()
    rt.disk("m1").fail_next_sync = True
    assert rt.run(until_ms=20_000, until=lambda: not rt.is_running("m1/raft")), "m1 applied nothing more?"
    assert rt.disk("m1").counts["fsync_failed"] == 1
    assert not any(rt.is_running(f"m1/{role}") for role in ("raft", "apply", "watch", "lease")), "every actor of m1 stopped"
    rt.restart_member("m1")
    assert rt.run(until_ms=60_000, until=cluster.clients_done)
    ok = [op for op in cluster.history if op.outcome == "ok"]
    assert ok, "the clients' operations went through"


# ------------------------------------------------------------------------------ planted bugs


class AppliedIndexFirst(SimMvccStore):
    """PLANTED BUG (tests only): the applied index is committed in a transaction of its own, before the
    batch's data. A power loss between the two loses the batch on that member, for good."""

    _claimed: int | None = None

    def _apply_batch(self, entries: list, compact_step_records: int, events: list[list] | None) -> list[dict | None]:
        before = self.applied_index()
        last = entries[-1][0]
        if last > before:
            with self._write() as txn:
                StoreTxn(txn, self._dbs).set_applied_index(last)
        self._claimed = before
        try:
            return super()._apply_batch(entries, compact_step_records, events)
        finally:
            self._claimed = None

    def _applied_before_batch(self, tables: StoreTxn) -> int:
        return self._claimed if self._claimed is not None else super()._applied_before_batch(tables)


class AckBeforeLogSync(SimRaftLog):
    """PLANTED BUG (tests only): the Raft actor acknowledges what it appended before the log is synced.

    As an fsync left to run in the background: each save is synced only when the next one starts,
    so the votes, append acks and commits that leave after a save speak of entries a power loss
    can still take away."""

    def __init__(self, disk: SimDisk, path: str, *, sync: bool) -> None:
        super().__init__(disk, path, sync=sync)
        self.sync_wanted = False
        self._written = ""  # the segment the last save went to

    def _append(self, data: bytes) -> None:
        if self._written:
            self._disk.file_synced(self._written)  # the previous save's fsync, done only now
        super()._append(data)
        self._written = self._segment_path


def compacts_log_to_applied(self: RaftActor, applied: int, durable: int) -> None:
    """PLANTED BUG (tests only): the Raft actor drops its log up to what the store applied, not what
    the store holds durably, and keeps nothing for followers: a power loss that undoes the store's
    last commit leaves entries nobody holds any more."""
    log = self._log
    assert log is not None
    if applied > log.snapshot_index:
        log.compact(min(applied, log.last_index))


SEEDS = range(1, 9)


def _disk_crash_swarm() -> dict[int, list[str]]:
    """What `petcd sim swarm --seeds 1-8 --faults disk-crash` runs: seed -> the failed verdicts."""
    return failed_verdicts(SEEDS, ["disk-crash"])


@pytest.fixture(scope="module")
def swarm_without_bugs() -> dict[int, list[str]]:
    return _disk_crash_swarm()


def test_the_disk_crash_swarm_passes_without_a_planted_bug(swarm_without_bugs):
    assert SimDisk.mvcc_class is SimMvccStore and SimDisk.raftlog_class is SimRaftLog
    assert not any(swarm_without_bugs.values()), f"the seeds fail without a bug: {swarm_without_bugs}"


@pytest.mark.parametrize("planted, attribute, verdict", [
    (AppliedIndexFirst, "mvcc_class", "applied state agreement"),
    (AckBeforeLogSync, "raftlog_class", "durability"),
], ids=["applied-index-apart-from-data", "ack-before-log-sync"])
def test_the_disk_crash_swarm_catches_a_planted_bug(monkeypatch, swarm_without_bugs, planted, attribute, verdict):
    monkeypatch.setattr(SimDisk, attribute, planted)
    caught = {seed: v for seed, v in _disk_crash_swarm().items() if v}
    assert caught, "the planted bug went unnoticed by every seed"
    assert any(verdict in v[0] for v in caught.values()), caught


def test_the_disk_crash_swarm_catches_a_log_compacted_past_the_durable_store(monkeypatch, swarm_without_bugs):
    monkeypatch.setattr(RaftActor, "_maybe_compact", compacts_log_to_applied)
    caught = {seed: v for seed, v in _disk_crash_swarm().items() if v}
    assert caught, "the planted bug went unnoticed by every seed"
    assert any("a committed entry is missing" in v[0] for v in caught.values()), caught


def test_a_disk_crash_run_is_reproduced_by_its_seed():
    a, b = (run(4, 3, 200, ["disk-crash", "fsync-fail", "crash"]) for _ in range(2))
    assert a.ok and a.digest == b.digest
    assert any("disk-crash" in line for line in a.fault_log)


def test_a_slow_disk_stretches_its_members_turns_and_a_very_slow_one_costs_the_leadership(tmp_path):
    from petcd.sim.faults import current_leader
    from petcd.sim.invariants import run_checked

    cluster = build(11, 3, str(tmp_path))
    rt = cluster.runtime
    rt.run(until_ms=2000)
    leader = current_leader(rt, cluster.members)
    assert leader is not None
    cluster.add_clients(count=1, ops_per_client=20, keys=[b"k0"])
    assert rt.run(until=cluster.clients_done, until_ms=rt.now_ms + 10_000)
    def write_ms(ops: list) -> list[int]:
        return [op.complete_ms - op.invoke_ms for op in ops if op.kind in ("put", "cas", "delete") and op.outcome == "ok"]

    seen = len(cluster.history)
    fast_ms = write_ms(cluster.history)
    rt.disk(leader).slow_ms = 50
    cluster.add_clients(count=1, ops_per_client=20, keys=[b"k1"])
    assert rt.run(until=cluster.clients_done, until_ms=rt.now_ms + 60_000)
    slow_ms = write_ms(cluster.history[seen:])
    assert fast_ms and slow_ms and min(slow_ms) >= 50 > max(fast_ms), (fast_ms, slow_ms)  # each write waits for the leader's fsync
    # An fsync slower than the election timeout: the followers stop hearing from the leader and elect another.
    rt.disk(leader).slow_ms = 3000
    cluster.add_clients(count=2, ops_per_client=20, keys=[b"k2"])
    checked = run_checked(cluster, rt.now_ms + 60_000, 0, until=lambda: current_leader(rt, cluster.members) not in (None, leader))
    assert checked.reached, "the others never elected a new leader"
    rt.disk(leader).slow_ms = 0
    assert run_checked(cluster, rt.now_ms + 60_000, 0, until=cluster.clients_done, checker=checked.checker).reached


# ---------------------------------------------------------------- a flipped byte (`corrupt`)
def test_a_flipped_byte_fails_its_checksum_on_every_read_and_is_never_applied_on(tmp_path):
    disk = SimDisk("m1")
    store = disk.open_mvcc(str(tmp_path / "s"), map_size_bytes=1 << 24)
    store.apply([_put(1, b"a", b"value-1"), _put(2, b"b")])
    flip = disk.flip_record_byte(_FirstRecord())
    assert flip is not None and disk.still_flipped(flip)
    with pytest.raises(StoreError) as refused:  # a read answers etcd's corrupt-cluster error, never the bytes
        store.range({"key": b"a"})
    assert (refused.value.grpc_code, refused.value.message) == ("DATA_LOSS", "etcdserver: corrupt cluster")
    with pytest.raises(CorruptRecord):  # a write that reads the record (its version) applies nothing
        store.apply([_put(3, b"a", b"value-2")])
    assert store.applied_index() == 2
    with pytest.raises(CorruptRecord):  # nor is the store handed to another member as a snapshot
        store.create_snapshot(str(tmp_path / "snap"))
    store.close()
    assert disk.unflip(flip) and not disk.still_flipped(flip)
    store = disk.open_mvcc(str(tmp_path / "s"), map_size_bytes=1 << 24)
    assert store.range({"key": b"a"})["kvs"][0]["value"] == b"value-1"
    store.close()


class _FirstRecord:
    """An rng that picks the first record, its first byte, and flips every bit of it."""

    def randrange(self, n: int) -> int:
        return 0

    def randint(self, a: int, b: int) -> int:
        return b


def _corrupt_outcomes(report) -> list[str]:
    """How each `corrupt` fault of the run ended (what follows the last ": " of its stop line)."""
    return [line.split(": ")[-1] for line in report.fault_log if " stop corrupt " in line]


_FLAGGED = ("flagged by the CORRUPT alarm", "stopped on the record's checksum")
_NOTHING_TO_FLAG = ("no record to corrupt", "the record was compacted away before any check")


def test_the_corruption_check_flags_a_flipped_byte_which_is_then_repaired():
    outcomes = []
    for seed in (1, 2, 3):
        report = run(seed, ops=300, faults=["corrupt"])
        assert report.ok, (seed, [v for v in report.verdicts if not v.ok])
        outcomes += _corrupt_outcomes(report)
    assert "flagged by the CORRUPT alarm" in outcomes
    assert all(o.endswith(_FLAGGED) or o in _NOTHING_TO_FLAG for o in outcomes), outcomes


def test_without_the_corruption_check_a_flipped_byte_goes_unflagged(monkeypatch):
    monkeypatch.setattr(cluster_module, "CORRUPT_CHECK_MS", 0)  # the planted bug: no periodic check
    monkeypatch.setattr(cluster_module, "AUTO_COMPACT_MS", 0)  # and no compaction reading every record
    verdicts = [v.checker for seed in (1, 2, 3) for v in run(seed, ops=300, faults=["corrupt"]).verdicts if not v.ok]
    assert "corruption" in verdicts


def test_without_the_corruption_check_a_compaction_meets_the_bad_checksum_and_stops_the_member(monkeypatch):
    monkeypatch.setattr(cluster_module, "CORRUPT_CHECK_MS", 0)
    outcomes = []
    for seed in (1, 2, 3):
        report = run(seed, ops=300, faults=["corrupt"])
        assert report.ok, (seed, [v for v in report.verdicts if not v.ok])
        outcomes += _corrupt_outcomes(report)
    assert any(o.endswith("stopped on the record's checksum") for o in outcomes), outcomes
