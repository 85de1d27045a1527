"""The lease actor answers a keep-alive only after a ReadIndex round confirms it still leads (etcd issue #15247)."""

from __future__ import annotations

from petcd.actors.lease_actor import LeaseActor, LeaseConfig
from tests.test_raft_core import FakeCtx

LEASE = 0x1EA5E


def _leader(now: int = 0) -> tuple[LeaseActor, FakeCtx]:
    actor = LeaseActor(LeaseConfig(member_id="a"))
    ctx = FakeCtx("a/lease")
    ctx.now = now
    actor.start(ctx)
    actor.receive(ctx, [("a/apply", {"t": "leases", "items": [[LEASE, 10]]})])
    actor.receive(ctx, [("a/raft", {"t": "leader", "leader": "a", "is_leader": True, "term": 3})])
    ctx.sent.clear()
    return actor, ctx


def _keepalive(ctx: FakeCtx, actor: LeaseActor, n: int) -> None:
    actor.receive(ctx, [("g", {"t": "keepalive", "id": LEASE, "origin": ["g", i]}) for i in range(n)])


def test_deposed_leader_keepalive_does_not_renew_a_lease():
    actor, ctx = _leader()
    deadline = actor._leases[LEASE].deadline_ms
    ctx.now = 5000
    _keepalive(ctx, actor, 1)
    assert not [m for to, m in ctx.sent if to == "g"], "answered a keep-alive before confirming leadership"
    assert actor._leases[LEASE].deadline_ms == deadline
    # A partition deposed us: the round fails, the keep-alive gets etcd's "not leader", nothing is renewed.
    actor.receive(ctx, [("a/raft", {"t": "leader", "leader": "", "is_leader": False, "term": 4})])
    answers = [m["resp"] for to, m in ctx.sent if to == "g"]
    assert answers == [{"error": "not_leader"}]
    assert actor._leases[LEASE].deadline_ms == deadline


def test_keepalives_pending_at_one_moment_share_one_confirmation_round():
    actor, ctx = _leader()
    ctx.now = 5000
    _keepalive(ctx, actor, 3)
    confirms = [m for to, m in ctx.sent if m["t"] == "confirm"]
    assert len(confirms) == 1 and confirms[0]["term"] == 3
    _keepalive(ctx, actor, 1)  # arrives during the round: waits for the next one
    assert len([m for to, m in ctx.sent if m["t"] == "confirm"]) == 1
    rid = confirms[0]["origin"][1]
    ctx.now = 5100
    actor.receive(ctx, [("a/raft", {"t": "resp", "id": rid, "resp": {"index": 9, "term": 3}})])
    answers = [m["resp"] for to, m in ctx.sent if to == "g"]
    assert answers == [{"TTL": 10}] * 3
    assert actor._leases[LEASE].deadline_ms == 5100 + 10_000
    assert len([m for to, m in ctx.sent if m["t"] == "confirm"]) == 2, "the next round starts for the one that waited"
    # The raft actor says we no longer lead in that term: errors, no renewal.
    rid2 = [m for to, m in ctx.sent if m["t"] == "confirm"][-1]["origin"][1]
    ctx.now = 6000
    actor.receive(ctx, [("a/raft", {"t": "resp", "id": rid2, "resp": {"error": "not_leader"}})])
    assert [m["resp"] for to, m in ctx.sent if to == "g"][-1] == {"error": "not_leader"}
    assert actor._leases[LEASE].deadline_ms == 5100 + 10_000


def test_a_lease_that_expired_while_its_keepalive_was_confirmed_is_not_renewed():
    """Found by the simulator (seed 1172): a round that took longer than the lease had left (the
    leader lost its quorum, then got it back) renewed a lease whose revocation was already decided."""
    actor, ctx = _leader()
    deadline = actor._leases[LEASE].deadline_ms  # 10 s from 0
    ctx.now = 9000
    _keepalive(ctx, actor, 1)
    rid = [m for to, m in ctx.sent if m["t"] == "confirm"][0]["origin"][1]
    ctx.now = deadline + 500
    actor.on_timer(ctx, "check")  # the reaper decides the revocation
    assert [m["req"]["op"] for to, m in ctx.sent if m["t"] == "propose"] == ["lease_revoke"]
    actor.receive(ctx, [("a/raft", {"t": "resp", "id": rid, "resp": {"index": 9, "term": 3}})])
    assert [m["resp"] for to, m in ctx.sent if to == "g"] == [{"TTL": 0}], "the client must not count it as renewed"
    assert actor._leases[LEASE].deadline_ms == deadline


def test_time_to_live_truncates_the_remaining_seconds_as_etcd():
    actor, ctx = _leader()  # the 10 s lease's deadline: now + 10 s, the new leader's fresh TTL
    for now, expected in ((1, 9), (500, 9), (1000, 9), (9999, 0), (12000, 0)):
        ctx.now = now
        ctx.sent.clear()
        actor.receive(ctx, [("g", {"t": "ttl", "id": LEASE, "origin": ["g", 1]})])
        assert [m["resp"] for to, m in ctx.sent if to == "g"] == [{"TTL": expected, "grantedTTL": 10}], now
