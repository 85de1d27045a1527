"""RaftCore, scripted: messages delivered, dropped and reordered one at a time (as etcd-io/raft's tests do)."""

from __future__ import annotations

import random

import pytest

from petcd.actors.raft import CANDIDATE, FOLLOWER, LEADER, PRECANDIDATE, RaftCore
from petcd.store.disk import LocalDisk
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
        self.failed_reads: dict[str, list] = {i: [] for i in ids}
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
            self.failed_reads[i] += rd.failed_reads
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
    # r2 arrives while r1's round is in flight: it waits for the next round. The lost round is
    # carried again by the next heartbeat; once a quorum echoes it r1 is served, then r2's round runs.
    assert net3.cores["a"].read_index("r2")
    net3.settle()
    assert net3.reads["a"] == []
    net3.tick("a")
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


def test_a_commit_broadcast_to_a_follower_behind_the_compacted_log_sends_a_snapshot(net3):
    """Found by the simulator (disk-crash, seed 3): a follower in the replicate state whose lost
    appends were given up on (next back to match + 1) while the leader compacted past it made the
    commit broadcast read the term of a compacted entry, and the leader's Raft actor crashed."""
    net3.elect("a")
    a = net3.cores["a"]
    assert a.progress["c"].state == "replicate"
    for i in range(20):
        a.propose([f"e{i}".encode()])
        net3.settle(cut={"c"})
    a.propose([b"more"])
    net3.flush("a")
    net3.deliver(lambda f, t, m: t == "c", drop=True)
    net3.deliver(lambda f, t, m: t == "b")  # b's ack is on its way back
    pr = a.progress["c"]
    pr.next, pr.inflight = pr.match + 1, []  # as the leader does once appends went unanswered for a while
    net3.logs["a"].compact(a.applied - 2)
    net3.snapshots.clear()
    net3.deliver(lambda f, t, m: t == "a")  # b's ack: the commit index moves, and is broadcast
    net3.settle(cut={"c"})
    assert ("a", "c") in net3.snapshots and a.progress["c"].state == "snapshot"
    assert any(e.data == b"more" for e in net3.applied["b"]), "the others go on committing"


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


# ---------------------------------------------------------------- issue 8: Raft-side safety


class FakeCtx:
    """Just enough of a Context to drive one actor by hand."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sent: list[tuple[str, dict]] = []
        self.now = 0
        self.lines: list[str] = []
        self.disk = LocalDisk()

    def send(self, to, msg):
        self.sent.append((to, msg))

    def flush(self):
        pass

    def set_timer(self, name, delay_ms):
        pass

    def cancel_timer(self, name):
        pass

    def now_ms(self):
        return self.now

    def now_us(self):
        return self.now * 1000

    def random(self):
        return 0.5

    def log(self, level, msg, **fields):
        self.lines.append(msg)

    def set_route(self, address, url):
        pass

    def stop_member(self, reason):
        pass


def _raft_actor(tmp_path, me="b"):
    from petcd.actors.raft_actor import RaftActor, RaftConfig

    members = {m: {"name": m, "peer_urls": [f"http://{m}"], "client_urls": []} for m in "abc"}
    actor = RaftActor(RaftConfig(member_id=me, data_dir=str(tmp_path / me), initial_members=members, sync=False))
    ctx = FakeCtx(f"{me}/raft")
    actor.start(ctx)
    actor.receive(ctx, [(f"{me}/apply", {"t": "hello", "applied": 0})])
    return actor, ctx


def test_snapshot_chunk_from_a_deposed_leader_is_not_installed(tmp_path):
    actor, ctx = _raft_actor(tmp_path)
    core = actor._core
    # b follows c in term 5.
    heartbeat = {"t": "app", "term": 5, "prev_index": 3, "prev_term": 1, "entries": [], "commit": 3, "read_seq": 0}
    actor.receive(ctx, [("c/raft", {"t": "raft", "cid": 0, "msg": heartbeat})])
    assert core.term == 5 and core.leader == "c"
    ctx.sent.clear()
    meta = {"index": 10, "term": 2, "voters": ["a", "b", "c"], "learners": [], "members": {}}
    # a led in term 2; its snapshot arrives late.
    actor.receive(ctx, [("a/raft", {"t": "snap", "cid": 0, "term": 2, "meta": meta, "seq": 0, "data": b"x", "last": True})])
    assert not [m for to, m in ctx.sent if m["t"] == "snap_install"], "a deposed leader's snapshot went to the store"
    # One from the current leader is taken; one from a newer term makes b follow its sender.
    actor.receive(ctx, [("c/raft", {"t": "snap", "cid": 0, "term": 5, "meta": meta, "seq": 0, "data": b"x", "last": True})])
    assert [m for to, m in ctx.sent if m["t"] == "snap_install"]
    actor.receive(ctx, [("a/raft", {"t": "snap", "cid": 0, "term": 7, "meta": meta, "seq": 0, "data": b"x", "last": True})])
    assert core.term == 7 and core.leader == "a"


def test_restore_snapshot_keeps_a_log_that_holds_the_snapshot_entry(net3):
    net3.elect("a")
    a = net3.cores["a"]
    for i in range(4):
        a.propose([f"e{i}".encode()])
    net3.flush("a")
    net3.deliver(lambda f, t, m: t == "b" and m["t"] == "app")  # b holds the entries, commit not yet known
    b = net3.cores["b"]
    last = b.last_index()
    assert b.commit < last - 1
    snap_index = last - 1
    b.restore_snapshot(snap_index, net3.logs["b"].term(snap_index), b.conf, {})
    assert b.commit == snap_index
    assert b.last_index() == last and net3.logs["b"].last_index == last, "the log was wiped though it held the entry"
    assert net3.logs["b"].term(last) == a.term


def test_no_append_ack_beyond_the_durable_log_after_a_snapshot_restore(net3):
    net3.elect("a")
    a = net3.cores["a"]
    a.propose([b"1", b"2"])
    net3.flush("a")
    msg = next(m for f, t, m in net3.queue if t == "b" and m["t"] == "app" and m["entries"])
    net3.queue = []
    b = net3.cores["b"]
    b.step("a", msg)  # the ack for the new entries is queued, the entries not yet durable
    # Before the Ready is taken, a snapshot that does not match b's log is installed.
    snap_index = msg["prev_index"] + 1
    assert snap_index > b.commit
    b.restore_snapshot(snap_index, a.term + 1, b.conf, {})
    net3.flush("b")
    durable = net3.logs["b"].last_index
    acks = [m for f, t, m in net3.queue if f == "b" and m["t"] == "app_resp" and not m["reject"]]
    assert all(m["index"] <= durable for m in acks), f"acked {[m['index'] for m in acks]} with a durable log ending at {durable}"


def test_no_append_ack_for_entries_truncated_before_they_were_persisted(net3):
    net3.elect("a")
    b = net3.cores["b"]
    last = b.last_index()
    old = {"t": "app", "term": b.term, "prev_index": last, "prev_term": b._term_at(last),
           "entries": [[last + 1, b.term, b"x", 0], [last + 2, b.term, b"y", 0]], "commit": b.commit, "read_seq": 0}
    b.step("a", old)  # ack for last+2 queued
    new = {"t": "app", "term": b.term + 1, "prev_index": last, "prev_term": b._term_at(last),
           "entries": [[last + 1, b.term + 1, b"z", 0]], "commit": b.commit, "read_seq": 0}
    b.step("c", new)  # c leads a newer term and replaces the suffix before it was persisted
    net3.flush("b")
    stale = [m for f, t, m in net3.queue if f == "b" and t == "a" and m["t"] == "app_resp" and not m["reject"]]
    assert not [m for m in stale if m["index"] > last], "acked entries that were never persisted"


def test_prevote_winner_campaigns_without_the_transfer_flag(net3):
    net3.elect("a")
    b = net3.cores["b"]
    for i in "bc":
        net3.cores[i]._election_elapsed = 100
    net3.queue = []
    b._start_election(transfer=False)  # as a timeout does
    net3.flush("b")
    assert b.role == "precandidate"
    net3.deliver(lambda f, t, m: t == "c")
    net3.flush("c")
    net3.deliver(lambda f, t, m: t == "b")
    net3.flush("b")
    votes = [m for f, t, m in net3.queue if f == "b" and m["t"] == "vote"]
    assert votes and not any(m["transfer"] for m in votes), "the real vote after a pre-vote claimed a leader transfer"


def test_lower_term_prevote_is_rejected_and_lower_term_vote_ignored(net3):
    net3.elect("a")
    b = net3.cores["b"]
    net3.queue = []
    b.step("c", {"t": "prevote", "term": b.term - 1, "last_index": 0, "last_term": 0, "transfer": False})
    b.step("c", {"t": "vote", "term": b.term - 1, "last_index": 0, "last_term": 0, "transfer": False})
    net3.flush("b")
    out = [m for f, t, m in net3.queue if f == "b" and t == "c"]
    assert [m["t"] for m in out] == ["prevote_resp"], out
    assert out[0]["term"] == b.term and not out[0]["granted"]


def test_a_higher_term_vote_in_lease_is_ignored_only_without_transfer(net3):
    net3.elect("a")
    b = net3.cores["b"]
    term = b.term
    b.step("c", {"t": "vote", "term": term + 1, "last_index": 100, "last_term": 100, "transfer": False})
    assert b.term == term, "a vote in the leader's lease changed the term"
    b.step("c", {"t": "vote", "term": term + 1, "last_index": 100, "last_term": 100, "transfer": True})
    assert b.term == term + 1 and b.vote == "c"


def test_pending_reads_are_bounded(net3, monkeypatch):
    import petcd.actors.raft as raft_mod

    monkeypatch.setattr(raft_mod, "MAX_PENDING_READS", 3)
    net3.elect("a")
    a = net3.cores["a"]
    assert all(a.read_index(i) for i in range(3))
    assert not a.read_index("one too many")


def test_remote_reads_are_bounded_and_proposals_refused_past_the_apply_gap(tmp_path, monkeypatch):
    import petcd.actors.raft_actor as ra

    monkeypatch.setattr(ra, "MAX_REMOTE_READS", 2)
    actor, ctx = _raft_actor(tmp_path)
    heartbeat = {"t": "app", "term": 5, "prev_index": 3, "prev_term": 1, "entries": [], "commit": 3, "read_seq": 0}
    actor.receive(ctx, [("c/raft", {"t": "raft", "cid": 0, "msg": heartbeat})])
    ctx.sent.clear()
    actor.receive(ctx, [("g", {"t": "read", "req": {}, "origin": ["g", i]}) for i in range(3)])
    refused = [m for to, m in ctx.sent if m.get("t") == "resp" and m["resp"].get("error") == "too_many_requests"]
    assert len(refused) == 1 and len(actor._remote_reads) == 2
    # Committed far beyond what the apply actor reports applied: proposals are refused.
    monkeypatch.setattr(ra, "MAX_APPLY_GAP", 0)
    actor.receive(ctx, [("b/apply", {"t": "applied", "index": 1, "durable": 1})])
    ctx.sent.clear()
    actor.receive(ctx, [("g", {"t": "propose", "req": {"op": "put"}, "origin": ["g", 9]})])
    assert [m["resp"] for to, m in ctx.sent if m.get("t") == "resp"] == [{"error": "too_many_requests"}]


def test_snapshot_ships_the_membership_as_of_its_index(tmp_path):
    from petcd.actors.raft_actor import RaftActor, RaftConfig

    members = {"a": {"name": "a", "peer_urls": ["http://a"], "client_urls": []}}
    actor = RaftActor(RaftConfig(member_id="a", data_dir=str(tmp_path / "a"), initial_members=members, sync=False))
    ctx = FakeCtx("a/raft")
    actor.start(ctx)
    actor.receive(ctx, [("a/apply", {"t": "hello", "applied": 0})])
    assert actor._core.role == LEADER
    snap_index = actor._core.commit  # the state machine is at this index when the snapshot is made
    change = {"op": "add_learner", "id": "d", "name": "d", "peer_urls": ["http://d"], "client_urls": []}
    actor.receive(ctx, [("g", {"t": "conf", "change": change, "origin": ["g", 1]})])
    assert "d" in actor._core.conf.learners and actor._core.commit > snap_index
    ctx.sent.clear()
    actor.receive(ctx, [("a/apply", {"t": "snap_chunk", "peer": "d", "index": snap_index, "seq": 0, "data": b"x", "last": True})])
    meta = next(m["meta"] for to, m in ctx.sent if m["t"] == "snap")
    assert meta["learners"] == [] and meta["voters"] == ["a"], "the snapshot carried a later membership"
    assert "d" not in meta["members"]


def test_restart_after_a_crash_between_snapshot_install_and_log_reset(tmp_path):
    """The apply actor installed a snapshot at 50 (store at 50, record written); the Raft log was not reset."""
    from petcd.actors.raft_actor import RaftActor, RaftConfig

    members = {m: {"name": m, "peer_urls": [f"http://{m}"], "client_urls": []} for m in "abc"}
    actor = RaftActor(RaftConfig(member_id="b", data_dir=str(tmp_path / "b"), initial_members=members, sync=False))
    ctx = FakeCtx("b/raft")
    actor.start(ctx)
    assert actor._log.last_index == 3
    snap = {"index": 50, "term": 4, "voters": ["a", "b", "c"], "learners": [], "members": members}
    actor.receive(ctx, [("b/apply", {"t": "hello", "applied": 50, "snapshot": snap})])
    core, log = actor._core, actor._log
    assert (log.snapshot_index, log.last_index, log.snapshot_term) == (50, 50, 4)
    assert core.commit <= core.last_index(), f"commit {core.commit} above the last index {core.last_index()}"
    # The leader of term 4 appends after the snapshot: b takes it and acknowledges only what it holds.
    ctx.sent.clear()
    app = {"t": "app", "term": 4, "prev_index": 50, "prev_term": 4, "entries": [[51, 4, b"", 0]], "commit": 51, "read_seq": 0}
    actor.receive(ctx, [("a/raft", {"t": "raft", "cid": 0, "msg": app})])
    acks = [m["msg"] for to, m in ctx.sent if m["t"] == "raft" and m["msg"]["t"] == "app_resp"]
    assert acks and acks[-1]["index"] == 51 == log.last_index and not acks[-1]["reject"]
    actor.stop()


def test_raftlog_keeps_the_membership_history_a_snapshot_needs(tmp_path):
    log = RaftLog(str(tmp_path / "x"), sync=False)
    log.save(HardState(1, "", 0), [Entry(i, 1, b"") for i in range(1, 8)])
    for index, voters in ((1, ("a",)), (3, ("a", "b")), (5, ("a", "b", "c"))):
        log.save(None, [], ConfState(voters), {v: {} for v in voters}, conf_index=index)
    assert log.conf_at(0) is None
    assert log.conf_at(4)[0].voters == ("a", "b") and set(log.conf_at(4)[1]) == {"a", "b"}
    assert log.conf_at(7)[0].voters == ("a", "b", "c")
    log.compact(4)
    assert log.conf_at(4)[0].voters == ("a", "b"), "compaction keeps the change in force at its index"
    log.reset_to_snapshot(20, 2, ConfState(("a", "c")), {"a": {}, "c": {}}, HardState(2, "", 20))
    assert log.conf_at(20)[0].voters == ("a", "c") and log.conf_at(5) is None
    log.close()
