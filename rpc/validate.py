"""The checks etcd makes on a KV request before proposing it (etcd's v3rpc/key.go).

Each returns an error name from `rpc.errors` or None. Requests are the dicts of
`rpc.convert.to_dict`.
"""

from __future__ import annotations

from typing import Any

Req = dict[str, Any]

_SORT_ORDERS = range(0, 3)
_SORT_TARGETS = range(0, 5)


def check_range(r: Req) -> str | None:
    if not r.get("key"):
        return "empty_key"
    # etcd 3.4 does not check sort options: an unknown sort_order sorts nothing, and an
    # unknown sort_target is used (and crashes etcd 3.4) only when sorting, i.e. with
    # sort_order NONE (a non-KEY target sorts ASCEND), ASCEND or DESCEND. Only that case
    # is refused, with etcd 3.5's error.
    if r.get("sort_target", 0) not in _SORT_TARGETS and r.get("sort_order", 0) in _SORT_ORDERS:
        return "invalid_sort_option"
    return None


def check_put(r: Req) -> str | None:
    if not r.get("key"):
        return "empty_key"
    if r.get("ignore_value") and r.get("value"):
        return "value_provided"
    if r.get("ignore_lease") and r.get("lease"):
        return "lease_provided"
    return None


def check_delete(r: Req) -> str | None:
    return None if r.get("key") else "empty_key"


def check_txn(r: Req, max_txn_ops: int, nested: bool = False) -> str | None:
    compares, success, failure = r.get("compare", []), r.get("success", []), r.get("failure", [])
    ops = max(len(compares), len(success), len(failure))
    if ops > max_txn_ops:
        return "too_many_ops"
    for c in compares:
        if not c.get("key"):
            return "empty_key"
    # As etcd does, a nested txn gets what its parent left of the budget; this also bounds the nesting.
    for op in (*success, *failure):
        err = _check_op(op, max_txn_ops - ops)
        if err:
            return err
    if not nested:
        for branch in (success, failure):
            try:
                _intervals(branch)
            except _Duplicate:
                return "duplicate_key"
    return None


def _check_op(op: Req, max_txn_ops: int) -> str | None:
    if "request_range" in op:
        return check_range(op["request_range"])
    if "request_put" in op:
        return check_put(op["request_put"])
    if "request_delete_range" in op:
        return check_delete(op["request_delete_range"])
    if "request_txn" in op:
        return check_txn(op["request_txn"], max_txn_ops, nested=True)
    return None  # an empty RequestOp: etcd ignores it too


class _Duplicate(Exception):
    pass


_Interval = tuple[bytes, bytes | None]  # [start, end); end None: to the end of the key space


def _interval(r: Req) -> _Interval:
    key, end = r["key"], r.get("range_end", b"")
    if not end:
        return key, key + b"\0"
    return key, None if end == b"\0" else end


def _covers(dels: list[_Interval], key: bytes) -> bool:
    return any(start <= key and (end is None or key < end) for start, end in dels)


def _intervals(ops: list[Req]) -> tuple[set[bytes], list[_Interval]]:
    """The puts and deletes of one txn branch; raises _Duplicate where etcd finds a duplicate key."""
    dels = [_interval(op["request_delete_range"]) for op in ops if "request_delete_range" in op]
    puts: set[bytes] = set()
    for op in ops:
        if "request_txn" not in op:
            continue
        puts_then, dels_then = _intervals(op["request_txn"].get("success", []))
        puts_else, dels_else = _intervals(op["request_txn"].get("failure", []))
        for key in puts_then:
            if key in puts or _covers(dels, key):
                raise _Duplicate
            puts.add(key)
        for key in puts_else:
            # then and else exclude each other, so the same key in both is fine
            if (key in puts and key not in puts_then) or _covers(dels, key):
                raise _Duplicate
            puts.add(key)
        dels += dels_then + dels_else
    for op in ops:
        if "request_put" in op:
            key = op["request_put"]["key"]
            if key in puts or _covers(dels, key):
                raise _Duplicate
            puts.add(key)
    return puts, dels
