"""One member's production actors under the simulator, driven by simulated clients."""

from __future__ import annotations

from petcd.sim.cluster import build

KEYS = [b"k1", b"k2", b"k3"]


def _run(seed: int, tmp_path) -> tuple[str, list, object]:
    cluster = build(seed, 1, str(tmp_path / f"seed{seed}"))
    cluster.add_clients(count=3, ops_per_client=60, keys=KEYS)
    assert cluster.runtime.run(until=cluster.clients_done, until_ms=60_000), "clients did not finish"
    return cluster.runtime.digest(), cluster.history, cluster


def _summary(history) -> list[tuple]:
    return [(op.client, op.op_id, op.kind, op.key, op.invoke_ms, op.complete_ms, op.outcome) for op in history]


def test_same_seed_same_trace(tmp_path):
    d1, h1, _ = _run(7, tmp_path / "a")
    d2, h2, _ = _run(7, tmp_path / "b")
    assert d1 == d2
    assert _summary(h1) == _summary(h2)
    d3, h3, _ = _run(8, tmp_path / "c")
    assert d3 != d1 and _summary(h3) != _summary(h1)


def test_every_operation_completes_and_reads_follow_the_apply_order(tmp_path):
    _, history, _ = _run(3, tmp_path)
    assert len(history) == 180
    assert all(op.outcome in ("ok", "fail") for op in history), "no fault injected: nothing may time out"
    assert all(op.outcome == "ok" for op in history if op.kind != "cas")
    # With no faults every write gets a distinct revision; replaying writes in revision
    # order must explain every read (a sequential model of the store).
    writes = sorted((op for op in history if op.kind != "get" and op.outcome == "ok" and (op.kind != "cas" or op.result["succeeded"])),
                    key=lambda op: op.result["revision"])
    revs = [op.result["revision"] for op in writes if op.kind != "delete" or op.result.get("deleted")]
    assert len(revs) == len(set(revs)), "two writes at one revision"
    state: dict[bytes, tuple[bytes, int]] = {}
    by_rev: dict[int, dict[bytes, bytes]] = {1: {}}
    for op in writes:
        if op.kind in ("put", "cas"):
            state[op.key] = (op.value, op.result["revision"])
        elif op.kind == "txn":
            for key in op.result["keys"]:
                state[key] = (op.value, op.result["revision"])
        elif op.result.get("deleted"):
            state.pop(op.key, None)
        by_rev[op.result["revision"]] = {k: v for k, (v, _) in state.items()}
    for op in history:
        if op.kind == "get":
            rev = op.result["revision"]
            seen = op.result["kvs"][0]["value"] if op.result.get("kvs") else None
            snapshot = by_rev[max(r for r in by_rev if r <= rev)]
            assert seen == snapshot.get(op.key), (op, rev)


def test_a_crashed_member_restarts_from_its_durable_state(tmp_path):
    cluster = build(11, 1, str(tmp_path))
    cluster.add_clients(count=2, ops_per_client=30, keys=KEYS)
    rt = cluster.runtime
    assert rt.run(until=cluster.clients_done, until_ms=60_000)
    before = [op for op in cluster.history if op.outcome == "ok" and op.kind != "get"]
    last_rev = max(op.result["revision"] for op in before)
    seen = len(cluster.history)
    rt.crash_member("m1")
    rt.restart_member("m1")
    cluster.add_clients(count=1, ops_per_client=20, keys=KEYS)
    assert rt.run(until=cluster.clients_done, until_ms=120_000)
    after = [op for op in cluster.history[seen:] if op.outcome == "ok" and op.kind == "put"]
    assert after and min(op.result["revision"] for op in after) > last_rev, "revisions continue after restart"
