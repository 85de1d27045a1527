"""Property test: MvccStore against a plain in-memory model of etcd's MVCC semantics."""

import tempfile
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petcd.store import errors
from petcd.store.errors import StoreError
from petcd.store.mvcc import MvccStore

KEYS = [b"a", b"ab", b"b", b"ba", b"c"]
RANGE_ENDS = [b"", b"", b"\0", b"\0", b"ab", b"b", b"c", b"d"]
VALUES = [b"", b"x", b"y"]
KV_FIELDS = ("key", "create_revision", "mod_revision", "version", "value", "lease")


class Model:
    """The whole history as a list; the state at revision R replays it up to R."""

    def __init__(self) -> None:
        self.history: list[tuple[int, int, bytes, dict | None]] = []  # None: tombstone
        self.rev = 1
        self.compact_rev = -1

    # --- reads
    def state(self, at_rev: int) -> dict[bytes, dict]:
        live: dict[bytes, dict] = {}
        for main, _, key, kv in self.history:
            if main <= at_rev:
                if kv is None:
                    live.pop(key, None)
                else:
                    live[key] = kv
        return live

    def matching(self, key: bytes, range_end: bytes, at_rev: int) -> list[dict]:
        live = self.state(at_rev)
        if range_end == b"":
            chosen = [k for k in live if k == key]
        elif range_end == b"\0":
            chosen = [k for k in live if k >= key]
        else:
            chosen = [k for k in live if key <= k < range_end]
        return [dict(live[k]) for k in sorted(chosen)]

    def range(self, req: dict, current: int) -> dict:
        revision = req.get("revision", 0)
        if revision > current:
            raise errors.future_rev()
        if revision <= 0:
            revision = current
        if revision < self.compact_rev:
            raise errors.compacted()
        kvs = self.matching(req.get("key", b""), req.get("range_end", b""), revision)
        count = len(kvs)
        if req.get("count_only"):
            kvs = []
        limit = req.get("limit", 0)
        order, target = req.get("sort_order", 0), req.get("sort_target", 0)
        bounds = {f: req.get(f, 0) for f in ("min_mod_revision", "max_mod_revision",
                                             "min_create_revision", "max_create_revision")}
        if limit > 0 and order == 0 and not any(bounds.values()):
            kvs = kvs[:limit + 1]
        if bounds["max_mod_revision"]:
            kvs = [kv for kv in kvs if kv["mod_revision"] <= bounds["max_mod_revision"]]
        if bounds["min_mod_revision"]:
            kvs = [kv for kv in kvs if kv["mod_revision"] >= bounds["min_mod_revision"]]
        if bounds["max_create_revision"]:
            kvs = [kv for kv in kvs if kv["create_revision"] <= bounds["max_create_revision"]]
        if bounds["min_create_revision"]:
            kvs = [kv for kv in kvs if kv["create_revision"] >= bounds["min_create_revision"]]
        if target != 0 and order == 0:
            order = 1
        if order != 0:
            field = ("key", "version", "create_revision", "mod_revision", "value")[target]
            kvs = sorted(kvs, key=lambda kv: kv[field], reverse=order == 2)
        more = limit > 0 and len(kvs) > limit
        if more:
            kvs = kvs[:limit]
        if req.get("keys_only"):
            for kv in kvs:
                kv["value"] = b""
        return {"revision": current, "kvs": kvs, "more": more, "count": count}

    # --- writes
    def apply(self, req: dict) -> dict:
        saved = (list(self.history), self.rev, self.compact_rev)
        try:
            return self._apply(req)
        except StoreError as err:
            self.history, self.rev, self.compact_rev = saved
            return {"error": err.name, "code": err.grpc_code, "message": err.message}

    def _apply(self, req: dict) -> dict:
        op = req["op"]
        if op == "range":
            return self.range(req, self.rev)
        if op == "compact":
            return self.compact(req.get("revision", 0))
        begin = self.rev
        changes: list[int] = [0]  # a cell: changes made by this write txn
        if op == "put":
            if req.get("lease", 0):
                raise errors.lease_not_found()  # the model has no leases
            response = self.put(req, begin, changes)
        elif op == "delete_range":
            response = self.delete(req, begin, changes)
        else:
            response = self.txn(req, begin, changes)
        if changes[0]:
            self.rev += 1
        return {"revision": begin + (1 if changes[0] else 0), **response}

    def put(self, req: dict, begin: int, changes: list[int]) -> dict:
        key = req["key"]
        read_rev = begin + (1 if changes[0] else 0)
        previous = self.state(read_rev).get(key)
        if (req.get("ignore_value") or req.get("ignore_lease")) and previous is None:
            raise errors.key_not_found()
        value = previous["value"] if req.get("ignore_value") else req.get("value", b"")
        lease = previous["lease"] if req.get("ignore_lease") else req.get("lease", 0)
        rev = begin + 1
        kv = {"key": key, "create_revision": previous["create_revision"] if previous else rev,
              "mod_revision": rev, "version": previous["version"] + 1 if previous else 1,
              "value": value, "lease": lease}
        self.history.append((rev, changes[0], key, kv))
        changes[0] += 1
        return {"prev_kv": dict(previous)} if req.get("prev_kv") and previous else {}

    def delete(self, req: dict, begin: int, changes: list[int]) -> dict:
        read_rev = begin + (1 if changes[0] else 0)
        kvs = self.matching(req["key"], req.get("range_end", b""), read_rev)
        for kv in kvs:
            self.history.append((begin + 1, changes[0], kv["key"], None))
            changes[0] += 1
        return {"deleted": len(kvs), "prev_kvs": kvs if req.get("prev_kv") else []}

    def compare(self, compare: dict, start: int) -> bool:
        field = KV_FIELDS[[3, 1, 2, 4, 5][compare.get("target", 0)]]
        kvs = self.matching(compare["key"], compare.get("range_end", b""), start)
        if not kvs:
            if field == "value":
                return False
            kvs = [{"version": 0, "create_revision": 0, "mod_revision": 0, "lease": 0}]
        expected = compare.get(field, b"" if field == "value" else 0)
        result = compare.get("result", 0)
        return all([kv[field] == expected, kv[field] > expected, kv[field] < expected,
                    kv[field] != expected][result] for kv in kvs)

    def path(self, txn: dict, start: int) -> list[tuple[str, dict, object]]:
        """The ops taken, each with the path of a nested txn; plus `succeeded` first."""
        succeeded = all(self.compare(c, start) for c in txn.get("compare", []))
        ops = txn.get("success" if succeeded else "failure", [])
        taken = []
        for op in ops:
            (kind, op_req), = op.items()
            taken.append((kind, op_req, self.path(op_req, start) if kind == "request_txn"
                          else None))
        return [("succeeded", {}, succeeded)] + taken

    def flat(self, path: list) -> list[tuple[str, dict]]:
        ops = []
        for kind, op_req, nested in path[1:]:
            ops.extend(self.flat(nested) if kind == "request_txn" else [(kind, op_req)])
        return ops

    def txn(self, req: dict, begin: int, changes: list[int]) -> dict:
        path = self.path(req, begin)
        for kind, op_req in self.flat(path):
            if kind == "request_put":
                if ((op_req.get("ignore_value") or op_req.get("ignore_lease"))
                        and op_req["key"] not in self.state(begin)):
                    raise errors.key_not_found()
                if op_req.get("lease", 0):
                    raise errors.lease_not_found()
        for kind, op_req in self.flat(path):
            revision = op_req.get("revision", 0)
            if kind == "request_range" and revision != 0:
                if revision > begin:
                    raise errors.future_rev()
                if revision < self.compact_rev:
                    raise errors.compacted()
        return self.execute(path, begin, changes)

    def execute(self, path: list, begin: int, changes: list[int]) -> dict:
        responses = []
        for kind, op_req, nested in path[1:]:
            if kind == "request_range":
                response = self.range(op_req, begin + (1 if changes[0] else 0))
                del response["revision"]
                responses.append({"response_range": response})
            elif kind == "request_put":
                responses.append({"response_put": self.put(op_req, begin, changes)})
            elif kind == "request_delete_range":
                responses.append({"response_delete_range": self.delete(op_req, begin, changes)})
            else:
                responses.append({"response_txn": self.execute(nested, begin, changes)})
        return {"succeeded": path[0][2], "responses": responses}

    def compact(self, revision: int) -> dict:
        if revision <= self.compact_rev:
            raise errors.compacted()
        if revision > self.rev:
            raise errors.future_rev()
        newest: dict[bytes, tuple[int, int]] = {}
        for main, sub, key, _ in self.history:
            if main <= revision:
                newest[key] = (main, sub)
        self.history = [(main, sub, key, kv) for main, sub, key, kv in self.history
                        if main > revision or (newest[key] == (main, sub) and kv is not None)]
        self.compact_rev = revision
        return {"revision": self.rev}


def txn_is_valid(txn: dict) -> bool:
    """A conservative form of the API layer's duplicate check (etcd's checkIntervals)."""
    def collect(ops: list[dict], puts: list[bytes], deletes: list[tuple[bytes, bytes]]) -> None:
        for op in ops:
            (kind, op_req), = op.items()
            if kind == "request_put":
                puts.append(op_req["key"])
            elif kind == "request_delete_range":
                deletes.append((op_req["key"], op_req.get("range_end", b"")))
            elif kind == "request_txn":
                collect(op_req.get("success", []) + op_req.get("failure", []), puts, deletes)

    def covers(key: bytes, start: bytes, end: bytes) -> bool:
        return key == start if end == b"" else key >= start and (end == b"\0" or key < end)

    for branch in ("success", "failure"):
        puts: list[bytes] = []
        deletes: list[tuple[bytes, bytes]] = []
        collect(txn.get(branch, []), puts, deletes)
        if len(set(puts)) != len(puts):
            return False
        if any(covers(key, start, end) for key in puts for start, end in deletes):
            return False
    return True


# --- strategies (revisions are drawn around the model's current revision)
keys = st.sampled_from(KEYS)
range_starts = st.sampled_from([b"\0", b"a", *KEYS])  # b"\0" with range_end b"\0": all keys
range_ends = st.sampled_from(RANGE_ENDS)


@cache
def revisions(current: int) -> st.SearchStrategy[int]:
    return st.one_of(st.just(0), st.integers(-1, current + 1))


@cache
def range_requests(current: int) -> st.SearchStrategy[dict]:
    """A key range plus up to two option groups (sorting, flags, one mod/create bound)."""
    base = st.fixed_dictionaries(
        {"key": range_starts, "range_end": range_ends},
        optional={"limit": st.integers(0, 3), "revision": revisions(current)})
    options = st.one_of(
        st.just({}),
        st.fixed_dictionaries({"sort_target": st.integers(0, 4),
                               "sort_order": st.integers(0, 2)}),
        st.fixed_dictionaries({}, optional={"keys_only": st.booleans(),
                                            "count_only": st.booleans(),
                                            "serializable": st.booleans()}),
        st.tuples(st.sampled_from(["min_mod_revision", "max_mod_revision",
                                   "min_create_revision", "max_create_revision"]),
                  st.integers(1, current + 1)).map(lambda bound: dict([bound])),
    )
    return st.tuples(base, options, options).map(
        lambda parts: {**parts[0], **parts[1], **parts[2]})


whole_sorted_reads = st.fixed_dictionaries(
    {"key": st.just(b"\0"), "range_end": st.just(b"\0"), "sort_order": st.integers(0, 2),
     "sort_target": st.integers(0, 4), "limit": st.integers(0, 3)},
    optional={"keys_only": st.booleans(), "count_only": st.booleans()})
put_requests = st.fixed_dictionaries(
    {"key": keys},
    optional={"value": st.sampled_from(VALUES), "lease": st.sampled_from([0, 0, 0, 5]),
              "prev_kv": st.booleans(), "ignore_value": st.booleans(),
              "ignore_lease": st.booleans()})
delete_requests = st.fixed_dictionaries(
    {"key": keys}, optional={"range_end": range_ends, "prev_kv": st.booleans()})


@cache
def compares(current: int) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"key": keys, "target": st.integers(0, 4), "result": st.integers(0, 3)},
        optional={"range_end": range_ends, "version": st.integers(0, 3),
                  "create_revision": st.integers(0, current + 1),
                  "mod_revision": st.integers(0, current + 1),
                  "value": st.sampled_from(VALUES), "lease": st.sampled_from([0, 5])})


@cache
def txn_requests(current: int, depth: int) -> st.SearchStrategy[dict]:
    ops = [range_requests(current).map(lambda r: {"request_range": r}),
           put_requests.map(lambda r: {"request_put": r}),
           delete_requests.map(lambda r: {"request_delete_range": r})]
    if depth > 0:
        ops.append(txn_requests(current, depth - 1).map(lambda r: {"request_txn": r}))
    op_lists = st.lists(st.one_of(ops), max_size=3 if depth > 0 else 2)
    return st.fixed_dictionaries({"compare": st.lists(compares(current), max_size=2),
                                  "success": op_lists, "failure": op_lists})


def with_op(op: str, requests: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    return requests.map(lambda r: {"op": op, **r})


@cache
def steps(current: int) -> st.SearchStrategy[list[dict] | str]:
    """A batch of requests applied in one apply() call, or a restart, or a replay."""
    requests = st.one_of(
        with_op("put", put_requests), with_op("put", put_requests), with_op("put", put_requests),
        with_op("delete_range", delete_requests),
        with_op("txn", txn_requests(current, 1)).filter(txn_is_valid),
        with_op("txn", txn_requests(current, 1)).filter(txn_is_valid),
        with_op("compact", st.fixed_dictionaries({"revision": revisions(current)})),
        with_op("range", range_requests(current)),
    )
    return st.one_of(st.lists(requests, min_size=1, max_size=4),
                     st.sampled_from(["restart", "replay"]))


def outcome(read, req: dict, *args) -> dict:
    try:
        return read(req, *args)
    except StoreError as err:
        return {"error": err.name}


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_store_matches_model(data):
    model = Model()
    with tempfile.TemporaryDirectory() as path:
        store = MvccStore(path, sync=False, map_size_bytes=1 << 26)
        try:
            last_entries: list[tuple[int, dict]] = []
            # One record per step: a compaction stays in progress over the next batches (reads must not tell).
            step_records = data.draw(st.sampled_from([None, 1]), label="compact_step_records")
            for _ in range(data.draw(st.integers(5, 20), label="steps")):
                step = data.draw(steps(model.rev))
                if step == "restart":
                    store.close()
                    store = MvccStore(path, sync=False, map_size_bytes=1 << 26)
                elif step == "replay":
                    assert store.apply(last_entries) == [None] * len(last_entries)
                else:
                    first = store.applied_index() + 1
                    last_entries = [(first + i, req) for i, req in enumerate(step)]
                    rev_before, events = store.current_revision(), []
                    assert store.apply(last_entries, compact_step_records=step_records, events=events) == [model.apply(req) for req in step]
                    if not any(req["op"] == "compact" for req in step):
                        # The events the writes recorded are those read back (history.events) after the commit.
                        assert events == (store.events(rev_before + 1, model.rev, 1 << 20) if model.rev > rev_before else [])
                assert store.current_revision() == model.rev
                assert store.compact_revision() == max(model.compact_rev, 0)
                past_read = {**data.draw(range_requests(model.rev), label="past read"),
                             "revision": data.draw(st.integers(0, model.rev + 1))}
                for req in (past_read, data.draw(whole_sorted_reads, label="sorted read")):
                    assert outcome(store.range, req) == outcome(model.range, req, model.rev)
            for revision in range(max(model.compact_rev, 1) - 1, model.rev + 2):
                req = {"key": b"\0", "range_end": b"\0", "revision": revision}
                assert outcome(store.range, req) == outcome(model.range, req, model.rev)
        finally:
            store.close()
