"""The process runtime: one actor in one OS process, on ZeroMQ.

Each actor binds one PULL socket at its own endpoint and keeps one PUSH socket
per destination. A wire message is msgpack `[sender, [msg, ...]]`: every turn
the runtime drains what is pending (up to MAX_BATCH_MESSAGES), hands it to the
actor as one batch, fires due timers, then sends one wire message per
destination.

Run as: python -m petcd.actors.proc_runtime <kind> <json config>
"""

from __future__ import annotations

import heapq
import json
import os
import random
import signal
import sys
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import msgpack
import zmq

from petcd.actors.actor import MAX_BATCH_MESSAGES, Actor, Envelope, Message
from petcd.actors.runtime_log import LogLine
from petcd.actors.supervised import die_with_supervisor

# Wire messages queued for a destination that is not reading; past this they
# are dropped rather than blocking the actor (Raft retries, clients time out).
_SEND_HWM = 10_000
# Wire messages waiting in an actor's receive queue. Requests are admitted upstream (the gateway's
# pending bound, Raft's inflight window and unapplied-entry bound answer "too many requests"), so
# this is a backstop that keeps memory bounded if a peer floods us; past it ZeroMQ holds the
# sender's queue, then the sender drops (and logs).
_RECV_HWM = 100_000


class PeerFaults:
    """A test hook, off unless a member is started with --experimental-peer-fault-file.

    The file holds JSON {"drop_to": [member ids], "drop_from": [member ids]}: messages
    to or from those members are dropped, which partitions this member (used by
    `petcd chaos`). It is re-read when it changes; a missing file means no faults.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._mtime = 0.0
        self.drop_to: frozenset[str] = frozenset()
        self.drop_from: frozenset[str] = frozenset()

    def refresh(self) -> None:
        try:
            mtime = os.stat(self._path).st_mtime
        except FileNotFoundError:
            self.drop_to = self.drop_from = frozenset()
            self._mtime = 0.0
            return
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                with open(self._path) as f:
                    spec = json.load(f)
            except (OSError, ValueError):
                return  # half-written: read it again next time
            self.drop_to = frozenset(spec.get("drop_to", ()))
            self.drop_from = frozenset(spec.get("drop_from", ()))


class ProcContext:
    """`Context` backed by ZeroMQ sockets and the OS clock."""

    def __init__(self, address: str, endpoints: dict[str, str], zctx: zmq.Context, logger: LogLine, faults: PeerFaults | None = None,
                 socks_proxy: str = "") -> None:
        self._address = address
        # With peer TLS, connections to other members go through the member's TLS tunnel, a
        # SOCKS5 proxy at this "host:port" (rpc/peer_tls.py); "" connects directly.
        self._socks_proxy = socks_proxy
        self._logger = logger
        self.faults = faults
        self._endpoints = endpoints
        self._zctx = zctx
        self._pushes: dict[str, zmq.Socket] = {}
        self._outbox: dict[str, list[Message]] = {}
        self._timers: dict[str, float] = {}  # name -> deadline (monotonic seconds)
        self._timer_heap: list[tuple[float, str]] = []
        self._rng = random.Random()
        self._disk: Any = None  # a LocalDisk, made on first use (only the actors with a store load LMDB)
        self.stop_requested = False
        self.stop_failed = False  # the actor stopped its member because it cannot go on (a disk failure)

    @property
    def address(self) -> str:
        return self._address

    def send(self, to: str, msg: Message) -> None:
        self._outbox.setdefault(to, []).append(msg)

    def set_timer(self, name: str, delay_ms: int) -> None:
        deadline = time.monotonic() + delay_ms / 1000
        self._timers[name] = deadline
        heapq.heappush(self._timer_heap, (deadline, name))

    def cancel_timer(self, name: str) -> None:
        self._timers.pop(name, None)

    def now_ms(self) -> int:
        return int(time.monotonic() * 1000)

    def now_us(self) -> int:
        return int(time.monotonic() * 1_000_000)

    def random(self) -> float:
        return self._rng.random()

    def log(self, level: str, msg: str, **fields: Any) -> None:
        self._logger(level, msg, **fields)

    def set_route(self, address: str, url: str) -> None:
        endpoint = peer_endpoint(url)
        if self._endpoints.get(address) != endpoint:
            self._endpoints[address] = endpoint
            old = self._pushes.pop(address, None)
            if old is not None:
                old.close(linger=0)

    def stop_member(self, reason: str, *, failed: bool = False) -> None:
        self.log("error" if failed else "warn", "stopping the member", reason=reason)
        self.stop_requested = True
        self.stop_failed = self.stop_failed or failed

    @property
    def disk(self) -> Any:
        """The machine's disk (store/disk.py LocalDisk): real LMDB, synced as the actor asks."""
        if self._disk is None:
            from petcd.store.disk import LocalDisk

            self._disk = LocalDisk()
        return self._disk

    def disk_metrics(self) -> dict[str, Any]:
        """How long the disk's synced commits took (LocalDisk.metrics), if the actor has a disk."""
        return self._disk.metrics() if self._disk is not None else {}

    # -- runtime side
    def next_timeout_ms(self) -> int | None:
        while self._timer_heap and self._timers.get(self._timer_heap[0][1]) != self._timer_heap[0][0]:
            heapq.heappop(self._timer_heap)  # cancelled or re-armed
        if not self._timer_heap:
            return None
        return max(0, int((self._timer_heap[0][0] - time.monotonic()) * 1000) + 1)

    def due_timers(self) -> list[str]:
        now = time.monotonic()
        due = []
        while self._timer_heap and self._timer_heap[0][0] <= now:
            deadline, name = heapq.heappop(self._timer_heap)
            if self._timers.get(name) == deadline:
                del self._timers[name]
                due.append(name)
        return due

    def flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for to, msgs in outbox.items():
            if self.faults is not None and to.partition("/")[0] in self.faults.drop_to:
                continue
            sock = self._pushes.get(to)
            if sock is None:
                endpoint = self._endpoints.get(to)
                if endpoint is None:
                    self.log("warn", "no endpoint for destination; dropping", to=to, count=len(msgs))
                    continue
                sock = self._zctx.socket(zmq.PUSH)
                sock.setsockopt(zmq.SNDHWM, _SEND_HWM)
                sock.setsockopt(zmq.LINGER, 1000)
                if self._socks_proxy and endpoint.startswith("tcp://"):
                    sock.setsockopt(zmq.SOCKS_PROXY, self._socks_proxy.encode())
                sock.connect(endpoint)
                self._pushes[to] = sock
            try:
                sock.send(msgpack.packb([self._address, msgs]), zmq.NOBLOCK)
            except zmq.Again:
                self.log("warn", "destination not reading; dropping", to=to, count=len(msgs))


def peer_endpoint(url: str) -> str:
    """etcd's peer URL spelling to a ZeroMQ endpoint: "http://127.0.0.1:2380" -> "tcp://127.0.0.1:2380"."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port, f"bad peer URL {url!r}"
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    return f"tcp://{host}:{parts.port}"


# Exit status of an actor process whose actor asked to stop its member (e.g. removed from the cluster).
EXIT_MEMBER_STOPPED = 64
# ... and whose actor stopped its member because it cannot go on (its disk failed a write): a failure.
EXIT_MEMBER_FAILED = 65


class Gather:
    """Group commit for an actor whose turns end in a synced write (the Raft actor): when a turn has
    found at least MIN_REQUESTS requests (messages of the actor's `gathered_types`: clients are
    sending concurrently), wait GAP_S for more, again while more keep coming, at most MAX_S in all, so
    that under load one turn (one fsync, one message per destination) carries many requests, not two
    or three. Measured on one member, 50 clients putting: 2.9 writes per log sync without, 5.2 with.

    Waiting costs every request of the turn the wait, and gains nothing when no more come; so each
    wait that brings no request costs a credit, one that does restores them, and without credit the
    gatherer waits only every PROBE_TURNS turns. Nothing is acknowledged before its sync: this changes how much one sync carries, not what is
    synced."""

    GAP_S = 0.0003
    MAX_S = 0.002
    PROBE_TURNS = 16
    MIN_REQUESTS = 2
    CREDIT_TURNS = 8

    def __init__(self, types: frozenset[str], *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._types = types
        self._clock, self._sleep = clock, sleep  # a test's own, to script time
        self._credit = self.CREDIT_TURNS
        self._turns = 0

    def requests(self, envelopes: list[Envelope]) -> int:
        return sum(1 for _, msg in envelopes if msg.get("t") in self._types)

    def collect(self, batch: list[Envelope], drain: Callable[[], int]) -> None:
        """`batch` was just drained; while waiting pays, wait and `drain` more into it (`drain`
        returns how many messages it took)."""
        if self.requests(batch) < self.MIN_REQUESTS:
            return
        self._turns += 1
        if self._credit <= 0 and self._turns % self.PROBE_TURNS:
            return
        deadline = self._clock() + self.MAX_S
        gained = False
        while self._clock() < deadline:
            self._sleep(self.GAP_S)
            before = len(batch)
            if not drain() or not self.requests(batch[before:]):
                break
            gained = True
        self._credit = self.CREDIT_TURNS if gained else max(self._credit - 1, 0)


RUNTIME_METRICS = "runtime_metrics"
# Batch sizes are counted in these buckets (upper bounds, messages), as a Prometheus histogram.
BATCH_BUCKETS = (1, 4, 16, 64, 256, 1024, MAX_BATCH_MESSAGES)


class RuntimeStats:
    """Plain counters of one actor process, handed out on a "runtime_metrics" message (the gateway
    gathers them for /metrics): the batches and messages handed to the actor, their sizes, how often
    a turn found more waiting than one batch holds (a backlog), and what the actor itself counts
    (its optional `metrics()` method: plain numbers, e.g. the watch actor's watchers). The request
    is answered by the runtime, so every actor, the Raft actor included, reports without handling it."""

    def __init__(self) -> None:
        self.batches = 0
        self.messages = 0
        self.full_batches = 0
        self.bucket_counts = [0] * len(BATCH_BUCKETS)

    def take(self, ctx: "ProcContext", actor: Actor, batch: list[Envelope]) -> list[Envelope]:
        """Answer metrics requests in `batch`; count and return the rest."""
        rest: list[Envelope] = []
        asked: list[list[Any]] = []
        for sender, msg in batch:
            if msg.get("t") == RUNTIME_METRICS:
                asked.append(msg["origin"])
            else:
                rest.append((sender, msg))
        if rest:
            self.batches += 1
            self.messages += len(rest)
            self.full_batches += len(batch) >= MAX_BATCH_MESSAGES
            for i, bound in enumerate(BATCH_BUCKETS):
                if len(rest) <= bound:
                    self.bucket_counts[i] += 1
                    break
        if asked:
            counters = getattr(actor, "metrics", None)
            report = {"batches": self.batches, "messages": self.messages, "full_batches": self.full_batches,
                      "batch_buckets": list(zip(BATCH_BUCKETS, self.bucket_counts)), "actor": counters() if counters else {},
                      "disk": ctx.disk_metrics()}
            for origin in asked:
                ctx.send(origin[0], {"t": "resp", "id": origin[1], "resp": report})
        return rest


def _drain(pull: zmq.Socket, batch: list[Envelope], faults: PeerFaults | None) -> int:
    """Take what is pending on `pull` into `batch`, up to its bound; how many messages it took."""
    before = len(batch)
    while len(batch) < MAX_BATCH_MESSAGES:
        try:
            raw = pull.recv(zmq.NOBLOCK)
        except zmq.Again:
            break
        sender, msgs = msgpack.unpackb(raw)
        if faults is not None and sender.partition("/")[0] in faults.drop_from:
            continue
        batch.extend((sender, m) for m in msgs)
    return len(batch) - before


def run(
    actor: Actor, address: str, endpoints: dict[str, str], log_level: str = "info", extra_binds: tuple[str, ...] = (), fault_file: str = "",
    socks_proxy: str = "", gather: Gather | None = None,
) -> int:
    """Serve `actor` until SIGTERM/SIGINT (returns 0) or until it asks to stop its member (returns
    EXIT_MEMBER_STOPPED, or EXIT_MEMBER_FAILED if it stopped it as a failure): the process's exit status.
    `gather`: wait briefly for more messages before a turn (see `Gather`)."""
    zctx = zmq.Context()
    pull = zctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, _RECV_HWM)
    pull.bind(endpoints[address])
    for endpoint in extra_binds:  # e.g. the Raft actor's peer port
        pull.bind(endpoint)
    faults = PeerFaults(fault_file) if fault_file else None
    ctx = ProcContext(address, endpoints, zctx, LogLine(log_level, actor=address), faults, socks_proxy)
    stopping = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    stats = RuntimeStats()
    actor.start(ctx)
    ctx.flush()
    try:
        while not stopping and not ctx.stop_requested:
            if faults is not None:
                faults.refresh()
            timeout_ms = ctx.next_timeout_ms()
            try:
                ready = dict(poller.poll(200 if timeout_ms is None else min(timeout_ms, 200)))
            except zmq.ZMQError:
                continue  # interrupted by a signal
            batch: list[Envelope] = []
            if pull in ready and _drain(pull, batch, faults) and gather is not None:
                gather.collect(batch, lambda: _drain(pull, batch, faults))
            if batch:
                batch = stats.take(ctx, actor, batch)
            if batch:
                actor.receive(ctx, batch)
            for name in ctx.due_timers():
                actor.on_timer(ctx, name)
            ctx.flush()
    finally:
        actor.stop()
        zctx.destroy(linger=500)
    if not ctx.stop_requested:
        return 0
    return EXIT_MEMBER_FAILED if ctx.stop_failed else EXIT_MEMBER_STOPPED


def _build(kind: str, config: dict[str, Any]) -> Actor:
    # Imported here so a process loads only the actor it runs.
    if kind == "raft":
        from petcd.actors.raft_actor import RaftActor, RaftConfig

        return RaftActor(RaftConfig(**config))
    if kind == "apply":
        from petcd.actors.apply_actor import ApplyActor, ApplyConfig

        return ApplyActor(ApplyConfig(**config))
    if kind == "watch":
        from petcd.actors.watch_actor import WatchActor, WatchConfig

        return WatchActor(WatchConfig(**config))
    if kind == "lease":
        from petcd.actors.lease_actor import LeaseActor, LeaseConfig

        return LeaseActor(LeaseConfig(**config))
    raise SystemExit(f"unknown actor kind {kind!r}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    kind, spec = args[0], json.loads(args[1])
    die_with_supervisor(spec)
    actor = _build(kind, spec["config"])
    gathered = getattr(actor, "gathered_types", frozenset())
    status = run(
        actor,
        spec["address"],
        spec["endpoints"],
        spec.get("log_level", "info"),
        tuple(spec.get("binds", ())),
        spec.get("fault_file", ""),
        spec.get("socks_proxy", ""),
        Gather(gathered) if gathered else None,
    )
    sys.exit(status)


if __name__ == "__main__":
    main()
