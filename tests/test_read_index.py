"""ReadIndex batching, scripted (no timing): one heartbeat round confirms every read queued when it starts.

etcd's readIndex loop: reads that arrive while no round is in flight, or in the same batch, share one
round; reads that arrive during a round wait for the next one (joining the current round could serve
them at a commit index recorded before they arrived). A deposed leader refuses what it could not
confirm; a new leader serves nothing before it committed an entry of its own term.
"""

from __future__ import annotations

import pytest

from petcd.actors.raft import FOLLOWER, LEADER
from tests.test_raft_core import Net, _raft_actor


@pytest.fixture
def net3(tmp_path):
    return Net(tmp_path, ["a", "b", "c"])


def _quiet_leader(net: Net, leader: str = "a"):
    net.elect(leader)
    net.settle()
    assert not net.queue
    return net.cores[leader]


def _round_msgs(net: Net, sender: str, seq: int) -> list:
    return [(t, m) for f, t, m in net.queue if f == sender and m["t"] == "app" and m["read_seq"] == seq]


def test_reads_of_one_batch_share_one_heartbeat_round(net3):
    a = _quiet_leader(net3)
    rounds = a.read_rounds
    n = 100
    assert all(a.read_index(("r", i)) for i in range(n))
    net3.flush("a")
    assert a.read_rounds == rounds + 1
    heartbeats = [(f, t, m) for f, t, m in net3.queue if f == "a"]
    assert sorted(t for _, t, _ in heartbeats) == ["b", "c"], "one heartbeat per follower for the whole batch"
    assert all(m["t"] == "app" and m["entries"] == [] and m["read_seq"] == heartbeats[0][2]["read_seq"] for _, _, m in heartbeats)
    sent = net3.deliver(lambda f, t, m: f == "a")
    acks = net3.deliver(lambda f, t, m: t == "a")
    assert (sent, acks) == (2, 2)
    assert sorted(ctx[1] for _, ctx in net3.reads["a"]) == list(range(n))
    assert {index for index, _ in net3.reads["a"]} == {a.commit}, "every read of the round at the one recorded index"
    print(f"\n{n} reads in one batch: {sent} heartbeats + {acks} acks = {(sent + acks) / n:.2f} Raft messages per read "
          f"(one round per read: {2 * n} + {2 * n} = 4.00)")


def test_the_round_rides_on_appends_already_queued(net3):
    a = _quiet_leader(net3)
    assert a.propose([b"x"])
    assert a.read_index("r")
    net3.flush("a")
    out = [(t, m) for f, t, m in net3.queue if f == "a"]
    # The appends carrying x leave after the round started: they carry it, no extra heartbeat.
    assert sorted(t for t, _ in out) == ["b", "c"] and all(m["entries"] and m["read_seq"] == a._read_seq for _, m in out)
    net3.settle()
    assert [ctx for _, ctx in net3.reads["a"]] == ["r"]


def test_reads_arriving_during_a_round_wait_for_the_next(net3):
    a = _quiet_leader(net3)
    assert a.propose([b"x"])
    net3.flush("a")  # x's appends are out (they carry the previous read_seq)
    x_index = a.last_index()
    assert all(a.read_index(f"early{i}") for i in range(3))
    net3.flush("a")
    seq1, rounds = a._read_seq, a.read_rounds
    assert len(_round_msgs(net3, "a", seq1)) == 2
    # x commits (its acks echo the old seq, so the round is still in flight)...
    net3.deliver(lambda f, t, m: f == "a" and m["entries"])
    net3.deliver(lambda f, t, m: t == "a")
    assert a.commit >= x_index and net3.reads["a"] == []
    # ...then more reads arrive: they must see x, which the round's recorded index does not include.
    assert all(a.read_index(f"late{i}") for i in range(5))
    net3.flush("a")
    assert a._read_seq == seq1 and a.read_rounds == rounds, "no second round while one is in flight"
    assert not _round_msgs(net3, "a", seq1 + 1)
    net3.settle()
    early = [index for index, ctx in net3.reads["a"] if ctx.startswith("early")]
    late = [index for index, ctx in net3.reads["a"] if ctx.startswith("late")]
    assert len(early) == 3 and len(late) == 5
    assert set(early) == {x_index - 1}, "the first round's reads at the commit index recorded when it started"
    assert min(late) >= x_index, "a read joining the round in flight would have missed x"
    assert a._read_seq == seq1 + 1, "the late reads shared one more round"


def test_reads_are_bounded_across_the_round_and_the_queue(net3, monkeypatch):
    import petcd.actors.raft as raft_mod

    monkeypatch.setattr(raft_mod, "MAX_PENDING_READS", 4)
    a = _quiet_leader(net3)
    assert all(a.read_index(i) for i in range(3))
    net3.flush("a")  # 3 in the round
    assert a.read_index(3)
    assert not a.read_index("too many"), "the round in flight and the queue share the bound"
    net3.settle()
    net3.settle()
    assert sorted(ctx for _, ctx in net3.reads["a"]) == [0, 1, 2, 3]
    assert a.read_index("room again")


def test_a_deposed_leader_fails_its_pending_reads(net3):
    a = _quiet_leader(net3)
    assert a.read_index("in-round")
    net3.flush("a")
    assert a.read_index("queued")
    net3.flush("a")
    # c takes over (a leader transfer's vote bypasses the lease); a hears the new term before any ack.
    net3.cores["c"].campaign_now()
    net3.flush("c")
    net3.deliver(lambda f, t, m: f == "c" and t == "a")
    net3.flush("a")
    assert a.role == FOLLOWER
    assert net3.failed_reads["a"] == ["in-round", "queued"]
    net3.settle()
    assert net3.reads["a"] == [], "late acks of the old round must not serve it"
    assert not a.read_index("now a follower")


def test_a_leader_cut_off_steps_down_and_fails_its_reads(net3):
    a = _quiet_leader(net3)
    assert a.read_index("r")
    net3.tick("a", 10)  # check-quorum: nobody answered within an election timeout
    net3.deliver(lambda f, t, m: True, drop=True)
    net3.tick("a", 10)
    assert a.role == FOLLOWER
    assert net3.failed_reads["a"] == ["r"] and net3.reads["a"] == []


def test_a_new_leader_serves_no_read_before_its_first_commit(net3):
    _quiet_leader(net3, "a")
    b = net3.cores["b"]
    b.campaign_now()
    net3.flush("b")
    net3.deliver(lambda f, t, m: m["t"] in ("vote", "vote_resp"))
    net3.deliver(lambda f, t, m: m["t"] in ("vote", "vote_resp"))
    assert b.role == LEADER
    noop = b.last_index()
    assert b.read_index("r")
    net3.flush("b")
    assert b.read_rounds == 0 and net3.reads["b"] == []
    # Heartbeats reach a quorum, but b's own entry does not: still no read point.
    for _ in range(3):
        net3.tick("b")
        net3.deliver(lambda f, t, m: f == "b" and m["t"] == "app" and m["entries"], drop=True)
        net3.deliver(lambda f, t, m: f == "b")
        net3.deliver(lambda f, t, m: t == "b" and not m.get("reject"))
        net3.deliver(lambda f, t, m: True, drop=True)
    assert b.role == LEADER and b.commit < noop
    assert b.read_rounds == 0 and net3.reads["b"] == []
    for _ in range(10):  # a few heartbeats later the lost append is sent again and gets through
        net3.tick("b")
        net3.settle()
        if b.commit >= noop:
            break
    assert b.commit >= noop
    assert net3.reads["b"] == [(noop, "r")]


def test_a_follower_forwards_a_turns_reads_in_one_request(tmp_path):
    actor, ctx = _raft_actor(tmp_path)  # b, following c in term 5
    heartbeat = {"t": "app", "term": 5, "prev_index": 3, "prev_term": 1, "entries": [], "commit": 3, "read_seq": 0}
    actor.receive(ctx, [("c/raft", {"t": "raft", "cid": 0, "msg": heartbeat})])
    ctx.sent.clear()
    actor.receive(ctx, [("g", {"t": "read", "req": {"k": i}, "origin": ["g", i]}) for i in range(50)])
    ri = [(to, m) for to, m in ctx.sent if m.get("t") == "ri"]
    assert len(ri) == 1 and ri[0][0] == "c/raft" and len(ri[0][1]["ids"]) == 50
    ctx.sent.clear()
    actor.receive(ctx, [("c/raft", {"t": "ri_resp", "cid": 0, "index": 3, "ids": ri[0][1]["ids"]})])
    reads = [m for to, m in ctx.sent if m.get("t") == "reads"]
    assert len(reads) == 1 and [r[3] for r in reads[0]["reads"]] == [["g", i] for i in range(50)]


def _make_leader(actor, ctx):
    core = actor._core
    core.campaign_now()  # a transfer-style campaign: straight to a vote
    actor._process_ready(ctx)
    actor.receive(ctx, [("a/raft", {"t": "raft", "cid": 0, "msg": {"t": "vote_resp", "term": core.term, "granted": True}})])
    assert core.role == LEADER
    ack = {"t": "app_resp", "term": core.term, "index": core.last_index(), "reject": False, "hint": 0, "read_seq": 0}
    actor.receive(ctx, [("a/raft", {"t": "raft", "cid": 0, "msg": ack})])
    assert core.commit == core.last_index()
    ctx.sent.clear()
    return core


def test_the_leader_actor_confirms_local_remote_and_lease_reads_with_one_round(tmp_path):
    actor, ctx = _raft_actor(tmp_path)
    core = _make_leader(actor, ctx)
    batch = [("g", {"t": "read", "req": {"k": i}, "origin": ["g", i]}) for i in range(20)]
    batch.append(("c/raft", {"t": "ri", "cid": 0, "ids": [1, 2, 3]}))
    batch.append(("b/lease", {"t": "confirm", "term": core.term, "origin": ["b/lease", 7]}))
    actor.receive(ctx, batch)
    raft_out = [(to, m["msg"]) for to, m in ctx.sent if m.get("t") == "raft"]
    assert sorted(to for to, _ in raft_out) == ["a/raft", "c/raft"] and core.read_rounds == 1
    ctx.sent.clear()
    seq = raft_out[0][1]["read_seq"]
    ack = {"t": "app_resp", "term": core.term, "index": core.last_index(), "reject": False, "hint": 0, "read_seq": seq}
    actor.receive(ctx, [("a/raft", {"t": "raft", "cid": 0, "msg": ack})])
    local = [m for to, m in ctx.sent if m.get("t") == "reads"]
    remote = [m for to, m in ctx.sent if m.get("t") == "ri_resp"]
    confirmed = [m for to, m in ctx.sent if m.get("t") == "resp"]
    assert len(local) == 1 and len(local[0]["reads"]) == 20
    assert len(remote) == 1 and remote[0]["ids"] == [1, 2, 3] and remote[0]["index"] == core.commit
    assert [m["resp"] for m in confirmed] == [{"index": core.commit, "term": core.term}]


def test_the_deposed_leader_actor_refuses_its_pending_reads(tmp_path):
    actor, ctx = _raft_actor(tmp_path)
    core = _make_leader(actor, ctx)
    term = core.term
    batch = [("g", {"t": "read", "req": {}, "origin": ["g", i]}) for i in range(3)]
    batch.append(("c/raft", {"t": "ri", "cid": 0, "ids": [9]}))
    batch.append(("b/lease", {"t": "confirm", "term": term, "origin": ["b/lease", 7]}))
    actor.receive(ctx, batch)
    ctx.sent.clear()
    vote = {"t": "vote", "term": term + 1, "last_index": 100, "last_term": 100, "transfer": True}
    actor.receive(ctx, [("c/raft", {"t": "raft", "cid": 0, "msg": vote})])
    assert core.role == FOLLOWER
    errors = sorted((m["id"], m["resp"]["error"]) for to, m in ctx.sent if m.get("t") == "resp")
    assert errors == [(0, "leader_changed"), (1, "leader_changed"), (2, "leader_changed"), (7, "not_leader")]
    remote = [m for to, m in ctx.sent if m.get("t") == "ri_resp"]
    assert len(remote) == 1 and remote[0]["index"] == 0 and remote[0]["error"] == "leader_changed"
    assert not [m for to, m in ctx.sent if m.get("t") == "reads"]


def test_a_follower_keeps_one_read_index_request_in_flight(tmp_path):
    import petcd.actors.raft_actor as ra

    actor, ctx = _raft_actor(tmp_path)  # b, following c in term 5
    heartbeat = {"t": "app", "term": 5, "prev_index": 3, "prev_term": 1, "entries": [], "commit": 3, "read_seq": 0}
    actor.receive(ctx, [("c/raft", {"t": "raft", "cid": 0, "msg": heartbeat})])
    ctx.sent.clear()

    def reads(lo, hi):
        actor.receive(ctx, [("g", {"t": "read", "req": {}, "origin": ["g", i]}) for i in range(lo, hi)])

    def ri_sent():
        out = [m["ids"] for to, m in ctx.sent if m.get("t") == "ri"]
        ctx.sent.clear()
        return out

    reads(0, 2)
    first = ri_sent()
    assert len(first) == 1 and len(first[0]) == 2
    reads(2, 5)
    reads(5, 7)
    assert ri_sent() == [], "reads arriving while a request is in flight wait for its answer"
    actor.receive(ctx, [("c/raft", {"t": "ri_resp", "cid": 0, "index": 3, "ids": first[0]})])
    second = ri_sent()
    assert len(second) == 1 and len(second[0]) == 5, "all the reads that waited, in one request"
    # That answer is lost: the reads that wait go after a few heartbeats anyway.
    reads(7, 8)
    assert ri_sent() == []
    for _ in range(ra.RI_RETRY_HEARTBEATS):
        ctx.now += actor._cfg.heartbeat_interval_ms
        actor.on_timer(ctx, "tick")
    assert [len(ids) for ids in ri_sent()] == [1]
