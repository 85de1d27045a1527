"""Under simulation: a member down while the others compact their logs catches up from a snapshot."""

from __future__ import annotations

from petcd.sim.cluster import build

KEYS = [b"k1", b"k2", b"k3"]


def test_a_crashed_member_catches_up_by_snapshot(tmp_path):
    cluster = build(5, 3, str(tmp_path), trace=True, snapshot_count=50)
    rt = cluster.runtime
    rt.run(until_ms=3000)
    rt.crash_member("m3")
    cluster.add_clients(count=2, ops_per_client=150, keys=KEYS)
    assert rt.run(until=cluster.clients_done, until_ms=120_000)
    leader_log = rt.actor("m1/raft")._log
    assert leader_log.snapshot_index > 0, "the live members compacted their logs"
    rt.restart_member("m3")
    stores = [rt.actor(f"{m}/apply")._store for m in cluster.members]
    assert rt.run(until=lambda: len({s.hash_kv(0) for s in stores}) == 1, until_ms=rt.now_ms + 20_000), "m3 caught up"
    rt.run(until_ms=rt.now_ms + 100)
    assert any("installed a snapshot" in line for line in rt.log_lines if line.split()[1] == "m3/raft")
