"""Watch guarantees, checked on what each watcher received.

etcd promises, for a watch on a key range from a start revision:
  ordered    events arrive in revision order;
  unique     an event (revision, key) is delivered once;
  reliable   no gap: every committed event in the watched range between the
             start revision and the last revision the watcher saw is delivered;
  atomic     the events of one revision (a txn) come in one response;
  resumable  a watcher that reconnects asking for last+1 still gets all this;
and prev_value, when the watcher asked for it, is the key's value before the event.

What the truth is made of:
  * `committed` (optional): the full list of committed events from revision 1
    (dicts or `Event`s), e.g. read back from the store's history. With it every
    check is exact: missing events, phantom events, wrong values, prev_values.
  * Without it, the history's ok KV operations give part of the truth: an ok
    put / successful cas at revision r is exactly one PUT at r; an ok delete
    that deleted is one DELETE; a successful txn with a put at revision r is
    PUTs of its puts (and maybe DELETEs of its deletes) at r, nothing else. Info
    operations and unrecorded writes are unknown, so the events the watchers
    saw are pooled as well: an event one watcher saw at revision r must be seen
    by every other watcher whose range and revision span cover it, and two
    watchers must agree on it. prev_value is then checked along each watcher's
    own stream (consecutive events of a key), which is exact once the stream is
    reliable.

A watcher's span runs from its start revision (the first event's revision
when start_revision is 0 or null, i.e. "from now") to the last revision it saw,
or its progress_revision if later. A resume (reconnection) must ask for the
last revision seen + 1 (or the original start if nothing was seen yet); a
resume that skips ahead is reported and its gap is not reported again as a
missed event, unless the resume gives `compacted`: the watch was canceled because
its start was compacted, and it resumed from that compact revision, as etcd's
clients do (the revisions in between are gone, and so is a DELETE at the compact
revision itself: compaction drops tombstones, and real etcd 3.4's watch from the
compact revision does not show it either).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from petcd.sim.check.history import Op, decode_bytes, show
from petcd.sim.check.verdict import FAIL, OK, Verdict

CHECKER = "watch"
MISSING: Any = object()  # Event.prev_value when the watcher did not ask for it


@dataclass(frozen=True, slots=True)
class Event:
    revision: int
    type: str  # "PUT" | "DELETE"
    key: bytes
    value: bytes | None = None
    prev_value: Any = MISSING  # bytes | None when reported

    @staticmethod
    def of(x: Event | Mapping[str, Any]) -> Event:
        """An Event from an Event or a dict (bytes may be str or {"b64": ...})."""
        if isinstance(x, Event):
            return x
        t = str(x["type"]).upper()
        if t not in ("PUT", "DELETE"):
            raise ValueError(f"event type must be PUT or DELETE, not {x['type']!r}")
        return Event(
            int(x["revision"]),
            t,
            decode_bytes(x["key"]),  # type: ignore[arg-type]
            decode_bytes(x.get("value")),
            decode_bytes(x["prev_value"]) if "prev_value" in x else MISSING,
        )

    def label(self) -> str:
        s = f"{self.type} {show(self.key)}@{self.revision}"
        if self.type == "PUT":
            s += f"={show(self.value)}"
        return s


@dataclass(slots=True)
class _Spec:
    key_start: bytes
    key_end: bytes | None
    start: int  # 0: from now
    noput: bool
    nodelete: bool

    def covers(self, key: bytes, type_: str) -> bool:
        if type_ == "PUT" and self.noput or type_ == "DELETE" and self.nodelete:
            return False
        if self.key_end is None:
            return key == self.key_start
        if self.key_end == b"\x00":
            return key >= self.key_start
        return self.key_start <= key < self.key_end


def _spec(op: Op) -> _Spec:
    w = op.get("watch") or {}
    filters = {str(f).upper() for f in w.get("filters") or []}
    return _Spec(
        w.get("key_start") or b"",
        w.get("key_end"),
        int(w.get("start_revision") or 0),
        "NOPUT" in filters,
        "NODELETE" in filters,
    )


def _name(op: Op) -> str:
    w = op.get("watch") or {}
    who = w.get("process") or op.process
    return f"watcher {who}#{op.id}"


class _Truth:
    """What is known to be committed: required events, and which keys a revision may touch."""

    def __init__(self) -> None:
        self.required: dict[int, dict[bytes, tuple[str, bytes | None, str]]] = {}  # rev -> key -> (type, value, source)
        self.allowed: dict[int, set[bytes]] = {}  # rev -> the only keys it touched (when known)
        self.complete = False  # True: `required` is every committed event
        self._by_key: dict[bytes, tuple[list[int], list[bytes | None]]] | None = None
        self.first = 1  # the first revision of a complete truth

    def require(self, rev: int, key: bytes, type_: str, value: bytes | None, source: str) -> None:
        self.required.setdefault(rev, {}).setdefault(key, (type_, value, source))

    @classmethod
    def from_committed(cls, committed: Iterable[Event | Mapping[str, Any]]) -> _Truth:
        t = cls()
        t.complete = True
        for e in map(Event.of, committed):
            t.require(e.revision, e.key, e.type, e.value if e.type == "PUT" else None, "the committed history")
            t.allowed.setdefault(e.revision, set()).add(e.key)
        t.first = min(t.required, default=1)
        return t

    def knows(self, rev: int) -> bool:
        """Whether the truth is complete at revision rev (a committed list may start after a compaction)."""
        return self.complete and rev >= self.first

    @classmethod
    def from_history(cls, history: Sequence[Op]) -> _Truth:
        t = cls()
        for op in history:
            r = op.result or {}
            rev = r.get("revision")
            if op.outcome != "ok" or rev is None:
                continue
            rev = int(rev)
            src = op.label()
            if op.kind == "put" or op.kind == "cas" and r.get("succeeded"):
                t.require(rev, op["key"], "PUT", op["value"], src)
                t.allowed.setdefault(rev, set()).add(op["key"])
            elif op.kind == "delete" and r.get("deleted"):
                t.require(rev, op["key"], "DELETE", None, src)
                t.allowed.setdefault(rev, set()).add(op["key"])
            elif op.kind == "txn" and r.get("succeeded"):
                writes = op.get("writes") or {}
                if any(v is not None for v in writes.values()):  # certainly made revision rev
                    for k, v in writes.items():
                        if v is not None:
                            t.require(rev, k, "PUT", v, src)
                    t.allowed.setdefault(rev, set()).update(writes)
        return t

    def prev_value(self, key: bytes, rev: int) -> Any:
        """The key's value just before revision rev (when complete); MISSING when unknown
        (no earlier event of the key, and the committed list starts after revision 1)."""
        if self._by_key is None:
            self._by_key = {}
            for r in sorted(self.required):
                for k, (_, v, _) in self.required[r].items():
                    self._by_key.setdefault(k, ([], []))
                    self._by_key[k][0].append(r)
                    self._by_key[k][1].append(v)
        revs, vals = self._by_key.get(key, ([], []))
        i = bisect.bisect_left(revs, rev)
        if i:
            return vals[i - 1]
        return None if self.first <= 1 else MISSING


class _Watcher:
    def __init__(self, index: int, op: Op) -> None:
        self.index = index
        self.op = op
        self.name = _name(op)
        self.spec = _spec(op)
        self.events = [Event.of(e) for e in op.get("events") or []]
        self.responses: list[list[int]] | None = op.get("responses")
        self.resumes = sorted(op.get("resumes") or [], key=lambda r: int(r["response"]))
        self.progress = int(op.get("progress_revision") or 0)
        self.first = self.spec.start or (self.events[0].revision if self.events else 0)
        last = max((e.revision for e in self.events), default=0)
        self.last = max(last, self.progress)
        self.skipped: list[tuple[int, int]] = []  # revision ranges a resume skipped (the client's doing)
        # Compact revisions a resume started from: the compaction dropped a DELETE there (etcd drops a
        # tombstone at the compact revision too: a watch from it does not see the delete).
        self.compacted_starts: set[int] = set()

    def spans(self, rev: int) -> bool:
        if not self.first or not (self.first <= rev <= self.last):
            return False
        return not any(lo <= rev <= hi for lo, hi in self.skipped)


def check_watch(
    history: Sequence[Op],
    committed: Iterable[Event | Mapping[str, Any]] | None = None,
    *,
    max_reports: int = 50,
) -> Verdict:
    """Check every "watch" op of `history` against the committed events (see the module docstring)."""
    watchers = [_Watcher(i, op) for i, op in enumerate(history) if op.kind == "watch"]
    truth = _Truth.from_committed(committed) if committed is not None else _Truth.from_history(history)
    bad: list[dict[str, Any]] = []

    def report(w: _Watcher, kind: str, msg: str, rev: int | None = None, key: bytes | None = None) -> None:
        bad.append(
            {
                "watcher": w.name,
                "op": w.index,
                "kind": kind,
                "revision": rev,
                "key": show(key) if key is not None else None,
                "message": f"{w.name}: {msg}",
            }
        )

    # pooled observations: (rev, key) -> (type, value, watcher name)
    seen_by: dict[tuple[int, bytes], tuple[str, bytes | None, int]] = {}  # ... (type, value, watcher index)
    name_of = {w.index: w.name for w in watchers}

    for w in watchers:
        evs, spec = w.events, w.spec
        # responses: structure and atomicity
        if w.responses is not None:
            flat = [int(r) for resp in w.responses for r in resp]
            if flat != [e.revision for e in evs]:
                report(w, "malformed", "responses do not list the revisions of its events in order")
            else:
                resp_of = [i for i, resp in enumerate(w.responses) for _ in resp]
                where: dict[int, int] = {}
                once: set[tuple[int, bytes]] = set()
                split: set[int] = set()
                for e, i in zip(evs, resp_of):
                    if (e.revision, e.key) in once:
                        continue  # a duplicate: reported as such below
                    once.add((e.revision, e.key))
                    if where.setdefault(e.revision, i) != i and e.revision not in split:
                        split.add(e.revision)
                        report(
                            w, "atomic",
                            f"the events of revision {e.revision} were split across responses {where[e.revision]} and {i}",
                            e.revision,
                        )
        # resumes: where each segment starts
        seg_start: dict[int, int] = {}  # event index -> the start revision of its connection
        if w.resumes and w.responses is not None:
            first_event_of_response = []
            n = 0
            for resp in w.responses:
                first_event_of_response.append(n)
                n += len(resp)
            for res in w.resumes:
                ri, start = int(res["response"]), int(res["start_revision"])
                idx = first_event_of_response[ri] if ri < len(first_event_of_response) else len(evs)
                seen_before = [e.revision for e in evs[:idx]]
                expect = max(seen_before) + 1 if seen_before else w.first
                if start > expect:
                    if start != int(res.get("compacted", 0)):
                        report(w, "resume", f"resumed from revision {start}, skipping {expect}..{start - 1}", start)
                    else:
                        w.compacted_starts.add(start)
                    w.skipped.append((expect, start - 1))
                elif start < expect:
                    report(w, "resume", f"resumed from revision {start}, not {expect} (last seen + 1)", start)
                seg_start[idx] = start
        elif w.resumes:
            report(w, "malformed", "resumes given without responses")

        # one pass over the stream
        last_rev = 0
        delivered: set[tuple[int, bytes]] = set()
        last_of_key: dict[bytes, tuple[Event, bytes | None]] = {}
        floor = spec.start
        for i, e in enumerate(evs):
            if i in seg_start:
                floor = seg_start[i]
                if last_rev and floor > last_rev + 1:
                    last_of_key = {}  # a gap the client made: the stream says nothing about values across it
            if e.revision < last_rev:
                report(w, "ordered", f"{e.label()} came after revision {last_rev}", e.revision, e.key)
            last_rev = max(last_rev, e.revision)
            if (e.revision, e.key) in delivered:
                report(w, "unique", f"{e.label()} was delivered twice", e.revision, e.key)
                continue
            delivered.add((e.revision, e.key))
            if not spec.covers(e.key, e.type):
                report(w, "range", f"{e.label()} is outside the watched range or filters", e.revision, e.key)
            if floor and e.revision < floor:
                report(w, "range", f"{e.label()} is before the start revision {floor}", e.revision, e.key)
            # against the truth
            need = truth.required.get(e.revision, {}).get(e.key)
            allowed = truth.allowed.get(e.revision)
            if need is not None:
                if need[0] != e.type or (e.type == "PUT" and need[1] != e.value):
                    what = f"{need[0]} {show(e.key)}" + (f"={show(need[1])}" if need[0] == "PUT" else "")
                    report(w, "value", f"got {e.label()}, but revision {e.revision} was {what} ({need[2]})", e.revision, e.key)
            elif truth.knows(e.revision):
                report(w, "phantom", f"got {e.label()}, which was never committed", e.revision, e.key)
            elif allowed is not None and e.key not in allowed:
                report(w, "phantom", f"got {e.label()}, but revision {e.revision} wrote only other keys", e.revision, e.key)
            elif allowed is not None and e.type == "PUT":
                report(w, "value", f"got {e.label()}, but revision {e.revision} deleted {show(e.key)}", e.revision, e.key)
            # prev_value
            if e.prev_value is not MISSING:
                if truth.complete:
                    want = truth.prev_value(e.key, e.revision)
                    if want is not MISSING and e.prev_value != want:
                        report(
                            w, "prev_value", f"{e.label()} has prev_value {show(e.prev_value)}, but the value was {show(want)}",
                            e.revision, e.key,
                        )
                elif e.key in last_of_key and not (spec.noput or spec.nodelete):
                    p, want = last_of_key[e.key]
                    if e.prev_value != want:
                        report(
                            w, "prev_value",
                            f"{e.label()} has prev_value {show(e.prev_value)}, but the watcher's previous event "
                            f"of that key was {p.label()}",
                            e.revision, e.key,
                        )
            # the key's value after e: the truth's when known (a wrong event is reported once, not again here)
            last_of_key[e.key] = (e, need[1] if need is not None else e.value if e.type == "PUT" else None)
            # pool it
            mine = (e.type, e.value if e.type == "PUT" else None, w.index)
            other = seen_by.setdefault((e.revision, e.key), mine)
            if other[:2] != mine[:2] and need is None:
                report(
                    w, "disagree", f"got {e.label()}, but {name_of[other[2]]} got {other[0]} {show(e.key)}={show(other[1])} there",
                    e.revision, e.key,
                )

    # reliability: every known event inside a watcher's span and range was delivered
    for w in watchers:
        got = {(e.revision, e.key) for e in w.events}
        expected: dict[tuple[int, bytes], str] = {}
        for rev, evs in truth.required.items():
            if w.spans(rev):
                for key, (t, _, src) in evs.items():
                    if w.spec.covers(key, t) and not (t == "DELETE" and rev in w.compacted_starts):
                        expected[(rev, key)] = src
        if not truth.complete:  # with the full truth, what others saw adds nothing (or is a phantom)
            for (rev, key), (t, _, who) in seen_by.items():
                if who != w.index and w.spans(rev) and w.spec.covers(key, t) and not (t == "DELETE" and rev in w.compacted_starts):
                    expected.setdefault((rev, key), f"seen by {name_of[who]}")
        for rev, key in sorted(expected):
            if (rev, key) not in got:
                report(
                    w, "reliable",
                    f"missed {show(key)}@{rev} ({expected[(rev, key)]}) within its span {w.first}..{w.last}",
                    rev, key,
                )

    n_events = sum(len(w.events) for w in watchers)
    details: dict[str, Any] = {
        "status": FAIL if bad else OK,
        "watchers": len(watchers),
        "events": n_events,
        "committed_given": truth.complete,
        "violations": bad[:max_reports],
        "violation_count": len(bad),
        "by_kind": {k: sum(1 for b in bad if b["kind"] == k) for k in sorted({b["kind"] for b in bad})},
    }
    if not bad:
        return Verdict(True, CHECKER, f"{len(watchers)} watchers, {n_events} events: ordered, unique, reliable, atomic", details)
    kinds = ", ".join(f"{k} x{n}" for k, n in details["by_kind"].items())
    return Verdict(False, CHECKER, f"{len(bad)} violations ({kinds}); first: {bad[0]['message']}", details)
