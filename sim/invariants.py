"""Safety invariants of Raft and of the replicated store, checked on a running simulation.

`InvariantChecker.check(cluster)` looks at every running member and raises
`InvariantViolation` if one of these ever failed:
  election safety     at most one leader per term, over the whole run (crashed members included);
  leader agreement    a follower that names a leader for its term names the one elected in it
                      (a message of an old term, a deposed leader's late snapshot say, must not
                      make anyone follow its sender);
  term monotonicity   a member's term never goes down, across restarts too;
  log matching        entries with the same (index, term) hold the same data and follow the
                      same term, in every log it was ever seen in -- by induction, two logs that
                      share (index, term) are identical up to index;
  state machine safety  an index, once committed anywhere, holds one (term, data) everywhere;
                      a restarted member still holds what it had committed (durability);
  leader completeness a leader of term T holds every entry committed in a term <= T;
  applied agreement   members at the same applied index have the same store hash.

Incremental: a member's log is only read when its term, role, commit or log
tail changed, and entries up to the commit seen at its last scan are not read
again (committed entries never change in Raft; a member that overwrote one is
caught when another member commits it, when a leader is checked, or by
`check_final`, which compares every pair of logs in full). Store hashes are
rationed in time (see `InvariantChecker`). A check sees the states between
two steps, not inside one: checked after every step, no leader is missed.

What the checker reads (the Raft and apply actors' attributes) is gathered
in `member_views`; tests can feed hand-made `MemberView`s to `observe`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from petcd.sim.cluster import SimCluster


class LogReader(Protocol):
    """The read side of `store.raftlog.RaftLog`."""

    @property
    def first_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    def term(self, index: int) -> int: ...

    def entries(self, lo: int, hi: int) -> list[Any]: ...  # Entry: index, term, data (, kind)


class StateReader(Protocol):
    """The read side of `store.mvcc.MvccStore`."""

    def applied_index(self) -> int: ...

    def hash_kv(self, revision: int) -> tuple[int, int, int]: ...


@dataclass(frozen=True, slots=True)
class MemberView:
    """What the checker sees of one member at one instant."""

    member: str
    term: int = 0
    role: str = ""
    commit: int = 0
    log: LogReader | None = None  # None: the Raft actor is down
    store: StateReader | None = None  # None: the apply actor is down
    leader: str = ""  # who the member follows ("" if nobody, or it leads)


class InvariantViolation(Exception):
    """A safety property failed. `invariant` names it, `detail` gives members, indexes and terms."""

    def __init__(self, invariant: str, detail: str, at_ms: int | None = None) -> None:
        super().__init__(invariant, detail)
        self.invariant = invariant
        self.detail = detail
        self.at_ms = at_ms
        self.seed: int | None = None

    def __str__(self) -> str:
        where = [f"at {self.at_ms} ms"] if self.at_ms is not None else []
        where += [f"seed {self.seed}"] if self.seed is not None else []
        return f"{self.invariant}: {self.detail}" + (f" ({', '.join(where)})" if where else "")


@dataclass(slots=True)
class _Committed:
    term: int
    body: tuple[bytes, int]  # (data, kind)
    commit_term: int  # lowest term of a member that saw it committed: it was committed in a term <= this
    member: str


@dataclass(slots=True)
class _MemberState:
    max_term: int = 0
    log: object | None = None  # the log object scanned last (a restart brings a new one)
    tail: tuple[int, int, int] = (0, 0, 0)  # (first_index, last_index, last_term) at the last scan
    commit: int = 0
    stable: int = 0  # entries <= stable were scanned while committed: never read again from this log
    recorded: int = 0  # highest index recorded as committed from this member (survives restarts)
    store: object | None = None
    applied: int = -1
    state_hash: tuple[int, int, int] | None = None  # store hash at `applied`, when computed
    compared: bool = False  # state_hash was compared with (or became) the reference at `applied`


def _body(entry: Any) -> tuple[bytes, int]:
    return bytes(entry.data), getattr(entry, "kind", 0)


class InvariantChecker:
    """Keeps what it has seen across the run; `check` after every step (or every few ms).

    Applied-state agreement reads every store and hashes it (O(revisions)):
    it is evaluated at most once per `state_every_ms` of virtual time in which
    two members met at one applied index (retried at every check until they
    do; 0: at every check), and for every member in `check_final`.
    """

    def __init__(self, *, state_every_ms: int = 100) -> None:
        assert state_every_ms >= 0
        self._state_every_ms = state_every_ms
        self._last_state_ms: int | None = None
        self.leaders: dict[int, str] = {}  # term -> member, every leader ever seen
        self._committed: dict[int, _Committed] = {}  # index -> the entry committed there
        self._seen: dict[tuple[int, int], tuple[tuple[bytes, int], int, str]] = {}  # (index, term) -> (body, prev term, member)
        self._members: dict[str, _MemberState] = {}
        self._hash_at: dict[int, tuple[tuple[int, int, int], str]] = {}  # applied index -> (store hash, member)
        self._now_ms: int | None = None
        self.stats: Counter[str] = Counter()
        # who led when, as seen by the checks: [member, term, from_ms, to_ms | None (still leading)]
        self.leadership: list[list[Any]] = []
        self._leading: dict[tuple[str, int], list[Any]] = {}
        # Leader agreement needs every leader seen; a checker run every few ms (run_checked) may miss one.
        self.sees_every_step = True
        self._followed: dict[int, tuple[str, str]] = {}  # term -> (the leader a follower named, that follower), the first seen
        # Members whose store holds a fault's flipped byte (sim/faults.py `corrupt`): their store is
        # meant to differ until repaired, so applied-state agreement leaves them out meanwhile.
        self.state_exempt: Collection[str] = ()

    # -- entry points
    def check(self, cluster: SimCluster) -> None:
        try:
            self.observe(member_views(cluster), cluster.runtime.now_ms)
        except InvariantViolation as err:
            err.seed = cluster.runtime.seed
            raise

    def check_final(self, cluster: SimCluster) -> None:
        """`check`, then compare every pair of running members' logs entry by entry, and every store at equal applied index."""
        try:
            views = member_views(cluster)
            self.observe(views, cluster.runtime.now_ms)
            self.compare_all(views)
        except InvariantViolation as err:
            err.seed = cluster.runtime.seed
            raise

    def observe(self, views: Sequence[MemberView], now_ms: int | None = None) -> None:
        """Check one instant of the cluster, given as one view per member."""
        self._now_ms = now_ms
        self.stats["checks"] += 1
        up = [v for v in views if v.log is not None]
        for v in up:
            self._check_term(v)
        leaders = [v for v in up if v.role == "leader"]
        self._track_leadership(leaders)
        new_leaders = [v for v in leaders if self._new_leader(v)]
        for v in up:
            self._check_followed_leader(v)
        for v in up:
            self._scan(v, leaders)
        for v in new_leaders:
            self._check_leader_complete(v)
        self._check_applied(views, force=False)

    def compare_all(self, views: Sequence[MemberView]) -> None:
        """Non-incremental: log matching over the overlap of every two logs; store hashes at equal applied index."""
        up = [v for v in views if v.log is not None]
        for i, a in enumerate(up):
            for b in up[i + 1 :]:
                self._compare_logs(a, b)
        self._check_applied(views, force=True)

    @property
    def committed_index(self) -> int:
        """Highest index seen committed."""
        return max(self._committed, default=0)

    # -- election safety
    def _check_term(self, v: MemberView) -> None:
        st = self._members.setdefault(v.member, _MemberState())
        if v.term < st.max_term:
            self._fail("term monotonicity", f"{v.member}'s term went down from {st.max_term} to {v.term}")
        st.max_term = v.term

    def _track_leadership(self, leaders: list[MemberView]) -> None:
        now = self._now_ms if self._now_ms is not None else 0
        current = {(v.member, v.term) for v in leaders}
        for key in [k for k in self._leading if k not in current]:
            self._leading.pop(key)[3] = now
        for key in current:
            if key not in self._leading:
                span = [key[0], key[1], now, None]
                self._leading[key] = span
                self.leadership.append(span)

    def _new_leader(self, v: MemberView) -> bool:
        other = self.leaders.get(v.term)
        if other is not None and other != v.member:
            self._fail("election safety", f"{other} and {v.member} were both leader in term {v.term}")
        named = self._followed.get(v.term)
        if named is not None and named[0] != v.member and self.sees_every_step:
            self._fail("leader agreement", f"{named[1]} followed {named[0]} in term {v.term}, whose leader is {v.member}")
        if other is None:
            self.leaders[v.term] = v.member
            self.stats["leaders"] += 1
            return True
        return False

    def _check_followed_leader(self, v: MemberView) -> None:
        # A leader may win, send its first appends and lose its power within one step, never seen
        # leading: the first member that names it stands for it until its term's leader is seen.
        if v.role != "follower" or not v.leader or not self.sees_every_step:
            return
        elected = self.leaders.get(v.term)
        named = self._followed.setdefault(v.term, (v.leader, v.member))
        if elected is not None and elected != v.leader:
            self._fail("leader agreement", f"{v.member} follows {v.leader} in term {v.term}, whose leader was {elected}")
        if named[0] != v.leader:
            self._fail("leader agreement", f"{v.member} follows {v.leader} in term {v.term}, {named[1]} followed {named[0]}")

    # -- log matching and commits
    def _scan(self, v: MemberView, leaders: list[MemberView]) -> None:
        log = v.log
        assert log is not None
        st = self._members[v.member]
        first, last = log.first_index, log.last_index
        tail = (first, last, log.term(last))
        if st.log is log and st.tail == tail and st.commit == v.commit:
            return
        if st.log is not log:  # a new incarnation: read its whole log once
            st.log, st.stable = log, 0
            if last < st.recorded:
                self._fail("durability", f"{v.member} had committed up to index {st.recorded} but its log ends at {last} after a restart")
        st.tail, st.commit = tail, v.commit
        commit_hi = min(v.commit, last)
        lo = max(first, st.stable + 1)
        if st.recorded < first - 1:  # entries folded into a snapshot before we read them
            self._check_snapshot_point(v, first - 1, log.term(first - 1))
            st.recorded = first - 1
        if lo <= last:
            prev_term = log.term(lo - 1)
            entries = log.entries(lo, last + 1)
            assert [e.index for e in entries] == list(range(lo, last + 1)), f"{v.member}: short read {lo}..{last}"
            new: list[Any] = []
            for e in entries:
                self._see(v.member, e, prev_term)
                prev_term = e.term
                if e.index <= commit_hi and self._commit(v, e):
                    new.append(e)
            self.stats["entries_scanned"] += len(entries)
            if new:
                self._check_leaders_hold(new, v.term, leaders)
        st.stable = max(st.stable, commit_hi)
        st.recorded = max(st.recorded, commit_hi)

    def _see(self, member: str, e: Any, prev_term: int) -> None:
        key, body = (e.index, e.term), _body(e)
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = (body, prev_term, member)
            return
        seen_body, seen_prev, seen_member = seen
        if seen_body != body:
            self._fail("log matching", f"entry (index {e.index}, term {e.term}) holds different data in {seen_member}'s and {member}'s logs")
        if seen_prev != prev_term:
            self._fail(
                "log matching",
                f"entry (index {e.index}, term {e.term}) follows term {seen_prev} in {seen_member}'s log but term {prev_term} in {member}'s",
            )

    def _commit(self, v: MemberView, e: Any) -> bool:
        """Record `e` as committed, as `v` sees it; True if no member had committed its index before."""
        known = self._committed.get(e.index)
        if known is None:
            self._committed[e.index] = _Committed(e.term, _body(e), v.term, v.member)
            self.stats["committed"] += 1
            return True
        if known.term != e.term or known.body != _body(e):
            what = "term" if known.term != e.term else "data"
            self._fail(
                "state machine safety",
                f"index {e.index} committed as term {known.term} at {known.member} and as term {e.term} at {v.member} (different {what})",
            )
        known.commit_term = min(known.commit_term, v.term)
        return False

    def _check_snapshot_point(self, v: MemberView, index: int, term: int) -> None:
        known = self._committed.get(index)
        if known is not None and known.term != term:
            self._fail("state machine safety", f"{v.member}'s snapshot ends at index {index} term {term}, but term {known.term} was committed there")

    # -- leader completeness
    def _check_leaders_hold(self, new: list[Any], observer_term: int, leaders: list[MemberView]) -> None:
        """Newly committed entries, seen by a member in `observer_term`, must be in every leader of that term or later."""
        for leader in leaders:
            if leader.term >= observer_term:
                self._check_holds(leader, [(e.index, e.term, _body(e)) for e in new])

    def _check_leader_complete(self, v: MemberView) -> None:
        """A leader seen for the first time holds every entry committed in its term or before."""
        self.stats["leader_checks"] += 1
        wanted = [(i, c.term, c.body) for i, c in sorted(self._committed.items()) if c.commit_term <= v.term]
        self._check_holds(v, wanted)

    def _check_holds(self, leader: MemberView, wanted: list[tuple[int, int, tuple[bytes, int]]]) -> None:
        log = leader.log
        assert log is not None
        first, last = log.first_index, log.last_index
        if wanted and wanted[-1][0] > last:
            index, term, _ = wanted[-1]
            self._fail(
                "leader completeness",
                f"{leader.member}, leader in term {leader.term}, lacks committed index {index} (term {term}): its log ends at {last}",
            )
        readable = [w for w in wanted if w[0] >= first]
        if first - 1 > 0 and any(w[0] == first - 1 for w in wanted):
            index, term, _ = next(w for w in wanted if w[0] == first - 1)
            if log.term(index) != term:
                self._fail("leader completeness", f"{leader.member}'s snapshot at index {index} has term {log.term(index)}, committed term {term}")
        if not readable:
            return
        lo, hi = readable[0][0], readable[-1][0]
        have = {e.index: e for e in log.entries(lo, hi + 1)}
        for index, term, body in readable:
            e = have[index]
            if e.term != term or _body(e) != body:
                self._fail(
                    "leader completeness",
                    f"{leader.member}, leader in term {leader.term}, holds (index {index}, term {e.term}) where (index {index}, term {term}) was committed",
                )

    # -- applied state
    def _check_applied(self, views: Sequence[MemberView], *, force: bool) -> None:
        if not force and not self._state_window_open():
            return
        at_index: dict[int, list[MemberView]] = {}
        for v in views:
            if v.store is None or v.member in self.state_exempt:
                continue
            st = self._members.setdefault(v.member, _MemberState())
            index = v.store.applied_index()
            if st.store is not v.store or st.applied != index:
                st.store, st.applied, st.state_hash, st.compared = v.store, index, None, False
            at_index.setdefault(index, []).append(v)
        met = False  # two members at one applied index, now or over time
        for index, group in sorted(at_index.items()):
            if not force and len(group) < 2 and index not in self._hash_at:
                continue  # nobody to compare with: hashing is not free
            met = True
            for v in group:
                if force or not self._members[v.member].compared:
                    self._compare_hash(v, index)
        if met:
            self._last_state_ms = self._now_ms

    def _state_window_open(self) -> bool:
        now, last = self._now_ms, self._last_state_ms
        return now is None or last is None or self._state_every_ms == 0 or now - last >= self._state_every_ms

    def _compare_hash(self, v: MemberView, index: int) -> None:
        st = self._members[v.member]
        if st.state_hash is None:
            assert v.store is not None
            st.state_hash = v.store.hash_kv(0)
            self.stats["hashes"] += 1
        st.compared = True
        ref = self._hash_at.get(index)
        if ref is None:
            self._hash_at[index] = (st.state_hash, v.member)
            return
        (h, compact, rev), member = ref
        if st.state_hash != ref[0]:
            mh, mcompact, mrev = st.state_hash
            self._fail(
                "applied state agreement",
                f"{member} and {v.member} both applied index {index} but differ: hash {h:#x} vs {mh:#x}, "
                f"revision {rev} vs {mrev}, compact revision {compact} vs {mcompact}",
            )
        self.stats["hash_matches"] += 1

    # -- full comparison
    def _compare_logs(self, a: MemberView, b: MemberView) -> None:
        la, lb = a.log, b.log
        assert la is not None and lb is not None
        lo, hi = max(la.first_index, lb.first_index), min(la.last_index, lb.last_index)
        if lo > hi:
            return
        ea, eb = la.entries(lo, hi + 1), lb.entries(lo, hi + 1)
        top = next((k for k in range(len(ea) - 1, -1, -1) if ea[k].term == eb[k].term), None)
        if top is None:
            return
        for x, y in zip(ea[: top + 1], eb[: top + 1], strict=True):
            if x.term != y.term or _body(x) != _body(y):
                self._fail(
                    "log matching",
                    f"{a.member} and {b.member} agree on (index {ea[top].index}, term {ea[top].term}) but differ at index {x.index} "
                    f"(terms {x.term} and {y.term})",
                )
        self.stats["pairs_compared"] += 1

    def _fail(self, invariant: str, detail: str) -> None:
        raise InvariantViolation(invariant, detail, self._now_ms)


def member_views(cluster: SimCluster) -> list[MemberView]:
    """Views of the cluster's members from their actors (RaftActor._core/_log, ApplyActor._store); down actors show as None."""
    rt = cluster.runtime
    views = []
    for m in cluster.members:
        raft = rt.actor(f"{m}/raft") if rt.is_running(f"{m}/raft") else None
        apply = rt.actor(f"{m}/apply") if rt.is_running(f"{m}/apply") else None
        core, log = getattr(raft, "_core", None), getattr(raft, "_log", None)
        store = getattr(apply, "_store", None)
        if core is None or log is None:
            views.append(MemberView(m, store=store))
        else:
            views.append(MemberView(m, core.term, core.role, core.commit, log, store, core.leader if core.role == "follower" else ""))
    return views


@dataclass(frozen=True, slots=True)
class CheckedRun:
    reached: bool  # `until` held before `until_ms`
    checker: InvariantChecker


def run_checked(
    cluster: SimCluster,
    until_ms: int,
    check_every_ms: int = 0,
    *,
    until: Callable[[], bool] | None = None,
    checker: InvariantChecker | None = None,
    final: bool = True,
) -> CheckedRun:
    """Run the cluster's runtime to `until_ms` (or until `until()`), checking invariants as it goes.

    check_every_ms=0 checks after every step; otherwise after every
    `check_every_ms` of virtual time (states in between are not seen).
    `final` adds `check_final` at the end. Pass `checker` to keep one across
    phases (faults, then healing).
    """
    rt = cluster.runtime
    assert check_every_ms >= 0
    checker = checker or InvariantChecker()
    if check_every_ms:
        checker.sees_every_step = False
    if check_every_ms == 0:

        def check_then_test() -> bool:
            checker.check(cluster)
            return until is not None and until()

        reached = rt.run(until_ms=until_ms, until=check_then_test)
    else:
        reached = False
        slices = max(0, math.ceil((until_ms - rt.now_ms) / check_every_ms))
        for _ in range(slices + 1):
            checker.check(cluster)
            if until is not None and until():
                reached = True
                break
            if rt.now_ms >= until_ms:
                break
            rt.run(until_ms=min(until_ms, rt.now_ms + check_every_ms), until=until)
    if final:
        checker.check_final(cluster)
    else:
        checker.check(cluster)
    return CheckedRun(reached, checker)
