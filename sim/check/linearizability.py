"""Linearizability of the KV operations of a history.

The model is a map key -> value (absent = None): put sets; get returns the
value; cas succeeds iff the current value equals `expect` (None: the key is
absent), then sets; delete removes (deleted = 1 if the key was present, else
0); txn, when every guard holds, reads (before its writes) and applies its
writes atomically, and otherwise does nothing.

Search: Wing & Gong's algorithm with Lowe's just-in-time linearization, as
Porcupine implements it -- calls and returns in one time-ordered doubly linked
list; at each point any operation called before the first pending return may
be linearized next; an operation whose return is reached unlinearized forces a
backtrack -- with memoisation of (linearized set, model state): a state reached
again with the same set of operations linearized is not explored twice.

  * "fail" operations are dropped (they certainly did not take effect).
  * "info" operations have no return: they may be linearized at any point after
    their invoke, or never. Info reads (get, txn without writes) are dropped;
    an info write is only placed where it changes the state and helps some op
    still to be placed (see `Search`). The memo knows that having *fewer* info
    operations consumed is never worse: a node is pruned when one with the same
    ok-set and values, a subset of its info ops consumed and a revision bound
    no higher, was already explored.
  * Calls and returns with the same timestamp count as concurrent.
  * P-compositionality: the map is a product of independent registers, so the
    history is split into partitions, one per key, except that a txn joins all
    the keys it touches (union-find); each partition is searched alone.
  * Before searching a partition, a cheap necessary condition is checked
    (`Search.unsupplied`): every value an ok op saw must come from a write that
    was not certainly overwritten before the op began. It names stale reads,
    lost writes and double cas successes with their witnesses, and decides such
    partitions without a long search.
  * The search prunes steps that provably lead nowhere and orders candidates
    by reported revision; both are described in `Search`, and a test checks
    them against a brute-force search on thousands of small random histories.

use_revisions (default True) adds etcd's revision -- the store's global
logical clock -- to the model, soundly: every etcd operation takes effect at
one store revision, the revision goes up by one at every write and never
otherwise, and a response's header revision is the store revision at its
linearization point. So within a partition, along the linearization, a
write's revision must be > the bound so far and a read's (get, failed cas,
delete of an absent key, failed txn) >= it; a write without a known revision
(an info op, or a result without "revision") raises the bound by one. Across
partitions two cheap global checks are added: no two writes share a
revision, and an operation invoked after another completed never reports a
lower revision (strictly higher if it is a write). The bound is kept per
partition, so revision orders that only conflict across partitions (beyond
those two pairwise checks) are not caught. Revisions must be header
revisions of linearizable requests; turn the flag off for histories whose
revisions mean something else (e.g. serializable reads).

The search has a step budget per partition; a partition that exhausts it is
"unknown", never guessed. For a partition that is not linearizable the
longest linearizable prefix the search found is reported, with the operation
that cannot be placed after it (the pending operation with the earliest
return, or the op a stale-read witness names) and why each candidate fails
there.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from petcd.sim.check.history import KV_KINDS, Op, show
from petcd.sim.check.verdict import FAIL, OK, UNKNOWN, Verdict

CHECKER = "linearizability"
DEFAULT_MAX_STEPS = 2_000_000
DIAGNOSIS_STEPS = 200_000  # budget of the searches that only improve a failure's report
DIAGNOSIS_SECONDS = 2.0

State = tuple[tuple[Any, ...], int]  # (values by slot, revision lower bound)
Step = Callable[[State], State | None]


# ---------------------------------------------------------------------------
# partitions
def op_keys(op: Op) -> set[bytes]:
    if op.kind == "txn":
        return set(op.get("reads") or []) | set(op.get("writes") or {}) | set(op.get("guard") or {})
    return {op["key"]}


def _is_read_only(op: Op) -> bool:
    return op.kind == "get" or (op.kind == "txn" and not op.get("writes"))


def partition(ops: Sequence[tuple[int, Op]]) -> list[tuple[list[bytes], list[tuple[int, Op]]]]:
    """Split ops into independent sub-histories: union-find over the keys each op touches."""
    parent: dict[bytes, bytes] = {}

    def find(k: bytes) -> bytes:
        root = k
        while parent[root] != root:
            root = parent[root]
        while parent[k] != root:
            parent[k], k = root, parent[k]
        return root

    for _, op in ops:
        ks = sorted(op_keys(op))
        for k in ks:
            parent.setdefault(k, k)
        for k in ks[1:]:
            a, b = find(ks[0]), find(k)
            if a != b:
                parent[b] = a
    groups: dict[bytes, list[tuple[int, Op]]] = {}
    keys: dict[bytes, set[bytes]] = {}
    for k in parent:
        keys.setdefault(find(k), set()).add(k)
    keyless: list[tuple[int, Op]] = []  # a txn with no keys at all: still checked (an empty guard holds)
    for i, op in ops:
        ks = op_keys(op)
        if not ks:
            keyless.append((i, op))
            continue
        groups.setdefault(find(next(iter(ks))), []).append((i, op))
    out = [(sorted(keys[r]), groups[r]) for r in sorted(groups, key=lambda r: min(keys[r]))]
    return out + ([([], keyless)] if keyless else [])


# ---------------------------------------------------------------------------
# the model, compiled per op into a fast step function State -> State | None
def _revision(op: Op, use_revisions: bool) -> int | None:
    if not use_revisions or op.outcome != "ok":
        return None
    rev = (op.result or {}).get("revision")
    return int(rev) if rev is not None else None


def _compile(op: Op, slot: Mapping[bytes, int], use_revisions: bool) -> Step:
    info = op.outcome == "info"
    bump = 1 if use_revisions else 0
    rev = _revision(op, use_revisions)
    res = op.result or {}
    kind = op.kind

    def write_lo(lo: int) -> int | None:  # the bound after a write, None if the write's revision is impossible
        if rev is None:
            return lo + bump
        return rev if rev > lo else None

    def read_lo(lo: int) -> int | None:
        if rev is None:
            return lo
        return rev if rev >= lo else None

    if kind in ("put", "get", "cas", "delete"):
        s = slot[op["key"]]
    if kind == "put":
        val = op["value"]
        if info:

            def step(st: State) -> State | None:
                v, lo = st
                if v[s] == val:
                    return None
                return (v[:s] + (val,) + v[s + 1 :], lo + bump)

        else:

            def step(st: State) -> State | None:
                v, lo = st
                nlo = write_lo(lo)
                if nlo is None:
                    return None
                return (v[:s] + (val,) + v[s + 1 :], nlo)

        return step
    if kind == "get":
        want = res.get("value")

        def step(st: State) -> State | None:
            v, lo = st
            if v[s] != want:
                return None
            nlo = read_lo(lo)
            if nlo is None:
                return None
            return (v, nlo)

        return step
    if kind == "cas":
        expect, val = op.get("expect"), op["value"]
        if info:

            def step(st: State) -> State | None:
                v, lo = st
                if v[s] != expect or expect == val:
                    return None
                return (v[:s] + (val,) + v[s + 1 :], lo + bump)

        elif res.get("succeeded"):

            def step(st: State) -> State | None:
                v, lo = st
                if v[s] != expect:
                    return None
                nlo = write_lo(lo)
                if nlo is None:
                    return None
                return (v[:s] + (val,) + v[s + 1 :], nlo)

        else:

            def step(st: State) -> State | None:
                v, lo = st
                if v[s] == expect:
                    return None
                nlo = read_lo(lo)
                if nlo is None:
                    return None
                return (v, nlo)

        return step
    if kind == "delete":
        if info:

            def step(st: State) -> State | None:
                v, lo = st
                if v[s] is None:
                    return None
                return (v[:s] + (None,) + v[s + 1 :], lo + bump)

            return step
        deleted = bool(res.get("deleted"))

        def step(st: State) -> State | None:
            v, lo = st
            if (v[s] is not None) != deleted:
                return None
            if deleted:
                nlo = write_lo(lo)
                if nlo is None:
                    return None
                return (v[:s] + (None,) + v[s + 1 :], nlo)
            nlo = read_lo(lo)
            if nlo is None:
                return None
            return (v, nlo)

        return step
    if kind == "txn":
        guard = [(slot[k], e) for k, e in (op.get("guard") or {}).items()]
        writes = [(slot[k], w) for k, w in (op.get("writes") or {}).items()]
        values = res.get("values") or {}
        reads = [(slot[k], values[k]) for k in (op.get("reads") or []) if k in values]
        succeeded = bool(res.get("succeeded"))

        def holds(v: tuple[Any, ...]) -> bool:
            for gs, ge in guard:
                if v[gs] != ge:
                    return False
            return True

        def apply(v: tuple[Any, ...]) -> tuple[tuple[Any, ...], bool]:
            nv = list(v)
            changed = False
            for ws, wv in writes:
                if wv is not None or nv[ws] is not None:
                    changed = True  # etcd: any put, or a delete that removed something, makes a revision
                nv[ws] = wv
            return tuple(nv), changed

        if info:

            def step(st: State) -> State | None:
                v, lo = st
                if not holds(v):
                    return None
                nv, _ = apply(v)
                if nv == v:
                    return None
                return (nv, lo + bump)

        elif succeeded:

            def step(st: State) -> State | None:
                v, lo = st
                if not holds(v):
                    return None
                for rs, rv in reads:
                    if v[rs] != rv:
                        return None
                nv, changed = apply(v)
                nlo = write_lo(lo) if changed else read_lo(lo)
                if nlo is None:
                    return None
                return (nv, nlo)

        else:

            def step(st: State) -> State | None:
                v, lo = st
                if holds(v):
                    return None
                nlo = read_lo(lo)
                if nlo is None:
                    return None
                return (v, nlo)

        return step
    raise ValueError(f"not a KV operation: {op.kind}")


def explain(op: Op, values: Mapping[bytes, bytes | None], lo: int, use_revisions: bool = True) -> str:
    """Why `op` cannot take effect in this state (values by key, revision bound `lo`); "" if it can."""
    res = op.result or {}
    rev = _revision(op, use_revisions)
    info = op.outcome == "info"

    def cur(k: bytes) -> bytes | None:
        return values.get(k)

    def rev_msg(is_write: bool) -> str:
        if rev is None:
            return ""
        if is_write and rev <= lo:
            return f"its revision {rev} is not above {lo}, the store revision at this point"
        if not is_write and rev < lo:
            return f"its revision {rev} is below {lo}, the store revision at this point"
        return ""

    k = op.kind
    if k == "put":
        if info and cur(op["key"]) == op["value"]:
            return "(info) it would change nothing here"
        return "" if info else rev_msg(True)
    if k == "get":
        if cur(op["key"]) != res.get("value"):
            return f"it returned {show(res.get('value'))} but {show(op['key'])} holds {show(cur(op['key']))}"
        return rev_msg(False)
    if k == "cas":
        c, e = cur(op["key"]), op.get("expect")
        if info:
            return "" if c == e and e != op["value"] else "(info) it would change nothing here"
        if res.get("succeeded") and c != e:
            return f"it succeeded but {show(op['key'])} holds {show(c)}, not the expected {show(e)}"
        if not res.get("succeeded") and c == e:
            return f"it did not succeed but {show(op['key'])} holds the expected {show(e)}"
        return rev_msg(bool(res.get("succeeded")))
    if k == "delete":
        present = cur(op["key"]) is not None
        if info:
            return "" if present else "(info) it would change nothing here"
        if present != bool(res.get("deleted")):
            return f"it deleted {res.get('deleted')} but {show(op['key'])} holds {show(cur(op['key']))}"
        return rev_msg(present)
    if k == "txn":
        failing = [g for g, e in (op.get("guard") or {}).items() if cur(g) != e]
        writes = op.get("writes") or {}
        if info:
            if failing:
                return "(info) its guard does not hold here: " + ", ".join(f"{show(g)} holds {show(cur(g))}" for g in failing)
            if all(cur(w) == v for w, v in writes.items()):
                return "(info) it would change nothing here"
            return ""
        if res.get("succeeded"):
            if failing:
                return "it succeeded but its guard does not hold: " + ", ".join(
                    f"{show(g)} holds {show(cur(g))}, expected {show(op['guard'][g])}" for g in failing
                )
            vals = res.get("values") or {}
            bad = [r for r in (op.get("reads") or []) if r in vals and vals[r] != cur(r)]
            if bad:
                return "it read " + ", ".join(f"{show(r)}={show(vals[r])} but it holds {show(cur(r))}" for r in bad)
            changed = any(v is not None or cur(w) is not None for w, v in writes.items())
            return rev_msg(changed)
        if not failing:
            return "it did not succeed but its guard holds"
        return rev_msg(False)
    return f"not a KV operation: {k}"


class _Facts:
    """What an op needs to see and may write, as (slot, value) pairs, for pruning."""

    __slots__ = ("needs", "ne", "info_needs", "writes")

    def __init__(self, op: Op, slot: Mapping[bytes, int]) -> None:
        self.needs: list[tuple[int, Any]] = []  # ok op: the slot must hold this value where it is placed
        self.ne: list[tuple[int, Any]] = []  # ok op: needs (one of) these slots to NOT hold the value
        self.info_needs: list[tuple[int, Any]] = []  # info op: takes effect only where it sees these
        self.writes: list[tuple[int, Any]] = []
        res = op.result or {}
        ok = op.outcome == "ok"
        k = op.kind
        if k == "get":
            if ok:
                self.needs.append((slot[op["key"]], res.get("value")))
        elif k == "put":
            self.writes.append((slot[op["key"]], op["value"]))
        elif k == "cas":
            s = slot[op["key"]]
            if not ok:
                self.info_needs.append((s, op.get("expect")))
                self.writes.append((s, op["value"]))
            elif res.get("succeeded"):
                self.needs.append((s, op.get("expect")))
                self.writes.append((s, op["value"]))
            else:
                self.ne.append((s, op.get("expect")))
        elif k == "delete":
            s = slot[op["key"]]
            if ok and not res.get("deleted"):
                self.needs.append((s, None))
            else:
                if ok:
                    self.ne.append((s, None))
                self.writes.append((s, None))
        elif k == "txn":
            guard = [(slot[g], e) for g, e in (op.get("guard") or {}).items()]
            writes = [(slot[w], v) for w, v in (op.get("writes") or {}).items()]
            if not ok:
                self.info_needs, self.writes = guard, writes
            elif res.get("succeeded"):
                values = res.get("values") or {}
                self.needs = guard + [(slot[r], values[r]) for r in (op.get("reads") or []) if r in values]
                self.writes = writes
            else:
                self.ne = guard


# ---------------------------------------------------------------------------
# the search
class PartitionResult:
    __slots__ = ("keys", "indexes", "status", "steps", "best", "best_state", "seconds")

    def __init__(self, keys: list[bytes], indexes: list[int]) -> None:
        self.keys = keys
        self.indexes = indexes  # history index of each local op
        self.status = OK
        self.steps = 0
        self.best: list[int] = []  # local op numbers of the longest linearization found, in order
        self.best_state: State | None = None
        self.seconds = 0.0


class Search:
    """The search over one partition (ops touching only `keys`).

    Sound prunings are added to the just-in-time search (`prune=False` turns
    them off, for testing; prune="info" keeps only the info-op rule, which
    does not cut paths short -- used for the failure report's longest prefix).
    "Pending" means not yet linearized; a pending op can only be placed before
    a pending ok op's return if it was invoked by then.
      revisions  (with use_revisions) an ok op that reported revision r can
                 only be placed while the bound is <= r (a read) or < r (a
                 write), and the bound never goes down: a step that lifts the
                 bound above the limit of a pending op is cut;
      values     a pending ok op that needs key=value (a get that returned it,
                 a cas that expected it, a guard) can only be placed while the
                 key holds it: a step that changes the key away from that value
                 is cut unless a pending write of the value can still be placed
                 before the op returns;
      not-values a pending ok op that needs key != value (a failed cas, a
                 delete that deleted, a failed single-guard txn): a step that
                 sets the key to that value is cut unless some pending write of
                 the key can still be placed before the op returns;
      info ops   an info write is only placed where it helps a pending op: one
                 that needs the value it writes, or needs the key to NOT hold
                 the value it overwrites (a linearization that places it
                 elsewhere stays one without it);
      reads      a read-only ok op (get, failed cas or txn, delete of nothing)
                 that fits now without raising the revision bound is placed at
                 once and its siblings are not tried: any linearization from
                 here stays one with that read moved up to now.
    The first three cut steps after which no linearization exists; the last
    two only skip linearizations that have an equivalent one still explored.

    Candidates at each point (ops called before the first pending return) are
    tried in order of reported revision -- a write before the reads at its
    revision -- then invoke time; ops without a revision come last. The order
    only guides the search: with correct revisions it walks straight through.
    """

    def __init__(
        self,
        keys: list[bytes],
        ops: Sequence[tuple[int, Op]],
        *,
        use_revisions: bool = True,
        initial: Mapping[bytes, bytes | None] | None = None,
        prune: bool | str = True,
    ) -> None:
        self.keys = keys
        self.indexes = [i for i, _ in ops]
        self.ops = [op for _, op in ops]
        self.use_revisions = use_revisions
        self.prune = prune
        slot = {k: n for n, k in enumerate(keys)}
        n = self.n = len(self.ops)
        self.steps_fn = [_compile(op, slot, use_revisions) for op in self.ops]
        self.is_ok = [op.outcome == "ok" for op in self.ops]
        self.init: State = (tuple((initial or {}).get(k) for k in keys), 0)
        inf = float("inf")
        self.invoke: list[float] = [op.invoke_ms for op in self.ops] + [inf]
        self.complete: list[float] = [op.complete_ms if self.is_ok[j] else inf for j, op in enumerate(self.ops)] + [inf]  # type: ignore[misc]

        # revision limits
        self.cap: list[float] = [inf] * (n + 1)
        for j, op in enumerate(self.ops):
            rev = _revision(op, use_revisions)
            if rev is not None:
                self.cap[j] = rev - 1 if _certain_write(op) else rev

        # what each op needs and writes, by (slot, value) pair
        self.pair_id: dict[tuple[int, Any], int] = {}
        self.pairs: list[tuple[int, Any]] = []
        self.need_ids: list[list[int]] = []
        self.ne_ids: list[list[int]] = []
        self.info_need_ids: list[list[int]] = []
        self.write_ids: list[list[int]] = []
        self.write_slots: list[list[int]] = []
        for op in self.ops:
            f = _Facts(op, slot)
            self.need_ids.append(sorted({self._pid(x) for x in f.needs}))
            self.ne_ids.append(sorted({self._pid(x) for x in f.ne}))
            self.info_need_ids.append(sorted({self._pid(x) for x in f.info_needs}))
            self.write_ids.append(sorted({self._pid(x) for x in f.writes}))
            self.write_slots.append(sorted({sl for sl, _ in f.writes}))
        m = len(self.pairs)

        # Ordered lists of ops (each ending with the sentinel n, never done) with
        # a pointer to the first pending one, kept up to date by _take/_untake.
        lists: list[list[int]] = []

        def new_list(members: list[int], key: Callable[[int], Any]) -> int:
            lists.append(sorted(members, key=key) + [n])
            return len(lists) - 1

        by_complete = self.complete.__getitem__
        by_invoke = self.invoke.__getitem__
        need: list[list[int]] = [[] for _ in range(m)]
        ne: list[list[int]] = [[] for _ in range(m)]
        ne_any: list[list[int]] = [[] for _ in range(m)]
        info_need: list[list[int]] = [[] for _ in range(m)]
        write: list[list[int]] = [[] for _ in range(m)]
        slot_write: list[list[int]] = [[] for _ in keys]
        for j in range(n):
            for x in self.need_ids[j]:
                need[x].append(j)
            for x in self.ne_ids[j]:
                ne_any[x].append(j)
                if len(self.ne_ids[j]) == 1:  # a single condition: "key != value" is necessary
                    ne[x].append(j)
            for x in self.info_need_ids[j]:
                info_need[x].append(j)
            for x in self.write_ids[j]:
                write[x].append(j)
            for sl in self.write_slots[j]:
                slot_write[sl].append(j)
        self.L_cap = new_list([j for j in range(n) if self.cap[j] != inf], self.cap.__getitem__)
        self.L_need = [new_list(need[x], by_complete) for x in range(m)]
        self.L_ne = [new_list(ne[x], by_complete) for x in range(m)]
        self.L_ne_any = [new_list(ne_any[x], by_complete) for x in range(m)]
        self.L_info_need = [new_list(info_need[x], by_invoke) for x in range(m)]
        self.L_write = [new_list(write[x], by_invoke) for x in range(m)]
        self.L_slot_write = [new_list(slot_write[sl], by_invoke) for sl in range(len(keys))]
        self.lists = lists
        member: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for lid, lst in enumerate(lists):
            for p, j in enumerate(lst[:-1]):
                member[j].append((lid, p))
        self.member = member
        self._reset()

    def _pid(self, pair: tuple[int, Any]) -> int:
        x = self.pair_id.get(pair)
        if x is None:
            x = self.pair_id[pair] = len(self.pairs)
            self.pairs.append(pair)
        return x

    def _reset(self) -> None:
        """Every op pending."""
        self.done = [False] * (self.n + 1)
        self.low = [0] * len(self.lists)

    def _take(self, j: int) -> None:
        done, low, lists = self.done, self.low, self.lists
        done[j] = True
        for lid, p in self.member[j]:
            if low[lid] == p:
                lst = lists[lid]
                p += 1
                while done[lst[p]]:
                    p += 1
                low[lid] = p

    def _untake(self, j: int) -> None:
        self.done[j] = False
        low = self.low
        for lid, p in self.member[j]:
            if p < low[lid]:
                low[lid] = p

    def _first(self, lid: int, j: int) -> int:
        """The first pending op of list lid other than j (n if none)."""
        lst = self.lists[lid]
        p = self.low[lid]
        if lst[p] == j:
            p += 1
            done = self.done
            while done[lst[p]]:
                p += 1
        return lst[p]

    def pruned(self, j: int, st: State, ns: State) -> tuple[Any, ...] | None:
        """Why the step st -(op j)-> ns cannot lead to a linearization (None: it may)."""
        n = self.n
        first = self._first
        every = self.prune is True
        if every and ns[1] > st[1]:
            k = first(self.L_cap, j)
            if ns[1] > self.cap[k]:
                return ("revision", k, ns[1])
        v0, v1 = st[0], ns[0]
        if v0 is v1:
            return None
        useful = self.is_ok[j]
        pid = self.pair_id
        invoke, complete = self.invoke, self.complete
        for sl in self.write_slots[j]:
            u, w = v0[sl], v1[sl]
            if u == w:
                continue
            x = pid.get((sl, u))
            if x is not None:
                g = first(self.L_need[x], j)
                if every and g != n and invoke[first(self.L_write[x], j)] > complete[g]:
                    return ("value", x, g)
                if not useful and first(self.L_ne_any[x], j) != n:
                    useful = True
            y = pid.get((sl, w))
            if y is not None:
                c = first(self.L_ne[y], j)
                if every and c != n and invoke[first(self.L_slot_write[sl], j)] > complete[c]:
                    return ("not-value", y, c)
                if not useful and (first(self.L_need[y], j) != n or first(self.L_info_need[y], j) != n):
                    useful = True
        if not useful:
            return ("useless",)
        return None

    def run(self, max_steps: int = DEFAULT_MAX_STEPS, max_seconds: float | None = None) -> PartitionResult:
        """Search; `max_steps` (candidate tries) and `max_seconds` bound it: past either, the result is "unknown"."""
        t0 = time.perf_counter()
        deadline = None if max_seconds is None else t0 + max_seconds
        out = PartitionResult(self.keys, self.indexes)
        n, ops, is_ok, steps_fn = self.n, self.ops, self.is_ok, self.steps_fn
        prune = self.prune
        greedy = prune is True
        read_only = [is_ok[j] and not self.write_ids[j] for j in range(n)]
        pruned, take, untake = self.pruned, self._take, self._untake
        self._reset()
        bit = [0] * n
        n_ok = n_info = 0
        for j in range(n):
            if is_ok[j]:
                bit[j] = 1 << n_ok
                n_ok += 1
            else:
                bit[j] = 1 << n_info
                n_info += 1

        def priority(j: int) -> tuple[float, int, int, int]:
            op = ops[j]
            rev = _revision(op, self.use_revisions)
            return (float("inf") if rev is None else rev, 0 if _certain_write(op) else 1, op.invoke_ms, j)

        rank = [0] * n
        for r, j in enumerate(sorted(range(n), key=priority)):
            rank[j] = r

        # time-ordered calls and returns; at equal times calls first (= concurrent)
        events = []
        for j, op in enumerate(ops):
            events.append((op.invoke_ms, 0, j))
            if is_ok[j]:
                events.append((op.complete_ms, 1, j))
        events.sort()
        size = len(events) + 1  # node 0 is the head
        nxt = list(range(1, size + 1))
        nxt[-1] = -1
        prv = list(range(-1, size - 1))
        node_op = [-1] * size  # the op of a call node; -1 for returns (and the head)
        call_node = [-1] * n
        ret_node = [-1] * n
        for pos, (_, kind, j) in enumerate(events, 1):
            if kind == 0:
                node_op[pos] = j
                call_node[j] = pos
            else:
                ret_node[j] = pos

        def window() -> list[int]:
            cands = []
            e = nxt[0]
            while e != -1:
                j = node_op[e]
                if j < 0:
                    break
                cands.append(j)
                e = nxt[e]
            cands.sort(key=rank.__getitem__)
            return cands

        state = self.init
        okbits = infobits = 0
        # the path: (op, state before it, the candidates it was taken from, its position there)
        stack: list[tuple[int, State, list[int], int]] = []
        cache: dict[tuple[int, tuple[Any, ...]], list[tuple[int, int]]] = {}
        ok_left = n_ok
        cands = window()
        pos = 0
        steps = 0
        best_len = 0
        peak = False
        out.best_state = state
        while ok_left:
            if pos >= len(cands):
                # every candidate here failed: undo the last choice
                if peak:  # leaving the deepest point so far: remember it
                    out.best = [x[0] for x in stack]
                    out.best_state = state
                    peak = False
                if not stack:
                    out.status = FAIL
                    break
                j, state, cands, pos = stack.pop()
                untake(j)
                if is_ok[j]:
                    okbits ^= bit[j]
                    ok_left += 1
                else:
                    infobits ^= bit[j]
                r = ret_node[j]
                if r >= 0:
                    nxt[prv[r]] = r
                    if nxt[r] >= 0:
                        prv[nxt[r]] = r
                c = call_node[j]
                nxt[prv[c]] = c
                if nxt[c] >= 0:
                    prv[nxt[c]] = c
                pos += 1
                continue
            j = cands[pos]
            steps += 1
            if steps > max_steps or (deadline is not None and not steps & 1023 and time.perf_counter() > deadline):
                out.status = UNKNOWN
                if peak:
                    out.best = [x[0] for x in stack]
                    out.best_state = state
                break
            ns = steps_fn[j](state)
            if ns is not None and prune and pruned(j, state, ns) is not None:
                ns = None
            if ns is not None:
                if is_ok[j]:
                    nok, ninfo = okbits | bit[j], infobits
                else:
                    nok, ninfo = okbits, infobits | bit[j]
                key = (nok, ns[0])
                seen = cache.get(key)
                fresh = True
                if seen is None:
                    cache[key] = [(ns[1], ninfo)]
                else:
                    nlo = ns[1]
                    for lo2, info2 in seen:
                        if lo2 <= nlo and not (info2 & ~ninfo):
                            fresh = False
                            break
                    if fresh:
                        seen.append((nlo, ninfo))
                # A read-only op (in any state) that fits here without raising the revision
                # bound can go first: any linearization from here stays one with the read moved
                # up to now. So its branch is the only one to try, and if it was already
                # explored, nothing else here can succeed.
                eager = greedy and read_only[j] and ns[1] == state[1]
                if fresh:
                    stack.append((j, state, cands, len(cands) - 1 if eager else pos))
                    state, okbits, infobits = ns, nok, ninfo
                    take(j)
                    if is_ok[j]:
                        ok_left -= 1
                    c = call_node[j]
                    nxt[prv[c]] = nxt[c]
                    if nxt[c] >= 0:
                        prv[nxt[c]] = prv[c]
                    r = ret_node[j]
                    if r >= 0:
                        nxt[prv[r]] = nxt[r]
                        if nxt[r] >= 0:
                            prv[nxt[r]] = prv[r]
                    if len(stack) > best_len:
                        best_len = len(stack)
                        peak = True
                    cands = window()
                    pos = 0
                    continue
                if eager:
                    pos = len(cands)
                    continue
            pos += 1
        if out.status == OK:
            out.best = [x[0] for x in stack]
            out.best_state = state
        out.steps = steps
        out.seconds = time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------
    def unsupplied(self, limit: int = 5) -> list[dict[str, Any]]:
        """A quick necessary condition, checked before the search: every value an
        ok op needs (a get's value, a cas's expected value, a guard...) must come
        from a write that can precede it -- the initial state, an ok write, or an
        info write invoked before the op returned -- and that was not certainly
        overwritten before the op began (by an ok write invoked after the first
        completed and completed before the op was invoked). A failure here is a
        stale read, a lost write or a double cas success, with its witnesses."""
        inf = float("inf")
        ops = self.ops
        writers: dict[int, list[tuple[float, float, int]]] = {}  # pair -> (invoke, complete, op)
        killers: dict[int, list[tuple[float, float, int]]] = {}  # slot -> certain writes
        for j, op in enumerate(ops):
            c = op.complete_ms if self.is_ok[j] else inf
            for x in self.write_ids[j]:
                writers.setdefault(x, []).append((op.invoke_ms, c, j))  # type: ignore[arg-type]
            if self.is_ok[j]:
                for sl in set(self.write_slots[j]):
                    killers.setdefault(sl, []).append((op.invoke_ms, c, j))  # type: ignore[arg-type]
        suffix: dict[int, tuple[list[float], list[tuple[float, int]]]] = {}
        for sl, ks in killers.items():
            ks.sort()
            mins: list[tuple[float, int]] = [(inf, -1)] * (len(ks) + 1)
            for i in range(len(ks) - 1, -1, -1):
                mins[i] = min(mins[i + 1], (ks[i][1], ks[i][2]))
            suffix[sl] = ([k[0] for k in ks], mins)

        def killer(sl: int, after: float, before: float) -> int | None:
            """An ok write on slot sl invoked after `after` and completed before `before`."""
            if sl not in suffix:
                return None
            invokes, mins = suffix[sl]
            i = bisect.bisect_right(invokes, after)
            done, k = mins[i]
            return k if done < before else None

        out: list[dict[str, Any]] = []
        for g, op in enumerate(ops):
            if not self.is_ok[g]:
                continue
            for x in self.need_ids[g]:
                sl, val = self.pairs[x]
                cands = [w for w in writers.get(x, []) if w[2] != g and w[0] <= op.complete_ms]  # type: ignore[operator]
                if self.init[0][sl] == val:
                    cands.append((-inf, -inf, -1))
                blame: tuple[int, int] | None = None
                for wi, wc, w in cands:
                    k = killer(sl, wc, op.invoke_ms)
                    if k is None:
                        break
                    if blame is None or wc > blame[2]:
                        blame = (w, k, wc)  # type: ignore[assignment]
                else:
                    key = show(self.keys[sl])
                    if blame is None:
                        why = f"it needs {key}={show(val)}, which no op that can precede it writes"
                        wit = [g]
                    else:
                        w, k = blame[0], blame[1]
                        src = "the initial state" if w < 0 else ops[w].label()
                        why = (
                            f"it needs {key}={show(val)}, from {src}, but {ops[k].label()} overwrote "
                            f"{key} after that and completed (at {ops[k].complete_ms} ms) before it began (at {op.invoke_ms} ms)"
                        )
                        wit = [g, k] + ([w] if w >= 0 else [])
                    out.append({"op": g, "witnesses": wit, "why": why, "message": f"{op.label()}: {why}"})
                    break
            if len(out) >= limit:
                break
        return out

    # ------------------------------------------------------------------
    def diagnose(self, res: PartitionResult) -> dict[str, Any]:
        """The longest linearizable prefix found, the op that cannot be placed after it, and why."""
        ops = self.ops
        self._reset()
        for j in res.best:
            self._take(j)
        assert res.best_state is not None
        state = res.best_state
        vals, lo = state
        values = dict(zip(self.keys, vals))
        pending = [j for j in range(self.n) if not self.done[j]]
        out: dict[str, Any] = {
            "keys": [show(k) for k in self.keys],
            "status": res.status,
            "steps": res.steps,
            "prefix": [self.indexes[j] for j in res.best],
            "prefix_refs": [list(ops[j].ref) for j in res.best],
            "prefix_labels": [ops[j].label() for j in res.best],
            "state": {show(k): show(v) for k, v in values.items()},
            "revision_bound": lo if self.use_revisions else None,
            "related": [],
        }
        ok_pending = [j for j in pending if self.is_ok[j]]
        if not ok_pending:
            return out
        c = min(ok_pending, key=lambda j: (ops[j].complete_ms, ops[j].invoke_ms, j))
        ret = ops[c].complete_ms
        related: list[int] = []
        cands = []
        for j in sorted((j for j in pending if ops[j].invoke_ms <= ret), key=lambda j: (ops[j].invoke_ms, j)):  # type: ignore[operator]
            why = self._why(j, state, values, lo, related)
            cands.append({"index": self.indexes[j], "label": ops[j].label(), "why": why})
        out["culprit"] = self.indexes[c]
        out["culprit_ref"] = list(ops[c].ref)
        out["culprit_label"] = ops[c].label()
        out["culprit_why"] = next(x["why"] for x in cands if x["index"] == self.indexes[c])
        out["candidates"] = cands[:20]
        out["related"] = sorted({self.indexes[j] for j in related} - {self.indexes[c]})
        self._reset()
        return out

    def _why(self, j: int, state: State, values: Mapping[bytes, Any], lo: int, related: list[int]) -> str:
        op = self.ops[j]
        ns = self.steps_fn[j](state)
        if ns is None:
            return explain(op, values, lo, self.use_revisions) or "it cannot take effect here"
        if self.prune:
            why = self.pruned(j, state, ns)  # (only the info rule when prune == "info")
            if why is not None and why[0] == "revision":
                other = self.ops[why[1]]
                related.append(why[1])
                return (
                    f"placing it here raises the store revision to {why[2]}, past the revision "
                    f"{_revision(other, self.use_revisions)} of {other.label()}, which is still to be placed"
                )
            if why is not None and why[0] == "value":
                sl, val = self.pairs[why[1]]
                related.append(why[2])
                return (
                    f"it overwrites {show(self.keys[sl])}={show(val)}, which {self.ops[why[2]].label()} still needs, "
                    "and no op still to be placed can write it again before that one returns"
                )
            if why is not None and why[0] == "not-value":
                sl, val = self.pairs[why[1]]
                related.append(why[2])
                return (
                    f"it sets {show(self.keys[sl])}={show(val)}, but {self.ops[why[2]].label()} needs it to hold "
                    "something else, and no op still to be placed can change it before that one returns"
                )
            if why is not None:
                return "(info) changing the state here helps no op still to be placed"
        return "it can be placed here, but no continuation from there is linearizable"


def search(
    keys: list[bytes],
    ops: Sequence[tuple[int, Op]],
    *,
    use_revisions: bool = True,
    max_steps: int = DEFAULT_MAX_STEPS,
    initial: Mapping[bytes, bytes | None] | None = None,
    prune: bool = True,
) -> PartitionResult:
    """Search one partition (ops touching only `keys`) for a linearization (see `Search`)."""
    return Search(keys, ops, use_revisions=use_revisions, initial=initial, prune=prune).run(max_steps)


# ---------------------------------------------------------------------------
# cheap global revision checks
def _certain_write(op: Op) -> bool | None:
    """True: the op certainly made a new revision; False: certainly not; None: unknown."""
    r = op.result or {}
    if op.kind == "put":
        return True
    if op.kind == "get":
        return False
    if op.kind == "cas":
        return bool(r.get("succeeded"))
    if op.kind == "delete":
        return bool(r.get("deleted"))
    if op.kind == "txn":
        if not r.get("succeeded"):
            return False
        writes = op.get("writes") or {}
        if any(v is not None for v in writes.values()):
            return True
        return False if not writes else None
    return None


def revision_violations(history: Sequence[Op], limit: int = 20) -> list[dict[str, Any]]:
    """Unique write revisions, and revisions never going back in real time (see the module docstring)."""
    ops = [
        (i, op, int(op.result["revision"]))  # type: ignore[index]
        for i, op in enumerate(history)
        if op.kind in KV_KINDS and op.outcome == "ok" and (op.result or {}).get("revision") is not None
    ]
    out: list[dict[str, Any]] = []
    by_rev: dict[int, tuple[int, Op]] = {}
    for i, op, rev in ops:
        if _certain_write(op):
            if rev in by_rev:
                j, other = by_rev[rev]
                out.append(
                    {
                        "kind": "duplicate revision",
                        "ops": [j, i],
                        "message": f"{other.label()} and {op.label()} both wrote at revision {rev}",
                    }
                )
            else:
                by_rev[rev] = (i, op)
    done = sorted(ops, key=lambda t: t[1].complete_ms)  # type: ignore[arg-type,return-value]
    p = 0
    best: tuple[int, Op, int] | None = None
    for i, op, rev in sorted(ops, key=lambda t: t[1].invoke_ms):
        while p < len(done) and done[p][1].complete_ms < op.invoke_ms:  # type: ignore[operator]
            if best is None or done[p][2] > best[2]:
                best = done[p]
            p += 1
        if best is None:
            continue
        w = _certain_write(op)
        if rev < best[2] or (w and rev == best[2]):
            out.append(
                {
                    "kind": "revision went back",
                    "ops": [best[0], i],
                    "message": f"{op.label()} (invoked at {op.invoke_ms} ms) reports revision {rev}, but "
                    f"{best[1].label()} had completed at {best[1].complete_ms} ms with revision {best[2]}",
                }
            )
    return out[:limit]


# ---------------------------------------------------------------------------
def check_linearizability(
    history: Sequence[Op],
    *,
    use_revisions: bool = True,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_seconds: float | None = None,
    initial: Mapping[bytes, bytes | None] | None = None,
) -> Verdict:
    """Check the KV operations of `history` (other kinds are ignored).

    max_steps (candidate tries) and max_seconds (wall clock, optional) bound the
    search of each partition: one that runs out is "unknown". `initial` is the
    state before the history (default: every key absent).
    """
    t0 = time.perf_counter()
    kv = [(i, op) for i, op in enumerate(history) if op.kind in KV_KINDS and op.outcome != "fail"]
    kept = [(i, op) for i, op in kv if not (op.outcome == "info" and _is_read_only(op))]
    parts = []
    diag = {}
    for keys, ops in partition(kept):
        s = Search(keys, ops, use_revisions=use_revisions, initial=initial)
        stale = s.unsupplied()
        # a stale read already proves the partition wrong: search only for the report's prefix
        p = s.run(min(max_steps, DIAGNOSIS_STEPS), DIAGNOSIS_SECONDS) if stale else s.run(max_steps, max_seconds)
        if stale:
            p.status = FAIL
        parts.append(p)
        if p.status == OK:
            continue
        d = s.diagnose(p)
        if p.status == FAIL:
            # The prunings stop a dead-end path early; the plain just-in-time search runs on to the op
            # that really cannot be placed, which is the longest prefix a reader expects.
            plain = Search(keys, ops, use_revisions=use_revisions, initial=initial, prune="info")
            q = plain.run(min(max_steps, DIAGNOSIS_STEPS), DIAGNOSIS_SECONDS)
            if q.status == FAIL:
                d = plain.diagnose(q)
                d["steps"] = p.steps
        if stale:
            g = stale[0]["op"]
            d["unsupplied"] = [
                {"op": s.indexes[x["op"]], "witnesses": [s.indexes[w] for w in x["witnesses"]], "message": x["message"]}
                for x in stale
            ]
            d["culprit"], d["culprit_ref"], d["culprit_label"] = s.indexes[g], list(s.ops[g].ref), s.ops[g].label()
            d["culprit_why"] = stale[0]["why"]
            d["related"] = sorted({s.indexes[w] for w in stale[0]["witnesses"]} - {s.indexes[g]})
        diag[id(p)] = d
    rev_bad = revision_violations(history) if use_revisions else []
    failed = [p for p in parts if p.status == FAIL]
    unknown = [p for p in parts if p.status == UNKNOWN]
    steps = sum(p.steps for p in parts)
    n_info = sum(1 for _, op in kept if op.outcome == "info")
    n_failed = sum(1 for op in history if op.kind in KV_KINDS and op.outcome == "fail")
    elapsed = time.perf_counter() - t0
    details: dict[str, Any] = {
        "status": FAIL if failed or rev_bad else UNKNOWN if unknown else OK,
        "ops": len(kept),  # judged: ok + info writes
        "info_ops": n_info,  # info writes judged
        "ok_ops": len(kept) - n_info,
        "failed_ops": n_failed,  # left out: certainly did not take effect
        "info_reads": len(kv) - len(kept),  # left out: an unanswered read changes nothing
        "partitions": len(parts),
        "steps": steps,
        "seconds": round(elapsed, 3),
        "use_revisions": use_revisions,
        "max_steps": max_steps,
        "max_seconds": max_seconds,
        "partition_results": [
            {
                "keys": [show(k) for k in p.keys[:10]] + (["..."] if len(p.keys) > 10 else []),
                "ops": len(p.indexes),
                "status": p.status,
                "steps": p.steps,
                "seconds": round(p.seconds, 3),
            }
            for p in parts
        ],
        "failures": [diag[id(p)] for p in failed],
        "unknown": [diag[id(p)] for p in unknown],
        "revision_violations": rev_bad,
    }
    left_out = [f"{n}{what}" for n, what in ((n_failed, " failed"), (len(kv) - len(kept), " indeterminate reads")) if n]
    stats = (f"{len(kept)} ops ({len(kept) - n_info} ok + {n_info} indeterminate"
             + (f"; left out: {', '.join(left_out)}" if left_out else "")
             + f") in {len(parts)} partitions, {steps} steps, {elapsed:.2f}s")
    if details["status"] == OK:
        return Verdict(True, CHECKER, f"linearizable: {stats}", details)
    if failed:
        f = details["failures"][0]
        what = f.get("culprit_label", "?")
        summary = (
            f"NOT linearizable: keys {', '.join(f['keys'][:5])}: {what} cannot be placed after a linearizable "
            f"prefix of {len(f['prefix'])} ops ({f.get('culprit_why', '?')})"
        )
        if len(failed) > 1:
            summary += f" (+{len(failed) - 1} more failing partitions)"
        if rev_bad:
            summary += f"; {len(rev_bad)} revision violations"
        return Verdict(False, CHECKER, summary + f"; {stats}", details)
    if rev_bad:
        return Verdict(False, CHECKER, f"NOT linearizable: {rev_bad[0]['message']}; {stats}", details)
    return Verdict(
        False,
        CHECKER,
        f"unknown: {len(unknown)} partitions exceeded the search budget ({max_steps} steps"
        + (f" or {max_seconds:g}s" if max_seconds is not None else "")
        + ") "
        f"(keys {', '.join(show(k) for k in unknown[0].keys[:5])}); {stats}",
        details,
    )
