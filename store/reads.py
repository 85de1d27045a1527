"""Range requests and txn compares, as etcd's apply.go evaluates them."""

from .errors import compacted, future_rev
from .keys import key_bounds
from .records import kv_dict
from .tables import StoreTxn

SORT_NONE, SORT_ASCEND, SORT_DESCEND = 0, 1, 2
SORT_FIELDS = ("key", "version", "create_revision", "mod_revision", "value")  # by sort_target

COMPARE_EQUAL, COMPARE_GREATER, COMPARE_LESS, COMPARE_NOT_EQUAL = 0, 1, 2, 3
COMPARE_FIELDS = ("version", "create_revision", "mod_revision", "value", "lease")  # by target
COMPARE_TARGET_VALUE = 3

_FILTERS = (  # (request field, kv field, keeps kv when kv value compared to bound is ...)
    ("max_mod_revision", "mod_revision", lambda kv_value, bound: kv_value <= bound),
    ("min_mod_revision", "mod_revision", lambda kv_value, bound: kv_value >= bound),
    ("max_create_revision", "create_revision", lambda kv_value, bound: kv_value <= bound),
    ("min_create_revision", "create_revision", lambda kv_value, bound: kv_value >= bound),
)


def check_range_revision(req: dict, current_rev: int, compact_rev: int) -> None:
    """etcd's checkRange for ranges inside a txn, against the txn's starting view."""
    revision = req.get("revision", 0)
    if revision == 0:
        return
    if revision > current_rev:
        raise future_rev()
    if revision < compact_rev:
        raise compacted()


def range_response(tables: StoreTxn, req: dict, current_rev: int) -> dict:
    """A RangeResponse read at `current_rev` (the header revision) unless req["revision"]."""
    revision = req.get("revision", 0)
    if revision > current_rev:
        raise future_rev()
    if revision <= 0:
        revision = current_rev
    if revision < tables.compact_revision():
        raise compacted()

    limit = req.get("limit", 0)
    sort_order = req.get("sort_order", SORT_NONE)
    sort_target = req.get("sort_target", 0)
    # etcd 3.4 takes any sort_order: one it does not know sorts nothing (but, not being
    # NONE, still fetches everything). A sort_target it does not know is refused by the
    # gateway whenever it would be used (etcd 3.4 crashes there; 3.5 refuses too).
    sorts = sort_order in (SORT_ASCEND, SORT_DESCEND) or (sort_order == SORT_NONE and sort_target != 0)
    assert not sorts or 0 <= sort_target < len(SORT_FIELDS), (sort_order, sort_target)
    filters = [(field, kv_field, keep, req[field]) for field, kv_field, keep in _FILTERS
               if req.get(field, 0) != 0]
    # etcd fetches everything when it sorts or filters, else limit + 1 (to know `more`).
    # A sort_target without sort_order still sorts below but fetches only limit + 1.
    fetch_limit = limit + 1 if limit > 0 and sort_order == SORT_NONE and not filters else 0

    count = 0
    kvs = []
    for _, main, sub in tables.scan(*key_bounds(req.get("key", b""), req.get("range_end", b"")),
                                 revision):
        count += 1
        if not req.get("count_only", False) and (fetch_limit == 0 or len(kvs) < fetch_limit):
            kvs.append(kv_dict(tables.record(main, sub), main))

    for _, kv_field, keep, bound in filters:
        kvs = [kv for kv in kvs if keep(kv[kv_field], bound)]
    if sorts:
        # Stable, so ties keep key order both ways, as Go's sort.Sort does for <= 12 items.
        field = SORT_FIELDS[sort_target]
        kvs.sort(key=lambda kv: kv[field], reverse=sort_order == SORT_DESCEND)
    more = limit > 0 and len(kvs) > limit
    if more:
        kvs = kvs[:limit]
    if req.get("keys_only", False):
        for kv in kvs:
            kv["value"] = b""
    return {"revision": current_rev, "kvs": kvs, "more": more, "count": count}


def compare_holds(tables: StoreTxn, compare: dict, at_rev: int) -> bool:
    """etcd's applyCompare: every key in the compare's range must satisfy it."""
    target = compare.get("target", 0)
    assert 0 <= target < len(COMPARE_FIELDS)
    field = COMPARE_FIELDS[target]
    kvs = [kv_dict(tables.record(main, sub), main) for _, main, sub in
           tables.scan(*key_bounds(compare.get("key", b""), compare.get("range_end", b"")),
                       at_rev)]
    if not kvs:
        if target == COMPARE_TARGET_VALUE:
            return False  # a missing value is not the empty value
        kvs = [{"version": 0, "create_revision": 0, "mod_revision": 0, "lease": 0}]
    expected = compare.get(field, b"" if target == COMPARE_TARGET_VALUE else 0)
    return all(_holds(compare.get("result", COMPARE_EQUAL), kv[field], expected) for kv in kvs)


def _holds(result: int, actual: int | bytes, expected: int | bytes) -> bool:
    if result == COMPARE_EQUAL:
        return actual == expected
    if result == COMPARE_GREATER:
        return actual > expected
    if result == COMPARE_LESS:
        return actual < expected
    assert result == COMPARE_NOT_EQUAL, result
    return actual != expected
