"""A simulated KV client: an actor that speaks to a member the way a gateway does.

It sends `propose` (writes) and `read` (linearizable reads) to a member's Raft
actor, one operation at a time, and records every operation with its invoke
and completion time and outcome: "ok", "fail" (an error answer) or "info"
(no answer in time: it may or may not have taken effect).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petcd.actors.actor import Context, Envelope

_NEXT = "next"
_TIMEOUT = "timeout"


@dataclass(slots=True)
class Op:
    client: str
    op_id: int
    kind: str  # "put" | "get" | "cas" | "delete" | "txn"
    key: bytes
    value: bytes | None
    invoke_ms: int
    complete_ms: int | None = None
    outcome: str | None = None  # "ok" | "fail" | "info"
    result: dict[str, Any] = field(default_factory=dict)


class KvClient:
    """Issues `op_count` random operations over `keys`, then stops."""

    def __init__(self, member: str, keys: list[bytes], op_count: int, history: list[Op], *, timeout_ms: int = 2000) -> None:
        assert keys and op_count >= 0
        self._raft = f"{member}/raft"
        self._keys = keys
        self._left = op_count
        self._history = history
        self._timeout_ms = timeout_ms
        self._current: Op | None = None
        self._next_id = 0

    def start(self, ctx: Context) -> None:
        ctx.set_timer(_NEXT, int(ctx.random() * 10))

    def stop(self) -> None:
        pass

    @property
    def done(self) -> bool:
        return self._left == 0 and self._current is None

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == _NEXT:
            self._invoke(ctx)
        elif name == _TIMEOUT and self._current is not None:
            self._complete(ctx, "info", {})

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        for _, msg in batch:
            assert msg["t"] == "resp", msg
            op = self._current
            if op is None or msg["id"] != op.op_id:
                continue  # the answer to an operation that already timed out
            resp = msg["resp"]
            self._complete(ctx, "fail" if "error" in resp else "ok", resp)

    # ------------------------------------------------------------------
    def _invoke(self, ctx: Context) -> None:
        if self._left == 0:
            return
        self._left -= 1
        self._next_id += 1
        key = self._keys[int(ctx.random() * len(self._keys))]
        value = f"v{self._next_id}".encode()
        roll = ctx.random()
        if roll < 0.35:
            kind, kind_msg, req = "put", "propose", {"op": "put", "key": key, "value": value}
        elif roll < 0.7:
            kind, kind_msg, req, value = "get", "read", {"op": "range", "key": key}, None
        elif roll < 0.9:
            # compare-and-set against the value this client last read or wrote anywhere: often fails, sometimes not
            expect = self._last_value(ctx.address)
            kind, kind_msg = "cas", "propose"
            req = {
                "op": "txn",
                "compare": [{"key": key, "target": 3, "result": 0, "value": expect}],
                "success": [{"request_put": {"key": key, "value": value}}],
            }
        elif roll < 0.95:
            # A multi-key transaction: read two keys, then write both, atomically.
            other = self._keys[(self._keys.index(key) + 1) % len(self._keys)]
            kind, kind_msg = "txn", "propose"
            req = {"op": "txn", "success": [{"request_range": {"key": key}}, {"request_range": {"key": other}},
                                            {"request_put": {"key": key, "value": value}}, {"request_put": {"key": other, "value": value}}]}
        else:
            kind, kind_msg, req, value = "delete", "propose", {"op": "delete_range", "key": key}, None
        op = Op(ctx.address, self._next_id, kind, key, value, ctx.now_ms())
        if kind == "cas":
            op.result["expect"] = req["compare"][0]["value"]
        elif kind == "txn":
            op.result["keys"] = [key, req["success"][1]["request_range"]["key"]]
        self._current = op
        self._history.append(op)
        ctx.send(self._raft, {"t": kind_msg, "req": req, "origin": [ctx.address, op.op_id]})
        ctx.set_timer(_TIMEOUT, self._timeout_ms)

    def _complete(self, ctx: Context, outcome: str, resp: dict[str, Any]) -> None:
        op = self._current
        assert op is not None
        op.complete_ms = ctx.now_ms()
        op.outcome = outcome
        op.result.update(resp)
        self._current = None
        ctx.cancel_timer(_TIMEOUT)
        ctx.set_timer(_NEXT, 1 + int(ctx.random() * 5))

    def _last_value(self, me: str) -> bytes:
        """The value this client last read or put, whatever the key."""
        for op in reversed(self._history):
            if op.client != me or op.outcome != "ok":
                continue
            if op.kind == "get" and op.result.get("kvs"):
                return op.result["kvs"][0]["value"]
            if op.kind == "put" and op.value is not None:
                return op.value
        return b""
