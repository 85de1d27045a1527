"""The lease reaper: keeps lease deadlines on the leader and revokes expired leases through Raft.

Messages in:
  leader     {leader, is_leader}              from the Raft actor, whenever leadership changes
  leases     {items: [[id, ttl]...]}          from the apply actor: every lease (at start)
  lease_changes {granted: [[id, ttl]...], revoked: [id...]}   from the apply actor, per applied batch
  keepalive  {id, origin}                     renew; answered with the TTL (0: no such lease)
  ttl        {id, origin}                     the remaining TTL (-1: no such lease)
  resp       {id, resp}                       the answer to a revocation we proposed
Messages out: answers to origins; `propose` (lease_revoke) to the Raft actor; `relay` to the
Raft actor for requests that must reach the leader's reaper, and for answers to other members.

Only the leader expires leases, and only by proposing the revocation through
Raft. A member that becomes leader gives every lease a fresh full TTL before
it expires any, so no lease ever expires before its TTL (etcd's rule).
Deadlines live in memory only: they are the leader's, not the log's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from petcd.actors.actor import Context, Envelope

_CHECK_TIMER = "check"
# How often the leader looks for expired leases; a lease outlives its TTL by at most this plus a commit.
CHECK_INTERVAL_MS = 500
# Revocations in flight at once; the rest wait for the next check.
MAX_PENDING_REVOKES = 1000


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    member_id: str


@dataclass(slots=True)
class _Lease:
    ttl_s: int
    deadline_ms: int


class LeaseActor:
    def __init__(self, config: LeaseConfig) -> None:
        self._me = config.member_id
        self._raft = f"{config.member_id}/raft"
        self._leases: dict[int, _Lease] = {}
        self._is_leader = False
        self._leader = ""
        self._term = 0  # the term we lead in
        self._pending: set[int] = set()  # revocations proposed, not yet applied
        # Revocation request id -> lease id. Ids never repeat, not even across restarts (a random
        # prefix per incarnation): the apply actor drops a request id it applied lately as a duplicate.
        self._revokes: dict[int, int] = {}
        self._request_prefix = 0
        self._next_request = 0

    def start(self, ctx: Context) -> None:
        self._request_prefix = int(ctx.random() * (1 << 40)) << 20
        ctx.send(f"{self._me}/apply", {"t": "leases_list"})
        ctx.set_timer(_CHECK_TIMER, CHECK_INTERVAL_MS)

    def stop(self) -> None:
        pass

    def on_timer(self, ctx: Context, name: str) -> None:
        assert name == _CHECK_TIMER
        ctx.set_timer(_CHECK_TIMER, CHECK_INTERVAL_MS)
        if not self._is_leader:
            return
        now = ctx.now_ms()
        for lease_id, lease in sorted(self._leases.items()):
            if len(self._pending) >= MAX_PENDING_REVOKES:
                break
            if lease.deadline_ms <= now and lease_id not in self._pending:
                self._pending.add(lease_id)
                ctx.log("info", "lease expired; revoking", lease=f"{lease_id:x}", ttl=lease.ttl_s)
                self._next_request += 1
                request_id = self._request_prefix + self._next_request
                self._revokes[request_id] = lease_id
                origin = [ctx.address, request_id]
                # leader_term: the revocation counts only if appended in the term we decided it in, i.e.
                # by us while still leader -- not held and forwarded to a later leader after we lost office.
                req = {"op": "lease_revoke", "ID": lease_id, "leader_term": self._term}
                ctx.send(self._raft, {"t": "propose", "req": req, "origin": origin})

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        now = ctx.now_ms()
        for sender, msg in batch:
            kind = msg["t"]
            if kind == "leader":
                became = msg["is_leader"] and not self._is_leader
                self._is_leader, self._leader, self._term = msg["is_leader"], msg["leader"], msg["term"]
                if became:
                    for lease in self._leases.values():
                        lease.deadline_ms = now + lease.ttl_s * 1000
                if not self._is_leader or became:
                    self._pending.clear()
                    self._revokes.clear()
            elif kind == "leases":
                for lease_id, ttl in msg["items"]:
                    self._leases.setdefault(lease_id, _Lease(ttl, now + ttl * 1000))
            elif kind == "lease_changes":
                for lease_id, ttl in msg["granted"]:
                    self._leases[lease_id] = _Lease(ttl, now + ttl * 1000)
                for lease_id in msg["revoked"]:
                    self._leases.pop(lease_id, None)
                    self._pending.discard(lease_id)
            elif kind in ("keepalive", "ttl"):
                self._on_request(ctx, kind, msg, now)
            elif kind == "resp":
                lease_id = self._revokes.pop(msg["id"], None)
                if lease_id is not None and "error" in msg["resp"]:
                    self._pending.discard(lease_id)  # try again at the next check
            else:
                raise ValueError(f"lease actor: unknown message type {kind!r} from {sender}")

    def _on_request(self, ctx: Context, kind: str, msg: dict[str, Any], now: int) -> None:
        if not self._is_leader:
            if not self._leader or "via" in msg:
                self._answer(ctx, msg, {"error": "no_leader"})
            else:
                # Renewals and remaining TTLs are the leader's: hand the request to its reaper,
                # saying which member took it (the answer goes back through that member).
                ctx.send(self._raft, {"t": "relay", "to": f"{self._leader}/lease", "msg": {**msg, "via": self._me}})
            return
        lease = self._leases.get(msg["id"])
        if kind == "keepalive":
            if lease is not None:
                lease.deadline_ms = now + lease.ttl_s * 1000
            self._answer(ctx, msg, {"TTL": lease.ttl_s if lease else 0})
        elif lease is None:
            self._answer(ctx, msg, {"TTL": -1, "grantedTTL": 0})
        else:
            remaining_s = max(0, -(-(lease.deadline_ms - now) // 1000))
            self._answer(ctx, msg, {"TTL": remaining_s, "grantedTTL": lease.ttl_s})

    def _answer(self, ctx: Context, request: dict[str, Any], resp: dict[str, Any]) -> None:
        address, request_id = request["origin"]
        reply = {"t": "resp", "id": request_id, "resp": resp}
        via = request.get("via", self._me)
        if via == self._me:
            ctx.send(address, reply)
        else:
            ctx.send(self._raft, {"t": "relay", "to": address, "via": via, "msg": reply})
