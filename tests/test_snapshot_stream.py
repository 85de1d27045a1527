"""A snapshot leaves a window of chunks at a time (store/snapshot_files.py OutgoingSnapshot)."""

from __future__ import annotations

import msgpack

from petcd.store.mvcc import MvccStore
from petcd.store.snapshot_files import IncomingSnapshot, OutgoingSnapshot


def test_a_snapshot_leaves_a_window_of_chunks_at_a_time_and_arrives_whole(tmp_path):
    source = MvccStore(str(tmp_path / "source"), map_size_bytes=1 << 26)
    puts = [(i + 1, {"op": "put", "key": b"k%04d" % i, "value": b"v" * 200}, msgpack.packb(["m1", "c", i])) for i in range(300)]
    source.apply(puts)
    outgoing = OutgoingSnapshot(source, str(tmp_path / "out.mdb"), chunk_bytes=4096, window=4)
    assert outgoing.chunk_count > 8
    incoming = IncomingSnapshot(str(tmp_path / "in.mdb"))
    first = outgoing.due()
    assert [seq for seq, _, _ in first] == [0, 1, 2, 3] and outgoing.due() == [], "four in flight, then nothing until acknowledged"
    pending = first
    rounds = 0
    while pending:
        rounds += 1
        for seq, data, last in pending:
            assert incoming.write(seq, data)
            outgoing.ack(seq)
        assert not outgoing.done or pending[-1][2], "done only once the last chunk is acknowledged"
        pending = outgoing.due()
        assert len(pending) <= 4
    assert outgoing.done and rounds >= outgoing.chunk_count // 4
    outgoing.ack(outgoing.chunk_count + 5)  # a stray acknowledgement changes nothing
    assert outgoing.due() == []
    outgoing.close()
    target = MvccStore(str(tmp_path / "target"), map_size_bytes=1 << 26)
    incoming.install(target)
    assert target.applied_index() == 300 and target.hash_kv(0) == source.hash_kv(0)
    assert not (tmp_path / "out.mdb").exists() and not (tmp_path / "in.mdb").exists()
    source.close()
    target.close()
