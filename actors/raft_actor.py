"""The Raft actor: drives `RaftCore`, persists its log, talks to peers, hands committed entries to the apply actor.

Messages in (from this member's gateways and clients):
  propose   {req, origin: [address, request id]}   a write; forwarded to the leader if we are not it
  read      {req, origin}                           a linearizable read, served at a ReadIndex
  conf      {change, origin}                        a membership change (see `membership`)
  transfer  {target, origin}                        move leadership (Maintenance.MoveLeader)
  status    {origin}                                leader, term, indexes; answered at once
  members   {origin}                                the membership as this member knows it
from the lease actor:
  confirm   {term, origin}                          do we still lead in `term`? a ReadIndex round answers {index, term}
from the apply actor:
  hello     {applied, snapshot}                     on its start: where to resume (and the snapshot last installed, if at `applied`)
  applied   {index, durable}                        after each batch: the log may be compacted below `durable`
  compacting {}                                     a store compaction is still in progress: the leader appends an
                                                    empty entry (one at a time), each of which takes it a step further
  snap_chunk {peer, index, seq, data, last}         a snapshot of the state machine, to relay to `peer`
  snap_installed {index, meta}                      a leader's snapshot is in place
  relay     {to, msg, via?}                         from local actors: deliver `msg` to `to` on any member
from peers' Raft actors:
  raft      {cid, msg}                              a Raft message
  fwd       {cid, props: [data...]}                 proposals a follower took
  ri        {cid, ids}                              a follower asks for a read index
  ri_resp   {cid, index, ids}                       the leader's answer
  snap      {cid, term, meta, seq, data, last}      a snapshot chunk from the leader of `term` (meta: membership as of its index)
  probe     {cid, sent_us}                          etcd's peer prober: answered at once with probe_resp {cid, sent_us}
Messages out: apply/reads/snap_make/snap_chunk to the apply actor, resp to origins, the above to peers.

Per turn: every proposal of the batch goes into one append, one synced record
of the write-ahead log (store/raftlog.py), one message per destination. Reads batch too, as etcd's readIndex loop: a follower keeps one "ri" in
flight to the leader, carrying every read forwarded since the last answer, and the
leader confirms every read (local, remote or a lease confirmation) queued when no
round is in flight with one heartbeat round (see `RaftCore.read_index`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import lmdb
import msgpack

from petcd.actors import membership
from petcd.actors.actor import Context, Envelope
from petcd.actors.raft import LEADER, RaftCore, Ready
from petcd.store.histogram import Histogram, exponential_bounds
from petcd.store.raftlog import ENTRY_CONF, ConfState, Entry, HardState, RaftLog, RaftLogError

_TICK_TIMER = "tick"
# Bound on the Ready loop within one turn: each round persists, so a handful suffice.
_MAX_READY_ROUNDS = 8
# Requests held while no leader is known; past the bound or the wait they fail with "no leader".
MAX_HELD_REQUESTS = 10_000
# Entries kept behind a compaction so that a slightly slow follower catches up without a snapshot.
CATCHUP_ENTRIES = 5000
# Reads sent to the leader for a read index and not yet answered; past the bound: "too many requests".
MAX_REMOTE_READS = 10_000
# A follower keeps one read-index request to the leader in flight (etcd's readIndex loop); reads arriving
# meanwhile go in the next one, sent when the answer comes or, if none comes, after this many heartbeats.
RI_RETRY_HEARTBEATS = 5
# etcd refuses proposals while more than this many entries are committed but not applied.
MAX_APPLY_GAP = 5000
# A client's membership change waits this long behind one in flight (a member publishing its name,
# a new leader's first entry) before it is refused; below etcdctl's 5 s command timeout.
CONF_WAIT_MS = 4000
# etcd's prober: every member measures its round trip to every peer this often (proberInterval, 4 s),
# into etcd_network_peer_round_trip_time_seconds, whose buckets these are (0.1 ms to 3.3 s).
PROBE_INTERVAL_MS = 4000
PEER_RTT_BUCKETS_S = exponential_bounds(0.0001, 2, 16)


@dataclass(frozen=True, slots=True)
class RaftConfig:
    member_id: str
    data_dir: str
    log_dir: str = ""  # the Raft log's directory (etcd's --wal-dir); default: <data_dir>/raft
    cluster_id: int = 0  # 0: learn it from the leader (joining an existing cluster)
    initial_members: dict[str, dict] = field(default_factory=dict)  # id -> {name, peer_urls, client_urls}; bootstraps a new cluster
    name: str = ""  # published, with client_urls, in the member table once a leader is known
    client_urls: tuple[str, ...] = ()
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 100_000
    sync: bool = True


@dataclass(slots=True)
class _Held:
    kind: str  # "propose" | "read"
    payload: Any
    since_ms: int


class RaftActor:
    # Requests worth waiting a moment for before a turn (the process runtime's group commit, `Gather`):
    # clients' writes and linearizable reads, and those a follower forwarded. A follower's appends
    # from the leader are not: it answers them at once.
    gathered_types = frozenset({"propose", "read", "fwd", "ri"})

    def __init__(self, config: RaftConfig) -> None:
        assert config.election_timeout_ms >= 5 * config.heartbeat_interval_ms, "election timeout must be at least 5 heartbeats"
        self._cfg = config
        self._me = config.member_id
        self._apply_addr = f"{config.member_id}/apply"
        self._log: RaftLog | None = None
        self._core: RaftCore | None = None
        self._cluster_id = config.cluster_id
        self._held: list[_Held] = []
        self._remote_reads: dict[int, tuple[dict[str, Any], list[Any]]] = {}
        self._next_read_id = 0
        self._ri_outbox: list[int] = []  # remote reads not yet asked about, sent to the leader in one "ri" (a subset of _remote_reads)
        self._ri_inflight: tuple[str, int] | None = None  # (leader, sent at) of the "ri" not yet answered
        self._transfers: list[tuple[list[Any], int]] = []  # (origin, deadline_ms)
        self._stopped = False
        self._applied = 0  # what the apply actor reported applied
        self._conf_waiting: list[tuple[dict[str, Any], list[Any], str, int]] = []  # (change, origin, via, since_ms)
        self._activity = membership.PeerActivity(config.election_timeout_ms)  # for membership.check's health checks
        self._peer_rtt: dict[str, Histogram] = {}  # peer id -> round trips of its probes (for /metrics)
        self._next_probe_ms = 0
        self._compaction_nudge = 0  # the index of the last empty entry appended for a compaction in progress

    # ------------------------------------------------------------------ lifecycle
    def start(self, ctx: Context) -> None:
        self._guarded(ctx, self._start, ctx)

    def _guarded(self, ctx: Context, turn: Any, *args: Any) -> None:
        """Run one turn; should the disk fail a write (it raised: not durable, or no room), stop the member.

        What depends on a write (votes, append acks, commits) is queued only after the write returns,
        so none of it leaves; etcd likewise stops on a WAL write or fsync error."""
        try:
            turn(*args)
        except (lmdb.Error, OSError) as err:
            self._stopped = True
            ctx.log("error", "the disk failed a write to the raft log; stopping the member", error=repr(err))
            ctx.stop_member(f"disk failure: {err!r}", failed=True)
        except RaftLogError as err:
            self._stopped = True
            ctx.log("error", "the raft log cannot be opened; stopping the member", error=str(err))
            ctx.stop_member(str(err), failed=True)

    def _start(self, ctx: Context) -> None:
        log_dir = self._cfg.log_dir or os.path.join(self._cfg.data_dir, "raft")
        log = self._log = ctx.disk.open_raftlog(log_dir, sync=self._cfg.sync)
        if log.last_index == 0 and log.conf_state is None and self._cfg.initial_members:
            self._bootstrap(log)
        if log.cluster_id and not self._cluster_id:
            self._cluster_id = log.cluster_id
        conf = log.conf_state or ConfState(voters=())
        self._core = RaftCore(
            self._me,
            conf,
            log,
            ctx.random,
            election_ticks=self._cfg.election_timeout_ms // self._cfg.heartbeat_interval_ms,
        )
        for member_id, info in membership.active(log.members).items():
            self._route(ctx, member_id, info)
        ctx.log("info", "raft started", term=self._core.term, last_index=log.last_index, commit=self._core.commit, voters=list(conf.voters))
        ctx.set_timer(_TICK_TIMER, self._cfg.heartbeat_interval_ms)
        role_before = self._core.role
        if conf.voters == (self._me,):
            self._core.campaign_now()  # a lone voter needs no election timeout
        self._after_step(ctx, role_before, "")
        self._process_ready(ctx)

    def _bootstrap(self, log: RaftLog) -> None:
        """A new cluster: every initial member writes the same membership entries at term 1, as etcd does."""
        ids = sorted(self._cfg.initial_members)
        entries = [
            Entry(i + 1, 1, membership.encode_change({"op": "add_voter", "id": mid, **self._cfg.initial_members[mid]}), ENTRY_CONF)
            for i, mid in enumerate(ids)
        ]
        log.save(HardState(1, "", len(ids)), entries, ConfState(tuple(ids)), dict(self._cfg.initial_members), self._cluster_id)

    def stop(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def on_timer(self, ctx: Context, name: str) -> None:
        assert name == _TICK_TIMER and self._core is not None
        if self._stopped:
            return
        self._guarded(ctx, self._tick, ctx)

    def _tick(self, ctx: Context) -> None:
        assert self._core is not None
        role_before, leader_before = self._core.role, self._core.leader
        self._core.tick()
        self._activity.observe(self._core, ctx.now_ms())
        ctx.set_timer(_TICK_TIMER, self._cfg.heartbeat_interval_ms)
        self._after_step(ctx, role_before, leader_before)
        self._expire(ctx)
        self._retry_conf_changes(ctx)
        self._maybe_publish(ctx)
        self._probe_peers(ctx)
        self._process_ready(ctx)

    # ------------------------------------------------------------------ messages
    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        if self._stopped:
            return
        self._guarded(ctx, self._receive, ctx, batch)

    def _receive(self, ctx: Context, batch: list[Envelope]) -> None:
        core = self._core
        assert core is not None
        role_before, leader_before = core.role, core.leader
        proposals: list[bytes] = []
        for sender, msg in batch:
            kind = msg["t"]
            if kind in ("raft", "fwd", "ri", "ri_resp", "snap", "conf_fwd", "removed", "relay_in", "probe", "probe_resp"):
                if not self._from_my_cluster(ctx, sender, msg):
                    continue
                if membership.is_removed(self._log.members, sender.partition("/")[0]):
                    ctx.send(sender, {"t": "removed", "cid": self._cluster_id})
                    continue
            if kind == "propose":
                # "member" names who took the request: only that member's apply actor answers it.
                proposals.append(msgpack.packb({"req": msg["req"], "origin": msg["origin"], "member": self._me}))
            elif kind == "read":
                self._read(ctx, msg["req"], msg["origin"])
            elif kind == "raft":
                core.step(sender.partition("/")[0], msg["msg"])
            elif kind == "fwd":
                if not core.propose(msg["props"]):
                    pass  # no longer leader: the requests time out at their gateway
            elif kind == "ri":
                if core.role != LEADER:
                    ctx.send(sender, {"t": "ri_resp", "cid": self._cluster_id, "index": 0, "ids": msg["ids"]})
                elif not core.read_index(("remote", sender, msg["ids"])):
                    ctx.send(sender, {"t": "ri_resp", "cid": self._cluster_id, "index": 0, "ids": msg["ids"], "error": "too_many_requests"})
            elif kind == "ri_resp":
                self._ri_inflight = None  # the next request may leave (after this turn, with every read queued)
                self._on_read_index(ctx, msg["index"], msg["ids"], msg.get("error", "leader_changed"))
            elif kind == "confirm":
                self._confirm_leadership(ctx, msg)
            elif kind == "conf":
                self._conf_change(ctx, msg["change"], msg["origin"], self._me)
            elif kind == "conf_fwd":
                self._conf_change(ctx, msg["change"], msg["origin"], msg["via"])
            elif kind == "relay":
                self._relay(ctx, msg)
            elif kind == "relay_in":
                ctx.send(msg["to"], msg["msg"])
            elif kind == "removed":
                self._stop_removed(ctx)
                return
            elif kind == "transfer":
                self._transfer(ctx, msg["target"], msg["origin"])
            elif kind == "status":
                self._answer(ctx, msg["origin"], self._status())
            elif kind == "members":
                self._answer(ctx, msg["origin"], {"members": self._members_list()})
            elif kind == "hello":
                self._on_hello(ctx, msg)
            elif kind == "applied":
                self._applied = max(self._applied, msg["index"])
                self._maybe_compact(msg["index"], msg["durable"])
            elif kind == "compacting":
                # The store drops a compaction's records a step per empty entry applied (store/mvcc.py):
                # these carry it to its end, one at a time, between the writes.
                if core.role == LEADER and self._compaction_nudge <= self._applied and core.propose([msgpack.packb({})]):
                    self._compaction_nudge = core.last_index()
            elif kind == "snap_chunk":
                self._relay_snapshot(ctx, msg)
            elif kind == "snap":
                # Stepped like any Raft message: a deposed leader's snapshot (an older term) is dropped.
                if core.step_snapshot(sender.partition("/")[0], msg.get("term", 0)):
                    ctx.send(self._apply_addr, {"t": "snap_install", **{k: msg[k] for k in ("meta", "seq", "data", "last")},
                                                "from": sender.partition("/")[0]})
                else:
                    ctx.log("warn", "dropped a snapshot chunk of a past term", sender=sender, term=msg.get("term", 0), our_term=core.term)
            elif kind == "snap_installed":
                self._on_snapshot_installed(ctx, msg["meta"])
            elif kind == "probe":
                ctx.send(sender, {"t": "probe_resp", "cid": self._cluster_id, "sent_us": msg["sent_us"]})
            elif kind == "probe_resp":
                rtt_us = ctx.now_us() - msg["sent_us"]
                if rtt_us >= 0:  # our own clock: never negative but across a restart of ours
                    self._peer_rtt.setdefault(sender.partition("/")[0], Histogram(PEER_RTT_BUCKETS_S)).observe(rtt_us / 1e6)
            else:
                raise ValueError(f"raft actor: unknown message type {kind!r} from {sender}")
        if proposals:
            self._propose(ctx, proposals)
        self._after_step(ctx, role_before, leader_before)
        self._process_ready(ctx)

    # ------------------------------------------------------------------ requests
    def _propose(self, ctx: Context, proposals: list[bytes]) -> None:
        core = self._core
        assert core is not None
        if core.commit - self._applied > MAX_APPLY_GAP:
            # etcd: more than 5000 entries committed but not applied -> "too many requests".
            for data in proposals:
                self._reject(ctx, msgpack.unpackb(data)["origin"], "too_many_requests")
            return
        if core.role == LEADER:
            if not core.propose(proposals):
                for data in proposals:
                    self._reject(ctx, msgpack.unpackb(data)["origin"], "leader_changed")
        elif core.leader:
            ctx.send(f"{core.leader}/raft", {"t": "fwd", "cid": self._cluster_id, "props": proposals})
        else:
            self._hold(ctx, "propose", proposals)

    def _read(self, ctx: Context, req: dict[str, Any], origin: list[Any]) -> None:
        core = self._core
        assert core is not None
        if core.role == LEADER:
            if not core.read_index((req, origin)):
                self._reject(ctx, origin, "too_many_requests")
        elif core.leader:
            if len(self._remote_reads) >= MAX_REMOTE_READS:
                self._reject(ctx, origin, "too_many_requests")
                return
            self._next_read_id += 1
            self._remote_reads[self._next_read_id] = (req, origin)
            self._ri_outbox.append(self._next_read_id)
        else:
            self._hold(ctx, "read", (req, origin))

    def _confirm_leadership(self, ctx: Context, msg: dict[str, Any]) -> None:
        """The lease actor asks whether we still lead in `term` (etcd's ensureLeadership): a ReadIndex round answers."""
        core = self._core
        assert core is not None
        if core.role != LEADER or core.term != msg["term"]:
            self._reject(ctx, msg["origin"], "not_leader")
        elif not core.read_index(("confirm", msg["origin"])):
            self._reject(ctx, msg["origin"], "too_many_requests")

    def _send_remote_reads(self, ctx: Context) -> None:
        """Ask the leader for one read index for every read forwarded since the last request was answered."""
        core = self._core
        assert core is not None
        now = ctx.now_ms()
        if self._ri_inflight is not None:
            leader, sent = self._ri_inflight
            if leader == core.leader and now - sent < RI_RETRY_HEARTBEATS * self._cfg.heartbeat_interval_ms:
                return  # one request in flight: these reads go in the next one
        ids = [rid for rid in self._ri_outbox if rid in self._remote_reads]  # not refused since
        self._ri_outbox = []
        self._ri_inflight = None
        if not ids:
            return
        if core.role == LEADER or not core.leader:
            # Leadership moved within the turn without the remote reads being refused: refuse them now.
            self._on_read_index(ctx, 0, ids, "leader_changed")
            return
        ctx.send(f"{core.leader}/raft", {"t": "ri", "cid": self._cluster_id, "ids": ids})
        self._ri_inflight = (core.leader, now)

    def _on_read_index(self, ctx: Context, index: int, ids: list[int], error: str = "leader_changed") -> None:
        reads = []
        for rid in ids:
            found = self._remote_reads.pop(rid, None)
            if found is None:
                continue
            req, origin = found
            if index == 0:
                self._reject(ctx, origin, error)
            else:
                reads.append([index, self._core.term if self._core else 0, req, origin])
        if reads:
            ctx.send(self._apply_addr, {"t": "reads", "reads": reads})

    def _hold(self, ctx: Context, kind: str, payload: Any) -> None:
        if len(self._held) >= MAX_HELD_REQUESTS:
            self._fail_held(ctx, [_Held(kind, payload, 0)], "no_leader")
            return
        self._held.append(_Held(kind, payload, ctx.now_ms()))

    def _release_held(self, ctx: Context) -> None:
        held, self._held = self._held, []
        for h in held:
            if h.kind == "propose":
                self._propose(ctx, h.payload)
            else:
                self._read(ctx, *h.payload)

    def _expire(self, ctx: Context) -> None:
        """Requests held longer than an election timeout fail with etcd's "no leader"."""
        now = ctx.now_ms()
        limit = self._cfg.election_timeout_ms
        expired = [h for h in self._held if now - h.since_ms >= limit]
        if expired:
            self._held = [h for h in self._held if now - h.since_ms < limit]
            self._fail_held(ctx, expired, "no_leader")
        for origin, deadline in [t for t in self._transfers if t[1] <= now]:
            self._reject(ctx, origin, "leader_transfer_timeout")
        self._transfers = [t for t in self._transfers if t[1] > now]

    def _fail_held(self, ctx: Context, held: list[_Held], error: str) -> None:
        for h in held:
            if h.kind == "propose":
                for data in h.payload:
                    self._reject(ctx, msgpack.unpackb(data)["origin"], error)
            else:
                self._reject(ctx, h.payload[1], error)

    def _conf_change(self, ctx: Context, change: dict[str, Any], origin: list[Any] | None, via: str, since_ms: int | None = None) -> None:
        """A membership change taken by member `via`; its answer goes back through `via`."""
        core, log = self._core, self._log
        assert core is not None and log is not None
        if core.role != LEADER:
            if core.leader and via == self._me:
                ctx.send(f"{core.leader}/raft", {"t": "conf_fwd", "cid": self._cluster_id, "change": change, "origin": origin, "via": via})
            else:
                self._reject(ctx, origin, "no_leader" if core.leader else membership.leaderless_error(change, core.conf.voters, log.members), via)
            return
        error = membership.check(change, core, log.members, self._activity, ctx.now_ms())
        if error is None:
            error = core.propose_conf_change(membership.encode_change(change, origin, via))
            if error == "conf_change_pending" and origin is not None and len(self._conf_waiting) < MAX_HELD_REQUESTS:
                # Another change is in flight (a member publishing its name, our first entry as
                # leader): propose this one once that is applied rather than refuse it at once.
                self._conf_waiting.append((change, origin, via, ctx.now_ms() if since_ms is None else since_ms))
                return
        if error is not None:
            self._reject(ctx, origin, error, via)

    def _retry_conf_changes(self, ctx: Context) -> None:
        """Each tick: propose the changes waiting behind another (checked again against the table now)."""
        waiting, self._conf_waiting = self._conf_waiting, []
        now = ctx.now_ms()
        for change, origin, via, since in waiting:
            if now - since >= CONF_WAIT_MS:
                self._reject(ctx, origin, "conf_change_pending", via)
            else:
                self._conf_change(ctx, change, origin, via, since)

    def _relay(self, ctx: Context, msg: dict[str, Any]) -> None:
        """Carry a local actor's message to an actor of another member (only Raft actors talk across members)."""
        # An answer names the member that took the request ("via"; None: this one); anything else
        # goes to the member its address names.
        member = (msg["via"] or self._me) if "via" in msg else msg["to"].partition("/")[0]
        if member == self._me:
            ctx.send(msg["to"], msg["msg"])
        else:
            ctx.send(f"{member}/raft", {"t": "relay_in", "cid": self._cluster_id, "to": msg["to"], "msg": msg["msg"]})

    def _maybe_publish(self, ctx: Context) -> None:
        """Put our name and client URLs in the member table, once, as etcd's members publish theirs."""
        core, log = self._core, self._log
        assert core is not None and log is not None
        mine = membership.active(log.members).get(self._me)
        attrs = {"name": self._cfg.name, "client_urls": list(self._cfg.client_urls)}
        if not core.leader or mine is None or not attrs["name"] or all(mine.get(k) == v for k, v in attrs.items()):
            return
        self._conf_change(ctx, {"op": "attrs", "id": self._me, **attrs}, None, self._me)

    def _transfer(self, ctx: Context, target: str, origin: list[Any]) -> None:
        core = self._core
        assert core is not None
        error = core.transfer_leader(target)
        if error is not None:
            self._reject(ctx, origin, error)
        elif core.leader == target or target == self._me:
            self._answer(ctx, origin, {})
        else:
            self._transfers.append((origin, ctx.now_ms() + 2 * self._cfg.election_timeout_ms))

    # ------------------------------------------------------------------ Ready
    def _process_ready(self, ctx: Context) -> None:
        core = self._core
        assert core is not None
        if self._ri_outbox:
            self._send_remote_reads(ctx)
        for _ in range(_MAX_READY_ROUNDS):
            if self._stopped or not core.has_ready():
                break
            rd = core.ready()
            self._persist_and_send(ctx, rd)
            core.advance(rd)

    def _persist_and_send(self, ctx: Context, rd: Ready) -> None:
        core, log = self._core, self._log
        assert core is not None and log is not None
        # A leader's appends leave before its own log sync, so that the followers' syncs run while
        # its own does (as etcd's leader writes in parallel with replication). They hold entries and
        # a commit index that needs no durability of this Ready; the leader counts its own entries
        # only once they are saved, which is before any acknowledgement of them can be taken in.
        # Only in a term and vote already durable: a leader that just won (a lone voter with learners
        # wins, appends and saves in one turn) must not speak for a term a power loss could take back.
        appends = [(peer, msg) for peer, msg in rd.messages if msg["t"] == "app" and peer != "remote"]
        for peer, msg in appends:
            ctx.send(f"{peer}/raft", {"t": "raft", "cid": self._cluster_id, "msg": msg})
        saved = log.hard_state
        if appends and rd.entries and (rd.hard_state is None or (rd.hard_state.term, rd.hard_state.vote) == (saved.term, saved.vote)):
            ctx.flush()
        # Durable before anything that depends on it leaves this actor.
        log.save(self._must_sync(rd), rd.entries)
        for peer, msg in rd.messages:
            if peer == "remote" or msg["t"] == "app":
                continue
            ctx.send(f"{peer}/raft", {"t": "raft", "cid": self._cluster_id, "msg": msg})
        for peer in rd.snapshots:
            ctx.log("info", "sending a snapshot", peer=peer)
            ctx.send(self._apply_addr, {"t": "snap_make", "peer": peer})
        if rd.committed:
            self._apply_conf_changes(ctx, [e for e in rd.committed if e.kind == ENTRY_CONF])
            ctx.send(self._apply_addr, {"t": "apply", "entries": [[e.index, e.term, e.data] for e in rd.committed]})
        local: list[list[Any]] = []
        for index, read_ctx in rd.reads:
            if read_ctx[0] == "remote":
                _, follower, ids = read_ctx
                ctx.send(follower, {"t": "ri_resp", "cid": self._cluster_id, "index": index, "ids": ids})
            elif read_ctx[0] == "confirm":
                self._answer(ctx, read_ctx[1], {"index": index, "term": core.term})
            else:
                req, origin = read_ctx
                local.append([index, core.term, req, origin])
        if local:
            ctx.send(self._apply_addr, {"t": "reads", "reads": local})
        for read_ctx in rd.failed_reads:
            # Taken as leader, not confirmed before we stepped down (etcd: ErrLeaderChanged).
            if read_ctx[0] == "remote":
                _, follower, ids = read_ctx
                ctx.send(follower, {"t": "ri_resp", "cid": self._cluster_id, "index": 0, "ids": ids, "error": "leader_changed"})
            elif read_ctx[0] == "confirm":
                self._reject(ctx, read_ctx[1], "not_leader")
            else:
                self._reject(ctx, read_ctx[1], "leader_changed")

    def _must_sync(self, rd: Ready) -> HardState | None:
        """The hard state to save with this Ready: None if only the commit index moved.

        etcd's MustSync: a save is synced when it holds entries, a new term or a vote. A commit
        index alone need not be durable: a restarted member learns it again from the leader, and
        never below what its store applied (RaftCore.restore_applied). So the commit index on disk
        moves only when the term or vote next changes. That saves the leader one fsync per batch
        (2 Raft log commits per Put to 1, one member); the disk-crash swarm with it finds no lost
        entry, vote or term (README)."""
        hs, log = rd.hard_state, self._log
        assert log is not None
        saved = log.hard_state
        if hs is not None and not rd.entries and hs.term == saved.term and hs.vote == saved.vote:
            return None
        return hs

    def _apply_conf_changes(self, ctx: Context, entries: list[Entry]) -> None:
        core, log = self._core, self._log
        assert core is not None and log is not None
        for entry in entries:
            change = membership.decode_change(entry.data)
            members = membership.apply_to_members(change, log.members)
            conf = core.apply_conf_change(change["op"], change["id"])
            log.save(None, [], conf, members, conf_index=entry.index)
            if change["op"] != "remove":
                self._route(ctx, change["id"], members[change["id"]])
            ctx.log("info", "membership changed", op=change["op"], member=change["id"], voters=list(conf.voters), learners=list(conf.learners))
            if change["op"] == "remove" and change["id"] == self._me:
                self._stop_removed(ctx)

    def _stop_removed(self, ctx: Context) -> None:
        self._stopped = True
        ctx.log("warn", "this member was removed from the cluster; stopping")
        ctx.stop_member("removed from the cluster")

    # ------------------------------------------------------------------ snapshots
    def metrics(self) -> dict[str, Any]:
        """Plain numbers for /metrics (the process runtime asks): the round trips to each peer."""
        return {"peer_rtt": {peer: h.report() for peer, h in self._peer_rtt.items()}}

    def _probe_peers(self, ctx: Context) -> None:
        """etcd's prober: every PROBE_INTERVAL_MS, one probe to each peer's Raft actor (answered at once)."""
        log = self._log
        assert log is not None
        now = ctx.now_ms()
        if now < self._next_probe_ms:
            return
        self._next_probe_ms = now + PROBE_INTERVAL_MS
        for member_id in membership.active(log.members):
            if member_id != self._me:
                ctx.send(f"{member_id}/raft", {"t": "probe", "cid": self._cluster_id, "sent_us": ctx.now_us()})

    def _maybe_compact(self, applied: int, durable: int) -> None:
        """Drop the log below what followers may still need, and never past what the store holds
        durably (`durable`): a power loss may undo the store's last commit, and the log must still
        hold what it undoes (store.mvcc.MvccStore)."""
        log = self._log
        assert log is not None
        if applied - log.snapshot_index > self._cfg.snapshot_count:
            keep = min(CATCHUP_ENTRIES, self._cfg.snapshot_count // 2)
            log.compact(min(applied - keep, durable, log.last_index))

    def _relay_snapshot(self, ctx: Context, msg: dict[str, Any]) -> None:
        core, log = self._core, self._log
        assert core is not None and log is not None
        peer, index = msg["peer"], msg["index"]
        if core.role != LEADER:
            return  # deposed while the snapshot was being made: only a current leader sends one
        # The membership as of the snapshot's index, not as of now (later changes come in the log).
        at_index = log.conf_at(index)
        conf, members = at_index if at_index is not None else (core.conf, log.members)
        meta = {"index": index, "term": log.term(index) if log.snapshot_index <= index <= log.last_index else 0,
                "voters": list(conf.voters), "learners": list(conf.learners), "members": members}
        if meta["term"] == 0:
            core.snapshot_done(peer, index, ok=False)
            return
        ctx.send(f"{peer}/raft", {"t": "snap", "cid": self._cluster_id, "term": core.term, "meta": meta, "seq": msg["seq"],
                                  "data": msg["data"], "last": msg["last"]})
        if msg["last"]:
            core.snapshot_done(peer, index, ok=True)

    def _on_snapshot_installed(self, ctx: Context, meta: dict[str, Any]) -> None:
        core = self._core
        assert core is not None
        index = meta["index"]
        if index > core.commit:
            conf = ConfState(tuple(meta["voters"]), tuple(meta["learners"]))
            reset = core.restore_snapshot(index, meta["term"], conf, meta["members"])
            for member_id, info in membership.active(meta["members"]).items():
                self._route(ctx, member_id, info)
            ctx.log("info", "installed a snapshot", index=index, term=meta["term"], log_reset=reset)
        self._applied = max(self._applied, index)  # the store is there now
        core.ack_snapshot()  # through the Ready: after anything it acknowledges is durable

    def _on_hello(self, ctx: Context, msg: dict[str, Any]) -> None:
        """The apply actor started at `applied`; `snapshot`: the last snapshot it installed, if at `applied`.

        A crash between installing a snapshot in the store and resetting the Raft log leaves the
        store ahead of (or off) the log: finish the reset now, before anything is acknowledged.
        """
        core, log = self._core, self._log
        assert core is not None and log is not None
        applied, snap = msg["applied"], msg.get("snapshot")
        self._applied = max(self._applied, applied)
        if snap is not None and snap["index"] == applied and applied > core.commit:
            conf = ConfState(tuple(snap["voters"]), tuple(snap["learners"]))
            reset = core.restore_snapshot(applied, snap["term"], conf, snap["members"])
            for member_id, info in membership.active(snap["members"]).items():
                self._route(ctx, member_id, info)
            ctx.log("warn", "finished installing a snapshot after a restart", index=applied, term=snap["term"], log_reset=reset)
        elif applied > log.last_index:
            raise RuntimeError(f"the state machine is at {applied}, past the Raft log's last index {log.last_index}, with no snapshot record")
        core.restore_applied(applied)

    # ------------------------------------------------------------------ helpers
    def _after_step(self, ctx: Context, role_before: str, leader_before: str) -> None:
        core = self._core
        assert core is not None
        if core.role != role_before or core.leader != leader_before:
            ctx.log("info", "raft state changed", role=core.role, term=core.term, leader=core.leader)
            ctx.send(f"{self._me}/lease", {"t": "leader", "leader": core.leader, "is_leader": core.role == LEADER, "term": core.term})
            if core.leader and self._held:
                self._release_held(ctx)
            if self._transfers and core.role != LEADER and core.leader:
                for origin, _ in self._transfers:
                    self._answer(ctx, origin, {})
                self._transfers = []
            if leader_before and core.leader != leader_before:
                # Reads waiting on the old leader's answer won't get one.
                for req, origin in self._remote_reads.values():
                    self._reject(ctx, origin, "leader_changed")
                self._remote_reads.clear()
                self._ri_outbox = []
                self._ri_inflight = None

    def _from_my_cluster(self, ctx: Context, sender: str, msg: dict[str, Any]) -> bool:
        cid = msg.get("cid", 0)
        if not self._cluster_id and cid:
            self._cluster_id = cid  # a joining member learns its cluster from the first peer that talks to it
            assert self._log is not None
            self._log.save(None, [], cluster_id=cid)
        if cid != self._cluster_id:
            ctx.log("warn", "dropped a message from another cluster", sender=sender, cluster_id=f"{cid:x}")
            return False
        return True

    def _route(self, ctx: Context, member_id: str, info: dict[str, Any]) -> None:
        if member_id != self._me and info.get("peer_urls"):
            ctx.set_route(f"{member_id}/raft", info["peer_urls"][0])

    def _status(self) -> dict[str, Any]:
        core, log = self._core, self._log
        assert core is not None and log is not None
        return {
            "leader": core.leader,
            "raft_index": core.last_index(),
            "raft_term": core.term,
            "commit": core.commit,
            "is_learner": self._me in core.conf.learners,
            "cluster_id": self._cluster_id,
        }

    def _members_list(self) -> list[dict[str, Any]]:
        core, log = self._core, self._log
        assert core is not None and log is not None
        return [{"id": mid, **info, "is_learner": mid in core.conf.learners} for mid, info in sorted(membership.active(log.members).items())]

    def _answer(self, ctx: Context, origin: list[Any] | None, resp: dict[str, Any], via: str | None = None) -> None:
        """Answer a request; one another member took (`via`) is answered through that member."""
        if origin is None:
            return  # our own request (publishing attributes): nobody waits for it
        address, request_id = origin
        reply = {"t": "resp", "id": request_id, "resp": resp, "term": self._core.term if self._core else 0}
        self._relay(ctx, {"to": address, "via": via, "msg": reply})

    def _reject(self, ctx: Context, origin: list[Any] | None, error: str, via: str | None = None) -> None:
        self._answer(ctx, origin, {"error": error}, via)
