"""The lease reaper: keeps lease deadlines on the leader and revokes expired leases through Raft.

Messages in:
  leader     {leader, is_leader}              from the Raft actor, whenever leadership changes
  leases     {items: [[id, ttl]...]}          from the apply actor: every lease (at start)
  lease_changes {changes: [["grant", id, ttl] | ["revoke", id, 0]...]}   from the apply actor, per applied batch, in apply order
  keepalive  {id, origin}                     renew; answered with the TTL (0: no such lease) once a ReadIndex
                                              round ("confirm" to the Raft actor) shows we still lead, else "not_leader"
  ttl        {id, origin}                     the remaining TTL (-1: no such lease)
  resp       {id, resp}                       the answer to a revocation (or compaction) we proposed
  revision   {revision}                       from the apply actor: the current revision (auto-compaction)
Messages out: answers to origins; `propose` (lease_revoke, compact) to the Raft actor; `relay` to the
Raft actor for requests that must reach the leader's reaper, and for answers to other members;
`revision` to the apply actor.

It also runs etcd's auto-compactor (--auto-compaction-mode/-retention), which compacts through
Raft like a client's Compact, only while this member leads:
- periodic, retention P: every min(P, 1h)/10 it samples the current revision, keeping the samples
  of the last P; once P has passed (then every min(P, 1h)) it compacts to the oldest sample, the
  revision of P ago (etcd's compactor.Periodic);
- revision, retention R: every 5 minutes it compacts to the current revision minus R, unless that
  is not positive or the same as last time (etcd's compactor.Revision).

Only the leader expires leases, and only by proposing the revocation through
Raft. A member that becomes leader gives every lease a fresh full TTL before
it expires any, so no lease ever expires before its TTL (etcd's rule).
Deadlines live in memory only: they are the leader's, not the log's.

How this compares with etcd's lessor (lease/lessor.go, v3.4.23), which bounds how late a lease may
expire (the simulator's lease checker, sim/check/lease.py, holds petcd to it):
- etcd's new leader calls `Promote(extend)` once it has applied the empty entry of its term, with
  extend = the election timeout (etcdserver's applyEntryNormal): every lease gets now + TTL + extend.
  Here a new leader gives now + TTL, at once: earlier than etcd, never later. The extension is not
  needed for safety: a keep-alive is answered only after a ReadIndex round confirms the leadership,
  i.e. after a quorum acknowledged the old leader -- before any of them voted for the new one -- so
  every keep-alive the old leader answered was sent before the new leader took office, and now + TTL
  is past send + TTL, all its client was promised. Either way each leader change restarts every
  lease's countdown: under repeated leader changes a lease outlives its TTL for as long as they go
  on (in etcd too).
- etcd's `Demote` sets every expiry to forever on a follower; here a follower's deadlines stand but
  only the leader looks at them (`_is_leader`), and a new leader refreshes them all.
- etcd looks for expired leases every 500 ms (`runLoop`), revoking at most leaseRevokeRate/2 = 500 a
  look, and retries one whose revocation has not applied after 3 s (expiredLeaseRetryInterval); here
  the look is every CHECK_INTERVAL_MS = 500 ms with up to MAX_PENDING_REVOKES in flight (no slower
  than etcd's rate limit), and a revocation that fails is tried again at the next look.
So once a leader stays in office and able to act, a lease's keys are gone by max(its last renewal,
the leader's promotion) + TTL + one look + a Raft round: within etcd's max(renewal + TTL, promotion +
TTL + election timeout) + 500 ms + a Raft round.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from petcd.actors import corrupt_check
from petcd.actors.actor import Context, Envelope
from petcd.actors.corrupt_check import CorruptCheck

_CHECK_TIMER = "check"
_COMPACT_TIMER = "compact"
# etcd's compactor: the revision compactor's period; the periodic one samples every period/10, at most hourly.
REVISION_COMPACT_INTERVAL_MS = 5 * 60_000
PERIODIC_MAX_INTERVAL_MS = 3_600_000
PERIODIC_RETRY_DIVISOR = 10
# How often the leader looks for expired leases (etcd's runLoop: 500 ms); while one leader stays in office,
# a lease outlives its deadline (last renewal or that leader's promotion + TTL) by at most this plus a commit.
CHECK_INTERVAL_MS = 500
# Revocations in flight at once; the rest wait for the next check.
MAX_PENDING_REVOKES = 1000
# A leadership confirmation (ReadIndex round) not answered within this fails its keep-alives.
CONFIRM_TIMEOUT_MS = 3000
# Keep-alives waiting for the next confirmation round; past the bound: "too many requests".
MAX_WAITING_RENEWALS = 10_000


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    member_id: str
    auto_compaction_mode: str = "periodic"  # or "revision"
    auto_compaction_retention: int = 0  # periodic: milliseconds; revision: revisions; 0: off
    corrupt_check_interval_ms: int = 0  # --experimental-corrupt-check-time; 0: off (actors/corrupt_check.py)


@dataclass(slots=True)
class _Lease:
    ttl_s: int
    deadline_ms: int


class LeaseActor:
    def __init__(self, config: LeaseConfig) -> None:
        self._me = config.member_id
        self._raft = f"{config.member_id}/raft"
        self._leases: dict[int, _Lease] = {}
        # (deadline ms, lease id), earliest first, so an expiry check looks only at what is due
        # (not every lease). An entry whose deadline is no longer its lease's is stale and skipped.
        self._deadlines: list[tuple[int, int]] = []
        self._is_leader = False
        self._leader = ""
        self._term = 0  # the term we lead in
        self._pending: set[int] = set()  # revocations proposed, not yet applied
        # Revocation request id -> lease id. Ids never repeat, not even across restarts (a random
        # prefix per incarnation): the apply actor drops a request id it applied lately as a duplicate.
        self._revokes: dict[int, int] = {}
        self._request_prefix = 0
        self._next_request = 0
        # Keep-alives are answered only after a ReadIndex round confirms we still lead (etcd's
        # ensureLeadership, etcd issue #15247): those arrived since the last round started wait
        # for the next one; one round at a time, for every keep-alive pending when it starts.
        self._renewals_waiting: list[dict[str, Any]] = []
        self._round: tuple[int, int, list[dict[str, Any]], int] | None = None  # (request id, term, keep-alives, started ms)
        # Auto-compaction (see the module doc).
        self._compact_mode = config.auto_compaction_mode
        self._retention = config.auto_compaction_retention
        self._samples: list[int] = []  # periodic: revisions sampled, oldest first
        self._compact_base_ms = 0  # periodic: how long after the last success the next compaction is due
        self._last_compaction_ms = 0
        self._last_compacted = 0  # revision: the last revision compacted to
        self._compactions: dict[int, int] = {}  # request id -> revision, compactions in flight
        self._corrupt = CorruptCheck(config.member_id, config.corrupt_check_interval_ms, self._new_request_id)

    def metrics(self) -> dict[str, int]:
        """Plain counters for /metrics (the process runtime asks; see actors/proc_runtime.py)."""
        return {"leases": len(self._leases), "revocations_pending": len(self._pending), "renewals_waiting": len(self._renewals_waiting)}

    def start(self, ctx: Context) -> None:
        self._request_prefix = int(ctx.random() * (1 << 40)) << 20
        ctx.send(f"{self._me}/apply", {"t": "leases_list"})
        ctx.set_timer(_CHECK_TIMER, CHECK_INTERVAL_MS)
        self._corrupt.start(ctx)
        if self._retention > 0:
            self._compact_base_ms = self._retention
            self._last_compaction_ms = ctx.now_ms()
            ctx.set_timer(_COMPACT_TIMER, self._compact_interval_ms())

    def stop(self) -> None:
        pass

    def _new_request_id(self) -> int:
        self._next_request += 1
        return self._request_prefix + self._next_request

    # ------------------------------------------------------------------ auto-compaction
    def _compact_interval_ms(self) -> int:
        if self._compact_mode == "revision":
            return REVISION_COMPACT_INTERVAL_MS
        return max(1, min(self._retention, PERIODIC_MAX_INTERVAL_MS) // PERIODIC_RETRY_DIVISOR)

    def _on_revision(self, ctx: Context, revision: int, now: int) -> None:
        """The current revision, asked for at each compaction tick: decide whether to compact."""
        if self._compact_mode == "revision":
            target = revision - self._retention
            if target <= 0 or target == self._last_compacted:
                return
        else:
            self._samples.append(revision)
            keep = self._retention // self._compact_interval_ms() + 1
            del self._samples[:-keep]
            if now - self._last_compaction_ms < self._compact_base_ms:
                return
            self._compact_base_ms = min(self._retention, PERIODIC_MAX_INTERVAL_MS)
            target = self._samples[0]
        if not self._is_leader or self._compactions or target <= 0:
            return
        request_id = self._new_request_id()
        self._compactions[request_id] = target
        ctx.log("info", "auto-compaction: compacting", mode=self._compact_mode, revision=target)
        ctx.send(self._raft, {"t": "propose", "req": {"op": "compact", "revision": target}, "origin": [ctx.address, request_id]})

    def _on_compacted(self, ctx: Context, target: int, resp: dict[str, Any], now: int) -> None:
        if "error" not in resp or resp.get("error") == "compacted":
            self._last_compacted = target
            self._last_compaction_ms = now
        else:
            ctx.log("warn", "auto-compaction failed; retrying", revision=target, error=resp.get("error"))

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == _COMPACT_TIMER:
            ctx.set_timer(_COMPACT_TIMER, self._compact_interval_ms())
            ctx.send(f"{self._me}/apply", {"t": "revision"})
            return
        if name in (corrupt_check.TIMER, corrupt_check.WAIT_TIMER):
            self._corrupt.on_timer(ctx, name, self._is_leader)
            return
        if name != _CHECK_TIMER:
            raise ValueError(f"lease actor: unknown timer {name!r}")
        ctx.set_timer(_CHECK_TIMER, CHECK_INTERVAL_MS)
        now = ctx.now_ms()
        if self._round is not None and now - self._round[3] >= CONFIRM_TIMEOUT_MS:
            self._fail_renewals(ctx, "not_leader")
        if not self._is_leader:
            return
        while self._deadlines and self._deadlines[0][0] <= now and len(self._pending) < MAX_PENDING_REVOKES:
            deadline, lease_id = heapq.heappop(self._deadlines)
            lease = self._leases.get(lease_id)
            if lease is None or lease.deadline_ms != deadline or lease_id in self._pending:
                continue  # gone, renewed since (a later entry stands for it), or being revoked
            self._pending.add(lease_id)
            ctx.log("info", "lease expired; revoking", lease=f"{lease_id:x}", ttl=lease.ttl_s)
            request_id = self._new_request_id()
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
            if self._corrupt.owns(msg):
                self._corrupt.receive(ctx, msg)
            elif kind == "leader":
                became = msg["is_leader"] and not self._is_leader
                self._is_leader, self._leader, self._term = msg["is_leader"], msg["leader"], msg["term"]
                if became:
                    for lease_id, lease in self._leases.items():
                        self._due(lease_id, lease, now + lease.ttl_s * 1000)
                if not self._is_leader or became:
                    self._corrupt.lost_leadership()
                    self._pending.clear()
                    self._revokes.clear()
                    self._compactions.clear()
                if self._round is not None and (not self._is_leader or self._term != self._round[1]):
                    self._fail_renewals(ctx, "not_leader")  # the round cannot confirm a leadership we lost
            elif kind == "leases":
                for lease_id, ttl in msg["items"]:
                    if lease_id not in self._leases:
                        self._due(lease_id, self._leases.setdefault(lease_id, _Lease(ttl, 0)), now + ttl * 1000)
            elif kind == "lease_changes":
                for change, lease_id, ttl in msg["changes"]:
                    # Either way a revocation we proposed is settled: the lease is gone, or new.
                    self._pending.discard(lease_id)
                    if change == "grant":
                        self._leases[lease_id] = _Lease(ttl, 0)
                        self._due(lease_id, self._leases[lease_id], now + ttl * 1000)
                    else:
                        self._leases.pop(lease_id, None)
            elif kind in ("keepalive", "ttl"):
                self._on_request(ctx, kind, msg, now)
            elif kind == "resp" and self._round is not None and msg["id"] == self._round[0]:
                self._on_confirmed(ctx, msg["resp"], now)
            elif kind == "revision":
                self._on_revision(ctx, msg["revision"], now)
            elif kind == "resp" and msg["id"] in self._compactions:
                self._on_compacted(ctx, self._compactions.pop(msg["id"]), msg["resp"], now)
            elif kind == "resp":
                lease_id = self._revokes.pop(msg["id"], None)
                if lease_id is not None and "error" in msg["resp"]:
                    self._pending.discard(lease_id)  # try again at the next check
                    lease = self._leases.get(lease_id)
                    if lease is not None:
                        self._due(lease_id, lease, lease.deadline_ms)
            else:
                raise ValueError(f"lease actor: unknown message type {kind!r} from {sender}")
        self._maybe_confirm(ctx, now)

    # ------------------------------------------------------------------ leadership confirmation
    def _maybe_confirm(self, ctx: Context, now: int) -> None:
        """Start a confirmation round for every keep-alive waiting, unless one is in flight."""
        if self._round is not None or not self._renewals_waiting:
            return
        if not self._is_leader:
            self._fail_renewals(ctx, "not_leader")
            return
        request_id = self._new_request_id()
        self._round = (request_id, self._term, self._renewals_waiting, now)
        self._renewals_waiting = []
        ctx.send(self._raft, {"t": "confirm", "term": self._term, "origin": [ctx.address, request_id]})

    def _on_confirmed(self, ctx: Context, resp: dict[str, Any], now: int) -> None:
        assert self._round is not None
        _, term, renewals, _ = self._round
        self._round = None
        if "error" in resp or not self._is_leader or self._term != term or resp.get("term", term) != term:
            for msg in renewals:
                self._answer(ctx, msg, {"error": resp.get("error", "not_leader")})
            return
        for msg in renewals:
            lease = self._leases.get(msg["id"])
            if lease is not None and (lease.deadline_ms <= now or msg["id"] in self._pending):
                # It expired while the round ran (etcd: an expired lease is not renewed; its
                # revocation is decided or about to be): the lease is gone for the client.
                lease = None
            if lease is not None:
                self._due(msg["id"], lease, now + lease.ttl_s * 1000)
            self._answer(ctx, msg, {"TTL": lease.ttl_s if lease else 0})

    def _due(self, lease_id: int, lease: _Lease, deadline_ms: int) -> None:
        """Set a lease's deadline; the heap keeps at most about two entries per lease."""
        lease.deadline_ms = deadline_ms
        heapq.heappush(self._deadlines, (deadline_ms, lease_id))
        if len(self._deadlines) > 2 * len(self._leases) + 1024:
            self._deadlines = [(lease.deadline_ms, lid) for lid, lease in self._leases.items()]
            heapq.heapify(self._deadlines)

    def _fail_renewals(self, ctx: Context, error: str) -> None:
        renewals = self._round[2] if self._round is not None else []
        self._round = None
        for msg in renewals + self._renewals_waiting:
            self._answer(ctx, msg, {"error": error})
        self._renewals_waiting = []

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
            if len(self._renewals_waiting) >= MAX_WAITING_RENEWALS:
                self._answer(ctx, msg, {"error": "too_many_requests"})
            else:
                self._renewals_waiting.append(msg)  # answered once a ReadIndex round confirms our leadership
        elif lease is None:
            self._answer(ctx, msg, {"TTL": -1, "grantedTTL": 0})
        else:
            # etcd: int64(lease.Remaining().Seconds()), truncated: 19 just after a 20 s grant.
            remaining_s = max(0, (lease.deadline_ms - now) // 1000)
            self._answer(ctx, msg, {"TTL": remaining_s, "grantedTTL": lease.ttl_s})

    def _answer(self, ctx: Context, request: dict[str, Any], resp: dict[str, Any]) -> None:
        address, request_id = request["origin"]
        reply = {"t": "resp", "id": request_id, "resp": resp}
        via = request.get("via", self._me)
        if via == self._me:
            ctx.send(address, reply)
        else:
            ctx.send(self._raft, {"t": "relay", "to": address, "via": via, "msg": reply})
