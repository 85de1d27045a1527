"""Membership changes in the Raft actor, driven by hand: one change waits behind another in flight
(issue 8 §1), and a one-member cluster takes a second voter (issue 8 §6)."""

from __future__ import annotations

from petcd.actors.raft import LEADER
from petcd.actors.raft_actor import CONF_WAIT_MS, RaftActor, RaftConfig
from tests.test_raft_core import FakeCtx


def _lone_leader(tmp_path) -> tuple[RaftActor, FakeCtx]:
    members = {"a": {"name": "a", "peer_urls": ["http://a"], "client_urls": []}}
    actor = RaftActor(RaftConfig(member_id="a", data_dir=str(tmp_path / "a"), initial_members=members, sync=False))
    ctx = FakeCtx("a/raft")
    actor.start(ctx)
    actor.receive(ctx, [("a/apply", {"t": "hello", "applied": 0})])
    assert actor._core.role == LEADER
    return actor, ctx


def _errors(ctx: FakeCtx) -> dict[int, str]:
    return {m["id"]: m["resp"]["error"] for _, m in ctx.sent if m.get("t") == "resp" and "error" in m["resp"]}


def _learner(mid: str) -> dict:
    return {"op": "add_learner", "id": mid, "name": "", "peer_urls": [f"http://{mid}"], "client_urls": []}


def _tick(actor: RaftActor, ctx: FakeCtx) -> None:
    ctx.now += 100
    actor.on_timer(ctx, "tick")


def test_a_member_change_behind_one_in_flight_waits_instead_of_timing_out(tmp_path):
    """The member add that etcdctl saw fail with "request timed out" at once: a member publishing
    its name (a membership entry too) was in flight. Now the add waits for it and goes in."""
    actor, ctx = _lone_leader(tmp_path)
    publish = {"op": "attrs", "id": "a", "name": "a", "client_urls": ["http://a:2379"]}
    actor.receive(ctx, [("a/raft", {"t": "conf", "change": publish, "origin": None}),
                        ("gw", {"t": "conf", "change": _learner("d"), "origin": ["gw", 7]})])
    assert _errors(ctx) == {}, "refused while another change was in flight"
    assert "d" not in actor._core.conf.learners
    _tick(actor, ctx)
    assert "d" in actor._core.conf.learners and _errors(ctx) == {}
    assert actor._log.members["a"]["client_urls"] == ["http://a:2379"]


def test_a_member_change_that_waits_too_long_is_refused_before_etcdctl_gives_up(tmp_path):
    actor, ctx = _lone_leader(tmp_path)
    actor._core.pending_conf_index = 10**9  # a change that never applies
    actor.receive(ctx, [("gw", {"t": "conf", "change": _learner("d"), "origin": ["gw", 7]})])
    for _ in range(CONF_WAIT_MS // 100 - 1):
        _tick(actor, ctx)
    assert _errors(ctx) == {}
    _tick(actor, ctx)
    assert _errors(ctx) == {7: "conf_change_pending"}  # etcd's "request timed out", below etcdctl's 5 s


def test_a_one_member_cluster_takes_a_second_voter(tmp_path):
    actor, ctx = _lone_leader(tmp_path)
    actor.receive(ctx, [("gw", {"t": "conf", "change": {**_learner("e"), "op": "add_voter"}, "origin": ["gw", 1]})])
    assert _errors(ctx) == {} and set(actor._core.conf.voters) == {"a", "e"}
    # Two voters, one never started: a third would leave the started ones short of a quorum.
    # (No leader now: the lone started voter answers, as etcd's member checks it itself.)
    for _ in range(30):
        _tick(actor, ctx)
    actor.receive(ctx, [("gw", {"t": "conf", "change": {**_learner("f"), "op": "add_voter"}, "origin": ["gw", 2]})])
    assert _errors(ctx) == {2: "not_enough_started"}
