"""The Raft log's write-ahead log on a real disk: what it keeps, what a torn write costs, what it refuses."""

from __future__ import annotations

import glob
import os
import random
import struct

import lmdb
import msgpack
import pytest

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.sim.disk import SimDisk
from petcd.store import raftlog
from petcd.store.raftlog import ConfState, Entry, HardState, RaftLog, RaftLogError
from tests.servers import start_petcd


def _segments(path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".wal"))


def _entries(log: RaftLog) -> list[tuple[int, int, bytes]]:
    return [(e.index, e.term, e.data) for e in log.entries(log.first_index, log.last_index + 1)]


def _state(log: RaftLog) -> tuple:
    return (log.hard_state, log.conf_state, log.members, log.cluster_id, log.snapshot_index, log.snapshot_term,
            _entries(log), log.conf_at(log.last_index))


def test_a_synced_log_keeps_everything_across_a_reopen(tmp_path):
    path = str(tmp_path / "raft")
    log = RaftLog(path)
    log.save(HardState(1, "", 2), [Entry(1, 1, b"a", raftlog.ENTRY_CONF), Entry(2, 1, b"b")], ConfState(("m1",)),
             {"m1": {"name": "one"}}, 77, conf_index=1)
    log.save(HardState(2, "m1", 2), [Entry(3, 2, b"c")])
    log.save(None, [Entry(3, 3, b"C"), Entry(4, 3, b"d")])  # replaces entry 3
    before = _state(log)
    log.close()
    [segment] = _segments(path)
    assert os.path.getsize(os.path.join(path, segment)) == raftlog.SEGMENT_BYTES, "a synced segment is preallocated"
    log = RaftLog(path)
    assert _state(log) == before
    assert _entries(log) == [(1, 1, b"a"), (2, 1, b"b"), (3, 3, b"C"), (4, 3, b"d")]
    assert log.entries(1, 2)[0].kind == raftlog.ENTRY_CONF
    log.save(None, [Entry(5, 3, b"e")])  # appends after the valid records, not at the file's end
    log.close()
    assert _entries(RaftLog(path))[-1] == (5, 3, b"e")


def _log_with_three_saves(path: str) -> tuple[RaftLog, int]:
    """A log whose last record (entry 3) starts at the returned offset of its only segment."""
    log = RaftLog(path, sync=False)
    log.save(HardState(1, "a", 0), [Entry(1, 1, b"one")])
    log.save(None, [Entry(2, 1, b"two")])
    offset = log._offset
    log.save(None, [Entry(3, 1, b"three" * 300)])
    log.close()
    return log, offset


def test_a_torn_last_record_is_cut_off_and_its_remnant_zeroed(tmp_path):
    path = str(tmp_path / "raft")
    _, offset = _log_with_three_saves(path)
    segment = os.path.join(path, _segments(path)[0])
    size = os.path.getsize(segment)
    with open(segment, "r+b") as f:
        f.truncate(offset + (size - offset) // 2)  # the last append reached the disk in part
    log = RaftLog(path, sync=False)
    assert _entries(log) == [(1, 1, b"one"), (2, 1, b"two")]
    assert os.path.getsize(segment) == offset, "the torn bytes are gone"
    log.save(None, [Entry(3, 2, b"x")])
    log.close()
    assert _entries(RaftLog(path, sync=False)) == [(1, 1, b"one"), (2, 1, b"two"), (3, 2, b"x")]


def test_a_torn_record_with_a_zero_sector_is_cut_off_even_with_bytes_after_it(tmp_path):
    """Writes not synced reach the disk in any order: the record after a torn one may be whole."""
    path = str(tmp_path / "raft")
    _, offset = _log_with_three_saves(path)
    segment = os.path.join(path, _segments(path)[0])
    with open(segment, "r+b") as f:
        data = bytearray(f.read())
        sector = (offset // 512 + 1) * 512
        data[sector:sector + 512] = bytes(512)
        f.seek(0)
        f.write(bytes(data) + raftlog.encode_record({"e": [[4, 1, b"stray", 0]]}))
    log = RaftLog(path, sync=False)
    assert log.last_index == 2
    log.save(None, [Entry(3, 2, b"x")])
    log.close()
    assert _entries(RaftLog(path, sync=False))[-1] == (3, 2, b"x"), "no stray record follows the new one"


def test_a_damaged_record_that_is_not_a_torn_write_stops_the_open(tmp_path):
    path = str(tmp_path / "raft")
    _, offset = _log_with_three_saves(path)
    segment = os.path.join(path, _segments(path)[0])
    with open(segment, "r+b") as f:
        f.seek(offset - 2)  # inside the second record, which the third follows
        byte = f.read(1)
        f.seek(offset - 2)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(RaftLogError, match="is damaged at offset"):
        RaftLog(path, sync=False)


def test_segments_roll_over_and_compaction_removes_those_it_emptied(tmp_path):
    path = str(tmp_path / "raft")
    log = RaftLog(path, sync=False, segment_bytes=4096)
    log.save(HardState(1, "a", 0), [], ConfState(("a",)), {"a": {}}, 5, conf_index=0)
    for index in range(1, 201):
        log.save(HardState(1, "a", index - 1), [Entry(index, 1, b"v" * 100)])
    count = len(_segments(path))
    assert count > 3, _segments(path)
    log.compact(150)
    assert 1 < len(_segments(path)) < count, "segments holding only compacted entries are gone"
    before = _state(log)
    log.close()
    log = RaftLog(path, sync=False, segment_bytes=4096)
    assert _state(log) == before
    assert (log.first_index, log.last_index, log.term(150)) == (151, 200, 1)
    with pytest.raises(IndexError):
        log.term(149)
    log.reset_to_snapshot(500, 3, ConfState(("a", "b")), {"a": {}, "b": {}}, HardState(3, "", 500))
    assert len(_segments(path)) == 1
    log.save(None, [Entry(501, 3, b"after")])
    log.close()
    log = RaftLog(path, sync=False)
    assert (log.snapshot_index, log.snapshot_term, _entries(log)) == (500, 3, [(501, 3, b"after")])
    assert log.conf_at(500)[0].voters == ("a", "b") and log.conf_at(499) is None
    assert log.cluster_id == 5


def test_a_power_loss_in_the_simulator_keeps_unsynced_appends_whole_or_not_at_all(tmp_path):
    """Whatever the simulated power loss keeps of appends not synced (none, all, some sectors), the
    log opens with every synced record, and each unsynced one whole or not at all."""
    outcomes = set()
    for seed in range(24):
        disk = SimDisk("m1", random.Random(seed))
        path = str(tmp_path / f"raft{seed}")
        log = disk.open_raftlog(path)
        log.save(HardState(1, "a", 0), [Entry(1, 1, b"synced" * 100)])
        log.sync_wanted = False  # as if the next appends' fsyncs had not run yet
        log.save(None, [Entry(2, 1, b"two" * 300)])
        log.save(HardState(2, "b", 1), [Entry(3, 2, b"three" * 300)])
        log.close()
        assert disk.power_loss() == [os.path.join(path, _segments(path)[0])]
        log = disk.open_raftlog(path)
        kept = _entries(log)
        assert kept[0] == (1, 1, b"synced" * 100)
        assert kept[1:] in ([], [(2, 1, b"two" * 300)], [(2, 1, b"two" * 300), (3, 2, b"three" * 300)]), seed
        assert log.hard_state == (HardState(2, "b", 1) if len(kept) == 3 else HardState(1, "a", 0))
        log.save(None, [Entry(len(kept) + 1, 3, b"after")])  # appends go on after what was kept
        log.close()
        assert _entries(RaftLog(path, sync=False))[-1] == (len(kept) + 1, 3, b"after")
        outcomes.add(len(kept))
    assert outcomes == {1, 2, 3}, "the seeds drew every shape"


def test_a_failed_fsync_leaves_no_record_a_restart_would_read_back(tmp_path):
    """Linux may mark a failed fsync's pages clean: the record must not stay in the file, or a
    restart would take it for durable."""
    disk = SimDisk("m1")
    path = str(tmp_path / "raft")
    log = disk.open_raftlog(path)
    log.save(HardState(1, "", 0), [Entry(1, 1, b"one")])
    disk.fail_next_sync = True
    with pytest.raises(OSError, match="fsync failure"):
        log.save(HardState(2, "m2", 0), [])
    log.close()
    log = disk.open_raftlog(path)  # a restart without a power loss
    assert log.hard_state == HardState(1, "", 0), "the vote whose fsync failed is gone"
    log.save(None, [Entry(2, 1, b"two")])
    log.close()
    disk.power_loss()
    log = disk.open_raftlog(path)
    assert (log.hard_state, _entries(log)) == (HardState(1, "", 0), [(1, 1, b"one"), (2, 1, b"two")])
    log.close()


def test_a_second_process_cannot_open_a_log_in_use(tmp_path):
    path = str(tmp_path / "raft")
    log = RaftLog(path)
    with pytest.raises(RaftLogError, match="in use by another process"):
        RaftLog(path)
    log.close()
    RaftLog(path).close()


def test_a_conversion_cut_short_after_its_segment_is_finished_on_the_next_start(tmp_path):
    path = str(tmp_path / "raft")
    _legacy_lmdb_log(path)
    raftlog.convert_legacy_lmdb(path, sync=True)
    lmdb.open(path, max_dbs=4).close()  # as if the crash came before the LMDB files were removed
    log = RaftLog(path)
    assert _entries(log)[-1] == (12, 4, b"e12")
    assert not os.path.exists(os.path.join(path, "data.mdb"))
    log.close()


def _legacy_lmdb_log(path: str) -> None:
    """A Raft log as petcd kept it in LMDB before the WAL."""
    os.makedirs(path)
    env = lmdb.open(path, max_dbs=4)
    key = struct.Struct(">Q").pack
    with env.begin(write=True) as txn:
        meta, log_db, confs = (env.open_db(n, txn=txn) for n in (b"meta", b"log", b"confs"))
        txn.put(b"hard_state", msgpack.packb((4, "m1", 11)), db=meta)
        txn.put(b"snapshot", msgpack.packb((9, 3)), db=meta)
        txn.put(b"conf", msgpack.packb((["m1", "m2"], [])), db=meta)
        txn.put(b"members", msgpack.packb({"m1": {"name": "a"}, "m2": {"name": "b"}}), db=meta)
        txn.put(b"cluster_id", msgpack.packb(1234), db=meta)
        txn.put(key(2), msgpack.packb((["m1", "m2"], [], {"m1": {"name": "a"}, "m2": {"name": "b"}})), db=confs)
        for index in (10, 11, 12):
            txn.put(key(index), msgpack.packb((4, b"e%d" % index, 0)), db=log_db)
    env.close()


def test_a_log_kept_in_lmdb_by_an_older_petcd_is_converted(tmp_path):
    path = str(tmp_path / "raft")
    _legacy_lmdb_log(path)
    log = RaftLog(path)
    assert (log.hard_state, log.snapshot_index, log.snapshot_term, log.cluster_id) == (HardState(4, "m1", 11), 9, 3, 1234)
    assert log.conf_state == ConfState(("m1", "m2")) and set(log.members) == {"m1", "m2"}
    assert _entries(log) == [(10, 4, b"e10"), (11, 4, b"e11"), (12, 4, b"e12")]
    assert log.conf_at(12)[0].voters == ("m1", "m2")
    assert not os.path.exists(os.path.join(path, "data.mdb"))
    log.close()
    assert _entries(RaftLog(path))[-1] == (12, 4, b"e12")


@pytest.mark.parametrize("initial_corrupt_check", [False, True])
def test_a_member_whose_raft_log_is_damaged_stops_with_the_reason(tmp_path, initial_corrupt_check):
    data_dir = str(tmp_path / "member")
    server = start_petcd(data_dir)
    server.stub().Put(pb.PutRequest(key=b"k", value=b"v"), timeout=10)
    assert server.stop() == 0
    [segment] = glob.glob(os.path.join(data_dir, "**", "raft", "*.wal"), recursive=True)
    with open(segment, "r+b") as f:
        f.seek(12)  # inside the first record, which others follow
        byte = f.read(1)
        f.seek(12)
        f.write(bytes([byte[0] ^ 0x01]))
    extra = ("--experimental-initial-corrupt-check",) if initial_corrupt_check else ()
    restarted = start_petcd(data_dir, *extra, ready=False)
    assert restarted.proc.wait(timeout=60) != 0
    assert f"raft log segment {segment} is damaged at offset 0" in restarted.log()


def test_wal_dir_puts_the_raft_log_in_its_own_directory(tmp_path):
    """etcd's --wal-dir: the Raft log's segments go there, not into the data dir, and a restart
    with the same flags finds them."""
    data_dir, wal_dir = str(tmp_path / "member"), str(tmp_path / "wal")
    server = start_petcd(data_dir, "--wal-dir", wal_dir)
    server.stub().Put(pb.PutRequest(key=b"k", value=b"v"), timeout=10)
    assert server.stop() == 0
    assert _segments(wal_dir), "segments in the WAL dir"
    assert not glob.glob(os.path.join(data_dir, "**", "*.wal"), recursive=True), "none in the data dir"
    restarted = start_petcd(data_dir, "--wal-dir", wal_dir)
    try:
        [kv] = restarted.stub().Range(pb.RangeRequest(key=b"k"), timeout=10).kvs
        assert kv.value == b"v"
        assert restarted.stub().Put(pb.PutRequest(key=b"k", value=b"w"), timeout=10).header.revision == kv.mod_revision + 1
    finally:
        restarted.stop()
