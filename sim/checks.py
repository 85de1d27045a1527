"""Simulated runs into checkable histories, and the checkers' verdicts on them."""

from __future__ import annotations

import dataclasses
from typing import Any

from petcd.actors.raft_actor import RaftConfig
from petcd.sim.check.history import Op as HistoryOp
from petcd.sim.check.history import make_op
from petcd.sim.check.verdict import Verdict
from petcd.sim.client import Op
from petcd.sim.cluster import SimCluster
from petcd.sim.lease_client import LeaseLog
from petcd.sim.lock_client import LOCK_KEY, LockLog
from petcd.sim.watch_client import WatchLog

_EVENT_TYPES = {0: "PUT", 1: "DELETE"}
# The simulated members' election timeout (sim/cluster.py keeps RaftConfig's default); etcd's lessor
# extends every lease by it when a new leader takes office.
ELECTION_TIMEOUT_MS: int = next(f.default for f in dataclasses.fields(RaftConfig) if f.name == "election_timeout_ms")


def _value(resp: dict[str, Any]) -> bytes | None:
    kvs = resp.get("kvs") or []
    return kvs[0]["value"] if kvs else None


def kv_history(ops: list[Op]) -> list[HistoryOp]:
    """Simulated client operations as `petcd.sim.check.history` operations."""
    out: list[HistoryOp] = []
    for op in ops:
        outcome = op.outcome or "info"  # still open when the run ended: it may or may not have happened
        h: dict[str, Any] = {"process": op.client, "id": op.op_id, "kind": op.kind, "invoke_ms": op.invoke_ms,
                             "complete_ms": op.complete_ms if outcome != "info" else None, "outcome": outcome, "key": op.key}
        r = op.result
        if op.kind == "put":
            h["value"] = op.value
            h["result"] = {"revision": r.get("revision")} if outcome == "ok" else {}
        elif op.kind == "get":
            h["result"] = {"value": _value(r), "revision": r.get("revision")} if outcome == "ok" else {}
        elif op.kind == "cas":
            h["expect"], h["value"] = r["expect"], op.value
            h["result"] = {"succeeded": r.get("succeeded", False), "revision": r.get("revision")} if outcome == "ok" else {}
        elif op.kind == "delete":
            h["result"] = {"deleted": r.get("deleted", 0), "revision": r.get("revision")} if outcome == "ok" else {}
        elif op.kind == "txn":
            keys = r["keys"]
            del h["key"]
            h["reads"], h["writes"], h["guard"] = keys, {k: op.value for k in keys}, {}
            if outcome == "ok":
                reads = [x["response_range"] for x in r["responses"][:2]]
                h["result"] = {"succeeded": True, "values": {k: _value(rr) for k, rr in zip(keys, reads)}, "revision": r.get("revision")}
            else:
                h["result"] = {}
        out.append(make_op(**h))
    return out


def committed_events(cluster: SimCluster) -> list[dict[str, Any]]:
    """Every committed event: as the apply actors published them while the run went on (compaction
    takes them from the stores), and the rest from the member that applied the most."""
    rt = cluster.runtime
    by_revision = dict(cluster.published)
    stores = [rt.actor(f"{m}/apply")._store for m in cluster.members if rt.is_running(f"{m}/apply")]
    store = max(stores, key=lambda s: s.applied_index())
    rev = max(1, store.compact_revision())
    while rev <= store.current_revision():
        chunk = store.events(rev, store.current_revision(), 1000)
        if not chunk:
            break
        for revision, events in chunk:
            by_revision.setdefault(revision, events)
        rev = chunk[-1][0] + 1
    out: list[dict[str, Any]] = []
    for revision in sorted(by_revision):
        for ev in by_revision[revision]:
            prev = ev.get("prev_kv")
            out.append({"revision": revision, "type": _EVENT_TYPES[ev["type"]], "key": ev["kv"]["key"],
                        "value": ev["kv"].get("value", b""), "prev_value": prev["value"] if prev else None})
    return out


def watch_ops(logs: list[WatchLog]) -> list[HistoryOp]:
    """Each simulated watcher as one "watch" operation of the history format."""
    out = []
    for log in logs:
        events = [{"revision": r, "type": _EVENT_TYPES[t], "key": k, "value": v if t == 0 else None, "prev_value": p}
                  for resp in log.responses for r, t, k, v, p in resp]
        out.append(make_op(
            log.process, 0, "watch", 0, None, "ok",
            watch={"key_start": b"\0", "key_end": b"\0", "start_revision": 1, "process": log.process},
            events=events, responses=[[r for r, *_ in resp] for resp in log.responses],
            resumes=[{"response": n, "start_revision": rev, **({"compacted": c} if c else {})} for n, rev, c in log.resumes[1:]],
        ))
    return out


def lease_ops(logs: list[LeaseLog]) -> list[HistoryOp]:
    """Each simulated lease as one "lease" operation of the history format (failed grants left out)."""
    out = []
    for log in logs:
        if log.granted_ms is None:
            continue
        fields: dict[str, Any] = {"lease_id": log.lease_id, "ttl_s": log.ttl_s, "granted_ms": log.granted_ms,
                                  "granted_answered_ms": log.granted_answered_ms, "keepalives_ms": log.keepalives_ms,
                                  "keepalives_answered_ms": log.keepalives_answered_ms,
                                  "keepalives_unanswered_ms": log.keepalives_unanswered_ms, "keys": [log.key],
                                  "key_seen_ms": log.key_seen_ms, "key_seen_sent_ms": log.key_seen_sent_ms}
        if log.key_deleted_ms is not None:
            fields["key_deleted_ms"] = log.key_deleted_ms
        out.append(make_op(log.process, 0, "lease", log.granted_ms, log.key_deleted_ms, "ok", **fields))
    return out


def lock_ops(logs: list[LockLog]) -> list[HistoryOp]:
    """Each acquisition of the simulated lock as one "lock" operation."""
    out = []
    for log in logs:
        for n, hold in enumerate(log.holds):
            out.append(make_op(log.process, n, "lock", hold["invoke_ms"], hold["acquired_ms"], "ok", name=LOCK_KEY,
                               acquired_ms=hold["acquired_ms"], released_ms=hold["released_ms"],
                               fence_revision=hold["fence_revision"], writes=hold["writes"]))
    return out


def lease_bound(*, faulty: bool, leaders: list[dict[str, Any]] | None = None,
                faults: list[dict[str, Any]] | None = None) -> int | None:
    """The lease checker's lateness bound for a simulated run (None: the checker's default).

    Every leader change restarts every lease's countdown (etcd's lessor.Promote gives each lease
    now + TTL + election timeout), and a fault may stop the leader in office from expiring
    anything while it lasts (see petcd.sim.check.lease). Given the run's `leaders` and `faults`
    (SimReport.leaders, .faults_seen) the checker counts each lease's deadline from the last
    leader change and the last fault's end itself, so the default bound holds under faults too.
    Without them, under faults the bound must cover all of it: leader changes and faults go on
    until the faults heal, FAULT_PHASE_MS after the run started at the latest (so after any
    renewal); then a leader must still be elected (a randomized election timeout, under 2E) and
    promoted (its extension, E), after which the default bound (2 s + E) applies:
    FAULT_PHASE_MS + 4E + 2 s in all, E the election timeout. Early expiry is judged the same
    either way.
    """
    if not faulty or (leaders is not None and faults is not None):
        return None
    from petcd.sim.run import FAULT_PHASE_MS

    return FAULT_PHASE_MS + 4 * ELECTION_TIMEOUT_MS + 2000


def fault_spans(log: list[Any], end_ms: int) -> list[dict[str, Any]]:
    """The nemesis's start/stop events as one span per fault: {kind, detail, from_ms, to_ms}.

    At most one fault of a kind runs at once, so a stop ends the open fault of its kind;
    a fault still open at the end runs to `end_ms`.
    """
    spans: list[dict[str, Any]] = []
    open_: dict[str, dict[str, Any]] = {}
    for e in log:
        if e.action == "start":
            span = {"kind": e.kind, "detail": e.detail, "from_ms": e.at_ms, "to_ms": None}
            open_[e.kind] = span
            spans.append(span)
        elif e.action == "stop" and e.kind in open_:
            open_.pop(e.kind)["to_ms"] = e.at_ms
    for span in open_.values():
        span["to_ms"] = max(end_ms, span["from_ms"])
    return spans


def check_all(history: list[HistoryOp], committed: list[dict[str, Any]] | None, *, lease_bound_ms: int | None = None,
              leaders: list[dict[str, Any]] | None = None, faults: list[dict[str, Any]] | None = None) -> list[Verdict]:
    """Every checker on one history (KV ops, watchers, leases, lock holds): the verdicts' op indexes are into it.

    leaders, faults: who led when and which faults were active when (SimReport.leaders, .faults_seen):
    the lease checker then counts each lease's deadline from the last leader change and fault too
    (see `lease_bound`).
    """
    from petcd.sim.check.lease import check_leases
    from petcd.sim.check.linearizability import check_linearizability
    from petcd.sim.check.lock import check_locks
    from petcd.sim.check.watch import check_watch

    return [
        check_linearizability(history),
        check_watch(history, committed),
        check_leases(history, bound_ms=lease_bound_ms, election_timeout_ms=ELECTION_TIMEOUT_MS, leaders=leaders, faults=faults),
        check_locks(history),
    ]
