"""The simulation runtime: every actor in one process, on virtual time.

The same actor classes as in production run here. Every message crosses an
in-memory bus msgpack-encoded (what cannot cross a process boundary fails here
first). Time is virtual: the runtime jumps from event to event. All randomness
comes from the seed, so a run is reproduced exactly by its seed, and `digest`
hashes the whole trace to prove it.

Faults plug in through `Network`: it decides, for each wire message, whether
and when it arrives (drop, delay, duplicate, reorder, partition). Actors can
be crashed (all in-memory state lost) and restarted from their durable state.
Each member has a simulated disk (sim/disk.py, `Context.disk`): a power loss
(`power_loss`) crashes the member and loses every write it did not sync; the
disk can strike it mid-turn, from inside a write (`PowerLoss`). A slow disk
makes a turn take time: what the turn's syncs and reads cost (`SimDisk.slow_ms`)
delays what it sends, and the actor takes nothing else in until it is over.
"""

from __future__ import annotations

import hashlib
import os
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from petcd.actors.actor import MAX_BATCH_MESSAGES, Actor, Envelope, Message, member_of
from petcd.sim.disk import PowerLoss, SimDisk

ActorFactory = Callable[[], Actor]


class Network:
    """Reliable per-pair FIFO delivery with a small random latency; subclass to inject faults."""

    def __init__(self, min_latency_ms: int = 0, max_latency_ms: int = 2) -> None:
        assert 0 <= min_latency_ms <= max_latency_ms
        self.min_latency_ms = min_latency_ms
        self.max_latency_ms = max_latency_ms

    def deliveries(self, rng: random.Random, now_ms: int, sender: str, to: str) -> list[int]:
        """Arrival times for one wire message: [] drops it, two entries duplicate it."""
        return [now_ms + rng.randint(self.min_latency_ms, self.max_latency_ms)]

    def fifo(self, sender: str, to: str) -> bool:
        """Whether this pair keeps order (ZeroMQ does between two sockets)."""
        return True

    def extra_delay_ms(self, sender: str, to: str, msgs: list[Message]) -> int:
        """Extra latency for this batch, judged by its content (a fault may slow snapshots); 0: none."""
        return 0


@dataclass(order=True, slots=True)
class _Event:
    time_ms: int
    seq: int
    kind: str = field(compare=False)  # "deliver" | "timer"
    to: str = field(compare=False)
    payload: Any = field(compare=False)


class SimContext:
    """`Context` for one actor inside a `SimRuntime`."""

    def __init__(self, runtime: SimRuntime, address: str, incarnation: int) -> None:
        self._rt = runtime
        self._address = address
        self._incarnation = incarnation
        self._rng = random.Random(f"{runtime.seed}/{address}/{incarnation}")
        self.outbox: dict[str, list[Message]] = {}
        self.timers: dict[str, int] = {}  # name -> generation

    @property
    def address(self) -> str:
        return self._address

    def send(self, to: str, msg: Message) -> None:
        self.outbox.setdefault(to, []).append(msg)

    def flush(self) -> None:
        self._rt.send_now(self._address, self)

    def set_timer(self, name: str, delay_ms: int) -> None:
        assert delay_ms >= 0
        gen = self._rt.next_seq()
        self.timers[name] = gen
        self._rt.schedule(self._rt.now_ms + delay_ms, "timer", self._address, (self._incarnation, name, gen))

    def cancel_timer(self, name: str) -> None:
        self.timers.pop(name, None)

    def now_ms(self) -> int:
        return self._rt.now_ms

    def now_us(self) -> int:
        return self._rt.now_ms * 1000

    def random(self) -> float:
        return self._rng.random()

    def log(self, level: str, msg: str, **fields: Any) -> None:
        self._rt.trace_log(self._address, level, msg, fields)

    def set_route(self, address: str, url: str) -> None:
        pass  # every address is reachable on the simulated bus

    def stop_member(self, reason: str, *, failed: bool = False) -> None:
        self._rt.request_stop(member_of(self._address), reason + (" (failed)" if failed else ""))

    @property
    def disk(self) -> SimDisk:
        return self._rt.disk(member_of(self._address))


class SimRuntime:
    """A seeded, single-threaded world of actors."""

    def __init__(self, seed: int, network: Network | None = None, *, trace: bool = False) -> None:
        self.seed = seed
        self.now_ms = 0
        self.network = network or Network()
        self._rng = random.Random(f"{seed}/network")
        self._events: list[_Event] = []
        self._seq = 0
        self._factories: dict[str, ActorFactory] = {}
        self._actors: dict[str, Actor] = {}
        self._contexts: dict[str, SimContext] = {}
        self._incarnations: dict[str, int] = {}
        self._last_arrival: dict[tuple[str, str], int] = {}
        self._digest = hashlib.sha256()
        self.trace = trace
        self.log_lines: list[str] = []
        self.delivered_batches = 0
        self._stop_requests: list[str] = []
        self.stop_reasons: dict[str, str] = {}  # member -> why it last stopped itself
        self._disks: dict[str, SimDisk] = {}
        self._busy_until: dict[str, int] = {}  # actor -> end of its last turn, when a slow disk made it take time
        # Deliveries that arrived while their actor was busy and wait for its turn to end (by seq):
        # they sit in its socket, and die with it should it crash meanwhile.
        self._deferred: dict[str, set[int]] = {}
        # Messages a busy actor sent, which leave when its turn ends (seq -> departure): should it
        # crash before, they never left (found by the campaign, seed 3551: an apply message sent after
        # a slow fsync reached the next incarnation of its destination, past a hole).
        self._departing: dict[str, dict[int, int]] = {}
        # Called with (sender, destination, messages) for every wire message sent: how a test or a
        # checker sees traffic without changing it (e.g. every committed event, before compaction).
        self.taps: list[Callable[[str, str, list[Any]], None]] = []

    # -- world building
    def add(self, address: str, factory: ActorFactory) -> None:
        assert address not in self._factories, f"{address} added twice"
        self._factories[address] = factory
        self._start(address)

    def crash(self, address: str) -> None:
        """Kill an actor: its memory, timers and undelivered mail are gone; its durable state stays."""
        actor = self._actors.pop(address)
        actor.stop()
        del self._contexts[address]
        self._busy_until.pop(address, None)
        waiting = self._deferred.pop(address, set())
        unsent = {seq for seq, depart_ms in self._departing.pop(address, {}).items() if depart_ms > self.now_ms}
        if waiting or unsent:
            self._events = [ev for ev in self._events if not ((ev.to == address and ev.seq in waiting) or ev.seq in unsent)]
            heapq.heapify(self._events)
        self._record(f"crash {address}".encode())

    def restart(self, address: str) -> None:
        assert address not in self._actors, f"{address} is running"
        self._start(address)
        self._record(f"restart {address}".encode())

    def close(self) -> None:
        """The run is over: stop every actor, so that their stores close (their files, with them)."""
        for actor in self._actors.values():
            actor.stop()
        self._actors.clear()

    def crash_member(self, member: str) -> None:
        for address in [a for a in self._actors if member_of(a) == member]:
            self.crash(address)

    def restart_member(self, member: str) -> None:
        for address in [a for a in self._factories if member_of(a) == member and a not in self._actors]:
            self.restart(address)

    def disk(self, member: str) -> SimDisk:
        """The member's disk (made on first use; it outlives the member's crashes)."""
        disk = self._disks.get(member)
        if disk is None:
            disk = self._disks[member] = SimDisk(member, random.Random(f"{self.seed}/disk/{member}"))
        return disk

    def power_loss(self, member: str) -> list[str]:
        """The member's power goes out: its actors crash and its disk loses every write not synced."""
        self.crash_member(member)
        lost = [os.path.basename(p) for p in self.disk(member).power_loss()]  # no temporary directory in the digest
        self._record(f"power loss {member} lost {lost}".encode())
        self.trace_log(member, "warn", "power loss", {"lost_unsynced": lost})
        return lost

    def is_running(self, address: str) -> bool:
        return address in self._actors

    def actor(self, address: str) -> Actor:
        return self._actors[address]

    # -- running
    def run(self, *, until_ms: int | None = None, until: Callable[[], bool] | None = None, max_steps: int = 10_000_000) -> bool:
        """Process events until `until()` holds (True), time passes `until_ms` or no event is left (False)."""
        for _ in range(max_steps):
            if until is not None and until():
                return True
            if not self._events or (until_ms is not None and self._events[0].time_ms > until_ms):
                if until_ms is not None:
                    self.now_ms = max(self.now_ms, until_ms)
                return False
            self._step()
        raise RuntimeError(f"simulation did not settle within {max_steps} steps (seed {self.seed})")

    def digest(self) -> str:
        return self._digest.hexdigest()

    # -- used by SimContext
    def request_stop(self, member: str, reason: str) -> None:
        """An actor asked to stop its member: crash it once the current turn is over."""
        self._stop_requests.append(member)
        self.stop_reasons[member] = reason
        self.trace_log(member, "warn", "member stops itself", {"reason": reason})

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def schedule(self, time_ms: int, kind: str, to: str, payload: Any) -> int:
        seq = self.next_seq()
        heapq.heappush(self._events, _Event(time_ms, seq, kind, to, payload))
        return seq

    def trace_log(self, address: str, level: str, msg: str, fields: dict[str, Any]) -> None:
        if self.trace:
            self.log_lines.append(f"{self.now_ms:>9}ms {address} {level} {msg} {fields}")

    # -- internals
    def _start(self, address: str) -> None:
        incarnation = self._incarnations.get(address, 0) + 1
        self._incarnations[address] = incarnation
        actor = self._factories[address]()
        ctx = SimContext(self, address, incarnation)
        self._actors[address] = actor
        self._contexts[address] = ctx
        self._turn(address, ctx, lambda: actor.start(ctx))

    def _step(self) -> None:
        ev = heapq.heappop(self._events)
        assert ev.time_ms >= self.now_ms, "time went backwards"
        self.now_ms = ev.time_ms
        busy_until = self._busy_until.get(ev.to, 0)
        if busy_until > self.now_ms:
            # Still in a turn a slow disk stretched: it waits until the turn is over, keeping its
            # place (its seq) among what else waits for this actor, so each sender's order holds.
            heapq.heappush(self._events, _Event(busy_until, ev.seq, ev.kind, ev.to, ev.payload))
            if ev.kind == "deliver":
                self._deferred.setdefault(ev.to, set()).add(ev.seq)
            return
        if ev.kind == "deliver" and ev.to in self._deferred:
            self._deferred[ev.to].discard(ev.seq)
        if ev.kind == "timer":
            incarnation, name, gen = ev.payload
            ctx = self._contexts.get(ev.to)
            if ctx is None or self._incarnations[ev.to] != incarnation or ctx.timers.get(name) != gen:
                return  # stale: cancelled, re-armed, or its actor crashed since
            del ctx.timers[name]
            self._record(f"{self.now_ms} timer {ev.to} {name}".encode())
            actor = self._actors[ev.to]
            self._turn(ev.to, ctx, lambda: actor.on_timer(ctx, name))
            return
        # Deliver everything due now for this actor as one batch, as the process runtime drains its socket.
        wires = [ev.payload]
        while (
            self._events
            and self._events[0].time_ms == ev.time_ms
            and self._events[0].kind == "deliver"
            and self._events[0].to == ev.to
            and len(wires) < MAX_BATCH_MESSAGES
        ):
            wires.append(heapq.heappop(self._events).payload)
        if ev.to not in self._actors:
            return  # the destination is down: the messages are lost
        batch: list[Envelope] = []
        for raw in wires:
            self._record(f"{self.now_ms} deliver {ev.to} ".encode() + raw)
            sender, msgs = msgpack.unpackb(raw)
            batch.extend((sender, m) for m in msgs)
        self.delivered_batches += 1
        ctx = self._contexts[ev.to]
        actor = self._actors[ev.to]
        self._turn(ev.to, ctx, lambda: actor.receive(ctx, batch))

    def _turn(self, address: str, ctx: SimContext, call: Callable[[], None]) -> None:
        """Run one turn of an actor, then send what it queued; a power loss mid-turn sends nothing."""
        disk = self._disks.get(member_of(address))
        if disk is not None:
            disk.take_busy_ms()  # reads between turns (the invariant checker's) cost the actors nothing
        try:
            call()
        except PowerLoss:
            ctx.outbox.clear()
            self.power_loss(member_of(address))
            return
        finally:
            disk = self._disks.get(member_of(address))  # made on first use, perhaps in this turn
            busy_ms = disk.take_busy_ms() if disk is not None else 0
        if busy_ms:
            self._busy_until[address] = self.now_ms + busy_ms
        self._flush(address, ctx, self.now_ms + busy_ms)

    def send_now(self, address: str, ctx: SimContext) -> None:
        """Mid-turn (`Context.flush`): what the actor queued leaves now, after what its disk work so far cost."""
        disk = self._disks.get(member_of(address))
        self._send_outbox(address, ctx, self.now_ms + (disk.busy_ms if disk is not None else 0))

    def _flush(self, address: str, ctx: SimContext, depart_ms: int) -> None:
        while self._stop_requests:
            self.crash_member(self._stop_requests.pop())
        self._send_outbox(address, ctx, depart_ms)

    def _send_outbox(self, address: str, ctx: SimContext, depart_ms: int) -> None:
        outbox, ctx.outbox = ctx.outbox, {}
        for to, msgs in outbox.items():
            for tap in self.taps:
                tap(address, to, msgs)
            raw = msgpack.packb([address, msgs])
            extra_ms = self.network.extra_delay_ms(address, to, msgs)
            for arrival in self.network.deliveries(self._rng, depart_ms, address, to):
                arrival += extra_ms
                if self.network.fifo(address, to):
                    arrival = max(arrival, self._last_arrival.get((address, to), 0))
                    self._last_arrival[(address, to)] = arrival
                seq = self.schedule(arrival, "deliver", to, raw)
                if depart_ms > self.now_ms:
                    departing = self._departing.setdefault(address, {})
                    for old_seq in [q for q, d in departing.items() if d <= self.now_ms]:
                        del departing[old_seq]  # left already
                    departing[seq] = depart_ms

    def _record(self, data: bytes) -> None:
        self._digest.update(len(data).to_bytes(4, "big"))
        self._digest.update(data)
