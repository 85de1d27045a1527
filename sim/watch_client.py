"""A simulated watcher: watches the whole key space from revision 1 and keeps resuming.

It speaks to a member's watch actor the way a gateway does. Every
`reconnect_ms` it drops its subscription and resumes on the next member from
its last revision + 1, as a client whose connection broke would; so under
crashes and partitions it exercises history replay and resumption. A watch
canceled because its start was compacted resumes at once from the compact
revision, as an etcd client does on ErrCompacted: the revisions in between are
gone for it, and the resume says so (the watch checker allows that gap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petcd.actors.actor import Context, Envelope

_RECONNECT = "reconnect"


@dataclass(slots=True)
class WatchLog:
    """Everything a watcher received: responses of (revision, type, key, value, prev_value) events."""

    process: str
    responses: list[list[tuple[int, int, bytes, bytes, bytes | None]]] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    # (responses so far, start revision asked, the compact revision that made it skip ahead or 0)
    resumes: list[tuple[int, int, int]] = field(default_factory=list)
    reconnects: int = 0


class WatchClient:
    def __init__(self, members: list[str], log: WatchLog, *, reconnect_ms: int = 1500) -> None:
        assert members
        self._members = members
        self._log = log
        self._reconnect_ms = reconnect_ms
        self._stream = 0
        self._member = ""
        self._next_rev = 1
        self.stopped = False

    def start(self, ctx: Context) -> None:
        self._subscribe(ctx)

    def stop(self) -> None:
        pass

    def on_timer(self, ctx: Context, name: str) -> None:
        assert name == _RECONNECT
        if self.stopped:
            return
        ctx.send(f"{self._member}/watch", {"t": "watch_drop", "stream": self._stream})
        self._log.reconnects += 1
        self._subscribe(ctx)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        for _, msg in batch:
            kind = msg["t"]
            if kind == "wev":
                for stream, _, _, events in msg["items"]:
                    if stream == self._stream:
                        self._record(events)
            elif kind == "wcancel" and msg["stream"] == self._stream:
                self._log.canceled.append(msg["reason"])
                compact = msg.get("compact_revision", 0)
                if compact > self._next_rev and not self.stopped:
                    ctx.send(f"{self._member}/watch", {"t": "watch_drop", "stream": self._stream})
                    self._next_rev = compact
                    self._subscribe(ctx, compacted=compact)

    def _record(self, events: list[dict[str, Any]]) -> None:
        out = []
        for ev in events:
            kv = ev["kv"]
            prev = ev.get("prev_kv")
            out.append((kv["mod_revision"], ev["type"], kv["key"], kv.get("value", b""), prev["value"] if prev else None))
        assert out[0][0] >= self._next_rev, "the watch actor sent a revision we did not ask for"
        self._log.responses.append(out)
        self._next_rev = out[-1][0] + 1

    def _subscribe(self, ctx: Context, compacted: int = 0) -> None:
        self._stream += 1
        self._member = self._members[self._stream % len(self._members)]
        self._log.resumes.append((len(self._log.responses), self._next_rev, compacted))
        ctx.send(f"{self._member}/watch", {"t": "watch_create", "stream": self._stream, "watch_id": 0, "key": b"\0",
                                           "range_end": b"\0", "start_revision": self._next_rev, "prev_kv": True})
        ctx.set_timer(_RECONNECT, self._reconnect_ms)
