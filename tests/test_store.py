"""Unit tests of the MVCC store against etcd 3.4 semantics, on real LMDB environments."""

import os
import subprocess
import sys
import textwrap

import lmdb
import pytest

from petcd.store.errors import StoreError
from petcd.store.mvcc import MvccStore

ALL = {"key": b"\0", "range_end": b"\0"}


class Log:
    """A store plus the next raft index, so tests read like a client session."""

    def __init__(self, path: str, *, sync: bool = False, compact_step_records: int | None = None) -> None:
        self.path = path
        self.sync = sync
        self.compact_step_records = compact_step_records  # None: the store's default
        self.store = MvccStore(path, sync=sync, map_size_bytes=1 << 26)
        self.next_index = self.store.applied_index() + 1

    def __call__(self, op: str, **req) -> dict:
        return self.batch([{"op": op, **req}])[0]

    def batch(self, requests: list[dict]) -> list[dict]:
        entries = [(self.next_index + i, req) for i, req in enumerate(requests)]
        self.next_index += len(requests)
        return self.store.apply(entries, compact_step_records=self.compact_step_records)

    def get(self, key: bytes, **req) -> dict:
        return self.store.range({"key": key, **req})

    def keys(self, **req) -> list[bytes]:
        return [kv["key"] for kv in self.store.range({**ALL, **req})["kvs"]]

    def reopen(self) -> None:
        self.store.close()
        self.store = MvccStore(self.path, sync=self.sync, map_size_bytes=1 << 26)
        self.next_index = self.store.applied_index() + 1


@pytest.fixture
def log(tmp_path):
    session = Log(str(tmp_path / "mvcc"))
    yield session
    session.store.close()


def error(name: str) -> dict:
    messages = {
        "compacted": ("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted"),
        "future_rev": ("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision"),
        "key_not_found": ("INVALID_ARGUMENT", "etcdserver: key not found"),
        "lease_not_found": ("NOT_FOUND", "etcdserver: requested lease not found"),
        "key_too_long": ("INVALID_ARGUMENT",
                         "etcdserver: key is too long for petcd (max 511 bytes)"),
    }
    code, message = messages[name]
    return {"error": name, "code": code, "message": message}


def kv(key: bytes, value: bytes, create: int, mod: int, version: int, lease: int = 0) -> dict:
    return {"key": key, "create_revision": create, "mod_revision": mod, "version": version,
            "value": value, "lease": lease}


def grant_lease(log: Log, lease_id: int) -> None:
    assert log("lease_grant", ID=lease_id, TTL=60)["ID"] == lease_id


# --- basics and revisions

def test_empty_store(log):
    assert (log.store.current_revision(), log.store.compact_revision(),
            log.store.applied_index()) == (1, 0, 0)
    assert log.store.range(ALL) == {"revision": 1, "kvs": [], "more": False, "count": 0}


def test_put_generations_and_versions(log):
    assert log("put", key=b"a", value=b"1") == {"revision": 2}
    assert log("put", key=b"a", value=b"2", prev_kv=True) == {
        "revision": 3, "prev_kv": kv(b"a", b"1", 2, 2, 1)}
    assert log("put", key=b"b", prev_kv=True) == {"revision": 4}
    assert log.get(b"a")["kvs"] == [kv(b"a", b"2", 2, 3, 2)]
    assert log.get(b"b") == {"revision": 4, "kvs": [kv(b"b", b"", 4, 4, 1)], "more": False,
                             "count": 1}
    assert log("delete_range", key=b"a") == {"revision": 5, "deleted": 1, "prev_kvs": []}
    assert log.get(b"a")["kvs"] == []
    log("put", key=b"a", value=b"3")
    assert log.get(b"a")["kvs"] == [kv(b"a", b"3", 6, 6, 1)]  # a new generation
    assert log.get(b"a", revision=4)["kvs"] == [kv(b"a", b"2", 2, 3, 2)]
    assert log.get(b"a", revision=5)["kvs"] == []
    assert log.get(b"a", revision=5)["revision"] == 6  # the header is the current revision


def test_delete_range_and_no_op_delete(log):
    log.batch([{"op": "put", "key": k, "value": k} for k in (b"a", b"b", b"c", b"d")])
    assert log("delete_range", key=b"x") == {"revision": 5, "deleted": 0, "prev_kvs": []}
    assert log("delete_range", key=b"b", range_end=b"d", prev_kv=True) == {
        "revision": 6, "deleted": 2,
        "prev_kvs": [kv(b"b", b"b", 3, 3, 1), kv(b"c", b"c", 4, 4, 1)]}
    assert log("delete_range", key=b"b", range_end=b"d") == {
        "revision": 6, "deleted": 0, "prev_kvs": []}
    assert log.keys() == [b"a", b"d"]
    assert log("delete_range", key=b"\0", range_end=b"\0") == {
        "revision": 7, "deleted": 2, "prev_kvs": []}
    assert log.keys() == [] and log.store.current_revision() == 7


def test_key_range_conventions(log):
    log.batch([{"op": "put", "key": k} for k in (b"\0", b"a", b"a\0", b"ab", b"b", b"c")])
    assert log.keys(key=b"a", range_end=b"") == [b"a"]  # an empty range_end: the key alone
    assert log.keys(key=b"a", range_end=b"b") == [b"a", b"a\0", b"ab"]
    assert log.keys(key=b"ab", range_end=b"\0") == [b"ab", b"b", b"c"]
    assert log.keys() == [b"\0", b"a", b"a\0", b"ab", b"b", b"c"]
    assert log.keys(key=b"b", range_end=b"a") == []
    assert log.keys(key=b"zz" * 400, range_end=b"\0") == []  # longer than any indexable key
    assert log.get(b"zz" * 400)["kvs"] == []


# --- range options

def test_range_revision_errors(log):
    log("put", key=b"a")
    with pytest.raises(StoreError) as err:
        log.get(b"a", revision=3)
    assert (err.value.name, err.value.grpc_code, err.value.message) == (
        "future_rev", "OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision")
    assert log.get(b"a", revision=-1)["kvs"] == log.get(b"a")["kvs"]
    assert log("range", key=b"a", revision=9) == error("future_rev")


def test_range_limit_count_more_and_options(log):
    log.batch([{"op": "put", "key": k, "value": b"v" + k} for k in (b"a", b"b", b"c", b"d")])
    response = log.store.range({**ALL, "limit": 2})
    assert [kv["key"] for kv in response["kvs"]] == [b"a", b"b"]
    assert (response["more"], response["count"]) == (True, 4)
    response = log.store.range({**ALL, "limit": 4})
    assert (len(response["kvs"]), response["more"], response["count"]) == (4, False, 4)
    assert log.store.range({**ALL, "count_only": True, "limit": 1}) == {
        "revision": 5, "kvs": [], "more": False, "count": 4}
    assert [kv["value"] for kv in log.store.range({**ALL, "keys_only": True})["kvs"]] == [b""] * 4


def test_range_sorting(log):
    # versions: a 3, b 2, c 1, d 4; values: a "3", b "2", c "x", d "4"
    for key, times in ((b"a", 3), (b"b", 2), (b"c", 1), (b"d", 4)):
        for i in range(times):
            log("put", key=key, value=b"x" if key == b"c" else str(times).encode())
    def keys(**req):
        return log.keys(**req)
    assert keys(sort_order=2) == [b"d", b"c", b"b", b"a"]
    assert keys(sort_order=1, sort_target=1) == [b"c", b"b", b"a", b"d"]
    assert keys(sort_order=2, sort_target=1) == [b"d", b"a", b"b", b"c"]
    assert keys(sort_order=1, sort_target=2) == [b"a", b"b", b"c", b"d"]  # create
    assert keys(sort_order=2, sort_target=3) == [b"d", b"c", b"b", b"a"]  # mod
    assert keys(sort_order=2, sort_target=4) == [b"c", b"d", b"a", b"b"]  # value
    # Sorting by a target sorts ascending, but (as etcd) fetches only limit + 1 keys first.
    assert keys(sort_target=1, limit=1) == [b"b"]
    assert keys(sort_order=1, sort_target=1, limit=1) == [b"c"]
    response = log.store.range({**ALL, "sort_order": 2, "sort_target": 1, "limit": 2})
    assert (response["more"], response["count"]) == (True, 4)


def test_range_sort_ties_keep_key_order(log):
    log.batch([{"op": "put", "key": k, "value": b"same"} for k in (b"c", b"a", b"b")])
    assert log.keys(sort_order=2, sort_target=4) == [b"a", b"b", b"c"]
    assert log.keys(sort_order=1, sort_target=1) == [b"a", b"b", b"c"]


def test_range_mod_and_create_filters(log):
    log.batch([{"op": "put", "key": k} for k in (b"a", b"b", b"c", b"d")])  # revs 2..5
    log("put", key=b"a")  # a: create 2, mod 6
    assert log.keys(min_mod_revision=4) == [b"a", b"c", b"d"]
    assert log.keys(max_mod_revision=4) == [b"b", b"c"]
    assert log.keys(min_create_revision=3, max_create_revision=4) == [b"b", b"c"]
    response = log.store.range({**ALL, "min_mod_revision": 4, "limit": 2})
    assert [kv["key"] for kv in response["kvs"]] == [b"a", b"c"]
    assert (response["more"], response["count"]) == (True, 4)  # count ignores the filters
    response = log.store.range({**ALL, "max_create_revision": 3, "count_only": True})
    assert (response["kvs"], response["count"]) == ([], 4)


# --- put flags, leases, key length

def test_ignore_value_and_lease_need_the_key(log):
    assert log("put", key=b"a", value=b"v", ignore_value=True) == error("key_not_found")
    assert log("put", key=b"a", ignore_lease=True) == error("key_not_found")
    assert log.store.current_revision() == 1 and log.keys() == []
    log("put", key=b"a", value=b"v")
    assert log("put", key=b"a", ignore_value=True, prev_kv=True) == {
        "revision": 3, "prev_kv": kv(b"a", b"v", 2, 2, 1)}
    assert log.get(b"a")["kvs"] == [kv(b"a", b"v", 2, 3, 2)]
    log("delete_range", key=b"a")
    assert log("put", key=b"a", ignore_value=True) == error("key_not_found")


def test_leases(log):
    assert log("put", key=b"a", lease=7) == error("lease_not_found")
    assert log("put", key=b"a", lease=7, ignore_value=True) == error("lease_not_found")
    assert log.store.current_revision() == 1
    grant_lease(log, 7)
    assert log("put", key=b"a", value=b"v", lease=7) == {"revision": 2}
    assert log("put", key=b"a", value=b"w", ignore_lease=True) == {"revision": 3}
    assert log.get(b"a")["kvs"] == [kv(b"a", b"w", 2, 3, 2, lease=7)]
    assert log("put", key=b"a", value=b"x") == {"revision": 4}
    assert log.get(b"a")["kvs"][0]["lease"] == 0


def test_key_too_long(log):
    assert log("put", key=b"k" * 512) == error("key_too_long")
    assert log("put", key=b"k" * 511, value=b"v") == {"revision": 2}
    assert log.get(b"k" * 511)["count"] == 1
    assert log("txn", success=[{"request_put": {"key": b"x"}},
                               {"request_put": {"key": b"k" * 600}}]) == error("key_too_long")
    assert log.store.current_revision() == 2


# --- txn

def put_op(key: bytes, value: bytes = b"", **req) -> dict:
    return {"request_put": {"key": key, "value": value, **req}}


def test_txn_compares(log):
    log("put", key=b"a", value=b"1")
    log("put", key=b"b", value=b"2")
    def holds(**compare) -> bool:
        return log("txn", compare=[compare])["succeeded"]
    assert holds(key=b"a", target=0, result=0, version=1)
    assert holds(key=b"a", target=1, result=0, create_revision=2)
    assert holds(key=b"a", target=2, result=2, mod_revision=3)
    assert holds(key=b"a", target=3, result=0, value=b"1")
    assert holds(key=b"a", target=3, result=1, value=b"0")
    assert holds(key=b"a", target=3, result=3, value=b"2")
    assert holds(key=b"a", target=4, result=0, lease=0)
    assert not holds(key=b"a", target=0, result=1, version=1)
    # missing keys compare as a zero kv, except that a value compare always fails
    assert holds(key=b"zz", target=0, result=0, version=0)
    assert holds(key=b"zz", target=1, result=0)
    assert not holds(key=b"zz", target=3, result=0, value=b"")
    assert not holds(key=b"zz", target=3, result=3, value=b"x")
    # over a range every key must hold; an empty range compares the zero kv
    assert holds(key=b"a", range_end=b"c", target=0, result=0, version=1)
    assert not holds(key=b"a", range_end=b"c", target=3, result=0, value=b"1")
    assert holds(key=b"a", range_end=b"c", target=3, result=1, value=b"0")
    assert holds(key=b"x", range_end=b"\0", target=2, result=0, mod_revision=0)
    assert log.store.current_revision() == 3  # read-only txns do not bump the revision


def test_txn_branches_one_revision_and_responses(log):
    log("put", key=b"a", value=b"1")
    response = log("txn", compare=[{"key": b"a", "target": 3, "value": b"1"}],
                   success=[put_op(b"b", b"x"), put_op(b"c", b"y", prev_kv=True),
                            {"request_range": {"key": b"a", "range_end": b"\0"}},
                            {"request_delete_range": {"key": b"a", "prev_kv": True}}],
                   failure=[put_op(b"z")])
    assert response == {
        "revision": 3, "succeeded": True,
        "responses": [
            {"response_put": {}}, {"response_put": {}},
            {"response_range": {"kvs": [kv(b"a", b"1", 2, 2, 1), kv(b"b", b"x", 3, 3, 1),
                                        kv(b"c", b"y", 3, 3, 1)],
                                "more": False, "count": 3}},
            {"response_delete_range": {"deleted": 1, "prev_kvs": [kv(b"a", b"1", 2, 2, 1)]}},
        ]}
    assert log.keys() == [b"b", b"c"]
    response = log("txn", compare=[{"key": b"a", "target": 0, "result": 1}],
                   success=[put_op(b"z")], failure=[{"request_range": {"key": b"b"}}])
    assert response == {"revision": 3, "succeeded": False, "responses": [
        {"response_range": {"kvs": [kv(b"b", b"x", 3, 3, 1)], "more": False, "count": 1}}]}
    assert log("txn", success=[{"request_delete_range": {"key": b"q"}}]) == {
        "revision": 3, "succeeded": True,
        "responses": [{"response_delete_range": {"deleted": 0, "prev_kvs": []}}]}


def test_nested_txn_compares_see_the_start(log):
    log("put", key=b"a", value=b"old")
    inner = {"compare": [{"key": b"a", "target": 3, "value": b"old"}],
             "success": [put_op(b"seen", b"old")], "failure": [put_op(b"seen", b"new")]}
    response = log("txn", success=[put_op(b"a", b"new"), {"request_txn": inner}])
    assert response == {"revision": 3, "succeeded": True, "responses": [
        {"response_put": {}},
        {"response_txn": {"succeeded": True, "responses": [{"response_put": {}}]}}]}
    assert log.get(b"seen")["kvs"] == [kv(b"seen", b"old", 3, 3, 1)]


def test_txn_errors_apply_nothing(log):
    log("put", key=b"a")
    before = log.store.range(ALL)
    assert log("txn", success=[put_op(b"b"), put_op(b"c", ignore_value=True)]) == error(
        "key_not_found")
    assert log("txn", success=[put_op(b"b"), put_op(b"c", lease=5)]) == error(
        "lease_not_found")
    assert log("txn", success=[put_op(b"b"), {"request_range": {"key": b"a", "revision": 3}}]
               ) == error("future_rev")
    nested = {"request_txn": {"success": [put_op(b"c", ignore_lease=True)]}}
    assert log("txn", success=[put_op(b"b"), nested]) == error("key_not_found")
    # puts are checked before ranges, ignore flags before leases (etcd's order)
    assert log("txn", success=[{"request_range": {"key": b"a", "revision": 9}},
                               put_op(b"c", lease=5, ignore_value=True)]) == error(
        "key_not_found")
    assert log.store.range(ALL) == before
    # only the branch taken is checked
    assert log("txn", compare=[{"key": b"a", "target": 0, "result": 0, "version": 9}],
               success=[put_op(b"c", lease=5)], failure=[put_op(b"b")])["revision"] == 3


def test_txn_range_sees_own_writes_and_checks_revisions(log):
    log("put", key=b"a", value=b"1")
    response = log("txn", success=[put_op(b"a", b"2"), {"request_range": {"key": b"a"}},
                                   {"request_range": {"key": b"a", "revision": 2}}])
    assert [r["response_range"]["kvs"][0]["value"] for r in response["responses"][1:]] == [
        b"2", b"1"]
    log("compact", revision=3)
    assert log("txn", success=[{"request_range": {"key": b"a", "revision": 2}}]) == error(
        "compacted")


# --- compaction

def test_compaction(log):
    log("put", key=b"a", value=b"1")  # 2
    log("put", key=b"a", value=b"2")  # 3
    log("put", key=b"b", value=b"1")  # 4
    log("delete_range", key=b"b")  # 5
    log("put", key=b"c", value=b"1")  # 6
    log("put", key=b"a", value=b"3")  # 7
    assert log("compact", revision=8) == error("future_rev")
    assert log("compact", revision=5) == {"revision": 7}
    assert log.store.compact_revision() == 5
    for revision in (2, 4):
        with pytest.raises(StoreError) as err:
            log.store.range({**ALL, "revision": revision})
        assert err.value.name == "compacted" and err.value.grpc_code == "OUT_OF_RANGE"
    assert log.store.range({**ALL, "revision": 5})["kvs"] == [kv(b"a", b"2", 2, 3, 2)]
    assert log.store.range({**ALL, "revision": 6})["kvs"] == [
        kv(b"a", b"2", 2, 3, 2), kv(b"c", b"1", 6, 6, 1)]
    assert log("compact", revision=5) == error("compacted")
    assert log("compact", revision=4) == error("compacted")
    assert log("compact", revision=7) == {"revision": 7}
    assert log.store.range({**ALL, "revision": 7})["count"] == 2
    assert log.store.current_revision() == 7


def test_compact_zero_on_a_fresh_store_as_etcd(log):
    assert log("compact", revision=0) == {"revision": 1}
    assert log("compact", revision=0) == error("compacted")
    assert log("compact", revision=1) == {"revision": 1}
    assert log.store.compact_revision() == 1


def test_compaction_removes_superseded_revisions_and_tombstones(tmp_path):
    empty = MvccStore(str(tmp_path / "empty"))
    log = Log(str(tmp_path / "log"))
    log("put", key=b"a", value=b"1")
    log("put", key=b"a", value=b"2")
    log("delete_range", key=b"a")
    log("put", key=b"b", value=b"1")
    log("compact", revision=4)
    log("delete_range", key=b"b")
    assert log.store.hash_kv(0)[0] != empty.hash_kv(0)[0]
    log("compact", revision=6)  # b's put and tombstone go: no revision is left
    assert log.store.hash_kv(0)[0] == empty.hash_kv(0)[0]
    log.store.close()
    empty.close()


# --- apply batches, restart, readers

def test_batch_errors_are_isolated_and_indices_recorded(log):
    responses = log.batch([{"op": "put", "key": b"a"}, {"op": "put", "key": b"b", "lease": 1},
                           {"op": "noop"}, {"op": "put", "key": b"c"}])
    assert responses == [{"revision": 2}, error("lease_not_found"), {"revision": 2},
                         {"revision": 3}]
    assert log.store.applied_index() == 4 and log.keys() == [b"a", b"c"]
    assert log.store.apply([(3, {"op": "put", "key": b"x"}), (5, {"op": "put", "key": b"d"}),
                            (5, {"op": "put", "key": b"e"})]) == [None, {"revision": 4}, None]
    assert log.keys() == [b"a", b"c", b"d"] and log.store.applied_index() == 5


def test_unknown_op_aborts_the_whole_batch(log):
    with pytest.raises(ValueError):
        log.store.apply([(1, {"op": "put", "key": b"a"}), (2, {"op": "frobnicate"})])
    assert log.store.applied_index() == 0 and log.keys() == []
    with pytest.raises(ValueError):
        log.store.apply([(1, {"op": "txn", "success": [{"request_nothing": {}}]})])


def test_restart_keeps_data_and_applied_index(tmp_path):
    log = Log(str(tmp_path / "mvcc"), sync=True)
    entries = [(1, {"op": "put", "key": b"a", "value": b"1"}),
               (2, {"op": "put", "key": b"b", "value": b"2"}),
               (3, {"op": "compact", "revision": 2})]
    log.store.apply(entries)
    hash_before = log.store.hash_kv(0)
    log.reopen()
    assert (log.store.applied_index(), log.store.current_revision(),
            log.store.compact_revision()) == (3, 3, 2)
    assert log.store.apply(entries) == [None, None, None]
    assert log.store.hash_kv(0) == hash_before
    assert log.keys() == [b"a", b"b"]
    assert log("put", key=b"c") == {"revision": 4}
    log.store.close()


READER = textwrap.dedent("""
    import sys
    from petcd.store.mvcc import MvccStore
    store = MvccStore(sys.argv[1], readonly=True, map_size_bytes=1 << 26)
    for line in sys.stdin:
        response = store.range({"key": b"\\0", "range_end": b"\\0"})
        print(store.applied_index(), store.current_revision(),
              b",".join(kv["key"] + b"=" + kv["value"] for kv in response["kvs"]).decode(),
              flush=True)
""")


def test_read_only_process_sees_writes(log):
    log("put", key=b"a", value=b"1")
    reader = subprocess.Popen([sys.executable, "-c", READER, log.path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        def read() -> str:
            reader.stdin.write("\n")
            reader.stdin.flush()
            return reader.stdout.readline().strip()
        assert read() == "1 2 a=1"
        log.batch([{"op": "put", "key": b"b", "value": b"2"},
                   {"op": "put", "key": b"a", "value": b"3"}])
        assert read() == "3 4 a=3,b=2"
    finally:
        reader.stdin.close()
        assert reader.wait(timeout=30) == 0


FOLLOWER = textwrap.dedent("""
    import sys
    from petcd.store.mvcc import MvccStore
    store = MvccStore(sys.argv[1], readonly=True, map_size_bytes=1 << 26)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "get":
            print(b",".join(kv["value"] for kv in store.range({"key": arg.encode()})["kvs"]).decode(), flush=True)
        elif command == "copy":
            store.copy_to(arg)
            print("copied", flush=True)
        else:
            print(store.file_size_bytes(), flush=True)
""")


def test_read_only_process_follows_a_defragmentation(tmp_path):
    """The writer swaps in a new file; a reader that opened the old one reads, sizes and backs up the new one."""
    log = Log(str(tmp_path / "mvcc"), sync=True)
    log.batch([{"op": "put", "key": b"k%d" % i, "value": b"x" * 1000} for i in range(300)])
    log.batch([{"op": "delete_range", "key": b"k", "range_end": b"l"}, {"op": "compact", "revision": 3}])
    log("put", key=b"a", value=b"1")
    reader = subprocess.Popen([sys.executable, "-c", FOLLOWER, log.path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        def ask(line: str) -> str:
            reader.stdin.write(line + "\n")
            reader.stdin.flush()
            return reader.stdout.readline().strip()
        assert ask("get a") == "1"
        size_before = int(ask("size"))
        log.store.defragment()
        log("put", key=b"a", value=b"2")
        assert ask("copy " + str(tmp_path / "backup.db")) == "copied", "a backup is the first thing asked"
        assert ask("get a") == "2", "the reader reads the new file"
        assert int(ask("size")) == os.path.getsize(os.path.join(log.path, "data.mdb")) < size_before
    finally:
        reader.stdin.close()
        assert reader.wait(timeout=30) == 0
    os.makedirs(tmp_path / "restored")
    os.rename(tmp_path / "backup.db", tmp_path / "restored" / "data.mdb")
    restored = MvccStore(str(tmp_path / "restored"), sync=False)
    assert [kv["value"] for kv in restored.range({"key": b"a"})["kvs"]] == [b"2"]
    restored.close()


def test_read_only_requires_an_existing_store(tmp_path):
    with pytest.raises(lmdb.Error):
        MvccStore(str(tmp_path / "missing"), readonly=True)


# --- hash

def test_hash_kv(tmp_path):
    one, two = Log(str(tmp_path / "one")), Log(str(tmp_path / "two"))
    requests = [{"op": "put", "key": b"a", "value": b"1"}, {"op": "delete_range", "key": b"a"},
                {"op": "put", "key": b"b", "value": b"2"}]
    one.batch(requests)
    two.batch(requests)
    assert one.store.hash_kv(0) == two.store.hash_kv(0)
    hash_at_3, compact_rev, current_rev = one.store.hash_kv(3)
    assert (compact_rev, current_rev) == (0, 4)
    one("put", key=b"c")
    assert one.store.hash_kv(3) == (hash_at_3, 0, 5)
    assert one.store.hash_kv(0)[0] != two.store.hash_kv(0)[0]
    two("put", key=b"c", value=b"different")
    assert one.store.hash_kv(0)[0] != two.store.hash_kv(0)[0]
    one("compact", revision=3)
    with pytest.raises(StoreError, match="compacted"):
        one.store.hash_kv(3)
    with pytest.raises(StoreError, match="future"):
        one.store.hash_kv(6)
    assert one.store.hash_kv(4)[1:] == (3, 5)
    # Values of the same length: a record ends with its own CRC, and a CRC over a message and its
    # CRC no longer depends on the message; the hash must take the record's body (records.hashed_bytes).
    one("put", key=b"d", value=b"same-length-1")
    two("put", key=b"d", value=b"same-length-2")
    assert one.store.hash_kv(0)[0] != two.store.hash_kv(0)[0]
    assert one.store.digest()[0] != two.store.digest()[0]
    one.store.close()
    two.store.close()


def test_leases_attach_keys_and_revoke_deletes_them_in_one_revision(log):
    out = log.store.apply([(1, {"op": "lease_grant", "ID": 7, "TTL": 10}),
                           (2, {"op": "put", "key": b"a", "value": b"1", "lease": 7}),
                           (3, {"op": "put", "key": b"b", "value": b"2", "lease": 7}),
                           (4, {"op": "put", "key": b"b", "value": b"3"}),  # detaches b
                           (5, {"op": "lease_grant", "ID": 7, "TTL": 10})])
    assert out[0] == {"revision": 1, "ID": 7, "TTL": 10}
    assert out[4]["error"] == "lease_exists" and out[4]["message"] == "etcdserver: lease already exists"
    assert log.store.leases() == [(7, 10)] and log.store.lease_info(7) == (10, [b"a"])
    out = log.store.apply([(6, {"op": "put", "key": b"c", "value": b"x", "lease": 7}),
                           (7, {"op": "lease_revoke", "ID": 7}),
                           (8, {"op": "lease_revoke", "ID": 7})])
    assert out[1] == {"revision": 6}, "both keys deleted at one revision"
    assert out[2]["error"] == "lease_not_found"
    assert log.store.leases() == [] and log.store.lease_info(7) is None
    deletes = log.store.events(6, 6)
    assert [(e["type"], e["kv"]["key"]) for e in deletes[0][1]] == [(1, b"a"), (1, b"c")]


def test_a_delete_detaches_leased_keys_and_skips_the_lease_lookup_when_none_is_attached(log):
    log.batch([{"op": "put", "key": b"u1", "value": b"1"}, {"op": "put", "key": b"u2", "value": b"2"}])
    assert log("delete_range", key=b"u1", range_end=b"u3")["deleted"] == 2, "no lease anywhere"
    log.batch([{"op": "lease_grant", "ID": 9, "TTL": 10}, {"op": "put", "key": b"l1", "value": b"x", "lease": 9},
               {"op": "put", "key": b"l2", "value": b"y"}])
    assert log("delete_range", key=b"l1", range_end=b"l3")["deleted"] == 2
    assert log.store.lease_info(9) == (10, []), "the deleted key left its lease"


def test_events_replay_history_with_prev_kv_and_refuse_compacted(log):
    log.store.apply([(1, {"op": "put", "key": b"k", "value": b"1"}),
                     (2, {"op": "txn", "success": [{"request_put": {"key": b"k", "value": b"2"}},
                                                   {"request_put": {"key": b"j", "value": b"3"}}]}),
                     (3, {"op": "delete_range", "key": b"k"})])
    revs = log.store.events(2, 100)
    assert [r for r, _ in revs] == [2, 3, 4]
    assert [e["kv"]["key"] for e in revs[1][1]] == [b"k", b"j"], "one revision's events stay together"
    assert revs[1][1][0]["prev_kv"]["value"] == b"1"
    assert revs[2][1][0] == {"type": 1, "kv": {"key": b"k", "mod_revision": 4}, "prev_kv": revs[1][1][0]["kv"]}
    assert [r for r, _ in log.store.events(2, 100, max_revisions=2)] == [2, 3]
    log.store.apply([(4, {"op": "compact", "revision": 3})])
    assert [r for r, _ in log.store.events(3, 100)] == [3, 4]
    with pytest.raises(StoreError):
        log.store.events(2, 100)


def test_a_hole_in_the_applied_entries_stops_the_apply_and_changes_nothing(log):
    log("put", key=b"a", value=b"1")
    applied = log.store.applied_index()
    with pytest.raises(RuntimeError, match="a committed entry is missing"):
        log.store.apply([(applied + 2, {"op": "put", "key": b"b", "value": b"2"})])
    assert log.store.applied_index() == applied
    assert log.keys() == [b"a"]
