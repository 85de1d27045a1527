"""Lock safety, judged by fencing tokens.

"No two holders at once" cannot be judged by wall-clock hold intervals. In an
asynchronous network a holder learns it acquired the lock some time after it
did, and learns nothing when its session's lease expires while it is paused or
partitioned: it keeps acting as the holder while the server has already given
the lock to the next waiter. Jepsen's analysis of etcd 3.4.3 (2020) showed
exactly this: etcd locks are not mutually exclusive in wall-clock time under
process pauses and partitions, and the only safe use is to fence every write
with the lock key's revision. So this checker judges by fences -- the lock
key's create revision -- and only *warns* about overlapping hold intervals.

For each lock name:
  fences     holders' fence revisions strictly increase in acquisition order.
             Acquisition order is real-time order: if A's acquisition completed
             (acquired_ms) before B's lock request was sent (B's invoke_ms), B's
             key was created after A's, so fence(B) > fence(A) must hold. Two
             holders with the same fence are a violation too. Holders acquired
             concurrently but notified out of fence order are only a warning (a
             late notification: the holder with the lower fence acquired first).
  writes     a write fenced by an older revision is never accepted after a
             newer holder's: the writes are guarded by "the lock key's
             create_revision == fence", so
               * by revision: along the accepted writes in revision order, the
                 fence never goes down, and each is above its own fence;
               * by time: once a holder with a higher fence has acquired (all
                 lower keys are deleted by then), no write fenced lower that was
                 sent after that may be accepted.
  overlaps   hold intervals [acquired_ms, released_ms] that overlap are listed as
             warnings, not failures.

Holders are distinct sessions (a session that re-enters the lock reuses its key
and fence; record it as one holder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from petcd.sim.check.history import Op, show
from petcd.sim.check.verdict import FAIL, OK, Verdict

CHECKER = "lock"


def _accepted(w: dict[str, Any]) -> bool:
    return w.get("outcome", "ok") == "ok" and w.get("succeeded", True) is not False


def check_locks(history: Sequence[Op], *, max_reports: int = 50) -> Verdict:
    """Check every "lock" op of `history` (see the module docstring)."""
    holders = [(i, op) for i, op in enumerate(history) if op.kind == "lock"]
    by_name: dict[bytes, list[tuple[int, Op]]] = {}
    for i, op in holders:
        by_name.setdefault(op.get("name") or b"", []).append((i, op))
    bad: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    n_writes = 0

    def who(op: Op) -> str:
        return f"{op.process}#{op.id} (fence {op['fence_revision']})"

    for name, hs in by_name.items():
        lname = show(name)

        def report(kind: str, msg: str, ops: list[int]) -> None:
            bad.append({"lock": lname, "kind": kind, "ops": ops, "message": f"lock {lname}: {msg}"})

        # fences: equal fences, and real-time order
        by_fence: dict[int, tuple[int, Op]] = {}
        for i, op in hs:
            f = int(op["fence_revision"])
            if f in by_fence:
                j, other = by_fence[f]
                report("fences", f"{who(other)} and {who(op)} hold the same fence", [j, i])
            else:
                by_fence[f] = (i, op)
        acquired = sorted(hs, key=lambda t: t[1]["acquired_ms"])
        p = 0
        top: tuple[int, Op] | None = None
        for i, op in sorted(hs, key=lambda t: t[1].invoke_ms):
            while p < len(acquired) and acquired[p][1]["acquired_ms"] < op.invoke_ms:
                if top is None or acquired[p][1]["fence_revision"] > top[1]["fence_revision"]:
                    top = acquired[p]
                p += 1
            if top is not None and top[0] != i and top[1]["fence_revision"] >= op["fence_revision"]:
                report(
                    "fences",
                    f"{who(op)} requested the lock at {op.invoke_ms} ms, after {who(top[1])} had acquired it "
                    f"(at {top[1]['acquired_ms']} ms), yet got a fence that is not higher",
                    [top[0], i],
                )
        for (i, a), (j, b) in zip(acquired, acquired[1:]):
            if a["fence_revision"] > b["fence_revision"] and not a["acquired_ms"] < b.invoke_ms:
                warnings.append(
                    {
                        "lock": lname,
                        "kind": "notified out of order",
                        "ops": [i, j],
                        "message": f"lock {lname}: {who(a)} was told it acquired (at {a['acquired_ms']} ms) before "
                        f"{who(b)} (at {b['acquired_ms']} ms) despite its higher fence: a late notification",
                    }
                )

        # writes
        writes: list[tuple[int, int, dict[str, Any], Op]] = []  # (fence, holder index, write, holder)
        for i, op in hs:
            for w in op.get("writes") or []:
                n_writes += 1
                if _accepted(w):
                    writes.append((int(w.get("fence_revision", op["fence_revision"])), i, w, op))
        with_rev = sorted((t for t in writes if t[2].get("revision") is not None), key=lambda t: int(t[2]["revision"]))
        high: tuple[int, int, dict[str, Any], Op] | None = None
        for t in with_rev:
            f, i, w, op = t
            rev = int(w["revision"])
            if rev <= f:
                report(
                    "writes",
                    f"a write of {show(w.get('key'))} by {who(op)} was accepted at revision {rev}, not after its fence {f}",
                    [i],
                )
            if high is not None and f < high[0]:
                report(
                    "writes",
                    f"a write of {show(w.get('key'))} fenced by {f} ({who(op)}) was accepted at revision {rev}, after "
                    f"a write of {show(high[2].get('key'))} fenced by {high[0]} ({who(high[3])}) at revision {high[2]['revision']}",
                    [high[1], i],
                )
            if high is None or f > high[0]:
                high = t
        top = None
        p = 0
        for f, i, w, op in sorted((t for t in writes if t[2].get("invoke_ms") is not None), key=lambda t: t[2]["invoke_ms"]):
            while p < len(acquired) and acquired[p][1]["acquired_ms"] < w["invoke_ms"]:
                if top is None or acquired[p][1]["fence_revision"] > top[1]["fence_revision"]:
                    top = acquired[p]
                p += 1
            if top is not None and top[1]["fence_revision"] > f:
                report(
                    "writes",
                    f"a write of {show(w.get('key'))} fenced by {f} ({who(op)}), sent at {w['invoke_ms']} ms, was "
                    f"accepted although {who(top[1])} had acquired the lock at {top[1]['acquired_ms']} ms",
                    [top[0], i],
                )

        # overlaps (warnings)
        def end(op: Op) -> float:
            r = op.get("released_ms")
            return float("inf") if r is None else int(r)  # never released: held until its session died

        for x, (i, a) in enumerate(acquired):
            for j, b in acquired[x + 1 :]:
                if b["acquired_ms"] >= end(a):
                    break  # sorted by acquisition: no later one overlaps a either
                warnings.append(
                    {
                        "lock": lname,
                        "kind": "overlap",
                        "ops": [i, j],
                        "message": f"lock {lname}: {who(a)} held it {a['acquired_ms']}..{end(a)} ms and {who(b)} "
                        f"from {b['acquired_ms']} ms (wall-clock overlap; fencing decides)",
                    }
                )

    details: dict[str, Any] = {
        "status": FAIL if bad else OK,
        "locks": len(by_name),
        "holders": len(holders),
        "writes": n_writes,
        "violations": bad[:max_reports],
        "violation_count": len(bad),
        "warnings": warnings[:max_reports],
        "warning_count": len(warnings),
    }
    stats = f"{len(holders)} holders of {len(by_name)} locks, {n_writes} fenced writes"
    if warnings:
        stats += f", {len(warnings)} warnings (e.g. {warnings[0]['kind']})"
    if not bad:
        return Verdict(True, CHECKER, f"fences increase and no stale fenced write was accepted: {stats}", details)
    return Verdict(False, CHECKER, f"{len(bad)} violations; first: {bad[0]['message']}; {stats}", details)
