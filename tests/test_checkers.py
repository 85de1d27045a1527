"""The history checkers (petcd.sim.check): hand-written good and bad histories for each,
the HTML report, the CLI's exit codes, a cross-check of the linearizability search against a
brute-force search, and a performance test."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from petcd.sim.check import (
    check_leases,
    check_linearizability,
    check_locks,
    check_watch,
    dump_history,
    load_history,
    main,
    make_op,
    write_html_report,
)
from petcd.sim.check.history import HistoryError, Op, parse_history
from petcd.sim.check.linearizability import Search, op_keys, partition

# ---------------------------------------------------------------------------
# building histories
_ids = iter(range(1, 1 << 30))


def op(process: str, kind: str, invoke: int, complete: int | None, outcome: str = "ok", **fields: Any) -> Op:
    return make_op(process, next(_ids), kind, invoke, complete, outcome, **fields)


def put(p, t0, t1, key, value, rev=None, outcome="ok"):
    res = {"revision": rev} if rev is not None else {}
    return op(p, "put", t0, t1, outcome, key=key, value=value, **({"result": res} if outcome == "ok" else {}))


def get(p, t0, t1, key, value, rev=None):
    res = {"value": value} | ({"revision": rev} if rev is not None else {})
    return op(p, "get", t0, t1, key=key, result=res)


def cas(p, t0, t1, key, expect, value, succeeded, rev=None, outcome="ok"):
    res = {"succeeded": succeeded} | ({"revision": rev} if rev is not None else {})
    return op(p, "cas", t0, t1, outcome, key=key, expect=expect, value=value, **({"result": res} if outcome == "ok" else {}))


def delete(p, t0, t1, key, deleted, rev=None):
    res = {"deleted": deleted} | ({"revision": rev} if rev is not None else {})
    return op(p, "delete", t0, t1, key=key, result=res)


def txn(p, t0, t1, *, guard=None, reads=(), writes=None, succeeded=True, values=None, rev=None, outcome="ok"):
    res = {"succeeded": succeeded, "values": values or {}} | ({"revision": rev} if rev is not None else {})
    return op(
        p, "txn", t0, t1, outcome, guard=guard or {}, reads=list(reads), writes=writes or {},
        **({"result": res} if outcome == "ok" else {}),
    )


def lin(history, **kw):
    v = check_linearizability(history, **kw)
    print(v.line())
    return v


# ---------------------------------------------------------------------------
# the history format
def test_history_round_trip_with_binary_keys_and_values(tmp_path):
    ops = [
        put("p1", 0, 5, b"\x00\xffkey", b"\x01\x02", rev=2),
        get("p1", 6, 8, "k\u00e9", None, rev=2),
        txn("p2", 1, 9, guard={b"\x00\xffkey": b"\x01\x02"}, reads=["a"], writes={b"\n": None, "b": "x"}, values={"a": None}, rev=3),
        op("w", "watch", 0, None, watch={"key_start": "a", "key_end": None, "start_revision": 1},
           events=[{"revision": 2, "type": "PUT", "key": b"\x00", "value": "v", "prev_value": None}], responses=[[2]]),
    ]
    path = tmp_path / "h.jsonl"
    dump_history(ops, path)
    text = path.read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows[0]["key"] == {"b64": "AP9rZXk="} and rows[0]["value"] == {"b64": "AQI="}
    assert rows[1]["key"] == "k\u00e9"  # printable UTF-8 stays a string
    assert isinstance(rows[2]["writes"], list)  # a non-printable map key: [key, value] pairs
    assert rows[2]["guard"] == [[{"b64": "AP9rZXk="}, {"b64": "AQI="}]]
    back = load_history(path)
    assert back == ops
    assert back[2]["writes"] == {b"\n": None, b"b": b"x"}


def test_malformed_histories_name_the_line():
    with pytest.raises(HistoryError, match="line 2"):
        parse_history(['{"process":"p","id":1,"kind":"get","invoke_ms":0,"complete_ms":1,"outcome":"ok","key":"a","result":{"value":null}}', "{nope"])
    with pytest.raises(HistoryError, match="line 1: an ok operation needs a result"):
        parse_history(['{"process":"p","id":1,"kind":"put","invoke_ms":0,"complete_ms":1,"outcome":"ok","key":"a","value":"v"}'])
    with pytest.raises(HistoryError, match="outcome"):
        parse_history(['{"process":"p","id":1,"kind":"put","invoke_ms":0,"complete_ms":1,"outcome":"maybe","key":"a","value":"v"}'])


# ---------------------------------------------------------------------------
# linearizability: good histories
def test_sequential_and_concurrent_histories_are_linearizable():
    h = [
        put("p1", 0, 10, "x", "1", rev=2),
        get("p2", 5, 15, "x", None, rev=1),  # concurrent with the put: may read before it
        get("p2", 20, 25, "x", "1", rev=2),
        cas("p1", 30, 40, "x", "1", "2", True, rev=3),
        cas("p2", 35, 45, "x", "1", "3", False, rev=3),
        delete("p1", 50, 55, "x", 1, rev=4),
        delete("p2", 60, 65, "x", 0, rev=4),
        get("p3", 70, 75, "x", None, rev=4),
        put("p3", 0, 100, "y", "a", rev=5),
        get("p1", 80, 90, "y", "a", rev=5),
    ]
    v = lin(h)
    assert v.ok and v.status == "ok"
    assert v.details["partitions"] == 2


def test_an_indeterminate_write_explains_a_later_read():
    h = [
        put("p1", 0, 10, "x", "1", rev=2),
        put("p2", 20, None, "x", "2", outcome="info"),  # timed out: it may have happened
        get("p3", 100, 110, "x", "2", rev=3),
    ]
    assert lin(h).ok
    # ... or not have happened at all
    h2 = h[:2] + [get("p3", 100, 110, "x", "1", rev=2)]
    assert lin(h2).ok
    # but it cannot have happened before it was invoked
    h3 = [
        put("p1", 0, 10, "x", "1", rev=2),
        get("p3", 12, 15, "x", "2", rev=3),
        put("p2", 20, None, "x", "2", outcome="info"),
    ]
    assert not lin(h3).ok


def test_failed_operations_are_ignored():
    h = [
        put("p1", 0, 10, "x", "1", rev=2),
        put("p2", 20, 30, "x", "2", outcome="fail"),
        get("p3", 40, 50, "x", "1", rev=2),
    ]
    assert lin(h).ok


def test_transactions_are_atomic_across_keys():
    h = [
        put("p1", 0, 10, "a", "0", rev=2),
        txn("p1", 20, 30, guard={"a": "0"}, reads=["a", "b"], writes={"a": "1", "b": "1"}, values={"a": "0", "b": None}, rev=3),
        txn("p2", 25, 40, reads=["a", "b"], values={"a": "1", "b": "1"}, rev=3),
        txn("p3", 50, 60, guard={"a": "0"}, writes={"a": "x"}, succeeded=False, rev=3),
    ]
    v = lin(h)
    assert v.ok and v.details["partitions"] == 1  # the txns join a and b
    torn = h[:2] + [txn("p2", 25, 40, reads=["a", "b"], values={"a": "1", "b": None}, rev=3)]
    assert not lin(torn).ok


# ---------------------------------------------------------------------------
# linearizability: bad histories
def test_a_stale_read_is_caught_and_named():
    h = [
        put("p1", 0, 10, "x", "1", rev=2),
        put("p2", 20, 30, "x", "2", rev=3),
        get("p3", 40, 50, "x", "1", rev=3),  # the stale read
    ]
    for use_revisions in (True, False):
        v = lin(h, use_revisions=use_revisions)
        assert not v.ok and v.status == "fail"
        f = v.details["failures"][0]
        assert f["culprit"] == 2 and f["culprit_ref"] == [h[2].process, h[2].id]
        assert "overwrote" in f["culprit_why"]
        assert f["prefix"][:2] == [0, 1]


def test_a_lost_write_is_caught():
    h = [
        put("p1", 0, 10, "x", "1"),
        put("p2", 20, 30, "x", "2"),
        get("p3", 40, 50, "x", "1"),
        get("p3", 60, 70, "x", "1"),
    ]
    v = lin(h)
    assert not v.ok and v.details["failures"][0]["culprit"] == 2


def test_a_double_cas_success_is_caught():
    h = [
        put("p1", 0, 10, "x", "0"),
        cas("p2", 20, 30, "x", "0", "A", True),
        cas("p3", 40, 50, "x", "0", "B", True),  # both believed they won
    ]
    v = lin(h, use_revisions=False)
    assert not v.ok
    assert v.details["failures"][0]["culprit"] == 2
    # concurrently it is fine for one to fail
    h2 = h[:2] + [cas("p3", 25, 50, "x", "0", "B", False)]
    assert lin(h2).ok


def test_the_search_finds_failures_the_quick_check_cannot():
    # Reads that never go back, but cannot all be ordered: p3 sees 1 then 2, p4 sees 2 then 1.
    h = [
        put("p1", 0, 100, "x", "1"),
        put("p2", 0, 100, "x", "2"),
        get("p3", 10, 20, "x", "1"),
        get("p3", 30, 40, "x", "2"),
        get("p4", 10, 20, "x", "2"),
        get("p4", 30, 40, "x", "1"),
    ]
    v = lin(h, use_revisions=False)
    assert not v.ok and "unsupplied" not in v.details["failures"][0]
    assert v.details["failures"][0]["candidates"]


def test_revisions_are_constraints():
    h = [
        put("p1", 0, 10, "x", "1", rev=5),
        put("p1", 20, 30, "x", "2", rev=4),  # a later write with a lower revision
        get("p2", 40, 50, "x", "2", rev=5),
    ]
    assert lin(h, use_revisions=False).ok
    v = lin(h, use_revisions=True)
    assert not v.ok
    # two writes at one revision; a read on another key going back in time
    h2 = [put("p1", 0, 10, "x", "1", rev=5), put("p2", 0, 10, "y", "1", rev=5)]
    v2 = lin(h2)
    assert not v2.ok and v2.details["revision_violations"][0]["kind"] == "duplicate revision"
    h3 = [put("p1", 0, 10, "x", "1", rev=5), get("p2", 20, 30, "y", None, rev=4)]
    v3 = lin(h3)
    assert not v3.ok and v3.details["revision_violations"][0]["kind"] == "revision went back"


def test_an_exhausted_budget_is_unknown_not_a_guess():
    h = [put(f"p{i}", 0, 100, "x", str(i)) for i in range(6)] + [get("q", 200, 210, "x", "3")]
    v = lin(h, max_steps=3, use_revisions=False)
    assert not v.ok and v.status == "unknown" and v.summary.startswith("unknown")
    assert lin(h, use_revisions=False).ok


# ---------------------------------------------------------------------------
# the search against a brute-force search, on small random histories
def _brute_force(ops: list[Op], use_revisions: bool) -> bool:
    """Any order that respects real time, info ops optional, the model spelled out again."""
    ops = [o for o in ops if o.outcome != "fail" and not (o.outcome == "info" and o.kind == "get")]
    ops = [o for o in ops if not (o.outcome == "info" and o.kind == "txn" and not o["writes"])]
    ok = [i for i, o in enumerate(ops) if o.outcome == "ok"]

    def apply(o: Op, st: dict, lo: int):
        st, r, info = dict(st), o.result or {}, o.outcome == "info"
        rev = None if info or not use_revisions else r.get("revision")

        def wr():
            return lo if not use_revisions else lo + 1 if rev is None else rev if rev > lo else None

        def rd():
            return lo if rev is None or not use_revisions else rev if rev >= lo else None

        if o.kind == "put":
            st[o["key"]] = o["value"]
            return st, wr()
        if o.kind == "get":
            return (st, rd()) if st.get(o["key"]) == r["value"] else None
        if o.kind == "cas":
            hit = st.get(o["key"]) == o["expect"]
            if info or r["succeeded"]:
                if not hit:
                    return None
                st[o["key"]] = o["value"]
                return st, wr()
            return None if hit else (st, rd())
        if o.kind == "delete":
            present = st.get(o["key"]) is not None
            if info and not present or not info and present != bool(r["deleted"]):
                return None
            st.pop(o["key"], None)
            return st, (wr() if present else rd())
        holds = all(st.get(g) == e for g, e in o["guard"].items())
        if (info and not holds) or (not info and holds != bool(r["succeeded"])):
            return None
        if not holds:
            return st, rd()
        if not info and any(st.get(k) != v for k, v in r["values"].items() if k in o["reads"]):
            return None
        changed = any(v is not None or st.get(k) is not None for k, v in o["writes"].items())
        for k, v in o["writes"].items():
            st.pop(k, None) if v is None else st.__setitem__(k, v)
        return st, (wr() if changed else rd())

    seen: set = set()

    def dfs(placed: list[bool], st: dict, lo: int) -> bool:
        if all(placed[i] for i in ok):
            return True
        key = (tuple(placed), tuple(sorted((k, v) for k, v in st.items() if v is not None)), lo)
        if key in seen:
            return False
        seen.add(key)
        for i, o in enumerate(ops):
            if placed[i] or any(not placed[q] and q != i and ops[q].complete_ms < o.invoke_ms for q in ok):
                continue
            res = apply(o, st, lo)
            if res is None or res[1] is None:
                continue
            placed[i] = True
            if dfs(placed, *res):
                return True
            placed[i] = False
        return False

    return dfs([False] * len(ops), {}, 0)


def _random_history(rng: random.Random) -> list[Op]:
    keys, vals = ["a", "b"][: rng.randint(1, 2)], ["1", "2"]
    procs = rng.randint(1, 3)
    t = [0] * procs
    out = []
    for _ in range(rng.randint(1, 7)):
        p = rng.randrange(procs)
        t0 = t[p] + rng.randint(0, 2)
        t1 = t0 + rng.randint(0, 5)
        t[p] = t1 + 1
        outcome = rng.choice(["ok"] * 6 + ["info", "info", "fail"])
        k = rng.choice(keys)
        rev = rng.randint(1, 5) if rng.random() < 0.7 else None
        kind = rng.choice(["put", "get", "cas", "delete", "txn"])
        c1 = t1 if outcome != "info" or rng.random() < 0.5 else None
        if kind == "put":
            out.append(put(f"p{p}", t0, c1, k, rng.choice(vals), rev, outcome))
        elif kind == "get":
            if outcome != "ok":
                continue
            out.append(get(f"p{p}", t0, t1, k, rng.choice(vals + [None]), rev))
        elif kind == "cas":
            out.append(cas(f"p{p}", t0, c1, k, rng.choice(vals + [None]), rng.choice(vals), rng.random() < 0.5, rev, outcome))
        elif kind == "delete":
            if outcome != "ok":
                continue
            out.append(delete(f"p{p}", t0, t1, k, rng.randint(0, 1), rev))
        else:
            ks = rng.sample(keys, rng.randint(1, len(keys)))
            reads = [x for x in ks if rng.random() < 0.5]
            out.append(txn(
                f"p{p}", t0, c1, guard={g: rng.choice(vals + [None]) for g in ks if rng.random() < 0.5}, reads=reads,
                writes={w: rng.choice(vals + [None]) for w in ks if rng.random() < 0.6}, succeeded=rng.random() < 0.6,
                values={x: rng.choice(vals + [None]) for x in reads}, rev=rev, outcome=outcome,
            ))
    return out


def test_the_search_agrees_with_brute_force_on_random_small_histories():
    rng = random.Random(20240229)
    verdicts = {True: 0, False: 0}
    for n in range(1500):
        h = _random_history(rng) if n % 2 else _random_execution(rng, n_ops=rng.randint(2, 8), keys=rng.randint(1, 3),
                                                                  procs=rng.randint(1, 4), info_rate=0.25, txn_rate=0.3,
                                                                  values=["1", "2"], corrupt=rng.random() < 0.5)
        kept = [(i, o) for i, o in enumerate(h) if o.outcome != "fail" and not (o.outcome == "info" and o.kind == "get")]
        kept = [(i, o) for i, o in kept if not (o.outcome == "info" and o.kind == "txn" and not o["writes"])]
        keys = sorted({k for _, o in kept for k in op_keys(o)})
        for use_revisions in (True, False):
            truth = _brute_force(h, use_revisions)
            verdicts[truth] += 1
            pruned = Search(keys, kept, use_revisions=use_revisions).run().status == "ok"
            info_only = Search(keys, kept, use_revisions=use_revisions, prune="info").run().status == "ok"
            plain = Search(keys, kept, use_revisions=use_revisions, prune=False).run().status == "ok"
            assert pruned == info_only == plain == truth, (use_revisions, [o.label() for o in h])
            full = check_linearizability(h, use_revisions=use_revisions)
            assert full.ok or not truth, [o.label() for o in h]  # never rejects a linearizable history
            if not use_revisions:  # without revisions, partitioning is exact
                assert full.ok == truth, [o.label() for o in h]
            # (with revisions, the bound is kept per partition: a revision order that only conflicts
            # across partitions may pass -- the brute force here keeps one bound for all keys)
    print(verdicts)
    assert min(verdicts.values()) > 500


# ---------------------------------------------------------------------------
# performance
def _random_execution(
    rng: random.Random, *, n_ops: int, keys: int, procs: int, info_rate: float, txn_rate: float = 0.0,
    values: list[str] | None = None, corrupt: bool = False,
) -> list[Op]:
    """A history of a correct store: each op takes effect at a random point inside its interval
    (an info op maybe never, maybe later); `corrupt` then changes one result."""
    names = [f"k{i}" for i in range(keys)]
    clock = [0] * procs
    plan = []
    for n in range(n_ops):
        p = n % procs
        t0 = clock[p] + rng.randint(0, 3)
        t1 = t0 + rng.randint(0, 20)
        info = rng.random() < info_rate
        at = rng.uniform(t0, t1 + (200 if info else 0))
        happens = not info or rng.random() < 0.5
        clock[p] = t1 if not info else t0 + 50
        k = rng.choice(names)
        v = rng.choice(values) if values else f"v{n}"
        roll = rng.random()
        kind = "txn" if roll < txn_rate else "put" if roll < 0.35 else "get" if roll < 0.7 else "cas" if roll < 0.85 else "delete"
        if info and kind == "get":
            kind = "put"
        plan.append((at, n, p, t0, None if info and rng.random() < 0.5 else t1, info, happens, kind, k, v))
    store: dict[str, str] = {}
    rev = 1
    results: dict[int, tuple[dict, dict]] = {}
    for at, n, p, t0, t1, info, happens, kind, k, v in sorted(plan):
        f: dict[str, Any]
        if kind == "put":
            f = {"key": k, "value": v}
        elif kind == "get":
            f = {"key": k}
        elif kind == "cas":
            f = {"key": k, "expect": rng.choice([store.get(k), None, v]), "value": v}
        elif kind == "delete":
            f = {"key": k}
        else:
            other = rng.choice(names)
            f = {"guard": {other: rng.choice([store.get(other), None])}, "reads": [k], "writes": {k: v, other: None} if other != k else {k: v}}
        res: dict[str, Any] = {}
        if happens:
            if kind == "put":
                rev += 1
                store[k] = v
                res = {"revision": rev}
            elif kind == "get":
                res = {"value": store.get(k), "revision": rev}
            elif kind == "cas":
                ok = store.get(k) == f["expect"]
                if ok:
                    rev += 1
                    store[k] = v
                res = {"succeeded": ok, "revision": rev}
            elif kind == "delete":
                d = int(k in store)
                if d:
                    rev += 1
                    del store[k]
                res = {"deleted": d, "revision": rev}
            else:
                ok = all(store.get(g) == e for g, e in f["guard"].items())
                values_ = {k: store.get(k)} if ok else {}
                if ok:
                    rev += 1
                    for w, x in f["writes"].items():
                        store.pop(w, None) if x is None else store.__setitem__(w, x)
                res = {"succeeded": ok, "values": values_, "revision": rev}
        results[n] = (f, res)
    out = []
    for at, n, p, t0, t1, info, happens, kind, k, v in sorted(plan, key=lambda x: x[1]):
        f, res = results[n]
        if not info:
            f = {**f, "result": res}
        out.append(make_op(f"p{p}", n, kind, t0, t1 if not info else t1, "info" if info else "ok", **f))
    if corrupt:
        victims = [o for o in out if o.result]
        if victims:
            r = rng.choice(victims).result
            field = rng.choice(sorted(r))
            if field == "revision":
                r[field] += rng.choice([-1, 1])
            elif field == "value":
                r[field] = rng.choice([None, b"1", b"2"])
            elif field in ("succeeded", "deleted"):
                r[field] = type(r[field])(not r[field])
    return out


def test_performance_5000_ops_5_keys_10_processes_with_info_ops():
    rng = random.Random(5000)
    h = _random_execution(rng, n_ops=5000, keys=5, procs=10, info_rate=0.03)
    n_info = sum(o.outcome == "info" for o in h)
    assert n_info > 50
    for use_revisions in (True, False):
        t = time.perf_counter()
        v = check_linearizability(h, use_revisions=use_revisions)
        took = time.perf_counter() - t
        print(f"\n5000 ops / 5 keys / 10 processes / {n_info} info, use_revisions={use_revisions}: "
              f"{took:.2f}s, {v.details['steps']} steps -> {v.status}")
        assert v.ok, v.summary  # the time it took is printed above, not asserted (a benchmark's business)
    # a stale read planted in the middle is found as quickly
    gets = [o for o in h if o.kind == "get" and o.outcome == "ok" and 2000 < o.id < 3000]
    g = gets[len(gets) // 2]
    older = [o for o in h if o.kind == "put" and o["key"] == g["key"] and o.outcome == "ok" and o.complete_ms < g.invoke_ms - 100]
    g.result["value"] = older[-5]["value"]
    t = time.perf_counter()
    v = check_linearizability(h)
    print(f"with a stale read planted: {time.perf_counter() - t:.2f}s -> {v.status}: {v.summary[:160]}")
    assert not v.ok and v.details["failures"][0]["culprit"] == h.index(g)


def test_performance_multi_key_transactions_in_one_partition():
    rng = random.Random(77)
    h = _random_execution(rng, n_ops=3000, keys=5, procs=10, info_rate=0.02, txn_rate=0.05)
    for use_revisions in (True, False):
        t = time.perf_counter()
        v = check_linearizability(h, use_revisions=use_revisions)
        took = time.perf_counter() - t
        print(f"\n3000 ops with txns (one partition), use_revisions={use_revisions}: {took:.2f}s, "
              f"{v.details['steps']} steps -> {v.status}")
        assert v.details["partitions"] == 1
        assert v.ok, v.summary


def test_partitions_follow_the_keys_transactions_join():
    h = [
        put("p", 0, 1, "a", "1"), put("p", 2, 3, "b", "1"), put("p", 4, 5, "c", "1"), put("p", 6, 7, "d", "1"),
        txn("p", 8, 9, reads=["a"], writes={"b": "2"}, values={"a": "1"}),
        txn("p", 10, 11, guard={"c": "1"}, values={}),
    ]
    parts = partition(list(enumerate(h)))
    assert sorted(keys for keys, _ in parts) == [[b"a", b"b"], [b"c"], [b"d"]]


# ---------------------------------------------------------------------------
# watch
def _w(events, responses=None, start=1, key_start="", key_end="\x00", **extra):
    evs = [
        dict(revision=r, type=t, key=k, value=(v if t == "PUT" else None), **({"prev_value": pv} if pv != "-" else {}))
        for r, t, k, v, pv in events
    ]
    if responses is None:
        responses = [[e["revision"]] for e in evs]
    return op("w", "watch", 0, None, watch={"key_start": key_start, "key_end": key_end, "start_revision": start},
              events=evs, responses=responses, **extra)


KV = [
    put("p1", 0, 10, "a", "1", rev=2),
    put("p1", 20, 30, "b", "1", rev=3),
    txn("p2", 40, 50, writes={"a": "2", "b": "2"}, rev=4),
    delete("p1", 60, 70, "a", 1, rev=5),
]
EVENTS = [
    (2, "PUT", "a", "1", None),
    (3, "PUT", "b", "1", None),
    (4, "PUT", "a", "2", "1"),
    (4, "PUT", "b", "2", "1"),
    (5, "DELETE", "a", None, "2"),
]
COMMITTED = [dict(revision=r, type=t, key=k, value=v) for r, t, k, v, _ in EVENTS]


def test_a_complete_watch_passes():
    w = _w(EVENTS, responses=[[2], [3], [4, 4], [5]])
    v = check_watch(KV + [w])
    print(v.line())
    assert v.ok
    assert check_watch([w], COMMITTED).ok
    single = _w([e for e in EVENTS if e[2] == "b"], key_start="b", key_end=None, start=3)
    assert check_watch(KV + [single]).ok


def test_a_watch_that_skips_a_revision_is_caught():
    w = _w([e for e in EVENTS if e[0] != 3], responses=[[2], [4, 4], [5]])
    for v in (check_watch(KV + [w]), check_watch([w], COMMITTED)):
        print(v.line())
        assert not v.ok and v.details["by_kind"] == {"reliable": 1}
        assert v.details["violations"][0]["revision"] == 3


def test_duplicates_out_of_order_and_split_revisions_are_caught():
    dup = _w(EVENTS[:2] + EVENTS[1:], responses=[[2], [3], [3], [4, 4], [5]])
    v = check_watch(KV + [dup])
    assert not v.ok and v.details["by_kind"] == {"unique": 1}
    swapped = _w([EVENTS[1], EVENTS[0]] + EVENTS[2:], responses=[[3], [2], [4, 4], [5]])
    v = check_watch(KV + [swapped])
    assert not v.ok and "ordered" in v.details["by_kind"]
    split = _w(EVENTS, responses=[[2], [3], [4], [4], [5]])
    v = check_watch(KV + [split])
    print(v.line())
    assert not v.ok and v.details["by_kind"] == {"atomic": 1}


def test_wrong_values_phantoms_and_prev_values_are_caught():
    wrong = _w(EVENTS[:2] + [(4, "PUT", "a", "9", "1")] + EVENTS[3:], responses=[[2], [3], [4, 4], [5]])
    v = check_watch(KV + [wrong])
    assert not v.ok and v.details["by_kind"] == {"value": 1}
    phantom = _w(EVENTS + [(6, "PUT", "z", "1", None)], responses=[[2], [3], [4, 4], [5], [6]])
    assert check_watch(KV + [phantom]).ok  # revision 6 is not in the KV history: nothing to contradict it
    v = check_watch([phantom], COMMITTED)
    assert not v.ok and v.details["by_kind"] == {"phantom": 1}
    bad_prev = _w(EVENTS[:4] + [(5, "DELETE", "a", None, "1")], responses=[[2], [3], [4, 4], [5]])
    for v in (check_watch(KV + [bad_prev]), check_watch([bad_prev], COMMITTED)):
        assert not v.ok and v.details["by_kind"] == {"prev_value": 1}


def test_resumes_from_last_plus_one_pass_and_skipping_ones_are_caught():
    good = _w(EVENTS, responses=[[2], [3], [4, 4], [5]], resumes=[{"response": 2, "start_revision": 4}])
    assert check_watch(KV + [good]).ok
    skipped = _w([e for e in EVENTS if e[0] != 4], responses=[[2], [3], [5]], resumes=[{"response": 2, "start_revision": 5}])
    v = check_watch(KV + [skipped])
    print(v.line())
    assert not v.ok and v.details["by_kind"] == {"resume": 1}
    # The same skip after the watch was canceled for a compaction at 5, resuming from it: allowed.
    compacted = _w([e for e in EVENTS if e[0] != 4], responses=[[2], [3], [5]], resumes=[{"response": 2, "start_revision": 5, "compacted": 5}])
    assert check_watch(KV + [compacted]).ok and check_watch([compacted], COMMITTED).ok
    # ... but only from the compact revision it names.
    wrong = _w([e for e in EVENTS if e[0] != 4], responses=[[2], [3], [5]], resumes=[{"response": 2, "start_revision": 5, "compacted": 4}])
    assert check_watch(KV + [wrong]).details["by_kind"] == {"resume": 1}


def test_a_watch_resumed_from_the_compact_revision_may_miss_the_delete_there_and_nothing_else():
    """Compaction drops a tombstone at the compact revision, so a watch from it cannot show that
    DELETE (real etcd 3.4: put a, put b, del a at 4, put c, compact 4, watch --rev 4 shows PUT c only).
    Found by the simulator, seed 3039 of `--members 5 --faults disk-crash,fsync-fail,crash,partition,disk-full,corrupt`."""
    no_delete = _w([e for e in EVENTS if e[0] < 4], responses=[[2], [3]], resumes=[{"response": 2, "start_revision": 5, "compacted": 5}],
                   progress_revision=5)
    for v in (check_watch([no_delete], COMMITTED), check_watch(KV + [no_delete])):
        print(v.line())
        assert v.ok, v.details
    # A PUT at the compact revision is kept by the compaction: missing it is still caught.
    events = EVENTS[:4] + [(5, "PUT", "a", "3", "2")]
    committed = [dict(revision=r, type=t, key=k, value=v) for r, t, k, v, _ in events]
    no_put = _w([e for e in events if e[0] < 4], responses=[[2], [3]], resumes=[{"response": 2, "start_revision": 5, "compacted": 5}],
                progress_revision=5)
    v = check_watch([no_put], committed)
    assert not v.ok and v.details["by_kind"] == {"reliable": 1}


def test_watchers_are_held_to_what_other_watchers_saw():
    a = _w(EVENTS + [(6, "PUT", "c", "1", None)], responses=[[2], [3], [4, 4], [5], [6]])
    b = _w(EVENTS[:4] + [(6, "PUT", "c", "1", None)], responses=[[2], [3], [4, 4], [6]])  # missed rev 5
    v = check_watch(KV + [a, b])
    assert not v.ok and v.details["by_kind"] == {"reliable": 1}
    c = _w(EVENTS + [(6, "PUT", "c", "2", None)], responses=[[2], [3], [4, 4], [5], [6]])
    v = check_watch(KV + [a, c])
    assert not v.ok and "disagree" in v.details["by_kind"]


# ---------------------------------------------------------------------------
# leases
def _lease(granted, ttl_s, keepalives=(), deleted=None, **extra):
    return op("l", "lease", granted, deleted, lease_id=7, ttl_s=ttl_s, granted_ms=granted, keepalives_ms=list(keepalives),
              keys=["lk"], key_deleted_ms=deleted, key_deleted_revision=9 if deleted is not None else None, **extra)


def test_leases_that_expire_on_time_pass():
    v = check_leases([_lease(0, 5, [1000, 2000], deleted=7500), _lease(0, 2, deleted=None, key_seen_ms=[1500])])
    print(v.line())
    assert v.ok


def test_a_lease_key_deleted_early_is_caught():
    v = check_leases([_lease(0, 5, [1000, 2000], deleted=6000)])
    print(v.line())
    assert not v.ok and v.details["violations"][0]["kind"] == "early"
    # a keepalive answered after the deletion means the lease was alive
    v = check_leases([_lease(0, 5, [1000, 9000], deleted=8000)])
    assert not v.ok and "still answered" in v.summary
    # a revoke explains it
    assert check_leases([_lease(0, 5, [1000], deleted=3000, revoked_ms=2900)]).ok
    # and a leader clock allowed to run twice as fast explains an expiry after half the TTL
    assert check_leases([_lease(0, 5, [1000, 2000], deleted=6000)], clock_rates=(0.5, 2.0)).ok
    assert not check_leases([_lease(0, 5, [1000, 2000], deleted=4000)], clock_rates=(0.5, 2.0)).ok


def test_a_lease_key_that_outlives_its_lease_is_caught():
    v = check_leases([_lease(0, 5, [1000], deleted=10_000)])  # deadline 1000 + 5000 + 3000
    assert not v.ok and v.details["violations"][0]["kind"] == "late"
    assert check_leases([_lease(0, 5, [1000], deleted=10_000)], bound_ms=5000).ok
    v = check_leases([_lease(0, 5, [1000], key_seen_ms=[2000, 9500])])
    assert not v.ok and "still present" in v.summary


# ---------------------------------------------------------------------------
# locks
def _holder(p, invoke, acquired, released, fence, writes=()):
    return op(p, "lock", invoke, released, name="L", acquired_ms=acquired, released_ms=released, fence_revision=fence,
              writes=list(writes))


def _write(invoke, complete, rev=None, ok=True, key="data"):
    return {"key": key, "value": "v", "invoke_ms": invoke, "complete_ms": complete, "outcome": "ok", "succeeded": ok,
            **({"revision": rev} if rev is not None else {})}


def test_fenced_holders_in_order_pass_and_overlaps_are_only_warnings():
    h = [
        _holder("a", 0, 10, 100, 5, [_write(20, 30, rev=6)]),
        _holder("b", 5, 90, 200, 7, [_write(95, 99, rev=8)]),  # overlaps a's hold by wall clock
        _holder("c", 150, 210, 300, 9, [_write(220, 230, rev=10)]),
    ]
    v = check_locks(h)
    print(v.line())
    assert v.ok and v.details["warning_count"] == 1 and v.details["warnings"][0]["kind"] == "overlap"


def test_two_holders_with_decreasing_fences_are_caught():
    h = [_holder("a", 0, 10, 100, 8), _holder("b", 50, 120, 200, 6)]  # b asked after a held it, got a lower fence
    v = check_locks(h)
    print(v.line())
    assert not v.ok and v.details["violations"][0]["kind"] == "fences"
    assert not check_locks([_holder("a", 0, 10, 100, 8), _holder("b", 150, 160, 200, 8)]).ok  # the same fence twice


def test_a_stale_fenced_write_accepted_after_a_newer_holder_is_caught():
    # by revision: a's write (fence 5) lands after b's (fence 7)
    h = [_holder("a", 0, 10, 100, 5, [_write(20, 400, rev=12)]), _holder("b", 5, 200, 300, 7, [_write(210, 220, rev=11)])]
    v = check_locks(h)
    print(v.line())
    assert not v.ok and all(x["kind"] == "writes" for x in v.details["violations"])
    # by time: a sends a write after b acquired, and it is accepted (no revisions recorded)
    h = [_holder("a", 0, 10, 100, 5, [_write(250, 260)]), _holder("b", 5, 200, 300, 7)]
    assert not check_locks(h).ok
    # rejected stale writes are fine
    h = [_holder("a", 0, 10, 100, 5, [_write(250, 260, ok=False)]), _holder("b", 5, 200, 300, 7, [_write(210, 220, rev=11)])]
    assert check_locks(h).ok


# ---------------------------------------------------------------------------
# the report and the CLI
STALE = [
    put("p1", 0, 10, "x", "1", rev=2),
    put("p2", 20, 30, "x", "2", rev=3),
    get("p3", 40, 50, "x", "1", rev=3),
    get("p1", 60, 70, "y", None, rev=3),
]


def test_the_report_is_self_contained_and_shows_the_failing_op(tmp_path):
    v = check_linearizability(STALE)
    out = tmp_path / "r.html"
    write_html_report(out, STALE, [v, check_watch(STALE)])
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "verdict=fail" in text
    culprit = STALE[2]
    assert f"{culprit.process}#{culprit.id}" in text and "cannot be placed" in text.lower()
    assert "<svg" in text and "<script" not in text and "<link" not in text and "src=" not in text
    assert 'stroke="#d00000"' in text  # the op that cannot be placed is marked in the timeline
    print(f"\nreport: {len(text)} bytes")


def _write_history(tmp_path, ops, name="h.jsonl"):
    path = tmp_path / name
    dump_history(ops, path)
    return str(path)


def test_cli_exit_codes(tmp_path, capsys):
    good = _write_history(tmp_path, KV + [_w(EVENTS, responses=[[2], [3], [4, 4], [5]]), _lease(0, 5, [1000], deleted=7000),
                                          _holder("a", 0, 10, 100, 5)], "good.jsonl")
    assert main([good]) == 0
    out = capsys.readouterr().out.splitlines()
    print("\n".join(out))
    assert [line.split()[0] for line in out if line.split()[1:2] in (["ok:"], ["fail:"], ["unknown:"])] == ["linearizability", "watch", "lease", "lock"]
    assert "ran 4 of 4 checkers: linearizability, watch, lease, lock" in out
    assert out[-1] == "verdict=ok"

    bad = _write_history(tmp_path, STALE, "bad.jsonl")
    report = tmp_path / "bad.html"
    assert main(["check", bad, "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert out.strip().endswith("verdict=fail") and report.exists()
    assert "cannot be placed" in report.read_text()

    unknown = _write_history(tmp_path, [put(f"p{i}", 0, 100, "x", str(i)) for i in range(6)], "u.jsonl")
    assert main([unknown, "--max-steps", "2", "--no-revisions"]) == 2
    assert capsys.readouterr().out.strip().endswith("verdict=unknown")

    assert main([good, "--checkers", "lease,lock"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out if line.split()[1:2] in (["ok:"], ["fail:"], ["unknown:"])] == ["lease", "lock"]
    assert "ran 2 of 4 checkers: lease, lock; not run: linearizability (not asked for), watch (not asked for)" in out
    assert main([good, "--checkers", "nope"]) == 3
    assert main([good, "--clock-rates", "2,1"]) == 3
    assert main([str(tmp_path / "missing.jsonl")]) == 3
    (tmp_path / "broken.jsonl").write_text("{broken\n")
    assert main([str(tmp_path / "broken.jsonl")]) == 3
    assert main([]) == 3
    capsys.readouterr()
