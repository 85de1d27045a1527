"""etcd's periodic corruption check (--experimental-corrupt-check-time), run by the leader's lease actor.

etcd 3.4 (etcdserver/corrupt.go, monitorKVHash and checkHashKV): every interval, the member that
leads takes the HashKV of its store at its current revision, asks every other member for theirs
at that revision, waits until it has applied everything committed, hashes again, and raises the
CORRUPT alarm through Raft when
- its own hash moved while its revision and compact revision did not,
- a member answers a revision or a compact revision above the leader's, or
- a member at the leader's compact revision answers a different hash.
As in etcd 3.4 the alarm names member 0 ("it isn't clear which member's data is corrupted"). Once
applied, every member refuses what etcd's applierV3Corrupt refuses (store/mvcc.py).

Here it is one more of the lease actor's leader-side chores (as auto-compaction is), in steps, each
an answer to a message:
  1. `hashkv` {rev: 0} to our apply actor, `members` to our Raft actor;
  2. once both answered: `hashkv` {rev} to every other member's apply actor, relayed by the Raft
     actors (only they talk across members); each answers `hashkv_resp` the same way;
  3. once all answered, or PEER_WAIT_MS passed: a linearizable read through our Raft actor (etcd's
     linearizableReadNotify), so that no follower can be ahead of what we applied;
  4. `hashkv` {rev: 0} to our apply actor again; its answer decides.
A check that loses leadership on the way is dropped; the next starts an interval later. Being an
actor, it runs the same under the simulator, whose `corrupt` fault it must catch (sim/faults.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from petcd.actors.actor import Context
from petcd.store.mvcc import ALARM_ACTIVATE, ALARM_CORRUPT

TIMER = "corrupt_check"
WAIT_TIMER = "corrupt_check_wait"
# How long the leader waits for its peers' hashes; those that have not answered are skipped (logged),
# as etcd skips a peer whose HashKV request failed. A step of its own that waits longer drops the check.
PEER_WAIT_MS = 5000
# The barrier read of step 3: it waits for the store to apply everything committed, nothing else.
# Alarm proposals whose answer we wait for (to log a failure).
_MAX_ALARM_REQUESTS = 64
_BARRIER = {"op": "range", "key": b"\x00", "count_only": True}


@dataclass(slots=True)
class _Check:
    """One check in flight: `step` is 1 to 4 as in the module doc."""

    check_id: int
    started_ms: int
    step: int = 1
    own: tuple[int, int, int] | None = None  # (hash, compact revision, revision) of step 1
    peers: list[str] | None = None  # the members asked in step 2
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # member -> its hashkv_resp


class CorruptCheck:
    """The leader's check, driven by the lease actor: `on_timer` each interval, `receive` for its answers."""

    def __init__(self, member_id: str, interval_ms: int, next_request_id: Callable[[], int]) -> None:
        self._me = member_id
        self.interval_ms = interval_ms
        self._next_request_id = next_request_id
        self._check: _Check | None = None
        self._alarm_requests: set[int] = set()

    def start(self, ctx: Context) -> None:
        if self.interval_ms > 0:
            ctx.log("info", "enabled corruption checking", local_member_id=self._me, interval=f"{self.interval_ms / 1000}s")
            ctx.set_timer(TIMER, self.interval_ms)

    def on_timer(self, ctx: Context, name: str, leading: bool) -> None:
        """`name`: TIMER (each interval) or WAIT_TIMER (the end of a wait); `leading`: whether we lead."""
        if name == WAIT_TIMER:
            check = self._check
            if check is not None and ctx.now_ms() - check.started_ms >= PEER_WAIT_MS:
                self._timed_out(ctx, check)
            return
        ctx.set_timer(TIMER, self.interval_ms)
        check = self._check
        if check is not None:  # one check at a time
            if ctx.now_ms() - check.started_ms >= PEER_WAIT_MS:
                self._timed_out(ctx, check)
            return
        if not leading:
            return
        check = self._check = _Check(self._next_request_id(), ctx.now_ms())
        ctx.set_timer(WAIT_TIMER, PEER_WAIT_MS)
        ctx.send(f"{self._me}/apply", {"t": "hashkv", "rev": 0, "check": check.check_id, "reply": ctx.address})
        ctx.send(f"{self._me}/raft", {"t": "members", "origin": [ctx.address, check.check_id]})

    def _timed_out(self, ctx: Context, check: _Check) -> None:
        if check.step == 2:
            self._barrier(ctx, check)  # peers that did not answer are skipped
        else:
            self._drop(ctx, f"no answer in step {check.step}")  # a message lost to a restart, a leader change

    def lost_leadership(self) -> None:
        self._check = None

    def owns(self, msg: dict[str, Any]) -> bool:
        """Is this answer one of ours (a hash, the members, the barrier read, the alarm's proposal)?"""
        if msg["t"] == "hashkv_resp":
            return True
        if msg["t"] != "resp":
            return False
        return msg["id"] in self._alarm_requests or (self._check is not None and msg["id"] == self._check.check_id)

    def receive(self, ctx: Context, msg: dict[str, Any]) -> None:
        if msg["t"] == "resp" and msg["id"] in self._alarm_requests:
            self._alarm_requests.discard(msg["id"])
            if "error" in msg["resp"]:
                ctx.log("warn", "failed to raise the CORRUPT alarm", error=msg["resp"]["error"])
            return
        check = self._check
        if check is None or msg.get("check", msg.get("id")) != check.check_id:
            return  # an answer to a check dropped or finished
        if msg["t"] == "resp":
            if check.step == 1:  # the members
                if "error" in msg["resp"]:
                    return self._drop(ctx, f"members: {msg['resp']['error']}")
                check.peers = [m["id"] for m in msg["resp"]["members"] if m["id"] != self._me]
                self._maybe_ask_peers(ctx, check)
            elif check.step == 3:  # the barrier read
                if "error" in msg["resp"]:
                    return self._drop(ctx, f"barrier read: {msg['resp']['error']}")
                check.step = 4
                check.started_ms = ctx.now_ms()
                ctx.set_timer(WAIT_TIMER, PEER_WAIT_MS)
                ctx.send(f"{self._me}/apply", {"t": "hashkv", "rev": 0, "check": check.check_id, "reply": ctx.address})
            return
        member = msg["member"]
        if check.step == 1 and member == self._me:
            if "error" in msg:
                return self._drop(ctx, f"hash: {msg['error']}")
            check.own = (msg["hash"], msg["crev"], msg["rev"])
            self._maybe_ask_peers(ctx, check)
        elif check.step == 2 and member != self._me:
            check.answers[member] = msg
            if check.peers is not None and set(check.peers) <= check.answers.keys():
                self._barrier(ctx, check)
        elif check.step == 4 and member == self._me:
            self._decide(ctx, check, msg)

    # ------------------------------------------------------------------
    def _drop(self, ctx: Context, why: str) -> None:
        ctx.log("warn", "failed to check hash KV", error=why)
        self._check = None

    def _maybe_ask_peers(self, ctx: Context, check: _Check) -> None:
        if check.own is None or check.peers is None:
            return
        check.step = 2
        check.started_ms = ctx.now_ms()
        ctx.set_timer(WAIT_TIMER, PEER_WAIT_MS)
        for peer in check.peers:
            ask = {"t": "hashkv", "rev": check.own[2], "check": check.check_id, "reply": ctx.address}
            ctx.send(f"{self._me}/raft", {"t": "relay", "to": f"{peer}/apply", "msg": ask})
        if not check.peers:
            self._barrier(ctx, check)

    def _barrier(self, ctx: Context, check: _Check) -> None:
        check.step = 3
        check.started_ms = ctx.now_ms()
        ctx.set_timer(WAIT_TIMER, PEER_WAIT_MS)
        ctx.send(f"{self._me}/raft", {"t": "read", "req": _BARRIER, "origin": [ctx.address, check.check_id]})

    def _decide(self, ctx: Context, check: _Check, again: dict[str, Any]) -> None:
        self._check = None
        assert check.own is not None and check.peers is not None
        h, crev, rev = check.own
        if "error" in again:
            return self._drop(ctx, f"hash: {again['error']}")
        h2, crev2, rev2 = again["hash"], again["crev"], again["rev"]
        mismatched = False
        if h2 != h and rev2 == rev and crev == crev2:
            ctx.log("warn", "found hash mismatch", revision_1=rev, compact_revision_1=crev, hash_1=h,
                    revision_2=rev2, compact_revision_2=crev2, hash_2=h2)
            mismatched = True
        checked = 0
        for peer in check.peers:
            answer = check.answers.get(peer)
            if answer is None or "error" in answer:
                why = "no answer" if answer is None else answer["error"]
                ctx.log("warn", "failed hash kv request", local_member_id=self._me, requested_revision=rev, remote_peer_id=peer, error=why)
                continue
            checked += 1
            peer_hash, peer_crev, peer_rev = answer["hash"], answer["crev"], answer["rev"]
            if peer_rev > rev2:
                ctx.log("warn", "revision from follower must be less than or equal to leader's",
                        leader_revision=rev2, follower_revision=peer_rev, follower_peer_id=peer)
                mismatched = True
            if peer_crev > crev2:
                ctx.log("warn", "compact revision from follower must be less than or equal to leader's",
                        leader_compact_revision=crev2, follower_compact_revision=peer_crev, follower_peer_id=peer)
                mismatched = True
            if peer_crev == crev and peer_hash != h:
                ctx.log("warn", "same compact revision then hashes must match", leader_compact_revision=crev2,
                        leader_hash=h, follower_compact_revision=peer_crev, follower_hash=peer_hash, follower_peer_id=peer)
                mismatched = True
        ctx.log("info", "finished peer corruption check", number_of_peers_checked=checked)
        if not mismatched:
            return
        request_id = self._next_request_id()
        if len(self._alarm_requests) >= _MAX_ALARM_REQUESTS:
            self._alarm_requests.clear()  # answers lost with a leader: forget them rather than grow
        self._alarm_requests.add(request_id)
        alarm = {"op": "alarm", "action": ALARM_ACTIVATE, "memberID": 0, "alarm": ALARM_CORRUPT}
        ctx.send(f"{self._me}/raft", {"t": "propose", "req": alarm, "origin": [ctx.address, request_id]})
