"""The watch broadcaster: matches each revision's events against the member's watchers.

Messages in, from gateways (the sender is the gateway's address):
  watch_create   {stream, watch_id, key, range_end, start_revision, prev_kv, filters, progress_notify}
  watch_cancel   {stream, watch_id}
  watch_drop     {stream}                    the gRPC stream ended
  watch_progress {stream}                    a WatchProgressRequest
  watch_lag      {stream, watch_id, from_rev} the gateway had to drop events for a slow client
from the apply actor:
  events   {revs: [[rev, [event...]]...], current}   every applied revision, in order
  restored {current}                               the store was replaced by a snapshot
  history  {from, revs, through, current} | {from, error, compact_revision}
Messages out, to gateways:
  wev      {items: [[stream, watch_id, revision, [event...]]...]}
  wresync  {stream, watch_id}                 history catch-up for a lagging watcher starts now
  wcancel  {stream, watch_id, compact_revision, reason}
  wprogress {stream, watch_id, revision}
and `history {from}` requests to the apply actor.

A watcher is synced (it gets live events) or unsynced (it catches up from
history, one bounded chunk at a time, then becomes synced). A slow watcher is
made unsynced, so it never holds back the others and memory stays bounded.
Every event of one revision goes out in one message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from petcd.actors.actor import Context, Envelope

NOPUT, NODELETE = 0, 1
PUT, DELETE = 0, 1
_PROGRESS_TIMER = "progress"
# Watchers per member; past this, creates are refused (the client sees the watch canceled).
MAX_WATCHERS = 1_000_000


@dataclass(slots=True)
class Watcher:
    gateway: str
    stream: int
    watch_id: int
    key: bytes
    range_end: bytes
    next_rev: int
    prev_kv: bool
    no_put: bool
    no_delete: bool
    progress_notify: bool
    synced: bool = False
    sent_since_progress: bool = False

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    def select(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for ev in events:
            if not self.matches(ev["kv"]["key"]):
                continue
            if (ev["type"] == PUT and self.no_put) or (ev["type"] == DELETE and self.no_delete):
                continue
            out.append(ev if self.prev_kv or "prev_kv" not in ev else {"type": ev["type"], "kv": ev["kv"]})
        return out


@dataclass(frozen=True, slots=True)
class WatchConfig:
    member_id: str
    progress_notify_interval_ms: int = 600_000  # etcd's --experimental-watch-progress-notify-interval


class WatchActor:
    def __init__(self, config: WatchConfig) -> None:
        self._cfg = config
        self._apply = f"{config.member_id}/apply"
        self._watchers: dict[tuple[str, int, int], Watcher] = {}
        self._current = 0  # the newest revision we have events for
        # Until the start-up probe tells where the store is, a watch cannot tell live from history:
        # its create waits here (found by the simulator, seed 3667: a watch resumed on a member
        # that had just restarted was taken as live and missed the revisions before the next event).
        self._started = False
        self._held_creates: list[tuple[str, dict[str, Any]]] = []
        self._history_from: int | None = None  # the outstanding history request
        # Per gateway, messages in order; event items join the last "wev" message (order matters:
        # a progress notification never overtakes events, a cancel never overtakes a watcher's events).
        self._out: dict[str, list[dict[str, Any]]] = {}

    def metrics(self) -> dict[str, int]:
        """Plain counters for /metrics (the process runtime asks; see actors/proc_runtime.py)."""
        return {"watchers": len(self._watchers), "queued_out": sum(len(v) for v in self._out.values())}

    def start(self, ctx: Context) -> None:
        ctx.set_timer(_PROGRESS_TIMER, self._cfg.progress_notify_interval_ms)
        # Where the store is: a zero-length history request answers with the current revision.
        ctx.send(self._apply, {"t": "history", "from": 0})

    def stop(self) -> None:
        pass

    def on_timer(self, ctx: Context, name: str) -> None:
        assert name == _PROGRESS_TIMER
        for w in self._watchers.values():
            if w.progress_notify and w.synced and not w.sent_since_progress:
                self._send(w.gateway, {"t": "wprogress", "stream": w.stream, "watch_id": w.watch_id, "revision": self._current})
            w.sent_since_progress = False
        ctx.set_timer(_PROGRESS_TIMER, self._cfg.progress_notify_interval_ms)
        self._flush(ctx)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        for sender, msg in batch:
            kind = msg["t"]
            if kind == "events":
                self._on_events(msg["revs"], msg["current"])
            elif kind == "history":
                self._on_history(ctx, msg)
            elif kind == "restored":
                for w in self._watchers.values():
                    w.synced = False
                self._current = msg["current"]
            elif kind == "watch_create":
                if self._started:
                    self._create(ctx, sender, msg)
                elif len(self._held_creates) < MAX_WATCHERS:
                    self._held_creates.append((sender, msg))
                else:
                    self._refuse(sender, msg)
            elif kind == "watch_cancel":
                self._watchers.pop((sender, msg["stream"], msg["watch_id"]), None)
                self._held_creates = [(g, m) for g, m in self._held_creates
                                      if (g, m["stream"], m["watch_id"]) != (sender, msg["stream"], msg["watch_id"])]
            elif kind == "watch_drop":
                for k in [k for k in self._watchers if k[0] == sender and k[1] == msg["stream"]]:
                    del self._watchers[k]
                self._held_creates = [(g, m) for g, m in self._held_creates if (g, m["stream"]) != (sender, msg["stream"])]
            elif kind == "watch_progress":
                self._progress(ctx, sender, msg["stream"])
            elif kind == "watch_lag":
                w = self._watchers.get((sender, msg["stream"], msg["watch_id"]))
                if w is not None:
                    w.synced, w.next_rev = False, msg["from_rev"]
                    self._send(sender, {"t": "wresync", "stream": w.stream, "watch_id": w.watch_id})
            else:
                raise ValueError(f"watch actor: unknown message type {kind!r} from {sender}")
        self._request_history(ctx)
        self._flush(ctx)

    # ------------------------------------------------------------------
    def _create(self, ctx: Context, gateway: str, msg: dict[str, Any]) -> None:
        if len(self._watchers) >= MAX_WATCHERS:
            self._refuse(gateway, msg)
            return
        start = msg.get("start_revision", 0)
        filters = msg.get("filters", [])
        w = Watcher(
            gateway=gateway,
            stream=msg["stream"],
            watch_id=msg["watch_id"],
            key=msg["key"],
            range_end=msg.get("range_end", b""),
            next_rev=start if start > 0 else self._current + 1,
            prev_kv=msg.get("prev_kv", False),
            no_put=NOPUT in filters,
            no_delete=NODELETE in filters,
            progress_notify=msg.get("progress_notify", False),
        )
        # A watch from revision 0 starts at current + 1; one at or before the current revision replays history.
        w.synced = w.next_rev > self._current
        self._watchers[(gateway, w.stream, w.watch_id)] = w

    def _refuse(self, gateway: str, msg: dict[str, Any]) -> None:
        self._send(gateway, {"t": "wcancel", "stream": msg["stream"], "watch_id": msg["watch_id"], "compact_revision": 0,
                             "reason": "petcd: too many watchers on this member"})

    def _on_events(self, revs: list[list[Any]], current: int) -> None:
        for w in self._watchers.values():
            if not w.synced:
                continue
            self._deliver(w, revs, current)
        self._current = max(self._current, current)

    def _deliver(self, w: Watcher, revs: list[list[Any]], through: int) -> None:
        """Events of revisions >= w.next_rev, all in one response; then w.next_rev = through + 1."""
        selected: list[dict[str, Any]] = []
        for rev, events in revs:
            if rev >= w.next_rev:
                selected += w.select(events)
        if selected:
            out = self._out.setdefault(w.gateway, [])
            if not out or out[-1]["t"] != "wev":
                out.append({"t": "wev", "items": []})
            out[-1]["items"].append([w.stream, w.watch_id, through, selected])
            w.sent_since_progress = True
        w.next_rev = max(w.next_rev, through + 1)

    def _request_history(self, ctx: Context) -> None:
        if self._history_from is not None:
            return
        behind = [w.next_rev for w in self._watchers.values() if not w.synced]
        if behind:
            self._history_from = min(behind)
            ctx.send(self._apply, {"t": "history", "from": self._history_from})

    def _on_history(self, ctx: Context, msg: dict[str, Any]) -> None:
        if msg["from"] == 0:  # the start-up probe
            self._current = max(self._current, msg["current"])
            self._started = True
            held, self._held_creates = self._held_creates, []
            for gateway, create in held:
                self._create(ctx, gateway, create)
            return
        self._history_from = None
        if "error" in msg:
            compact = msg["compact_revision"]
            for key, w in list(self._watchers.items()):
                if not w.synced and w.next_rev < compact:
                    del self._watchers[key]
                    self._send(w.gateway, {"t": "wcancel", "stream": w.stream, "watch_id": w.watch_id, "compact_revision": compact,
                                           "reason": "mvcc: required revision has been compacted"})
            return
        through = msg["through"]
        self._current = max(self._current, msg["current"])
        for w in self._watchers.values():
            if not w.synced and w.next_rev >= msg["from"]:
                self._deliver(w, msg["revs"], through)
                # Events after `through` come as live events (the apply actor sends in order).
                w.synced = through >= msg["current"]

    def _progress(self, ctx: Context, gateway: str, stream: int) -> None:
        mine = [w for (g, s, _), w in self._watchers.items() if g == gateway and s == stream]
        if all(w.synced for w in mine):
            # etcd answers a progress request with watch id -1 once every watcher of the stream is synced.
            self._send(gateway, {"t": "wprogress", "stream": stream, "watch_id": -1, "revision": self._current})

    def _send(self, gateway: str, msg: dict[str, Any]) -> None:
        self._out.setdefault(gateway, []).append(msg)

    def _flush(self, ctx: Context) -> None:
        out, self._out = self._out, {}
        for gateway, msgs in out.items():
            for msg in msgs:
                ctx.send(gateway, msg)
