"""The watch actor driven by hand: messages delivered one at a time (as tests/test_raft_core.py does)."""

from __future__ import annotations

from petcd.actors.watch_actor import WatchActor, WatchConfig
from tests.test_raft_core import FakeCtx


def _put(rev: int, key: bytes) -> list:
    return [rev, [{"type": 0, "kv": {"key": key, "value": b"v", "mod_revision": rev}}]]


def test_a_watch_created_before_the_actor_knows_the_store_revision_replays_its_history():
    """Found by the simulator (seed 3667 of --faults all): a watcher resumed at revision 149 on a member
    that had just restarted (its store at 154) was taken as live, before the actor's start-up probe
    said where the store was, and missed 149..154."""
    actor, ctx = WatchActor(WatchConfig(member_id="m3")), FakeCtx("m3/watch")
    actor.start(ctx)
    assert ctx.sent == [("m3/apply", {"t": "history", "from": 0})]
    ctx.sent.clear()
    create = {"t": "watch_create", "stream": 1, "watch_id": 0, "key": b"\0", "range_end": b"\0", "start_revision": 149}
    actor.receive(ctx, [("gw", create)])
    assert ctx.sent == [], "nothing can be decided before the probe's answer"
    actor.receive(ctx, [("m3/apply", {"t": "history", "from": 0, "current": 154})])
    assert ctx.sent == [("m3/apply", {"t": "history", "from": 149})], "the watcher catches up from its start revision"
    ctx.sent.clear()
    actor.receive(ctx, [("m3/apply", {"t": "history", "from": 149, "revs": [_put(r, b"k") for r in range(149, 155)],
                                       "through": 154, "current": 154})])
    [(to, msg)] = ctx.sent
    assert to == "gw" and msg["t"] == "wev"
    [[stream, watch_id, through, events]] = msg["items"]
    assert (stream, watch_id, through) == (1, 0, 154) and [e["kv"]["mod_revision"] for e in events] == list(range(149, 155))
    ctx.sent.clear()
    actor.receive(ctx, [("m3/apply", {"t": "events", "revs": [_put(155, b"k")], "current": 155})])
    assert [m["items"][0][2] for _, m in ctx.sent] == [155], "then live"


def test_a_watch_from_now_created_before_the_probe_starts_after_the_store_revision():
    actor, ctx = WatchActor(WatchConfig(member_id="m1")), FakeCtx("m1/watch")
    actor.start(ctx)
    actor.receive(ctx, [("gw", {"t": "watch_create", "stream": 1, "watch_id": 0, "key": b"k", "start_revision": 0})])
    actor.receive(ctx, [("m1/apply", {"t": "history", "from": 0, "current": 40})])
    ctx.sent.clear()
    actor.receive(ctx, [("m1/apply", {"t": "events", "revs": [_put(41, b"k")], "current": 41})])
    assert [m["items"][0][2] for _, m in ctx.sent] == [41], "from the store's revision on, not from revision 1"
