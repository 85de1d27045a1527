"""The apply actor: the single writer of a member's MVCC store.

Messages in:
  apply  {entries: [[index, term, data]...]}       committed entries, in log order, from the Raft actor
  reads  {reads: [[index, term, req, origin]...]}   linearizable reads, each servable once applied >= index
  read   {req, origin}                             a serializable read (no wait)
  snap_make {peer}                                 send a snapshot of the store towards `peer`
  snap_install {meta, seq, data, last, from}       a chunk of the leader's snapshot to install (`from`: the leader)
  snap_ack {peer, index, seq}                      relayed from `peer`'s apply actor: it wrote chunks up to `seq`
  history {from}                                   from the watch actor: events of revisions from..current
  leases_list {}                                   from the lease actor: every lease
  revision {}                                      from the lease actor (auto-compaction): the current revision
  defrag {origin}                                  from the gateway: rewrite the store compactly (etcd's Defragment)
  compaction_wait {origin}                         from the gateway, after a physical Compact applied: answer once
                                                   no compaction is in progress (its records are gone)
  hashkv {rev, check, reply}                       from a leader's corruption check (actors/corrupt_check.py), maybe
                                                   relayed from another member: HashKV at `rev` (0: current)
Messages out:
  hello  {applied, snapshot}                       to the Raft actor on start: where to resume; `snapshot` is the
                                                   meta of the snapshot last installed if the store is still at it
  applied {index, durable}                         to the Raft actor after each batch (it may compact its log below `durable`)
  compacting {}                                    to the Raft actor after a batch, while a store compaction is in progress
  snap_chunk {peer, index, seq, data, last}        to the Raft actor, to relay; at most SNAPSHOT_WINDOW_CHUNKS
                                                   unacknowledged per peer (snap_ack, relayed back, lets more go)
  snap_installed {meta}                            to the Raft actor once a snapshot is in place
  events {revs, current}                           to the watch actor: each new revision's events, in order
  lease_changes {changes: [[grant|revoke, id, ttl]...]}  to the lease actor, per batch, in apply order
  resp   {id, resp, term}                          to the origin of each request this member took
  hashkv_resp {check, member, hash, crev, rev}      to `reply` (relayed by the Raft actor if on another member);
                                                   {check, member, error} if compacted or a future revision

Each `apply` batch is one LMDB transaction that also records the applied
index, so a crash neither loses nor repeats an entry. The store comes from the
context's disk (`ctx.disk`, store/disk.py); should the disk fail a write (an
fsync error, a store that cannot even record a failure), the actor stops its
member at once, as etcd does, and answers nothing of the failed batch. So it
does when a record it reads fails its checksum (store/records.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from petcd.actors.actor import Context, Envelope
from petcd.store.disk import Disk
from petcd.store.errors import StoreError
from petcd.store.mvcc import COMPACT_STEP_RECORDS, MapFull, MvccStore
from petcd.store.records import CorruptRecord
from petcd.store.snapshot_files import IncomingSnapshot, OutgoingSnapshot, installed_snapshot, record_installed_snapshot

# Reads waiting for the store to catch up; past this the oldest are refused
# (the client retries) rather than letting memory grow without bound.
MAX_WAITING_READS = 100_000
SNAPSHOT_CHUNK_BYTES = 1 << 20
# Physical Compacts waiting for their records to go; past this one is refused (too many requests).
MAX_COMPACTION_WAITERS = 10_000
# Snapshot chunks sent to a peer and not yet acknowledged: what a snapshot holds in memory and queues.
SNAPSHOT_WINDOW_CHUNKS = 4
# Revisions of watch history read per request (a catching-up watcher asks again for the rest).
HISTORY_CHUNK_REVISIONS = 1000


@dataclass(frozen=True, slots=True)
class ApplyConfig:
    member_id: str
    data_dir: str
    sync: bool = True
    map_size_bytes: int = 8 << 30  # see store.mvcc.map_size_for_quota
    snapshot_chunk_bytes: int = SNAPSHOT_CHUNK_BYTES
    compact_step_records: int = COMPACT_STEP_RECORDS  # the same on every member: their stores must stay alike


class ApplyActor:
    def __init__(self, config: ApplyConfig) -> None:
        self._cfg = config
        self._store: MvccStore | None = None
        self._waiting: list[tuple[int, int, dict[str, Any], list[Any]]] = []  # (index, term, req, origin)
        self._compaction_waiters: list[list[Any]] = []  # origins of physical Compacts (compaction_wait)
        self._term = 0
        self._incoming_snapshot: IncomingSnapshot | None = None
        self._outgoing: dict[str, OutgoingSnapshot] = {}  # peer -> the snapshot being sent to it (one per peer)
        self._disk: Disk | None = None
        self._failed = False  # the disk failed a write: the member is stopping, nothing more is done

    def metrics(self) -> dict[str, int]:
        """Plain counters for /metrics (the process runtime asks; see actors/proc_runtime.py)."""
        return {"waiting_reads": len(self._waiting), "compaction_waiters": len(self._compaction_waiters)}

    def start(self, ctx: Context) -> None:
        disk = self._disk = ctx.disk
        self._store = disk.open_mvcc(os.path.join(self._cfg.data_dir, "mvcc"), map_size_bytes=self._cfg.map_size_bytes, sync=self._cfg.sync)
        applied = self._store.applied_index()
        ctx.log("info", "mvcc store opened", applied_index=applied, revision=self._store.current_revision())
        # The last snapshot installed, if the store is still at it: the Raft actor finishes the log
        # reset a crash may have cut short (store installed, Raft log not yet reset).
        snapshot = self._installed_snapshot_meta()
        if snapshot is not None and snapshot.get("index") != applied:
            snapshot = None
        ctx.send(f"{self._cfg.member_id}/raft", {"t": "hello", "applied": applied, "snapshot": snapshot})

    def stop(self) -> None:
        for outgoing in self._outgoing.values():
            outgoing.close()
        self._outgoing.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    def on_timer(self, ctx: Context, name: str) -> None:
        raise AssertionError(f"apply actor sets no timers, got {name!r}")

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        if self._failed:
            return  # the member is stopping (the process runtime stops after this turn, the simulator at once)
        try:
            self._receive(ctx, batch)
        except (lmdb.Error, OSError, MapFull) as err:
            # The disk did not make a write durable, or its map is full:
            # what the store holds is no longer known to be what is on disk. Stop, as etcd does.
            self._failed = True
            ctx.log("error", "the disk failed a write; stopping the member", error=repr(err))
            ctx.stop_member(f"disk failure: {err!r}", failed=True)
        except CorruptRecord as err:
            # A record read back is not what was written: applying on it would make this member
            # differ from the others, serving it would hand out what nobody wrote. Stop.
            self._failed = True
            ctx.log("error", "the store is corrupt; stopping the member", error=str(err))
            ctx.stop_member(f"corrupt store: {err}", failed=True)

    def _receive(self, ctx: Context, batch: list[Envelope]) -> None:
        store = self._store
        assert store is not None
        entries: list[tuple[int, int, dict[str, Any]]] = []  # (index, term, decoded data)
        for sender, msg in batch:
            kind = msg["t"]
            if kind == "apply":
                for index, term, data in msg["entries"]:
                    entries.append((index, term, msgpack.unpackb(data) if data else {}))
            elif kind == "reads":
                self._waiting.extend((index, term, req, origin) for index, term, req, origin in msg["reads"])
            elif kind == "read":
                self._serve_read(ctx, self._term, msg["req"], msg["origin"])
            elif kind == "history":
                self._history(ctx, sender, msg["from"])
            elif kind == "defrag":  # from the gateway (etcd's Defragment, this member only)
                if entries:
                    self._apply(ctx, entries)
                    entries = []
                size_before = store.db_size_bytes()[0]
                store.defragment()
                ctx.log("info", "defragmented the store", size_before=size_before, size_after=store.db_size_bytes()[0])
                origin = msg["origin"]
                _answer(ctx, origin, {})
            elif kind == "compaction_wait":
                if len(self._compaction_waiters) < MAX_COMPACTION_WAITERS:
                    self._compaction_waiters.append(msg["origin"])
                else:
                    _answer(ctx, msg["origin"], {"error": "too_many_requests"})
            elif kind == "hashkv":
                if entries:  # "current" means after what came before
                    self._apply(ctx, entries)
                    entries = []
                self._hashkv(ctx, msg)
            elif kind == "revision":  # from the lease actor's auto-compactor
                ctx.send(sender, {"t": "revision", "revision": store.current_revision()})
            elif kind == "leases_list":
                ctx.send(sender, {"t": "leases", "items": [list(x) for x in store.leases()]})
            elif kind == "snap_make":
                self._make_snapshot(ctx, msg["peer"])
            elif kind == "snap_ack":
                self._on_snapshot_ack(ctx, msg)
            elif kind == "snap_install":
                if entries:  # apply what came before the snapshot first: order matters
                    self._apply(ctx, entries)
                    entries = []
                self._install_chunk(ctx, msg)
            else:
                raise ValueError(f"apply actor: unknown message type {kind!r} from {sender}")
        if entries:
            self._apply(ctx, entries)
        self._serve_waiting_reads(ctx)
        if self._compaction_waiters and not store.compaction_pending():
            # Any compaction a waiter asked about was started before it asked (the gateway asks
            # once its Compact is applied): none in progress now means its records are gone.
            for origin in self._compaction_waiters:
                _answer(ctx, origin, {})
            self._compaction_waiters.clear()

    # ------------------------------------------------------------------
    def _apply(self, ctx: Context, entries: list[tuple[int, int, dict[str, Any]]]) -> None:
        """Apply in one transaction; answer, tell Raft, and publish the new revisions' events."""
        store = self._store
        assert store is not None
        # Empty entries (a new leader's) and membership changes only move the applied index here.
        requests = [(index, _valid_in_term(data.get("req", {"op": "noop"}), term), _request_key(data)) for index, term, data in entries]
        # The events as the writes made them, not read back after the commit: a compaction later in
        # the batch may already have dropped what they show (the simulator's 10,000-seed campaign,
        # seeds 1072 and 6670, found that when they were read back).
        events: list[list] = []
        responses = store.apply(requests, compact_step_records=self._cfg.compact_step_records, events=events)
        for i, req in enumerate(requests):
            if req[1] is _STALE and responses[i] is not None:
                responses[i] = {"error": "leader_changed"}
        assert len(responses) == len(entries)
        self._term = entries[-1][1]
        me = self._cfg.member_id
        for (_, term, data), resp in zip(entries, responses):
            origin = data.get("origin")
            # Only the member that took the request answers it; None marks an entry applied before.
            if resp is not None and origin is not None and data.get("member") == me:
                _answer(ctx, origin, resp, term)
        ctx.send(f"{me}/raft", {"t": "applied", "index": entries[-1][0], "durable": store.durable_applied_index()})
        if store.compaction_pending():
            ctx.send(f"{me}/raft", {"t": "compacting"})
        self._publish_events(ctx, events)
        # In apply order: a batch may revoke a lease and grant it again (a retried grant), and the
        # lease actor must end where the store ends (found by the simulator, seed 157).
        changes = []
        for (_, _, data), resp in zip(entries, responses):
            req = data.get("req", {})
            if resp is None or "error" in resp or req.get("op") not in ("lease_grant", "lease_revoke"):
                continue
            changes.append(["grant", req["ID"], req["TTL"]] if req["op"] == "lease_grant" else ["revoke", req["ID"], 0])
        if changes:
            ctx.send(f"{me}/lease", {"t": "lease_changes", "changes": changes})

    def _publish_events(self, ctx: Context, events: list[list]) -> None:
        """Every new revision's events go to the watch actor, in order, whole revisions per message."""
        for start in range(0, len(events), HISTORY_CHUNK_REVISIONS):
            revs = events[start:start + HISTORY_CHUNK_REVISIONS]
            ctx.send(f"{self._cfg.member_id}/watch", {"t": "events", "revs": revs, "current": revs[-1][0]})

    def _hashkv(self, ctx: Context, msg: dict[str, Any]) -> None:
        store = self._store
        assert store is not None
        me = self._cfg.member_id
        answer: dict[str, Any] = {"t": "hashkv_resp", "check": msg["check"], "member": me}
        try:
            answer["hash"], answer["crev"], answer["rev"] = store.hash_kv(msg["rev"])
        except StoreError as err:
            answer["error"] = err.name
        reply = msg["reply"]
        if reply.partition("/")[0] == me:
            ctx.send(reply, answer)
        else:
            ctx.send(f"{me}/raft", {"t": "relay", "to": reply, "msg": answer})

    def _history(self, ctx: Context, sender: str, from_rev: int) -> None:
        store = self._store
        assert store is not None
        current = store.current_revision()
        if from_rev == 0 or from_rev > current:
            ctx.send(sender, {"t": "history", "from": from_rev, "revs": [], "through": current, "current": current})
            return
        try:
            revs = store.events(from_rev, current, HISTORY_CHUNK_REVISIONS)
        except StoreError:
            ctx.send(sender, {"t": "history", "from": from_rev, "error": "compacted", "compact_revision": store.compact_revision()})
            return
        through = revs[-1][0] if len(revs) == HISTORY_CHUNK_REVISIONS else current
        ctx.send(sender, {"t": "history", "from": from_rev, "revs": revs, "through": through, "current": current})

    def _serve_waiting_reads(self, ctx: Context) -> None:
        if not self._waiting:
            return
        store = self._store
        assert store is not None
        applied = store.applied_index()
        still: list[tuple[int, int, dict[str, Any], list[Any]]] = []
        for index, term, req, origin in self._waiting:
            if index <= applied:
                self._serve_read(ctx, term, req, origin)
            else:
                still.append((index, term, req, origin))
        if len(still) > MAX_WAITING_READS:
            for _, _, _, origin in still[: len(still) - MAX_WAITING_READS]:
                _answer(ctx, origin, {"error": "too_many_requests"})
            still = still[len(still) - MAX_WAITING_READS :]
        self._waiting = still

    def _serve_read(self, ctx: Context, term: int, req: dict[str, Any], origin: list[Any]) -> None:
        store = self._store
        assert store is not None
        try:
            resp = store.range(req)
        except StoreError as err:
            resp = {"error": err.name, "code": err.grpc_code, "message": err.message}
        _answer(ctx, origin, resp, term)

    # ------------------------------------------------------------------ snapshots
    def _snapshot_path(self, name: str) -> str:
        return os.path.join(self._cfg.data_dir, f"snapshot-{name}.mdb")

    def _make_snapshot(self, ctx: Context, peer: str) -> None:
        """Copy the store as of now and start sending it to `peer` through the Raft actor (a window
        of chunks at a time); a snapshot still on its way to that peer is given up."""
        store = self._store
        assert store is not None
        previous = self._outgoing.pop(peer, None)
        if previous is not None:
            previous.close()
        outgoing = self._outgoing[peer] = OutgoingSnapshot(store, self._snapshot_path(f"out-{peer}"), self._cfg.snapshot_chunk_bytes,
                                                           SNAPSHOT_WINDOW_CHUNKS)
        ctx.log("info", "made a snapshot", peer=peer, index=outgoing.index, size_bytes=outgoing.size, chunks=outgoing.chunk_count)
        self._send_chunks(ctx, peer, outgoing)

    def _send_chunks(self, ctx: Context, peer: str, outgoing: OutgoingSnapshot) -> None:
        for seq, data, last in outgoing.due():
            ctx.send(f"{self._cfg.member_id}/raft", {"t": "snap_chunk", "peer": peer, "index": outgoing.index, "seq": seq, "data": data,
                                                     "last": last})

    def _on_snapshot_ack(self, ctx: Context, msg: dict[str, Any]) -> None:
        peer = msg["peer"]
        outgoing = self._outgoing.get(peer)
        if outgoing is None or outgoing.index != msg["index"]:
            return  # an acknowledgement of a snapshot given up since
        outgoing.ack(msg["seq"])
        if outgoing.done:
            outgoing.close()
            del self._outgoing[peer]
        else:
            self._send_chunks(ctx, peer, outgoing)

    def _record_installed_snapshot(self, meta: dict[str, Any]) -> None:
        assert self._disk is not None
        record_installed_snapshot(self._disk, self._cfg.data_dir, {k: meta[k] for k in ("index", "term", "voters", "learners", "members")},
                                  self._cfg.sync)

    def _installed_snapshot_meta(self) -> dict[str, Any] | None:
        assert self._disk is not None
        return installed_snapshot(self._disk, self._cfg.data_dir)

    def _install_chunk(self, ctx: Context, msg: dict[str, Any]) -> None:
        store = self._store
        assert store is not None
        if msg["seq"] == 0:
            if self._incoming_snapshot is not None:
                self._incoming_snapshot.abandon()
            self._incoming_snapshot = IncomingSnapshot(self._snapshot_path("in"))
        incoming = self._incoming_snapshot
        if incoming is None or not incoming.write(msg["seq"], msg["data"]):
            return  # a chunk of a snapshot we are not receiving (its start was lost): the leader sends again
        # The leader's apply actor sends more once this one is written.
        me = self._cfg.member_id
        ack = {"t": "snap_ack", "peer": me, "index": msg["meta"]["index"], "seq": msg["seq"]}
        ctx.send(f"{me}/raft", {"t": "relay", "to": f"{msg['from']}/apply", "msg": ack})
        if not msg["last"]:
            return
        self._incoming_snapshot = None
        meta = msg["meta"]
        if meta["index"] > store.applied_index():
            # Durable before the store changes: after a crash right after the install, the Raft
            # actor learns from it (in "hello") the (index, term, membership) to reset its log to.
            self._record_installed_snapshot(meta)
            leases_before = dict(store.leases())
            incoming.install(store)
            if store.applied_index() != meta["index"]:
                raise RuntimeError(f"installed a snapshot at {meta['index']} but the store is at {store.applied_index()}")
            self._tell_lease_actor_of_snapshot(ctx, leases_before, dict(store.leases()))
        else:
            incoming.abandon()
        ctx.send(f"{self._cfg.member_id}/raft", {"t": "snap_installed", "meta": meta})
        # The store jumped: watchers catch up from its history (or learn it was compacted).
        ctx.send(f"{self._cfg.member_id}/watch", {"t": "restored", "current": store.current_revision()})


    def _tell_lease_actor_of_snapshot(self, ctx: Context, before: dict[int, int], after: dict[int, int]) -> None:
        """The store's leases were replaced wholesale: the lease actor gets the difference, as if applied.

        Without it, a member that caught up by snapshot and then led never expired the leases
        granted in what the snapshot covered (found by the simulator: seeds 1000 and 1040, all faults)."""
        changes: list[list[Any]] = [["revoke", lease_id, 0] for lease_id in sorted(before.keys() - after.keys())]
        changes += [["grant", lease_id, ttl] for lease_id, ttl in sorted(after.items()) if before.get(lease_id) != ttl]
        if changes:
            ctx.send(f"{self._cfg.member_id}/lease", {"t": "lease_changes", "changes": changes})


def _request_key(data: dict[str, Any]) -> bytes | None:
    """Who asked, uniquely: the same proposal delivered twice has the same key (applied once)."""
    origin = data.get("origin")
    if origin is None or "req" not in data:
        return None
    return msgpack.packb([data.get("member"), origin[0], origin[1]])


# A request that was only valid for the leader that proposed it, appended in a later term.
_STALE: dict[str, Any] = {"op": "noop"}


def _valid_in_term(req: dict[str, Any], term: int) -> dict[str, Any]:
    """A lease expiry decided by the leader of one term means nothing if appended in another."""
    leader_term = req.get("leader_term")
    return req if leader_term is None or leader_term == term else _STALE


def _answer(ctx: Context, origin: list[Any], resp: dict[str, Any], term: int | None = None) -> None:
    """The answer to a request from `origin` ([address, request id], see rpc/link.py)."""
    msg: dict[str, Any] = {"t": "resp", "id": origin[1], "resp": resp}
    if term is not None:
        msg["term"] = term
    ctx.send(origin[0], msg)
