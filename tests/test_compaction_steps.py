"""A compaction done a step at a time (store/tables.py compact_step) reads, watches and hashes the
same as one done at once, before, during and after its steps; its steps go at log positions."""

from __future__ import annotations

import random

from petcd.store import mvcc
from petcd.store.mvcc import MvccStore
from tests.test_store import ALL, Log


def _history(rng: random.Random, count: int) -> list[dict]:
    """Puts, deletes and two-key txns over a few keys: many superseded revisions and tombstones."""
    keys = [b"k%d" % i for i in range(12)]
    out: list[dict] = []
    for _ in range(count):
        pick = rng.random()
        key = rng.choice(keys)
        if pick < 0.7:
            out.append({"op": "put", "key": key, "value": b"v%d" % rng.randrange(1000)})
        elif pick < 0.85:  # a delete
            out.append({"op": "delete_range", "key": key})
        else:
            other = rng.choice(keys)
            out.append({"op": "txn", "compare": [], "success": [
                {"request_put": {"key": key, "value": b"t"}}, {"request_delete_range": {"key": other}}], "failure": []})
    return out


def _stored_revisions(store: MvccStore) -> int:
    """How many revision records the store holds (a compaction step drops some)."""
    with store._begin() as txn:  # noqa: SLF001
        return txn.stat(store._dbs.revs)["entries"]  # noqa: SLF001


def _view(store: MvccStore, compact_rev: int) -> tuple:
    """What clients and peers can see of a store: reads at and after the compact revision, the
    events from it on, and HashKV at two revisions."""
    rev = store.hash_kv(0)[2]
    reads = tuple(str(store.range({**ALL, "revision": r})["kvs"]) for r in (compact_rev, (compact_rev + rev) // 2, rev))
    events = str(store.events(compact_rev, rev, 10_000))
    return store.hash_kv(0), store.hash_kv(compact_rev + 1), reads, events


def test_a_stepwise_compaction_looks_like_one_done_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(mvcc, "COMPACT_STEP_RECORDS", 7)  # many steps over a small store
    # The reference: a step larger than the store, so the first entry applied after it drops every record.
    at_once = Log(str(tmp_path / "at_once"), compact_step_records=1 << 30)
    stepwise = Log(str(tmp_path / "stepwise"))
    # At the compact revision: a put that supersedes a value (its prev_kv goes) and a delete (its
    # tombstone goes), with history before and after it.
    at_compact = {"op": "txn", "compare": [], "failure": [], "success": [
        {"request_put": {"key": b"k0", "value": b"at"}}, {"request_delete_range": {"key": b"k1"}}]}
    history = _history(random.Random(5), 300) + [{"op": "put", "key": b"k0", "value": b"a"}, {"op": "put", "key": b"k1", "value": b"b"}]
    for store in (at_once, stepwise):
        store.batch(history)
        compact_rev = store(**at_compact)["revision"]
        store.batch(_history(random.Random(6), 50))
    assert at_once("compact", revision=compact_rev)["revision"] == stepwise("compact", revision=compact_rev)["revision"]
    at_once("noop")
    assert not at_once.store.compaction_pending() and stepwise.store.compaction_pending()
    steps = 0
    while stepwise.store.compaction_pending():
        assert _view(stepwise.store, compact_rev) == _view(at_once.store, compact_rev), f"after {steps} steps"
        for store in (at_once, stepwise):
            store("noop")
        steps += 1
        assert steps < 1000
    stepwise("noop")  # both at the same log position: the digests below cover the applied index
    assert steps > 10, "the compaction took many steps"
    assert _view(stepwise.store, compact_rev) == _view(at_once.store, compact_rev)
    # Done, both hold the same records and count the same logical size: the same store, byte for byte.
    assert stepwise.store.digest() == at_once.store.digest()
    assert stepwise.store.range(ALL)["kvs"] == at_once.store.range(ALL)["kvs"]
    for store in (at_once, stepwise):
        store.store.close()


def test_writes_during_a_stepwise_compaction_do_not_step_it_and_a_later_one_restarts_it(tmp_path, monkeypatch):
    """Only empty entries take a compaction a step further: a write's apply never waits for one."""
    monkeypatch.setattr(mvcc, "COMPACT_STEP_RECORDS", 5)
    log = Log(str(tmp_path / "s"))
    log.batch(_history(random.Random(9), 200))
    log("compact", revision=100)
    log("noop")
    before = _stored_revisions(log.store)
    for i in range(3):
        log("put", key=b"new%d" % i, value=b"x")
    assert _stored_revisions(log.store) == before + 3, "the writes took no step: they dropped nothing"
    assert log.store.compaction_pending()
    log("compact", revision=150)  # a newer compaction while one is in progress: from the start again
    while log.store.compaction_pending():
        log("noop")
    reference = Log(str(tmp_path / "ref"), compact_step_records=1 << 30)
    reference.batch(_history(random.Random(9), 200))
    for i in range(3):
        reference("put", key=b"new%d" % i, value=b"x")
    reference("compact", revision=150)
    reference("noop")
    assert not reference.store.compaction_pending()
    assert log.store.hash_kv(0) == reference.store.hash_kv(0)
    assert log.keys() == reference.keys()
    log.store.close()
    reference.store.close()


def test_a_batch_that_writes_revisions_and_compacts_them_publishes_their_events_first(tmp_path):
    """Found by the 10,000-seed campaign (seeds 1072 and 6670): a member catching up applied puts and
    the compaction of them in one batch, then read their events back to publish them: compacted."""
    import msgpack

    from petcd.actors.apply_actor import ApplyActor, ApplyConfig
    from tests.test_raft_core import FakeCtx

    actor = ApplyActor(ApplyConfig(member_id="m1", data_dir=str(tmp_path)))
    ctx = FakeCtx("m1/apply")
    actor.start(ctx)
    puts = [[i, 1, msgpack.packb({"req": {"op": "put", "key": b"k", "value": b"v%d" % i}})] for i in range(1, 4)]
    compact = [4, 1, msgpack.packb({"req": {"op": "compact", "revision": 4}})]  # revisions 2..4 are the puts
    actor.receive(ctx, [("m1/raft", {"t": "apply", "entries": [*puts, compact]})])
    published = [rev for to, msg in ctx.sent if msg["t"] == "events" for rev, _ in msg["revs"]]
    assert published == [2, 3, 4]
    assert actor._store.compact_revision() == 4  # noqa: SLF001
    actor.stop()


def test_the_apply_actor_answers_a_physical_compaction_once_its_last_step_is_done(tmp_path, monkeypatch):
    """The gateway asks (compaction_wait) once the Compact is applied; the answer comes after the
    entry whose step drops the last record, and never more waiters than the bound."""
    import msgpack

    from petcd.actors import apply_actor
    from petcd.actors.apply_actor import ApplyActor, ApplyConfig
    from tests.test_raft_core import FakeCtx

    monkeypatch.setattr(apply_actor, "MAX_COMPACTION_WAITERS", 1)
    actor = ApplyActor(ApplyConfig(member_id="m1", data_dir=str(tmp_path), compact_step_records=4))
    ctx = FakeCtx("m1/apply")
    actor.start(ctx)

    def entry(index: int, req: dict | None) -> list:
        return [index, 1, msgpack.packb({"req": req} if req else {})]

    def answers(gateway: str) -> list[dict]:
        return [msg["resp"] for to, msg in ctx.sent if to == gateway and msg["t"] == "resp"]

    puts = [entry(i, {"op": "put", "key": b"k", "value": b"v%d" % i}) for i in range(1, 11)]
    actor.receive(ctx, [("m1/raft", {"t": "apply", "entries": [*puts, entry(11, {"op": "compact", "revision": 11, "physical": True})]})])
    actor.receive(ctx, [("g1", {"t": "compaction_wait", "origin": ["g1", 1]}), ("g2", {"t": "compaction_wait", "origin": ["g2", 1]})])
    assert answers("g1") == [] and answers("g2") == [{"error": "too_many_requests"}]
    index = 12
    while actor._store.compaction_pending():  # noqa: SLF001
        assert answers("g1") == []
        actor.receive(ctx, [("m1/raft", {"t": "apply", "entries": [entry(index, None)]})])
        index += 1
        assert index < 20
    assert index > 13, "the compaction took several steps"
    assert answers("g1") == [{}]
    actor.receive(ctx, [("g3", {"t": "compaction_wait", "origin": ["g3", 1]})])
    assert answers("g3") == [{}], "none in progress: answered at once"
    actor.stop()
