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
Live events reach only the watchers whose key or range holds an event's key,
found through an index (`_WatcherIndex`), not by a scan of every watcher.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

from petcd.actors.actor import Context, Envelope

NOPUT, NODELETE = 0, 1
PUT, DELETE = 0, 1
_PROGRESS_TIMER = "progress"
# Watchers per member; past this, creates are refused (the client sees the watch canceled).
MAX_WATCHERS = 1_000_000

Ident = tuple[str, int, int]  # (gateway, stream, watch_id)


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
    seq: int = 0  # the watcher's place in WatchActor._watchers: live events go out in this order

    @property
    def ident(self) -> Ident:
        return self.gateway, self.stream, self.watch_id

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    def wants(self, ev: dict[str, Any]) -> bool:
        """False if the watcher's filters drop this event (its key already matched)."""
        return not ((ev["type"] == PUT and self.no_put) or (ev["type"] == DELETE and self.no_delete))

    def shape(self, ev: dict[str, Any]) -> dict[str, Any]:
        """The event as this watcher gets it: without prev_kv unless asked for."""
        return ev if self.prev_kv or "prev_kv" not in ev else {"type": ev["type"], "kv": ev["kv"]}


# An interval's end as a comparable value: (0, range_end), or _TO_THE_END for range_end b"\0".
_End = tuple[int, bytes]
_TO_THE_END: _End = (1, b"")


@dataclass(eq=False, slots=True)
class _Node:
    """A treap node: one distinct interval [start, end), its watchers, the largest end in its subtree."""
    start: bytes
    end: _End
    prio: int
    watchers: dict[Ident, Watcher] = field(default_factory=dict)
    left: _Node | None = None
    right: _Node | None = None
    max_end: _End = (0, b"")

    @property
    def interval(self) -> tuple[bytes, _End]:
        return self.start, self.end


class _WatcherIndex:
    """The watchers whose key or range holds a given key, found without a scan of all watchers.

    Single-key watchers sit in a dict by key. Range watchers (prefixes, [key, range_end), and
    range_end b"\0": from key on) are grouped by identical interval, one node per distinct
    interval in a treap ordered by (start, end), each node keeping the largest end in its subtree.
    Finding the intervals that hold key k walks the search path of k and, left of it, only
    subtrees whose largest end is past k (their starts are <= k, so each holds a match):
    O(log n + m log n) expected for n distinct intervals of which m hold k, and the answer comes
    by group, so many watchers on one prefix cost one interval. Adding or removing a watcher is
    O(1), or O(log n) expected for the first or last watcher of an interval.
    """

    def __init__(self) -> None:
        self._by_key: dict[bytes, dict[Ident, Watcher]] = {}
        self._nodes: dict[tuple[bytes, _End], _Node] = {}
        self._root: _Node | None = None

    def add(self, w: Watcher) -> None:
        if not w.range_end:
            self._by_key.setdefault(w.key, {})[w.ident] = w
            return
        interval = _interval(w)
        node = self._nodes.get(interval)
        if node is None:
            node = self._nodes[interval] = _Node(w.key, interval[1], _priority(interval))
            left, right = _split(self._root, interval)
            self._root = _merge(_merge(left, _fix(node)), right)
        node.watchers[w.ident] = w

    def remove(self, w: Watcher) -> None:
        """Takes out `w`, which must be in the index."""
        if not w.range_end:
            group = self._by_key[w.key]
            del group[w.ident]
            if not group:
                del self._by_key[w.key]
            return
        interval = _interval(w)
        node = self._nodes[interval]
        del node.watchers[w.ident]
        if not node.watchers:
            del self._nodes[interval]
            self._root = _remove(self._root, interval)

    def groups(self, key: bytes) -> list[dict[Ident, Watcher]]:
        """The watchers whose key or range holds `key`, by group (one key or one interval), each once."""
        nodes: list[_Node] = []
        _stab(self._root, key, (0, key), nodes)
        group = self._by_key.get(key)
        return ([group] if group else []) + [node.watchers for node in nodes]


def _priority(interval: tuple[bytes, _End]) -> int:
    """A treap priority that looks random and is a function of the interval (an actor draws no
    randomness of its own, and a run must repeat exactly)."""
    start, (to_the_end, end) = interval
    digest = hashlib.blake2b(b"%d:%d:%b%b" % (len(start), to_the_end, start, end), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _interval(w: Watcher) -> tuple[bytes, _End]:
    return w.key, _TO_THE_END if w.range_end == b"\0" else (0, w.range_end)


def _fix(node: _Node) -> _Node:
    """Recomputes node.max_end from its own end and its children's."""
    node.max_end = max([node.end] + [c.max_end for c in (node.left, node.right) if c is not None])
    return node


def _split(node: _Node | None, interval: tuple[bytes, _End]) -> tuple[_Node | None, _Node | None]:
    """The treap cut in two: the intervals before `interval`, and the rest."""
    if node is None:
        return None, None
    if node.interval < interval:
        node.right, rest = _split(node.right, interval)
        return _fix(node), rest
    before, node.left = _split(node.left, interval)
    return before, _fix(node)


def _merge(left: _Node | None, right: _Node | None) -> _Node | None:
    """One treap of two, every interval of `left` before every interval of `right`."""
    if left is None:
        return right
    if right is None:
        return left
    if left.prio > right.prio:
        left.right = _merge(left.right, right)
        return _fix(left)
    right.left = _merge(left, right.left)
    return _fix(right)


def _remove(node: _Node | None, interval: tuple[bytes, _End]) -> _Node | None:
    """The treap without the node of `interval`, which must be in it."""
    assert node is not None, f"interval {interval!r} is not in the index"
    if node.interval == interval:
        return _merge(node.left, node.right)
    if interval < node.interval:
        node.left = _remove(node.left, interval)
    else:
        node.right = _remove(node.right, interval)
    return _fix(node)


def _stab(node: _Node | None, key: bytes, point: _End, out: list[_Node]) -> None:
    """Appends to `out` the nodes under `node` whose interval holds `key` (`point` is (0, key))."""
    if node is None or node.max_end <= point:
        return
    _stab(node.left, key, point, out)
    if node.start <= key:
        if point < node.end:
            out.append(node)
        _stab(node.right, key, point, out)


@dataclass(frozen=True, slots=True)
class WatchConfig:
    member_id: str
    progress_notify_interval_ms: int = 600_000  # etcd's --experimental-watch-progress-notify-interval


class WatchActor:
    def __init__(self, config: WatchConfig) -> None:
        self._cfg = config
        self._apply = f"{config.member_id}/apply"
        self._watchers: dict[Ident, Watcher] = {}
        self._index = _WatcherIndex()  # the same watchers, by key and range
        self._seqs = itertools.count()  # numbers the watchers (Watcher.seq)
        # Live events move every synced watcher's next_rev past them, but touch only the watchers
        # they match: a synced watcher's true next_rev is max(next_rev, _live_floor), one past the
        # last live events since the last restore (_on_events and "restored" write it back). Exact,
        # as a watcher gets synced with a next_rev past every event the actor has seen: in _create
        # past the current revision, from history past its answer's current revision (the apply
        # actor sends in order, so the events up to it came before).
        self._live_floor = 0
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
                    if w.synced:
                        w.next_rev = max(w.next_rev, self._live_floor)
                    w.synced = False
                self._live_floor = 0  # no watcher is synced now
                self._current = msg["current"]
            elif kind == "watch_create":
                if self._started:
                    self._create(ctx, sender, msg)
                elif len(self._held_creates) < MAX_WATCHERS:
                    self._held_creates.append((sender, msg))
                else:
                    self._refuse(sender, msg)
            elif kind == "watch_cancel":
                self._remove((sender, msg["stream"], msg["watch_id"]))
                self._held_creates = [(g, m) for g, m in self._held_creates
                                      if (g, m["stream"], m["watch_id"]) != (sender, msg["stream"], msg["watch_id"])]
            elif kind == "watch_drop":
                for k in [k for k in self._watchers if k[0] == sender and k[1] == msg["stream"]]:
                    self._remove(k)
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
        old = self._watchers.get(w.ident)
        if old is not None:  # the same id again: it replaces the old watcher, in its place
            self._index.remove(old)
        w.seq = next(self._seqs) if old is None else old.seq
        self._watchers[w.ident] = w
        self._index.add(w)

    def _remove(self, ident: Ident) -> None:
        w = self._watchers.pop(ident, None)
        if w is not None:
            self._index.remove(w)

    def _refuse(self, gateway: str, msg: dict[str, Any]) -> None:
        self._send(gateway, {"t": "wcancel", "stream": msg["stream"], "watch_id": msg["watch_id"], "compact_revision": 0,
                             "reason": "petcd: too many watchers on this member"})

    def _on_events(self, revs: list[list[Any]], current: int) -> None:
        # Per group of watchers (on one key or one interval) the events match: (revision, event) pairs, in order.
        hits: dict[int, tuple[dict[Ident, Watcher], list[tuple[int, dict[str, Any]]]]] = {}
        for rev, events in revs:
            for ev in events:
                for group in self._index.groups(ev["kv"]["key"]):
                    hits.setdefault(id(group), (group, []))[1].append((rev, ev))
        # Their synced watchers, in the order of self._watchers (seq is unique, so only it is compared).
        due = sorted((w.seq, w, matched) for group, matched in hits.values() for w in group.values() if w.synced)
        for _, w, matched in due:
            w.next_rev = max(w.next_rev, self._live_floor)
            self._deliver(w, matched, current)
        self._live_floor = max(self._live_floor, current + 1)
        self._current = max(self._current, current)

    def _deliver(self, w: Watcher, matched: list[tuple[int, dict[str, Any]]], through: int) -> None:
        """The `matched` (revision, event) pairs (on w's keys) of revisions >= w.next_rev, all in one
        response; then w.next_rev = through + 1."""
        selected = [w.shape(ev) for rev, ev in matched if rev >= w.next_rev and w.wants(ev)]
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
                    self._remove(key)
                    self._send(w.gateway, {"t": "wcancel", "stream": w.stream, "watch_id": w.watch_id, "compact_revision": compact,
                                           "reason": "mvcc: required revision has been compacted"})
            return
        through = msg["through"]
        self._current = max(self._current, msg["current"])
        for w in self._watchers.values():
            if not w.synced and w.next_rev >= msg["from"]:
                matched = [(rev, ev) for rev, events in msg["revs"] for ev in events if w.matches(ev["kv"]["key"])]
                self._deliver(w, matched, through)
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
