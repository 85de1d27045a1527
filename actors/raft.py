"""Raft consensus as a pure state machine (after etcd-io/raft).

The core never does IO. Its caller (the Raft actor) feeds it ticks, peer
messages, proposals and read requests, then takes a `Ready`: hard state and
entries to persist, messages to send, committed entries to apply, and reads
that may now be served. The caller persists first, then sends and applies,
then calls `advance`.

Ids are member ids (hex strings). Messages are plain dicts ("t" is the type):
  vote        term, last_index, last_term
  vote_resp   term, granted
  app         term, prev_index, prev_term, entries [[index, term, data]...], commit, read_seq
  app_resp    term, index, reject, hint, read_seq
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from petcd.store.raftlog import Entry, HardState, RaftLog

FOLLOWER, CANDIDATE, LEADER = "follower", "candidate", "leader"

# Bound on entries per append message, and on unreplicated appends in flight
# per follower (pipelining without unbounded memory).
MAX_ENTRIES_PER_APPEND = 512
MAX_INFLIGHT_APPENDS = 64


@dataclass(slots=True)
class Ready:
    """What the caller must do now, in this order: persist, send, apply."""

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    reads: list[tuple[int, Any]] = field(default_factory=list)  # (read index, caller's context)


@dataclass(slots=True)
class _Progress:
    match: int = 0
    next: int = 1
    inflight: int = 0


class RaftCore:
    """One member's Raft state. Not thread-safe; one caller drives it."""

    def __init__(
        self,
        my_id: str,
        voters: list[str],
        log: RaftLog,
        rand: Callable[[], float],
        *,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
    ) -> None:
        assert my_id in voters, (my_id, voters)
        assert 0 < heartbeat_ticks < election_ticks
        self.id = my_id
        self.voters = sorted(voters)
        self._log = log
        self._rand = rand
        self._election_ticks = election_ticks
        self._heartbeat_ticks = heartbeat_ticks
        hs = log.hard_state
        self.term = hs.term
        self.vote = hs.vote
        self.commit = hs.commit
        self.applied = 0
        # Committed entries are handed out only once the caller said where its state machine is.
        self._applied_known = False
        self.role = FOLLOWER
        self.leader = ""
        self._unstable: list[Entry] = []  # appended, not yet durable
        self._stable_last = log.last_index  # durable entries still part of our log
        self._progress: dict[str, _Progress] = {}
        self._votes: dict[str, bool] = {}
        self._elapsed = 0
        self._timeout = self._random_timeout()
        self._msgs: list[tuple[str, dict[str, Any]]] = []
        self._saved_hs = hs
        # ReadIndex: pending reads wait for a heartbeat round that a quorum acknowledged.
        self._read_seq = 0
        self._read_acks: dict[str, int] = {}
        self._pending_reads: list[tuple[int, int, Any]] = []  # (seq, index, ctx)
        self._ready_reads: list[tuple[int, Any]] = []
        self._waiting_reads: list[Any] = []  # arrived before this leader committed in its term

    def last_index(self) -> int:
        """Index of the last entry in this member's log, durable or not."""
        return self._last_index()

    # ---------------------------------------------------------------- inputs
    def restore_applied(self, applied: int) -> None:
        """The state machine already holds entries up to `applied` (from its own durable state)."""
        self.applied = applied
        self._applied_known = True
        self.commit = max(self.commit, applied)

    def tick(self) -> None:
        self._elapsed += 1
        if self.role == LEADER:
            if self._elapsed >= self._heartbeat_ticks:
                self._elapsed = 0
                self._broadcast_append(heartbeat=True)
        elif self._elapsed >= self._timeout:
            self._campaign()

    def propose(self, datas: list[bytes]) -> bool:
        """Append proposals to the leader's log; False if this member is not the leader."""
        if self.role != LEADER:
            return False
        self._append([Entry(self._last_index() + 1 + i, self.term, d) for i, d in enumerate(datas)])
        self._broadcast_append()
        return True

    def read_index(self, ctx: Any) -> bool:
        """Ask for a linearizable read point; it comes back in `Ready.reads`. False if not leader."""
        if self.role != LEADER:
            return False
        if not self._committed_in_term():
            self._waiting_reads.append(ctx)
            return True
        if len(self.voters) == 1:
            self._ready_reads.append((self.commit, ctx))
            return True
        self._read_seq += 1
        self._pending_reads.append((self._read_seq, self.commit, ctx))
        self._broadcast_append(heartbeat=True)
        return True

    def step(self, sender: str, msg: dict[str, Any]) -> None:
        """Handle one message from a peer."""
        term = msg["term"]
        if term > self.term:
            self._become_follower(term, sender if msg["t"] == "app" else "")
        elif term < self.term:
            if msg["t"] in ("app", "vote"):
                # Tell a stale leader or candidate about the newer term.
                reply = "app_resp" if msg["t"] == "app" else "vote_resp"
                self._send(sender, {"t": reply, "term": self.term, "index": 0, "reject": True, "hint": 0, "granted": False, "read_seq": 0})
            return
        handler = {
            "vote": self._on_vote,
            "vote_resp": self._on_vote_resp,
            "app": self._on_append,
            "app_resp": self._on_append_resp,
        }[msg["t"]]
        handler(sender, msg)

    # ---------------------------------------------------------------- output
    def has_ready(self) -> bool:
        return bool(
            self._unstable
            or self._msgs
            or self._ready_reads
            or (self._applied_known and min(self.commit, self._stable_last) > self.applied)
            or self._hard_state() != self._saved_hs
        )

    def ready(self) -> Ready:
        hs = self._hard_state()
        rd = Ready(
            hard_state=hs if hs != self._saved_hs else None,
            entries=list(self._unstable),
            messages=self._msgs,
            reads=self._ready_reads,
        )
        stable_commit = min(self.commit, self._stable_last)
        if self._applied_known and stable_commit > self.applied:
            rd.committed = self._log.entries(self.applied + 1, stable_commit + 1)
        self._msgs = []
        self._ready_reads = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The caller persisted, sent and applied what `rd` said."""
        if rd.hard_state is not None:
            self._saved_hs = rd.hard_state
        if rd.entries:
            assert self._unstable[: len(rd.entries)] == rd.entries
            del self._unstable[: len(rd.entries)]
            self._stable_last = rd.entries[-1].index
            assert self._stable_last == self._log.last_index
            if self.role == LEADER:
                self._progress[self.id].match = self._stable_last
                self._maybe_commit()
        if rd.committed:
            self.applied = rd.committed[-1].index

    # ---------------------------------------------------------------- roles
    def _become_follower(self, term: int, leader: str) -> None:
        if term != self.term:
            self.vote = ""
        self.term = term
        self.role = FOLLOWER
        self.leader = leader
        self._reset_timer()
        self._fail_reads()

    def _campaign(self) -> None:
        self.role = CANDIDATE
        self.term += 1
        self.vote = self.id
        self.leader = ""
        self._votes = {self.id: True}
        self._reset_timer()
        if self._won():
            self._become_leader()
            return
        last = self._last_index()
        for peer in self._peers():
            self._send(peer, {"t": "vote", "term": self.term, "last_index": last, "last_term": self._term_at(last)})

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader = self.id
        self._elapsed = 0
        last = self._last_index()
        self._progress = {p: _Progress(match=0, next=last + 1) for p in self.voters}
        self._read_acks = {}
        # An empty entry of our own term: committing it commits everything before it (Raft §5.4.2).
        self._append([Entry(last + 1, self.term, b"")])
        self._broadcast_append()

    # ---------------------------------------------------------------- handlers
    def _on_vote(self, sender: str, msg: dict[str, Any]) -> None:
        last = self._last_index()
        up_to_date = (msg["last_term"], msg["last_index"]) >= (self._term_at(last), last)
        granted = self.role == FOLLOWER and self.vote in ("", sender) and up_to_date
        if granted:
            self.vote = sender
            self._reset_timer()
        self._send(sender, {"t": "vote_resp", "term": self.term, "granted": granted})

    def _on_vote_resp(self, sender: str, msg: dict[str, Any]) -> None:
        if self.role != CANDIDATE:
            return
        self._votes[sender] = msg["granted"]
        if self._won():
            self._become_leader()
        elif sum(1 for g in self._votes.values() if not g) > len(self.voters) // 2:
            self._become_follower(self.term, "")

    def _on_append(self, sender: str, msg: dict[str, Any]) -> None:
        if self.role != FOLLOWER:
            self._become_follower(self.term, sender)
        self.leader = sender
        self._reset_timer()
        prev_index, prev_term = msg["prev_index"], msg["prev_term"]
        reply = {"t": "app_resp", "term": self.term, "read_seq": msg["read_seq"]}
        if prev_index > self._last_index() or (prev_index >= self._log.first_index - 1 and self._term_at(prev_index) != prev_term):
            self._send(sender, {**reply, "index": prev_index, "reject": True, "hint": min(prev_index - 1, self._last_index())})
            return
        new = [Entry(i, t, d) for i, t, d in msg["entries"]]
        for pos, entry in enumerate(new):
            if entry.index > self._last_index() or self._term_at(entry.index) != entry.term:
                self._truncate_from(entry.index)
                self._append(new[pos:])
                break
        last_new = prev_index + len(new)
        self.commit = max(self.commit, min(msg["commit"], last_new))
        self._send(sender, {**reply, "index": last_new, "reject": False, "hint": 0})

    def _on_append_resp(self, sender: str, msg: dict[str, Any]) -> None:
        if self.role != LEADER:
            return
        pr = self._progress[sender]
        self._read_acks[sender] = max(self._read_acks.get(sender, 0), msg["read_seq"])
        pr.inflight = max(0, pr.inflight - 1)
        if msg["reject"]:
            # Only a rejection of what we last sent moves `next` back (stale rejections are ignored).
            if msg["index"] == pr.next - 1:
                pr.next = max(pr.match + 1, min(msg["hint"] + 1, pr.next - 1))
                pr.inflight = 0
                self._send_append(sender)
        elif msg["index"] > pr.match:
            pr.match = msg["index"]
            pr.next = max(pr.next, pr.match + 1)
            self._maybe_commit()
        self._release_reads()
        if pr.next <= self._last_index():
            self._send_append(sender)

    # ---------------------------------------------------------------- replication
    def _broadcast_append(self, heartbeat: bool = False) -> None:
        for peer in self._peers():
            self._send_append(peer, heartbeat)

    def _send_append(self, peer: str, heartbeat: bool = False) -> None:
        pr = self._progress[peer]
        last = self._last_index()
        if heartbeat:
            prev = pr.next - 1
            entries: list[Entry] = []
        else:
            if pr.next > last or pr.inflight >= MAX_INFLIGHT_APPENDS:
                return
            prev = pr.next - 1
            hi = min(last + 1, pr.next + MAX_ENTRIES_PER_APPEND)
            entries = self._entries(pr.next, hi)
            pr.next = hi  # optimistic: pipeline the next batch without waiting
            pr.inflight += 1
        self._send(
            peer,
            {
                "t": "app",
                "term": self.term,
                "prev_index": prev,
                "prev_term": self._term_at(prev),
                "entries": [[e.index, e.term, e.data] for e in entries],
                "commit": min(self.commit, prev + len(entries)) if heartbeat else self.commit,
                "read_seq": self._read_seq,
            },
        )

    def _maybe_commit(self) -> None:
        matches = sorted((self._progress[p].match for p in self.voters), reverse=True)
        quorum_match = matches[len(self.voters) // 2]
        # Only entries of the current term are committed by counting replicas (Raft §5.4.2, Figure 8).
        if quorum_match > self.commit and self._term_at(quorum_match) == self.term:
            self.commit = quorum_match
            if self._waiting_reads:
                waiting, self._waiting_reads = self._waiting_reads, []
                for ctx in waiting:
                    self.read_index(ctx)

    def _release_reads(self) -> None:
        if not self._pending_reads:
            return
        acks = sorted([self._read_seq] + [self._read_acks.get(p, 0) for p in self._peers()], reverse=True)
        quorum_seq = acks[len(self.voters) // 2]
        while self._pending_reads and self._pending_reads[0][0] <= quorum_seq:
            _, index, ctx = self._pending_reads.pop(0)
            self._ready_reads.append((index, ctx))

    def _fail_reads(self) -> None:
        # Reads accepted as leader can no longer be confirmed; callers time out and retry.
        self._pending_reads.clear()
        self._waiting_reads.clear()

    # ---------------------------------------------------------------- log helpers
    def _append(self, entries: list[Entry]) -> None:
        assert not entries or entries[0].index == self._last_index() + 1
        self._unstable.extend(entries)

    def _truncate_from(self, index: int) -> None:
        """Forget entries at and after `index` (a conflicting suffix); durable ones are replaced on the next save."""
        assert index > self.commit, "truncating a committed entry"
        self._unstable = [e for e in self._unstable if e.index < index]
        self._stable_last = min(self._stable_last, index - 1)

    def _last_index(self) -> int:
        return self._unstable[-1].index if self._unstable else self._stable_last

    def _term_at(self, index: int) -> int:
        if self._unstable and index >= self._unstable[0].index:
            return self._unstable[index - self._unstable[0].index].term
        if index == 0:
            return 0
        assert index <= self._stable_last, (index, self._stable_last)
        return self._log.term(index)

    def _entries(self, lo: int, hi: int) -> list[Entry]:
        stable_hi = min(hi, self._stable_last + 1)
        out = self._log.entries(lo, stable_hi) if lo < stable_hi else []
        out += [e for e in self._unstable if max(lo, stable_hi) <= e.index < hi]
        assert len(out) == hi - lo, (lo, hi, len(out))
        return out

    def _committed_in_term(self) -> bool:
        return self.commit > 0 and self._term_at(self.commit) == self.term

    # ---------------------------------------------------------------- misc
    def _peers(self) -> list[str]:
        return [p for p in self.voters if p != self.id]

    def _won(self) -> bool:
        return sum(1 for g in self._votes.values() if g) > len(self.voters) // 2

    def _send(self, to: str, msg: dict[str, Any]) -> None:
        self._msgs.append((to, msg))

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def _reset_timer(self) -> None:
        self._elapsed = 0
        self._timeout = self._random_timeout()

    def _random_timeout(self) -> int:
        return self._election_ticks + int(self._rand() * self._election_ticks)
