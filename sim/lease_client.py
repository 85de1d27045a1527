"""A simulated lease user: grant, attach a key, keep alive for a while, then let it expire and watch it go.

It records what a client can observe (when its grant and keep-alives were sent
and answered, when each read that saw the key was sent and answered, when a read
first found it gone), which the lease checker judges: the key must not disappear
before the TTL has passed since the last renewal, and no read may find it after
its deadline (sim/check/lease.py: the TTL plus a bound past the last renewal, or
past the last leader change -- a new leader gives every lease a fresh TTL -- or
past the last fault, when the checker is given the leaders and faults).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from petcd.actors.actor import Context, Envelope

_TICK = "tick"
KEEPALIVE_INTERVAL_MS = 500
POLL_INTERVAL_MS = 200
# A grant or put unanswered this long is sent again (the same request: a repeated grant finds
# "lease already exists", a repeated put writes the same value).
RETRY_MS = 2000
# Give up after this long (a lease whose expiry was never seen cannot be judged late): longer than a
# simulated run goes on (sim/run.py: faults for at most 20 s, then at most 30 s to finish), so a lease that
# never expires keeps its client reading the key until the run gives up on it -- every read a sighting
# the lease checker judges, and the run's liveness check fails.
MAX_WAIT_MS = 60_000


@dataclass(slots=True)
class LeaseLog:
    process: str
    lease_id: int
    ttl_s: int
    key: bytes
    granted_ms: int | None = None  # when the grant that took effect was sent
    granted_answered_ms: int | None = None  # ... and when the grant was answered
    keepalives_ms: list[int] = field(default_factory=list)  # when each keep-alive answered with TTL > 0 was sent
    keepalives_answered_ms: list[int] = field(default_factory=list)  # ... and when its answer came, in the same order
    # when each keep-alive never answered was sent: it may have renewed the lease, at a moment no one saw
    keepalives_unanswered_ms: list[int] = field(default_factory=list)
    key_seen_ms: list[int] = field(default_factory=list)  # when each read that found the key was answered
    # ... and when it was sent, in the same order: the read saw the key at some moment between the two
    # (a ReadIndex read), so the key was there at or after this -- the evidence that it outlived its lease.
    key_seen_sent_ms: list[int] = field(default_factory=list)
    key_deleted_ms: int | None = None
    failed: str = ""


class LeaseClient:
    """One lease at a time: grant, put, `keepalives` renewals, then wait until the key is gone."""

    def __init__(self, member: str, log: LeaseLog, keepalives: int) -> None:
        self._member = member
        self._log = log
        self._keepalives_left = keepalives
        self._phase = "grant"
        self._sent_ms: dict[int, int] = {}  # request id -> when it was sent
        self._ops: dict[int, str] = {}  # request id -> its op ("lease_grant", "put", "range") or kind ("keepalive")
        self._next_id = 0
        self._started_ms = 0
        self._last_sent_ms = 0
        self._sent_history: list[int] = []  # when each grant was sent
        self._keepalive_ids: set[int] = set()  # keep-alives sent and not answered yet

    @property
    def done(self) -> bool:
        return self._phase == "done"

    def start(self, ctx: Context) -> None:
        self._started_ms = ctx.now_ms()
        self._last_sent_ms = 0
        self._send_setup(ctx)
        ctx.set_timer(_TICK, KEEPALIVE_INTERVAL_MS)

    def _send_setup(self, ctx: Context) -> None:
        """The grant, or the put of the key with the lease, depending on the phase."""
        self._last_sent_ms = ctx.now_ms()
        if self._phase == "grant":
            self._request(ctx, "propose", {"op": "lease_grant", "ID": self._log.lease_id, "TTL": self._log.ttl_s})
        else:
            self._request(ctx, "propose", {"op": "put", "key": self._log.key, "value": b"leased", "lease": self._log.lease_id})

    def stop(self) -> None:
        pass

    def on_timer(self, ctx: Context, name: str) -> None:
        if self._phase == "done":
            return
        if ctx.now_ms() - self._started_ms > MAX_WAIT_MS:
            self._phase = "done"
            return
        if self._phase in ("grant", "put"):
            if ctx.now_ms() - self._last_sent_ms >= RETRY_MS:
                self._send_setup(ctx)
        elif self._phase == "keepalive" and self._keepalives_left > 0:
            self._keepalives_left -= 1
            self._request(ctx, "keepalive", {"id": self._log.lease_id}, to=f"{self._member}/lease")
            self._keepalive_ids.add(self._next_id)
            self._log.keepalives_unanswered_ms.append(ctx.now_ms())
        elif self._phase in ("keepalive", "expiring"):
            self._phase = "expiring"
            self._request(ctx, "read", {"op": "range", "key": self._log.key})
        ctx.set_timer(_TICK, KEEPALIVE_INTERVAL_MS if self._phase == "keepalive" else POLL_INTERVAL_MS)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        for _, msg in batch:
            if msg["t"] != "resp" or msg["id"] not in self._sent_ms:
                continue
            sent = self._sent_ms.pop(msg["id"])
            op = self._ops.pop(msg["id"], None)
            resp = msg["resp"]
            if (self._phase == "grant" and op != "lease_grant") or (self._phase == "put" and op != "put"):
                # An answer to a request of an earlier phase: a retried grant answered after the first
                # one was taken for the put's answer, and the key counted as attached though its put
                # failed (found by the campaign, seed 7907).
                continue
            if msg["id"] in self._keepalive_ids:
                self._keepalive_ids.discard(msg["id"])
                self._log.keepalives_unanswered_ms.remove(sent)
            if "error" in resp and not (self._phase == "grant" and resp["error"] == "lease_exists"):
                if self._phase in ("grant", "put"):
                    self._log.failed = resp["error"]
                    if resp["error"] == "lease_not_found":
                        self._phase = "done"  # it expired before we could attach the key: nothing to judge
                continue  # retried at the next tick
            if self._phase == "grant":
                # An earlier grant took effect if this one found the lease: renewals count from the first send.
                self._log.granted_ms = sent if resp.get("ID") else min(self._sent_history)
                self._log.granted_answered_ms = ctx.now_ms()
                self._phase = "put"
                self._send_setup(ctx)
            elif self._phase == "put":
                self._phase = "keepalive"
            elif "TTL" in resp:
                if resp["TTL"] > 0:
                    self._log.keepalives_ms.append(sent)
                    self._log.keepalives_answered_ms.append(ctx.now_ms())
            elif "kvs" in resp:
                if resp["kvs"]:
                    self._log.key_seen_ms.append(ctx.now_ms())
                    self._log.key_seen_sent_ms.append(sent)
                elif self._log.key_deleted_ms is None:
                    self._log.key_deleted_ms = ctx.now_ms()
                    self._phase = "done"

    def _request(self, ctx: Context, kind: str, body: dict, to: str | None = None) -> None:
        self._next_id += 1
        self._sent_ms[self._next_id] = ctx.now_ms()
        self._ops[self._next_id] = body.get("op", kind)
        if self._phase == "grant":
            self._sent_history.append(ctx.now_ms())
        msg = {"t": kind, "origin": [ctx.address, self._next_id]}
        if kind in ("propose", "read"):
            msg["req"] = body
        else:
            msg.update(body)
        ctx.send(to or f"{self._member}/raft", msg)
