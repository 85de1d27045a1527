"""A simulated lock user: take a lease-backed lock, make writes fenced by the lock's revision, let go.

The lock is one key created only if absent (a Txn on create_revision == 0),
attached to the holder's lease; the fence is the key's create revision. Every
write while holding is a Txn guarded by "the lock key's create_revision ==
fence", as a holder must do in an asynchronous network (see README, "Locks
need fencing"). The lock checker judges the recorded holders by their fences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petcd.actors.actor import Context, Envelope

_TICK = "tick"
TICK_MS = 150
LOCK_KEY = b"lock"
COUNTER_KEY = b"lock-counter"
LEASE_TTL_S = 3
# A request unanswered this long is given up (its outcome stays unknown) and the holder moves on.
REQUEST_TIMEOUT_MS = 2000
MAX_ATTEMPTS = 400


@dataclass(slots=True)
class LockLog:
    process: str
    holds: list[dict[str, Any]] = field(default_factory=list)  # one per acquisition


class LockClient:
    """Acquires the lock `rounds` times, making `writes_per_hold` fenced writes each time."""

    def __init__(self, member: str, log: LockLog, lease_id: int, rounds: int, writes_per_hold: int = 2) -> None:
        self._member = member
        self._log = log
        self._lease_id = lease_id
        self._rounds_left = rounds
        self._writes_per_hold = writes_per_hold
        self._phase = "grant"
        self._pending: tuple[int, int, str] | None = None  # (request id, sent ms, purpose)
        self._next_id = 0
        self._attempts = 0
        self._hold: dict[str, Any] | None = None
        self._writes_left = 0

    @property
    def done(self) -> bool:
        return self._phase == "done"

    def start(self, ctx: Context) -> None:
        ctx.set_timer(_TICK, TICK_MS)

    def stop(self) -> None:
        pass

    def on_timer(self, ctx: Context, name: str) -> None:
        if self._phase == "done":
            return
        ctx.set_timer(_TICK, TICK_MS)
        if self._pending is not None:
            if ctx.now_ms() - self._pending[1] < REQUEST_TIMEOUT_MS:
                return
            self._timed_out(ctx)
        self._attempts += 1
        if self._attempts > MAX_ATTEMPTS:
            self._phase = "done"
            return
        self._next_step(ctx)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        for _, msg in batch:
            if msg["t"] != "resp" or self._pending is None or msg["id"] != self._pending[0]:
                continue
            _, sent, purpose = self._pending
            self._pending = None
            self._answered(ctx, purpose, sent, msg["resp"])

    # ------------------------------------------------------------------
    def _next_step(self, ctx: Context) -> None:
        if self._phase == "grant":
            self._propose(ctx, "grant", {"op": "lease_grant", "ID": self._lease_id, "TTL": LEASE_TTL_S})
        elif self._phase == "acquire":
            self._propose(ctx, "acquire", {
                "op": "txn",
                "compare": [{"key": LOCK_KEY, "target": 1, "result": 0, "create_revision": 0}],
                "success": [{"request_put": {"key": LOCK_KEY, "value": self._log.process.encode(), "lease": self._lease_id}}],
                "failure": [{"request_range": {"key": LOCK_KEY}}],
            })
        elif self._phase == "hold":
            if self._writes_left > 0:
                assert self._hold is not None
                value = f"{self._log.process}-{len(self._log.holds)}-{self._writes_left}".encode()
                self._hold["writes"].append({"key": COUNTER_KEY, "value": value, "outcome": "info", "invoke_ms": ctx.now_ms(),
                                             "fence_revision": self._hold["fence_revision"]})
                self._propose(ctx, "write", {
                    "op": "txn",
                    "compare": [{"key": LOCK_KEY, "target": 1, "result": 0, "create_revision": self._hold["fence_revision"]}],
                    "success": [{"request_put": {"key": COUNTER_KEY, "value": value}}],
                })
            else:
                self._propose(ctx, "release", {
                    "op": "txn",
                    "compare": [{"key": LOCK_KEY, "target": 1, "result": 0, "create_revision": self._hold["fence_revision"]}],
                    "success": [{"request_delete_range": {"key": LOCK_KEY}}],
                })
                ctx.send(f"{self._member}/lease", {"t": "keepalive", "id": self._lease_id, "origin": [ctx.address, -1]})

    def _answered(self, ctx: Context, purpose: str, sent: int, resp: dict[str, Any]) -> None:
        if "error" in resp and not (purpose == "grant" and resp["error"] == "lease_exists"):
            if purpose == "write":
                self._hold["writes"][-1].update(outcome="fail", complete_ms=ctx.now_ms())
                self._writes_left -= 1
            elif purpose == "acquire" and resp["error"] == "lease_not_found":
                self._phase = "grant"  # our lease expired while we waited: a new session
                self._lease_id += 1 << 32
            return
        if purpose == "grant":
            self._phase = "acquire"
        elif purpose == "acquire":
            if resp["succeeded"]:
                self._hold = {"acquired_ms": ctx.now_ms(), "invoke_ms": sent, "fence_revision": resp["revision"], "writes": []}
                self._writes_left = self._writes_per_hold
                self._phase = "hold"
        elif purpose == "write":
            self._hold["writes"][-1].update(outcome="ok", succeeded=resp["succeeded"], revision=resp["revision"], complete_ms=ctx.now_ms())
            self._writes_left -= 1
        elif purpose == "release":
            self._finish_hold(ctx.now_ms())

    def _timed_out(self, ctx: Context) -> None:
        purpose = self._pending[2] if self._pending else ""
        self._pending = None
        if purpose == "write":
            self._writes_left -= 1  # outcome unknown: it stays "info"
        elif purpose == "release":
            self._finish_hold(None)
        elif purpose == "acquire":
            # We may hold it without knowing; a new session (lease) keeps the histories honest.
            self._phase = "grant"
            self._lease_id += 1 << 32

    def _finish_hold(self, released_ms: int | None) -> None:
        assert self._hold is not None
        self._hold["released_ms"] = released_ms
        self._log.holds.append(self._hold)
        self._hold = None
        self._rounds_left -= 1
        self._phase = "acquire" if self._rounds_left > 0 else "done"

    def _propose(self, ctx: Context, purpose: str, req: dict[str, Any]) -> None:
        self._next_id += 1
        self._pending = (self._next_id, ctx.now_ms(), purpose)
        ctx.send(f"{self._member}/raft", {"t": "propose", "req": req, "origin": [ctx.address, self._next_id]})
