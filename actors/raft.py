"""Raft consensus as a pure state machine (after etcd-io/raft).

The core never does IO. Its caller (the Raft actor) feeds it ticks, peer
messages, proposals and read requests, then takes a `Ready`: hard state and
entries to persist, messages to send, committed entries to apply, reads that
may now be served, peers that need a snapshot. The caller persists first, then
sends and applies, then calls `advance`.

Roles: follower, precandidate (pre-vote), candidate, leader. With pre-vote a
member that cannot win does not disturb the cluster by raising the term; with
check-quorum a leader that does not hear from a quorum within an election
timeout steps down, and a member that heard from a leader within an election
timeout ignores (pre)votes (the leader lease that keeps a partitioned member
from deposing a healthy leader).

Membership changes are log entries (ENTRY_CONF), one at a time; the caller
applies them with `apply_conf_change` when they commit, as etcd does.

Ids are member ids (strings). Messages are plain dicts ("t" is the type):
  prevote/vote          term, last_index, last_term, transfer
  prevote_resp/vote_resp term, granted
  app                   term, prev_index, prev_term, entries [[index, term, data, kind]...], commit, read_seq
  app_resp              term, index, reject, hint, read_seq
  timeout_now           term   (leader transfer: campaign at once)

ReadIndex, batched as etcd's readIndex loop: `read_index` only queues a read. When the
caller next takes a Ready and no round is in flight, the leader starts ONE round for every
read queued: it records its commit index (which is at least the commit index each of those
reads saw on arrival), bumps `read_seq`, and sends each voter one heartbeat carrying it (or
stamps the append already queued for that voter, which leaves after the round started).
Every append carries the current `read_seq` and followers echo it, so a round whose
heartbeats were lost completes with the next periodic heartbeat. Once a quorum echoed the
round's seq, all its reads are released at the recorded index. Reads arriving while a round
is in flight wait for the next round: joining the current one could serve them at an index
recorded before they arrived. A leader serves no read before it committed an entry of its
own term; one that steps down hands every read not yet released back in `Ready.failed_reads`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from petcd.store.raftlog import ENTRY_CONF, ENTRY_NORMAL, ConfState, Entry, HardState, RaftLog

FOLLOWER, PRECANDIDATE, CANDIDATE, LEADER = "follower", "precandidate", "candidate", "leader"

# Bound on entries per append message, and on appends in flight per follower
# (pipelining without unbounded memory).
MAX_ENTRIES_PER_APPEND = 256
MAX_APPEND_BYTES = 4 << 20
MAX_INFLIGHT_APPENDS = 32
# Reads that wait for this leader's first commit: bounded, the rest are refused.
MAX_WAITING_READS = 10_000
# Reads waiting for their heartbeat round to be acknowledged: bounded, the rest are refused.
MAX_PENDING_READS = 10_000

# Heartbeats with appends in flight and none acknowledged before they count as lost.
_LOST_APPEND_HEARTBEATS = 3

# Progress states of a follower, as seen by the leader.
PROBE, REPLICATE, SNAPSHOT = "probe", "replicate", "snapshot"


@dataclass(slots=True)
class Ready:
    """What the caller must do now, in this order: persist, send, apply."""

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    reads: list[tuple[int, Any]] = field(default_factory=list)  # (read index, caller's context)
    failed_reads: list[Any] = field(default_factory=list)  # contexts of reads this member can no longer confirm (not leader)
    snapshots: list[str] = field(default_factory=list)  # peers that need the state machine sent


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: str = PROBE
    inflight: list[int] = field(default_factory=list)  # last index of each append not yet acknowledged
    recent_active: bool = False
    probe_sent: bool = False  # in PROBE, one append at a time
    snapshot_index: int = 0
    snapshot_ticks: int = 0
    stalled_heartbeats: int = 0  # heartbeats since the oldest append in flight was sent and not acknowledged


class RaftCore:
    """One member's Raft state. Not thread-safe; one caller drives it."""

    def __init__(
        self,
        my_id: str,
        conf: ConfState,
        log: RaftLog,
        rand: Callable[[], float],
        *,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
    ) -> None:
        assert 0 < heartbeat_ticks < election_ticks
        self.id = my_id
        self.conf = conf
        self._log = log
        self._rand = rand
        self._election_ticks = election_ticks
        self._heartbeat_ticks = heartbeat_ticks
        self._pre_vote = pre_vote
        self._check_quorum = check_quorum
        hs = log.hard_state
        self.term = hs.term
        self.vote = hs.vote
        self.commit = max(hs.commit, log.snapshot_index)
        self.applied = log.snapshot_index
        # Committed entries are handed out only once the caller said where its state machine is.
        self._applied_known = False
        self.role = FOLLOWER
        self.leader = ""
        self._unstable: list[Entry] = []  # appended, not yet durable
        self._stable_last = log.last_index  # durable entries still part of our log
        self.progress: dict[str, Progress] = {}
        self._votes: dict[str, bool] = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._random_timeout()
        self._msgs: list[tuple[str, dict[str, Any]]] = []
        self._snapshots: list[str] = []
        self._saved_hs = hs
        self._commit_news = False  # the leader's commit moved: followers hear of it in the next Ready
        self.pending_conf_index = 0
        self.transferee = ""
        self._transfer_elapsed = 0
        # ReadIndex: reads wait for a heartbeat round that a quorum acknowledged (see the module doc).
        self._read_seq = 0  # the last round started; every append carries it
        self._read_acks: dict[str, int] = {}  # highest read_seq each peer echoed in this term
        self._read_queue: list[Any] = []  # arrived, not yet in a round (or before this leader committed in its term)
        self._read_round: tuple[int, int, list[Any]] | None = None  # (seq, read index, contexts) in flight
        self._ready_reads: list[tuple[int, Any]] = []
        self._failed_reads: list[Any] = []
        self.read_rounds = 0  # rounds started (for tests and metrics)

    # ---------------------------------------------------------------- queries
    def last_index(self) -> int:
        """Index of the last entry in this member's log, durable or not."""
        return self._unstable[-1].index if self._unstable else self._stable_last

    def is_voter(self, member: str | None = None) -> bool:
        return (member or self.id) in self.conf.voters

    def quorum(self) -> int:
        return len(self.conf.voters) // 2 + 1

    # ---------------------------------------------------------------- inputs
    def restore_applied(self, applied: int) -> None:
        """The state machine already holds entries up to `applied` (from its own durable state)."""
        assert applied >= self._log.snapshot_index or applied == 0, (applied, self._log.snapshot_index)
        self.applied = max(applied, self._log.snapshot_index)
        self._applied_known = True
        self.commit = max(self.commit, self.applied)

    def tick(self) -> None:
        if self.role == LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._timeout and self.is_voter():
            self._election_elapsed = 0
            self._start_election(transfer=False)

    def campaign_now(self) -> None:
        """Start an election at once (a lone voter at start, or asked to by a leader transfer)."""
        if self.role != LEADER and self.is_voter():
            self._start_election(transfer=True)

    def propose(self, datas: list[bytes]) -> bool:
        """Append proposals to the leader's log; False if this member cannot take them now."""
        if self.role != LEADER or self.transferee:
            return False
        last = self.last_index()
        self._append([Entry(last + 1 + i, self.term, d) for i, d in enumerate(datas)])
        self._broadcast_append()
        return True

    def propose_conf_change(self, data: bytes) -> str | None:
        """Append a membership change; returns an error name or None."""
        if self.role != LEADER or self.transferee:
            return "no_leader"
        if self.pending_conf_index > self.applied:
            return "conf_change_pending"
        index = self.last_index() + 1
        self._append([Entry(index, self.term, data, ENTRY_CONF)])
        self.pending_conf_index = index
        self._broadcast_append()
        return None

    def apply_conf_change(self, op: str, member: str) -> ConfState:
        """A committed membership change takes effect (the caller persists the returned ConfState)."""
        voters, learners = list(self.conf.voters), list(self.conf.learners)
        # Each change is idempotent: a replayed one (after a restart or a snapshot) changes nothing.
        if op == "add_voter" and member not in voters:
            voters.append(member)
            if member in learners:
                learners.remove(member)
        elif op == "add_learner" and member not in voters and member not in learners:
            learners.append(member)
        elif op == "promote" and member in learners:
            learners.remove(member)
            voters.append(member)
        elif op == "remove":
            voters = [v for v in voters if v != member]
            learners = [v for v in learners if v != member]
        self.conf = ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
        if self.role == LEADER:
            last = self.last_index()
            for m in self.conf.members:
                self.progress.setdefault(m, Progress(next=last + 1, recent_active=True))
            for m in list(self.progress):
                if m not in self.conf.members:
                    del self.progress[m]
            if self.id not in self.conf.voters:
                self._become_follower(self.term, "")  # removed or demoted: step down
            elif self.conf.voters:
                self._maybe_commit()  # a smaller quorum may commit more
        if self.transferee and self.transferee not in self.conf.voters:
            self.transferee = ""
        return self.conf

    def read_index(self, ctx: Any) -> bool:
        """Ask for a linearizable read point; it comes back in `Ready.reads` (or `Ready.failed_reads`).

        False if this member is not the leader or too many reads wait. The read joins the next
        heartbeat round, started when the caller next takes a Ready and no round is in flight.
        """
        if self.role != LEADER:
            return False
        bound = MAX_PENDING_READS if self._committed_in_term() else MAX_WAITING_READS
        in_round = len(self._read_round[2]) if self._read_round is not None else 0
        if len(self._read_queue) + in_round >= bound:
            return False
        self._read_queue.append(ctx)
        return True

    def transfer_leader(self, target: str) -> str | None:
        """Hand leadership to `target` once its log is caught up; returns an error name or None."""
        if self.role != LEADER:
            return "not_leader"
        if target == self.id:
            return None
        if target not in self.conf.voters:
            return "bad_transferee"
        self.transferee = target
        self._transfer_elapsed = 0
        pr = self.progress[target]
        if pr.match == self.last_index():
            self._send(target, {"t": "timeout_now", "term": self.term})
        else:
            self._send_append(target)
        return None

    def snapshot_done(self, peer: str, index: int, ok: bool) -> None:
        """The caller finished (or failed) sending a snapshot at `index` to `peer`."""
        pr = self.progress.get(peer)
        if self.role != LEADER or pr is None or pr.state != SNAPSHOT:
            return
        if ok:
            pr.snapshot_index = index
        else:
            pr.state, pr.probe_sent, pr.inflight = PROBE, False, []

    def step_snapshot(self, sender: str, term: int) -> bool:
        """A snapshot chunk `sender` sent in `term` arrived: True if it may be installed.

        Stepped as etcd-io/raft steps MsgSnap: one of an older term (a deposed leader's, late) is
        ignored; one of a newer term makes us follow its sender first.
        """
        if term < self.term or (term == self.term and self.role == LEADER):
            return False
        if term > self.term or self.role != FOLLOWER:
            self._become_follower(term, sender)
        self.leader = sender
        self._election_elapsed = 0
        return True

    def restore_snapshot(self, index: int, term: int, conf: ConfState, members: dict[str, dict]) -> bool:
        """The caller installed a leader's snapshot at (index, term) in the state machine.

        As etcd-io/raft's restore(): one at or below commit changes nothing; if our log holds
        (index, term), commit (and applied) only move up to it and the log is kept; otherwise the
        log restarts after it. `conf` and `members` are the membership as of `index`. Returns True
        if the log was reset.
        """
        if index <= self.commit:
            return False
        self.applied = max(self.applied, index)
        self.conf = conf
        if index <= self.last_index() and index >= self._log.snapshot_index and self._term_at(index) == term:
            self.commit = index  # the hard state follows with the next Ready, with the entries it needs
            self._log.save(None, [], conf, members, conf_index=index)
            return False
        # Acknowledgements not yet sent speak of the log being dropped: never let one out.
        self._drop_acks(beyond=-1)
        self.commit = index
        self._unstable = []
        self._log.reset_to_snapshot(index, term, conf, members, HardState(self.term, self.vote, index))
        self._saved_hs = self._log.hard_state
        self._stable_last = index
        return True

    def ack_snapshot(self) -> None:
        """Tell the leader where our log stands after a snapshot (it leaves with the next Ready, after persisting)."""
        if self.leader and self.leader != self.id:
            self._send(self.leader, {"t": "app_resp", "term": self.term, "index": self.commit, "reject": False, "hint": 0, "read_seq": 0})

    def step(self, sender: str, msg: dict[str, Any]) -> None:
        """Handle one message from a peer."""
        kind, term = msg["t"], msg["term"]
        if term > self.term:
            if kind in ("prevote", "vote") and not msg.get("transfer") and self._in_lease():
                return  # we heard from a leader within an election timeout: don't help depose it
            if kind == "prevote" or (kind == "prevote_resp" and msg["granted"]):
                pass  # pre-votes never change terms
            else:
                self._become_follower(term, sender if kind in ("app", "timeout_now") else "")
        elif term < self.term:
            # As etcd-io/raft: a stale leader hears of the newer term; a pre-candidate of a lower
            # term (a rejoining member) is rejected with our term, so it learns it. A vote,
            # timeout_now or response of a past term is ignored.
            if kind == "app":
                self._send(sender, {"t": "app_resp", "term": self.term, "index": 0, "reject": True, "hint": 0, "read_seq": 0})
            elif kind == "prevote":
                self._send(sender, {"t": "prevote_resp", "term": self.term, "granted": False})
            return
        handler = {
            "prevote": self._on_vote_request,
            "vote": self._on_vote_request,
            "prevote_resp": self._on_vote_resp,
            "vote_resp": self._on_vote_resp,
            "app": self._on_append,
            "app_resp": self._on_append_resp,
            "timeout_now": self._on_timeout_now,
        }.get(kind)
        if handler is None:
            raise ValueError(f"raft: unknown message type {kind!r} from {sender}")
        handler(sender, msg)

    # ---------------------------------------------------------------- output
    def has_ready(self) -> bool:
        return bool(
            self._unstable
            or self._msgs
            or self._ready_reads
            or self._failed_reads
            or self._read_round_due()
            or self._snapshots
            or self._commit_news
            or (self._applied_known and min(self.commit, self._stable_last) > self.applied)
            or self._hard_state() != self._saved_hs
        )

    def ready(self) -> Ready:
        if self._commit_news and self.role == LEADER:
            self._broadcast_commit()
        self._commit_news = False
        if self._read_round_due():
            self._start_read_round()  # after the commit news: the round rides on those appends
        hs = self._hard_state()
        rd = Ready(
            hard_state=hs if hs != self._saved_hs else None,
            entries=list(self._unstable),
            messages=self._msgs,
            reads=self._ready_reads,
            failed_reads=self._failed_reads,
            snapshots=self._snapshots,
        )
        stable_commit = min(self.commit, self._stable_last)
        if self._applied_known and stable_commit > self.applied:
            rd.committed = self._log.entries(self.applied + 1, stable_commit + 1, MAX_APPEND_BYTES)
        self._msgs = []
        self._ready_reads = []
        self._failed_reads = []
        self._snapshots = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The caller persisted, sent and applied what `rd` said."""
        if rd.hard_state is not None:
            self._saved_hs = rd.hard_state
        if rd.entries:
            # The caller persists between ready() and advance() without stepping us in between.
            assert self._unstable[: len(rd.entries)] == rd.entries, "advance() out of step with ready()"
            del self._unstable[: len(rd.entries)]
            self._stable_last = rd.entries[-1].index
            assert self._stable_last == self._log.last_index
            if self.role == LEADER:
                self.progress[self.id].match = max(self.progress[self.id].match, self._stable_last)
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
        self.transferee = ""
        self._reset_election_timer()
        self._fail_reads()

    def _start_election(self, transfer: bool, skip_pre_vote: bool = False) -> None:
        """Campaign; `transfer` (only a leader transfer's timeout_now) makes voters ignore their leader lease."""
        if self._pre_vote and not transfer and not skip_pre_vote:
            self.role = PRECANDIDATE
            term = self.term + 1  # asked about, not taken
            kind = "prevote"
        else:
            self.role = CANDIDATE
            self.term += 1
            self.vote = self.id
            term = self.term
            kind = "vote"
        self.leader = ""
        self._votes = {self.id: True}
        self._reset_election_timer()
        if self._won():
            self._after_win()
            return
        last = self.last_index()
        for peer in self._voter_peers():
            self._send(peer, {"t": kind, "term": term, "last_index": last, "last_term": self._term_at(last), "transfer": transfer})

    def _after_win(self) -> None:
        if self.role == PRECANDIDATE:
            self._start_election(transfer=False, skip_pre_vote=True)  # the real election: no lease override
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self.role = LEADER
        self.leader = self.id
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        last = self.last_index()
        self.progress = {p: Progress(next=last + 1, recent_active=True) for p in self.conf.members}
        self.progress.setdefault(self.id, Progress(next=last + 1))
        self.progress[self.id].match = self._stable_last if not self._unstable else self._unstable[0].index - 1
        self._read_acks = {}
        # Conservatively treat any uncommitted entry as a pending membership change.
        self.pending_conf_index = last
        # An empty entry of our own term: committing it commits everything before it (Raft §5.4.2).
        self._append([Entry(last + 1, self.term, b"")])
        self._broadcast_append()

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._election_ticks:
            self._election_elapsed = 0
            if self._check_quorum and not self._quorum_active():
                self._become_follower(self.term, "")
                return
            if self.transferee:
                self.transferee = ""  # the transfer took too long: give up, take proposals again
        for peer, pr in self.progress.items():
            if pr.state == SNAPSHOT and peer != self.id:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks > 3 * self._election_ticks:
                    pr.state, pr.probe_sent, pr.inflight = PROBE, False, []  # the snapshot was lost: start over
        if self._heartbeat_elapsed >= self._heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    # ---------------------------------------------------------------- handlers
    def _on_vote_request(self, sender: str, msg: dict[str, Any]) -> None:
        last = self.last_index()
        up_to_date = (msg["last_term"], msg["last_index"]) >= (self._term_at(last), last)
        if msg["t"] == "prevote":
            # Would we vote for it in its next term? Changes nothing here.
            granted = up_to_date and (msg["term"] > self.term or self.vote in ("", sender))
            self._send(sender, {"t": "prevote_resp", "term": msg["term"] if granted else self.term, "granted": granted})
            return
        # One vote per term, and none while we follow a leader of this term.
        granted = (self.vote == sender or (self.vote == "" and self.leader == "")) and up_to_date
        if granted:
            self.vote = sender
            self._reset_election_timer()
        self._send(sender, {"t": "vote_resp", "term": self.term, "granted": granted})

    def _on_vote_resp(self, sender: str, msg: dict[str, Any]) -> None:
        expected = PRECANDIDATE if msg["t"] == "prevote_resp" else CANDIDATE
        if self.role != expected or sender not in self.conf.voters:
            return
        self._votes[sender] = msg["granted"]
        if self._won():
            self._after_win()
        elif sum(1 for g in self._votes.values() if not g) >= self.quorum():
            self._become_follower(self.term, "")

    def _on_append(self, sender: str, msg: dict[str, Any]) -> None:
        if self.role != FOLLOWER:
            self._become_follower(self.term, sender)
        self.leader = sender
        self._election_elapsed = 0
        prev_index, prev_term = msg["prev_index"], msg["prev_term"]
        reply = {"t": "app_resp", "term": self.term, "read_seq": msg["read_seq"]}
        if prev_index < self.commit:
            # A stale or duplicated append: we hold and committed more. Tell the leader where we are.
            self._send(sender, {**reply, "index": self.commit, "reject": False, "hint": 0})
            return
        if prev_index > self.last_index() or self._term_at(prev_index) != prev_term:
            hint = min(prev_index - 1, self.last_index())
            # Fast back-off: skip back over our entries of the conflicting term.
            if prev_index <= self.last_index():
                bad_term = self._term_at(prev_index)
                while hint > self.commit and self._term_at(hint) == bad_term:
                    hint -= 1
            self._send(sender, {**reply, "index": prev_index, "reject": True, "hint": hint})
            return
        new = [Entry(i, t, d, k) for i, t, d, k in msg["entries"]]
        for pos, entry in enumerate(new):
            if entry.index > self.last_index() or self._term_at(entry.index) != entry.term:
                self._truncate_from(entry.index)
                self._append(new[pos:])
                break
        last_new = prev_index + len(new)
        self.commit = max(self.commit, min(msg["commit"], last_new))
        self._send(sender, {**reply, "index": last_new, "reject": False, "hint": 0})

    def _on_append_resp(self, sender: str, msg: dict[str, Any]) -> None:
        if self.role != LEADER or sender not in self.progress:
            return
        pr = self.progress[sender]
        pr.recent_active = True
        self._read_acks[sender] = max(self._read_acks.get(sender, 0), msg["read_seq"])
        if msg["reject"]:
            rejected = msg["index"]
            # Stale rejections (of appends we since moved past) change nothing.
            if pr.state == SNAPSHOT or (pr.state == REPLICATE and rejected <= pr.match):
                return
            if pr.state == PROBE and rejected != pr.next - 1:
                return
            pr.next = max(pr.match + 1, min(rejected, msg["hint"] + 1))
            pr.state, pr.inflight, pr.probe_sent = PROBE, [], False
            self._send_append(sender)
        else:
            if msg["index"] > pr.match:
                pr.match = msg["index"]
                pr.next = max(pr.next, pr.match + 1)
                pr.stalled_heartbeats = 0
                self._maybe_commit()
            pr.inflight = [i for i in pr.inflight if i > msg["index"]]
            if pr.state == PROBE or (pr.state == SNAPSHOT and pr.match >= pr.snapshot_index > 0):
                pr.state, pr.inflight, pr.probe_sent = REPLICATE, [], False
                pr.next = pr.match + 1
            if self.transferee == sender and pr.match == self.last_index():
                self._send(sender, {"t": "timeout_now", "term": self.term})
        self._release_reads()
        if self.role == LEADER and pr.next <= self.last_index():
            self._send_append(sender)

    def _on_timeout_now(self, sender: str, msg: dict[str, Any]) -> None:
        self.campaign_now()

    # ---------------------------------------------------------------- replication
    def _broadcast_append(self) -> None:
        for peer in self._peers():
            self._send_append(peer)

    def _broadcast_heartbeat(self) -> None:
        for peer in self._peers():
            pr = self.progress[peer]
            if pr.state == SNAPSHOT:
                continue
            prev = max(min(pr.match, self.last_index()), self._log.snapshot_index)
            self._send(peer, self._append_msg(prev, [], min(self.commit, prev)))
            if pr.state == PROBE:
                pr.probe_sent = False  # a lost probe is retried at the next heartbeat
            elif pr.inflight:
                pr.stalled_heartbeats += 1
                if pr.stalled_heartbeats > _LOST_APPEND_HEARTBEATS:
                    # No acknowledgement for a while: the appends were lost. Send again from what it has.
                    pr.next, pr.inflight, pr.stalled_heartbeats = pr.match + 1, [], 0
            if pr.next <= self.last_index():
                self._send_append(peer)

    def _broadcast_commit(self) -> None:
        """Tell followers in step with us that the commit index moved (one message per Ready)."""
        for peer in self._peers():
            pr = self.progress[peer]
            if pr.state == REPLICATE and not any(to == peer and m["t"] == "app" for to, m in self._msgs):
                prev = pr.next - 1
                if prev < self._log.snapshot_index:
                    self._need_snapshot(peer)  # compacted past it while its appends were in flight (found by seed 3, disk-crash)
                    continue
                self._send(peer, self._append_msg(prev, [], min(self.commit, prev)))

    def _send_append(self, peer: str) -> None:
        pr = self.progress[peer]
        last = self.last_index()
        if pr.state == SNAPSHOT:
            return
        if pr.state == PROBE and pr.probe_sent:
            return
        if pr.state == REPLICATE and (pr.next > last or len(pr.inflight) >= MAX_INFLIGHT_APPENDS):
            return
        prev = pr.next - 1
        if prev < self._log.snapshot_index:
            self._need_snapshot(peer)
            return
        hi = min(last + 1, pr.next + MAX_ENTRIES_PER_APPEND)
        entries = self._entries(pr.next, hi) if pr.next <= last else []
        self._send(peer, self._append_msg(prev, entries, self.commit))
        if pr.state == PROBE:
            pr.probe_sent = True
        elif entries:
            pr.next = entries[-1].index + 1  # optimistic: pipeline the next batch without waiting
            pr.inflight.append(entries[-1].index)

    def _need_snapshot(self, peer: str) -> None:
        """What `peer` needs next was compacted away: it gets the state machine instead."""
        pr = self.progress[peer]
        pr.state, pr.snapshot_ticks, pr.snapshot_index, pr.inflight = SNAPSHOT, 0, 0, []
        self._snapshots.append(peer)

    def _append_msg(self, prev: int, entries: list[Entry], commit: int) -> dict[str, Any]:
        return {
            "t": "app",
            "term": self.term,
            "prev_index": prev,
            "prev_term": self._term_at(prev),
            "entries": [[e.index, e.term, e.data, e.kind] for e in entries],
            "commit": commit,
            "read_seq": self._read_seq,
        }

    def _maybe_commit(self) -> None:
        if not self.conf.voters or self.id not in self.progress:
            return
        matches = sorted((self.progress[p].match for p in self.conf.voters if p in self.progress), reverse=True)
        if len(matches) < self.quorum():
            return
        quorum_match = matches[self.quorum() - 1]
        # Only entries of the current term are committed by counting replicas (Raft §5.4.2, Figure 8).
        if quorum_match > self.commit and self._term_at(quorum_match) == self.term:
            self.commit = quorum_match
            self._commit_news = True

    # ---------------------------------------------------------------- ReadIndex
    def _read_round_due(self) -> bool:
        """Reads are queued, no round is in flight, and this leader committed an entry of its term (etcd's rule)."""
        return bool(self._read_queue) and self._read_round is None and self.role == LEADER and self._committed_in_term()

    def _start_read_round(self) -> None:
        """One heartbeat round for every read queued: record the commit index now, then ask each voter."""
        if self._read_round is not None or self.role != LEADER or not self._committed_in_term():
            raise AssertionError("a read round started while one is in flight, or before this leader committed in its term")
        self._read_seq += 1
        self.read_rounds += 1
        self._read_round = (self._read_seq, self.commit, self._read_queue)
        self._read_queue = []
        # An append queued and not yet handed out leaves after this point: its echo counts for the round.
        carried: set[str] = set()
        for to, m in self._msgs:
            if m["t"] == "app" and m["term"] == self.term:
                m["read_seq"] = self._read_seq
                carried.add(to)
        for peer in self._voter_peers():
            pr = self.progress.get(peer)
            if peer in carried or pr is None or pr.state == SNAPSHOT:
                continue  # a follower being sent a snapshot answers the next heartbeat after it
            prev = max(min(pr.match, self.last_index()), self._log.snapshot_index)
            self._send(peer, self._append_msg(prev, [], min(self.commit, prev)))
        self._release_reads()  # a lone voter is its own quorum

    def _release_reads(self) -> None:
        if self._read_round is None:
            return
        seq, index, ctxs = self._read_round
        acked = sum(1 for p in self.conf.voters if p == self.id or self._read_acks.get(p, 0) >= seq)
        if acked >= self.quorum():
            self._ready_reads.extend((index, ctx) for ctx in ctxs)
            self._read_round = None

    def _fail_reads(self) -> None:
        """Reads accepted as leader can no longer be confirmed: hand them back to the caller to refuse."""
        if self._read_round is not None:
            self._failed_reads.extend(self._read_round[2])
            self._read_round = None
        self._failed_reads.extend(self._read_queue)
        self._read_queue = []

    def _quorum_active(self) -> bool:
        active = sum(1 for p in self.conf.voters if p == self.id or (p in self.progress and self.progress[p].recent_active))
        for p, pr in self.progress.items():
            if p != self.id:
                pr.recent_active = False
        return active >= self.quorum()

    def _in_lease(self) -> bool:
        return self._check_quorum and self.leader != "" and self._election_elapsed < self._election_ticks

    # ---------------------------------------------------------------- log helpers
    def _append(self, entries: list[Entry]) -> None:
        assert not entries or entries[0].index == self.last_index() + 1
        self._unstable.extend(entries)

    def _truncate_from(self, index: int) -> None:
        """Forget entries at and after `index` (a conflicting suffix); durable ones are replaced on the next save."""
        assert index > self.commit, f"truncating committed entry {index} (commit {self.commit})"
        self._drop_acks(beyond=index - 1)  # acknowledged, never persisted: the ack must not leave
        self._unstable = [e for e in self._unstable if e.index < index]
        self._stable_last = min(self._stable_last, index - 1)

    def _drop_acks(self, beyond: int) -> None:
        """Forget append acknowledgements not yet handed out that claim entries past `beyond`."""
        self._msgs = [(to, m) for to, m in self._msgs if not (m["t"] == "app_resp" and not m["reject"] and m["index"] > beyond)]

    def _term_at(self, index: int) -> int:
        if self._unstable and index >= self._unstable[0].index:
            return self._unstable[index - self._unstable[0].index].term
        if index == 0:
            return 0
        assert index <= self._stable_last, (index, self._stable_last)
        if index < self._log.snapshot_index:
            raise IndexError(f"entry {index} was compacted")
        return self._log.term(index)

    def _entries(self, lo: int, hi: int) -> list[Entry]:
        stable_hi = min(hi, self._stable_last + 1)
        out = self._log.entries(lo, stable_hi, MAX_APPEND_BYTES) if lo < stable_hi else []
        if len(out) < stable_hi - lo:
            return out  # cut by size
        out += [e for e in self._unstable if max(lo, stable_hi) <= e.index < hi]
        return out

    def _committed_in_term(self) -> bool:
        return self.commit > 0 and self._term_at(self.commit) == self.term

    # ---------------------------------------------------------------- misc
    def _peers(self) -> list[str]:
        return [p for p in self.conf.members if p != self.id]

    def _voter_peers(self) -> list[str]:
        return [p for p in self.conf.voters if p != self.id]

    def _won(self) -> bool:
        return sum(1 for p, g in self._votes.items() if g and p in self.conf.voters) >= self.quorum()

    def _send(self, to: str, msg: dict[str, Any]) -> None:
        self._msgs.append((to, msg))

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        self._timeout = self._random_timeout()

    def _random_timeout(self) -> int:
        return self._election_ticks + int(self._rand() * self._election_ticks)


__all__ = ["CANDIDATE", "ENTRY_CONF", "ENTRY_NORMAL", "FOLLOWER", "LEADER", "PRECANDIDATE", "RaftCore", "Ready"]
