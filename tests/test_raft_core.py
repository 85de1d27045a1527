"""RaftCore, scripted: messages delivered, dropped and reordered one at a time (as etcd-io/raft's tests do)."""

from __future__ import annotations

import random

import pytest

from petcd.actors.raft import CANDIDATE, FOLLOWER, LEADER, PRECANDIDATE, RaftCore
from petcd.store.raftlog import ConfState, Entry, HardState, RaftLog


class Net:
    """Cores over real RaftLogs; messages queue here until a test delivers them."""

    def __init__(self, tmp_path, ids: list[str], *, pre_vote: bool = True, check_quorum: bool = True) -> None:
        self.tmp_path = tmp_path
        self.ids = ids
        self.pre_vote, self.check_quorum = pre_vote, check_quorum
        self.logs = {i: RaftLog(str(tmp_path / i), sync=False) for i in ids}
        self.applied: dict[str, list[Entry]] = {i: [] for i in ids}
        self.cores = {i: self._core(i) for i in ids}
        self.queue: list[tuple[str, str, dict]] = []  # (from, to, msg)
        self.reads: dict[str, list] = {i: [] for i in ids}
        self.snapshots: list[tuple[str, str]] = []

    def _core(self, i: str) -> RaftCore:
        core = RaftCore(i, self.logs[i].conf_state or ConfState(tuple(self.ids)), self.logs[i], random.Random(i).random,
                        election_ticks=10, pre_vote=self.pre_vote, check_quorum=self.check_quorum)
        core.restore_applied(self.applied[i][-1].index if self.applied[i] else 0)
        return core

    def restart(self, i: str) -> None:
        """Lose memory, keep the durable log."""
        self.queue = [m for m in self.queue if m[1] != i]
        self.cores[i] = self._core(i)

    def flush(self, i: str) -> None:
        """Run the Ready loop of `i`: persist, then queue messages, then apply."""
        core = self.cores[i]
        for _ in range(10):
            if not core.has_ready():
                return
            rd = core.ready()
            self.logs[i].save(rd.hard_state, rd.entries)
            self.queue += [(i, to, m) for to, m in rd.messages]
            self.applied[i] += rd.committed
            self.reads[i] += rd.reads
            self.snapshots += [(i, p) for p in rd.snapshots]
            core.advance(rd)

    def flush_all(self) -> None:
        for i in self.ids:
            self.flush(i)

    def deliver(self, pred=lambda f, t, m: True, *, drop: bool = False) -> int:
        """Deliver (or drop) the queued messages matching pred, in order; returns how many."""
        chosen = [q for q in self.queue if pred(*q)]
        self.queue = [q for q in self.queue if not pred(*q)]
        if not drop:
            for frm, to, msg in chosen:
                self.cores[to].step(frm, msg)
                self.flush(to)
        return len(chosen)

    def settle(self, rounds: int = 50, cut: set[str] = frozenset()) -> None:
        """Deliver until quiet; messages from or to members in `cut` are dropped."""
        for _ in range(rounds):
            self.flush_all()
            if not self.queue:
                return
            self.deliver(lambda f, t, m: f in cut or t in cut, drop=True)
            self.deliver()

    def tick(self, i: str, n: int = 1) -> None:
        for _ in range(n):
            self.cores[i].tick()
        self.flush(i)

    def elect(self, i: str) -> None:
        self.cores[i].campaign_now()
        self.settle()
        assert self.cores[i].role == LEADER

    def leaders(self) -> list[str]:
        return [i for i, c in self.cores.items() if c.role == LEADER]


@pytest.fixture
def net3(tmp_path):
    return Net(tmp_path, ["a", "b", "c"])


def test_election_and_replication(net3):
    net3.elect("a")
    assert {c.leader for c in net3.cores.values()} == {"a"}
    assert net3.cores["a"].propose([b"x", b"y"])
    net3.settle()
    for i in "abc":
        assert [e.data for e in net3.applied[i] if e.data] == [b"x", b"y"]


def test_one_vote_per_term_survives_a_restart(net3):
    # b votes for a in term 1; after a restart b must not vote for c in the same term.
    net3.cores["a"].campaign_now()
    net3.flush("a")
    net3.deliver(lambda f, t, m: t == "b")
    assert net3.logs["b"].hard_state.vote == "a"
    net3.restart("b")
    net3.cores["c"].term = 0  # c campaigns into the same term 1
    net3.cores["c"].campaign_now()
    net3.flush("c")
    net3.deliver(lambda f, t, m: t == "b" and f == "c")
    resp = [m for f, t, m in net3.queue if f == "b" and t == "c"]
    assert resp and not resp[-1]["granted"], "b voted twice in one term"


def test_never_two_leaders_in_one_term(net3):
    net3.elect("a")
    term = net3.cores["a"].term
    # c is cut off, times out, campaigns: with pre-vote it cannot even raise its term.
    net3.tick("c", 40)
    net3.settle(cut={"c"})
    assert net3.cores["c"].term == term
    by_term: dict[int, set[str]] = {}
    for i, c in net3.cores.items():
        if c.role == LEADER:
            by_term.setdefault(c.term, set()).add(i)
    assert all(len(v) == 1 for v in by_term.values())


def test_a_leader_does_not_grant_votes_in_its_lease(net3):
    net3.elect("a")
    core = net3.cores["a"]
    core.step("b", {"t": "vote", "term": core.term + 1, "last_index": 100, "last_term": 100, "transfer": False})
    net3.flush("a")
    assert core.role == LEADER and not [m for f, t, m in net3.queue if f == "a" and m["t"] == "vote_resp"]


def test_follower_refuses_read_index_and_an_isolated_leader_serves_no_read(net3):
    net3.elect("a")
    assert not net3.cores["b"].read_index("stale?")
    assert net3.cores["a"].read_index("r1")
    net3.settle(cut={"b", "c"})  # the heartbeat round never reaches a quorum
    assert net3.reads["a"] == []
    # A later round that a quorum confirms serves every read that waited (a's leadership is proven after both arrived).
    assert net3.cores["a"].read_index("r2")
    net3.settle()
    assert [ctx for _, ctx in net3.reads["a"]] == ["r1", "r2"]


def test_figure_8_old_term_entries_are_not_committed_by_counting(tmp_path):
    net = Net(tmp_path, ["a", "b", "c", "d", "e"])
    net.elect("a")
    term_a = net.cores["a"].term
    net.cores["a"].propose([b"old"])
    net.flush("a")
    # The entry reaches only b, then a is cut off.
    net.deliver(lambda f, t, m: t == "b" and m["t"] == "app")
    net.deliver(lambda f, t, m: True, drop=True)
    old_index = net.cores["b"].last_index()
    # e becomes leader (votes from c, d, e) in a higher term without seeing "old".
    net.cores["e"].campaign_now()
    net.settle(cut={"a", "b"})
    assert net.cores["e"].role == LEADER
    net.cores["e"].propose([b"e-entry"])
    net.flush("e")
    net.deliver(lambda f, t, m: True, drop=True)  # e crashes before replicating
    # a comes back and wins a newer term with b and c, then replicates "old" to c: a majority holds it...
    for i in "bcd":
        net.cores[i]._election_elapsed = 100  # past their lease
    net.cores["a"].term = max(c.term for c in net.cores.values())
    net.cores["a"].campaign_now()
    net.flush("a")
    net.deliver(lambda f, t, m: t in "bc" or f in "bc")
    net.flush_all()
    net.deliver(lambda f, t, m: t == "a")
    assert net.cores["a"].role == LEADER and net.cores["a"].term > term_a
    # Now deliver a's appends to b and c, but let nothing of a's own term commit.
    net.deliver(lambda f, t, m: (t in "bc" and m["t"] == "app") or (f in "bc" and t == "a"))
    # "old" is on a, b, c (a majority) yet must not be committed unless an entry of a's term is.
    a = net.cores["a"]
    if a.commit >= old_index:
        assert a._term_at(a.commit) == a.term, "committed an old-term entry by counting replicas"


def test_duplicated_and_stale_append_responses_never_move_match_back(net3):
    net3.elect("a")
    a = net3.cores["a"]
    a.propose([b"1"])
    net3.flush("a")
    net3.deliver(lambda f, t, m: t in "bc")
    responses = [q for q in net3.queue if q[1] == "a"]
    net3.deliver()
    match_before = dict((p, pr.match) for p, pr in a.progress.items())
    commit_before = a.commit
    a.propose([b"2"])
    net3.settle()
    # Replay the old responses (duplicated, late).
    for frm, to, msg in responses:
        a.step(frm, msg)
    net3.flush("a")
    for p, pr in a.progress.items():
        assert pr.match >= match_before[p]
    assert a.commit >= commit_before


def test_a_stale_append_does_not_truncate_committed_entries(net3):
    net3.elect("a")
    a = net3.cores["a"]
    a.propose([b"1"])
    net3.flush("a")
    stale = [q for q in net3.queue if q[1] == "b" and q[2]["t"] == "app"]
    net3.settle()
    a.propose([b"2"])
    net3.settle()
    b = net3.cores["b"]
    last, commit = b.last_index(), b.commit
    for frm, to, msg in stale:  # an old append, delayed in the network
        b.step(frm, msg)
    net3.flush("b")
    assert (b.last_index(), b.commit) == (last, commit)
    assert [e.data for e in net3.applied["b"] if e.data] == [b"1", b"2"]


def test_the_append_ack_leaves_with_the_entries_it_acknowledges(net3):
    net3.elect("a")
    net3.cores["a"].propose([b"1"])
    net3.flush("a")
    msg = next(m for f, t, m in net3.queue if t == "b" and m["t"] == "app" and m["entries"])
    net3.queue = []
    b = net3.cores["b"]
    b.step("a", msg)
    rd = b.ready()
    acks = [m for _, m in rd.messages if m["t"] == "app_resp" and not m["reject"]]
    assert acks and acks[-1]["index"] == rd.entries[-1].index, "the ack travels in the Ready that persists the entries"
    assert net3.logs["b"].last_index < acks[-1]["index"], "not yet durable when the Ready is handed out"


def test_asymmetric_partition_does_not_livelock_with_pre_vote_and_check_quorum(tmp_path):
    net = Net(tmp_path, ["a", "b", "c"])
    net.elect("a")
    term = net.cores["a"].term
    # c cannot hear anyone, but everyone hears c.
    for _ in range(100):
        for i in "abc":
            net.tick(i)
        net.deliver(lambda f, t, m: t == "c", drop=True)
        net.deliver()
    assert net.cores["a"].role == LEADER and net.cores["a"].term == term, "an isolated member deposed a healthy leader"


def test_without_pre_vote_a_rejoining_member_disrupts(tmp_path):
    net = Net(tmp_path, ["a", "b", "c"], pre_vote=False, check_quorum=False)
    net.elect("a")
    term = net.cores["a"].term
    net.tick("c", 40)
    net.settle(cut={"c"})
    assert net.cores["c"].term > term  # it raised its term alone
    net.tick("c", 40)  # back in touch, it campaigns again, with its higher term
    net.settle()
    assert net.cores["a"].term > term  # and the healthy leader was deposed


def test_a_follower_behind_the_compacted_log_gets_a_snapshot_while_appends_fly(net3):
    net3.elect("a")
    a = net3.cores["a"]
    for i in range(20):
        a.propose([f"e{i}".encode()])
        net3.settle(cut={"c"})
    net3.logs["a"].compact(a.applied - 2)
    net3.snapshots.clear()
    a.propose([b"more"])
    net3.settle()
    assert ("a", "c") in net3.snapshots
    assert a.progress["c"].state == "snapshot"
    # While the snapshot is "in transfer", appends to b go on and commit.
    a.propose([b"during"])
    net3.settle()
    assert any(e.data == b"during" for e in net3.applied["b"])
    # The snapshot lands: c restores at the leader's applied index and catches up from there.
    c = net3.cores["c"]
    snap_index = net3.logs["a"].snapshot_index
    a.snapshot_done("c", snap_index, ok=True)
    c.restore_snapshot(snap_index, net3.logs["a"].term(snap_index), a.conf, {})
    c.step("a", {"t": "app", "term": a.term, "prev_index": snap_index, "prev_term": net3.logs["a"].term(snap_index),
                 "entries": [], "commit": 0, "read_seq": 0})
    net3.settle()
    assert c.last_index() == a.last_index() and c.commit == a.commit


def test_membership_change_while_the_leader_steps_down(net3):
    net3.elect("a")
    a = net3.cores["a"]
    net3.settle()
    assert a.propose_conf_change(b"conf:add d") is None
    assert a.propose_conf_change(b"conf:second") == "conf_change_pending", "one change at a time"
    net3.flush("a")
    net3.deliver(lambda f, t, m: True, drop=True)  # the change does not get out
    # a loses leadership to b before the change commits.
    net3.cores["b"]._election_elapsed = 100
    net3.cores["c"]._election_elapsed = 100
    net3.cores["b"].campaign_now()
    net3.settle(cut={"a"})
    assert net3.cores["b"].role == LEADER
    net3.tick("b")  # b's heartbeat reaches a
    net3.settle()
    # The uncommitted change was overwritten on a; nothing committed it anywhere.
    for i in "abc":
        assert all(e.data != b"conf:add d" for e in net3.applied[i])
    assert net3.cores["a"].role == FOLLOWER


def test_leader_transfer(net3):
    net3.elect("a")
    assert net3.cores["a"].transfer_leader("b") is None
    net3.settle()
    assert net3.cores["b"].role == LEADER and net3.cores["a"].role == FOLLOWER
    assert net3.cores["b"].transfer_leader("zz") == "bad_transferee"
    assert net3.cores["a"].transfer_leader("c") == "not_leader"


def test_learners_replicate_but_never_vote_or_count(tmp_path):
    net = Net(tmp_path, ["a", "b", "c"])
    for core in net.cores.values():
        core.conf = ConfState(("a", "b"), ("c",))
    net.elect("a")
    net.cores["a"].propose([b"x"])
    net.settle(cut={"b"})
    assert net.cores["a"].commit < net.cores["a"].last_index(), "a learner's copy does not make a quorum"
    net.tick("c", 40)
    assert net.cores["c"].role == FOLLOWER, "a learner never campaigns"
    for _ in range(5):  # heartbeats find b's lost append and send it again
        net.tick("a")
        net.settle()
    assert any(e.data == b"x" for e in net.applied["c"])


def test_roles_are_the_documented_ones(net3):
    assert {FOLLOWER, PRECANDIDATE, CANDIDATE, LEADER} == {"follower", "precandidate", "candidate", "leader"}
    assert HardState() == HardState(0, "", 0)
