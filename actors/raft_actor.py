"""The Raft actor: drives `RaftCore`, persists its log, hands committed entries to the apply actor.

Messages in:
  propose  {req, origin: [address, request id]}   from gateways and clients
  read     {req, origin}                           a linearizable read to be served at a read index
  hello    {applied}                               from the apply actor, on its start
  status   {origin}                                leader, term and indexes, answered at once
  raft     {msg}                                   from a peer's Raft actor
Messages out:
  apply    {entries: [[index, term, data]...]}     to the apply actor, in log order
  reads    {reads: [[index, term, req, origin]...]} to the apply actor
  resp     {id, error}                             to an origin, when a request cannot be taken
  raft     {msg}                                   to peers
Per turn: every proposal of the batch goes into one append, one synced LMDB
transaction, one message per destination.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import msgpack

from petcd.actors.actor import Context, Envelope
from petcd.actors.raft import RaftCore, Ready
from petcd.store.raftlog import RaftLog

_TICK_TIMER = "tick"
# Bound on the Ready loop within one turn: each round persists, so a handful suffice.
_MAX_READY_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class RaftConfig:
    member_id: str
    voters: tuple[str, ...]
    data_dir: str
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    sync: bool = True


class RaftActor:
    def __init__(self, config: RaftConfig) -> None:
        assert config.election_timeout_ms >= 5 * config.heartbeat_interval_ms, "election timeout must be at least 5 heartbeats"
        self._cfg = config
        self._apply_addr = f"{config.member_id}/apply"
        self._log: RaftLog | None = None
        self._core: RaftCore | None = None

    def start(self, ctx: Context) -> None:
        self._log = RaftLog(os.path.join(self._cfg.data_dir, "raft"), sync=self._cfg.sync)
        self._core = RaftCore(
            self._cfg.member_id,
            list(self._cfg.voters),
            self._log,
            ctx.random,
            election_ticks=self._cfg.election_timeout_ms // self._cfg.heartbeat_interval_ms,
        )
        ctx.log("info", "raft started", term=self._core.term, last_index=self._log.last_index, commit=self._core.commit)
        ctx.set_timer(_TICK_TIMER, self._cfg.heartbeat_interval_ms)
        if self._cfg.voters == (self._cfg.member_id,):
            self._core.tick()  # elapse at once: a lone voter needs no election timeout
            while self._core.role != "leader":
                self._core.tick()
        self._process_ready(ctx)

    def stop(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def on_timer(self, ctx: Context, name: str) -> None:
        assert name == _TICK_TIMER and self._core is not None
        role_before = self._core.role
        self._core.tick()
        ctx.set_timer(_TICK_TIMER, self._cfg.heartbeat_interval_ms)
        if self._core.role != role_before:
            ctx.log("info", "raft role changed", role=self._core.role, term=self._core.term)
        self._process_ready(ctx)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        core = self._core
        assert core is not None
        proposals: list[bytes] = []
        proposal_origins: list[list[Any]] = []
        for sender, msg in batch:
            kind = msg["t"]
            if kind == "propose":
                # "member" names who took the request: only that member's apply actor answers it.
                proposals.append(msgpack.packb({"req": msg["req"], "origin": msg["origin"], "member": self._cfg.member_id}))
                proposal_origins.append(msg["origin"])
            elif kind == "read":
                if not core.read_index((msg["req"], msg["origin"])):
                    self._reject(ctx, msg["origin"], "no_leader")
            elif kind == "status":
                address, request_id = msg["origin"]
                status = {"leader": core.leader, "raft_index": core.last_index(), "raft_term": core.term, "commit": core.commit}
                ctx.send(address, {"t": "resp", "id": request_id, "resp": status, "term": core.term})
            elif kind == "hello":
                core.restore_applied(msg["applied"])
            elif kind == "raft":
                core.step(sender.partition("/")[0], msg["msg"])
            else:
                raise ValueError(f"raft actor: unknown message type {kind!r} from {sender}")
        if proposals and not core.propose(proposals):
            for origin in proposal_origins:
                self._reject(ctx, origin, "no_leader")
        self._process_ready(ctx)

    # ------------------------------------------------------------------
    def _process_ready(self, ctx: Context) -> None:
        core = self._core
        assert core is not None
        for _ in range(_MAX_READY_ROUNDS):
            if not core.has_ready():
                break
            rd = core.ready()
            self._persist_and_send(ctx, rd)
            core.advance(rd)

    def _persist_and_send(self, ctx: Context, rd: Ready) -> None:
        assert self._log is not None and self._core is not None
        # Durable before anything that depends on it leaves this actor.
        self._log.save(rd.hard_state, rd.entries)
        for peer, msg in rd.messages:
            ctx.send(f"{peer}/raft", {"t": "raft", "msg": msg})
        if rd.committed:
            ctx.send(self._apply_addr, {"t": "apply", "entries": [[e.index, e.term, e.data] for e in rd.committed]})
        if rd.reads:
            term = self._core.term
            ctx.send(self._apply_addr, {"t": "reads", "reads": [[index, term, req, origin] for index, (req, origin) in rd.reads]})

    @staticmethod
    def _reject(ctx: Context, origin: list[Any], error: str) -> None:
        address, request_id = origin
        ctx.send(address, {"t": "resp", "id": request_id, "resp": {"error": error}})
