"""A simulated lease user: grant, attach a key, keep alive for a while, then let it expire and watch it go.

It records what a client can observe (when its grant and keep-alives were sent
and answered, when reads saw the key, when a read first found it gone), which
the lease checker judges: the key must not disappear before the TTL has passed
since the last renewal, and must disappear within the TTL plus a bound.
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
# Give up after this long (a lease whose expiry was never seen cannot be judged late).
MAX_WAIT_MS = 40_000


@dataclass(slots=True)
class LeaseLog:
    process: str
    lease_id: int
    ttl_s: int
    key: bytes
    granted_ms: int | None = None
    keepalives_ms: list[int] = field(default_factory=list)
    key_seen_ms: list[int] = field(default_factory=list)
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
        self._next_id = 0
        self._started_ms = 0
        self._last_sent_ms = 0
        self._sent_history: list[int] = []  # when each grant was sent

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
        elif self._phase in ("keepalive", "expiring"):
            self._phase = "expiring"
            self._request(ctx, "read", {"op": "range", "key": self._log.key})
        ctx.set_timer(_TICK, KEEPALIVE_INTERVAL_MS if self._phase == "keepalive" else POLL_INTERVAL_MS)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        for _, msg in batch:
            if msg["t"] != "resp" or msg["id"] not in self._sent_ms:
                continue
            sent = self._sent_ms.pop(msg["id"])
            resp = msg["resp"]
            if "error" in resp and not (self._phase == "grant" and resp["error"] == "lease_exists"):
                if self._phase in ("grant", "put"):
                    self._log.failed = resp["error"]
                    if resp["error"] == "lease_not_found":
                        self._phase = "done"  # it expired before we could attach the key: nothing to judge
                continue  # retried at the next tick
            if self._phase == "grant":
                # An earlier grant took effect if this one found the lease: renewals count from the first send.
                self._log.granted_ms = sent if resp.get("ID") else min(self._sent_history)
                self._phase = "put"
                self._send_setup(ctx)
            elif self._phase == "put":
                self._phase = "keepalive"
            elif "TTL" in resp:
                if resp["TTL"] > 0:
                    self._log.keepalives_ms.append(sent)
            elif "kvs" in resp:
                if resp["kvs"]:
                    self._log.key_seen_ms.append(ctx.now_ms())
                elif self._log.key_deleted_ms is None:
                    self._log.key_deleted_ms = ctx.now_ms()
                    self._phase = "done"

    def _request(self, ctx: Context, kind: str, body: dict, to: str | None = None) -> None:
        self._next_id += 1
        self._sent_ms[self._next_id] = ctx.now_ms()
        if self._phase == "grant":
            self._sent_history.append(ctx.now_ms())
        msg = {"t": kind, "origin": [ctx.address, self._next_id]}
        if kind in ("propose", "read"):
            msg["req"] = body
        else:
            msg.update(body)
        ctx.send(to or f"{self._member}/raft", msg)
