"""Fault injection for the simulator: a faulty network, and a nemesis that starts and stops faults.

`FaultyNetwork` decides the fate of each wire message. Faults touch only
messages that cross members (the member parts of sender and destination
differ): inside one member the actors talk over ipc in production, which
neither loses nor reorders (a message to a crashed actor is lost, but the
runtime does that). Random faults -- drop, duplicate, delay, reorder -- apply
between two of the network's `members` (the Raft members); links with a
client end get them only with `fault_clients=True`, because a duplicated
client request is applied twice and the simulated client cannot tell.
Partitions block (from member, to member) pairs, one set per tag.

`Nemesis` draws, from the rng it is given, when to start which fault and for
how long, and undoes it at its end: partitions (isolate, split, one_way,
bridge, leader), crash and restart of a member, pauses, timer-rate skew, and
the network's random faults, and a member's disk (power loss, failed fsync,
full disk: sim/disk.py). Every start and stop goes to `Nemesis.log`.

Three places reach into `SimRuntime` internals, for want of a public hook:
`pause_member` (`_events`), `skew_timers` (`_contexts`) and
`Nemesis._free_members` (`_factories`: which actors a member has).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from petcd.actors.actor import Context, Envelope, member_of
from petcd.store.keys import rev_from_bytes
from petcd.store.mvcc import ALARM_CORRUPT, ALARM_DEACTIVATE
from petcd.actors.corrupt_check import PEER_WAIT_MS
from petcd.sim.cluster import CORRUPT_CHECK_MS
from petcd.sim.runtime import Network, SimRuntime

Pair = tuple[str, str]  # (from member, to member)

PARTITION_KINDS = ("isolate", "split", "one_way", "bridge", "leader")
MEMBER_KINDS = ("crash", "pause", "clock")
NETWORK_KINDS = ("drop", "duplicate", "delay", "reorder")
# Aimed at Raft's corners: a snapshot arriving late, across a leader change (from a deposed
# leader); a leader cut off while its timers run slow, so it believes it leads (and answers lease
# keep-alives) while the others elect a new leader.
RAFT_KINDS = ("late_snapshot", "stale_leader")
# A member's disk (sim/disk.py): a power loss that strikes after the member's next few writes (and
# loses what it did not sync), an fsync that fails (the member must stop), a full disk.
# And a byte flipped in one record of a member's store, which petcd must flag (the periodic
# corruption check's CORRUPT alarm, or the member stopping on the record's checksum), never serve.
DISK_KINDS = ("disk-crash", "fsync-fail", "disk-full", "disk-slow", "corrupt")
ALL_KINDS = PARTITION_KINDS + MEMBER_KINDS + NETWORK_KINDS + RAFT_KINDS + DISK_KINDS
KNOWN_KINDS = ALL_KINDS
# Faults that take a member down, or may (a write a full disk fails can stop it): at most max_down at once.
DOWN_KINDS = ("crash", "pause", "disk-crash", "fsync-fail", "disk-full", "corrupt")
KIND_GROUPS = {"partition": PARTITION_KINDS, "network": NETWORK_KINDS, "raft": RAFT_KINDS, "disk": DISK_KINDS, "all": ALL_KINDS}
_PARTITION_TAG = "partition"
# A `corrupt` fault lasts until petcd flags it (polled this often), at most this long after the
# faults heal: the leader's next check may be armed under the slowest clock fault (a stale leader's
# timers run at a quarter of the rate), the check in flight waits for its peers (cut off before the
# heal) and ends, then one more check runs; plus a margin for an election.
CORRUPT_POLL_MS = 500
CORRUPT_FLAG_BOUND_MS = 4 * CORRUPT_CHECK_MS + PEER_WAIT_MS + CORRUPT_CHECK_MS + 2000
# Once a flip is repaired, the operator looks for the CORRUPT alarm this often, to the end of the run,
# and disarms it: a check that started before the repair may still raise it, seconds later (seed 266).
DISARM_RETRY_MS = 1000
# A new flip waits until no alarm has been seen for this long, so that it is not credited with one
# raised for the last.
DISARM_QUIET_MS = 2 * CORRUPT_CHECK_MS


def _check_probability(name: str, p: float) -> None:
    assert 0.0 <= p <= 1.0, f"{name} probability {p} outside [0, 1]"


class FaultyNetwork(Network):
    """`Network` with random message faults, partitions between members, and held (paused) members."""

    def __init__(
        self,
        members: Iterable[str],
        *,
        min_latency_ms: int = 0,
        max_latency_ms: int = 2,
        drop: float = 0.0,
        duplicate: float = 0.0,
        delay: float = 0.0,
        max_delay_ms: int = 50,
        reorder: bool = False,
        fault_clients: bool = False,
    ) -> None:
        super().__init__(min_latency_ms, max_latency_ms)
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        assert self.members, "a network needs members"
        assert max_delay_ms >= 1
        self._member_set = frozenset(self.members)
        self.max_delay_ms = max_delay_ms
        self.fault_clients = fault_clients
        self.drop = self.duplicate = self.delay = 0.0
        self.reorder = False
        self.configure(drop=drop, duplicate=duplicate, delay=delay, reorder=reorder)
        self._blocks: dict[str, frozenset[Pair]] = {}
        self._blocked: frozenset[Pair] = frozenset()
        self._held_until_ms: dict[str, int] = {}
        # Snapshot chunks between members arrive this much later (0: off); later messages on the
        # same link wait behind them (a congested link), as FIFO links do.
        self.snapshot_delay_ms = 0
        self.counts: Counter[str] = Counter()  # "blocked", "dropped", "delayed", "duplicated", "held", "snapshot_delayed"

    def configure(
        self, *, drop: float | None = None, duplicate: float | None = None, delay: float | None = None, reorder: bool | None = None
    ) -> None:
        """Set the random faults' probabilities (None leaves one as it is)."""
        for name, p in (("drop", drop), ("duplicate", duplicate), ("delay", delay)):
            if p is not None:
                _check_probability(name, p)
                setattr(self, name, p)
        if reorder is not None:
            self.reorder = reorder

    # -- Network
    def deliveries(self, rng: random.Random, now_ms: int, sender: str, to: str) -> list[int]:
        arrivals = super().deliveries(rng, now_ms, sender, to)
        src, dst = member_of(sender), member_of(to)
        if src != dst:
            if (src, dst) in self._blocked:
                self.counts["blocked"] += 1
                return []
            if self._faulty(src, dst):
                arrivals = self._random_faults(rng, arrivals[0])
        hold_ms = self._held_until_ms.get(dst)
        if hold_ms is not None and arrivals and arrivals[0] < hold_ms:
            self.counts["held"] += 1
            arrivals = [max(a, hold_ms) for a in arrivals]
        return arrivals

    def fifo(self, sender: str, to: str) -> bool:
        src, dst = member_of(sender), member_of(to)
        return not (self.reorder and src != dst and self._faulty(src, dst))

    def extra_delay_ms(self, sender: str, to: str, msgs: list[Any]) -> int:
        if self.snapshot_delay_ms <= 0 or member_of(sender) == member_of(to):
            return 0
        if not any(isinstance(m, dict) and m.get("t") == "snap" for m in msgs):
            return 0
        self.counts["snapshot_delayed"] += 1
        return self.snapshot_delay_ms

    # -- partitions
    def block(self, pairs: Iterable[Pair], tag: str = _PARTITION_TAG) -> frozenset[Pair]:
        """Drop every message from a member to another for each (from, to) pair; replaces the tag's previous block."""
        blocked = frozenset(pairs)
        assert all(a != b for a, b in blocked), "a member is never partitioned from itself"
        self._blocks[tag] = blocked
        self._rebuild()
        return blocked

    def isolate(self, member: str, tag: str = _PARTITION_TAG) -> frozenset[Pair]:
        """Cut `member` off from every other member, both ways."""
        self._known(member)
        others = [m for m in self.members if m != member]
        return self.block([(member, o) for o in others] + [(o, member) for o in others], tag)

    def isolate_leader(self, leader: str, tag: str = _PARTITION_TAG) -> frozenset[Pair]:
        """`isolate` the member the caller found to be leader."""
        return self.isolate(leader, tag)

    def split(self, groups: Sequence[Collection[str]], tag: str = _PARTITION_TAG) -> frozenset[Pair]:
        """Symmetric partition: members talk only within their group. Groups are disjoint and cover all members."""
        side = self._sides(groups)
        return self.block([(a, b) for a in self.members for b in self.members if side[a] != side[b]], tag)

    def one_way(self, src: str, dst: str, tag: str = _PARTITION_TAG) -> frozenset[Pair]:
        """Asymmetric: `src`'s messages to `dst` are lost, `dst`'s to `src` arrive."""
        self._known(src)
        self._known(dst)
        return self.block([(src, dst)], tag)

    def bridge(self, left: Collection[str], right: Collection[str], bridge_member: str, tag: str = _PARTITION_TAG) -> frozenset[Pair]:
        """Two halves that cannot talk, plus one member that talks to both."""
        self._sides([left, right, [bridge_member]])
        return self.block([(a, b) for a in left for b in right] + [(b, a) for a in left for b in right], tag)

    def heal(self, tag: str | None = None) -> None:
        """Lift one tag's block, or every block."""
        if tag is None:
            self._blocks.clear()
        else:
            self._blocks.pop(tag, None)
        self._rebuild()

    def is_blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self._blocked

    @property
    def blocked_pairs(self) -> frozenset[Pair]:
        return self._blocked

    # -- pauses
    def hold(self, member: str, until_ms: int) -> None:
        """Messages to `member` arrive no earlier than `until_ms` (buffered, as a stopped process's socket)."""
        self._held_until_ms[member] = until_ms

    def release(self, member: str) -> None:
        self._held_until_ms.pop(member, None)

    @property
    def held(self) -> dict[str, int]:
        return dict(self._held_until_ms)

    # -- internals
    def _faulty(self, src: str, dst: str) -> bool:
        return self.fault_clients or (src in self._member_set and dst in self._member_set)

    def _random_faults(self, rng: random.Random, arrival_ms: int) -> list[int]:
        if self.drop > 0.0 and rng.random() < self.drop:
            self.counts["dropped"] += 1
            return []
        if self.delay > 0.0 and rng.random() < self.delay:
            self.counts["delayed"] += 1
            arrival_ms += rng.randint(1, self.max_delay_ms)
        if self.duplicate > 0.0 and rng.random() < self.duplicate:
            self.counts["duplicated"] += 1
            return [arrival_ms, arrival_ms + rng.randint(0, self.max_delay_ms)]
        return [arrival_ms]

    def _sides(self, groups: Sequence[Collection[str]]) -> dict[str, int]:
        """member -> its group's position; asserts the groups are disjoint and cover the members."""
        assert len(groups) >= 2 and all(groups), "a split needs two non-empty groups at least"
        side = {m: g for g, group in enumerate(groups) for m in group}
        assert sum(len(g) for g in groups) == len(side), f"groups {groups} overlap"
        assert set(side) == self._member_set, f"groups {groups} do not cover members {self.members}"
        return side

    def _known(self, member: str) -> None:
        assert member in self._member_set, f"{member!r} is not one of {self.members}"

    def _rebuild(self) -> None:
        self._blocked = frozenset().union(*self._blocks.values())


# ---------------------------------------------------------------------------------------------
# Faults on a runtime's actors


def pause_member(runtime: SimRuntime, network: FaultyNetwork, member: str, until_ms: int) -> int:
    """Freeze `member` until `until_ms`, as SIGSTOP on all its processes; returns how many events were deferred.

    Its pending timers and the messages already on their way to it are moved to
    `until_ms`, and the network holds new messages to it until then, so none of
    its actors runs before `until_ms`; nothing is lost. At `until_ms` everything
    due arrives at once, in the order it was scheduled. A pause cannot end early.
    """
    assert until_ms >= runtime.now_ms
    network.hold(member, until_ms)
    events = runtime._events  # noqa: SLF001 -- no public hook to defer events yet
    moved = 0
    for ev in events:
        if ev.time_ms < until_ms and member_of(ev.to) == member:
            ev.time_ms = until_ms
            moved += 1
    if moved:
        heapq.heapify(events)
    return moved


def skew_timers(runtime: SimRuntime, member: str, rate: float) -> Callable[[], None]:
    """Run `member`'s timers at `rate` (2.0: its clock runs twice as fast); returns the undo.

    A timer armed while skewed fires after round(delay / rate) ms of virtual time.
    Timers armed before keep their deadline. `ctx.now_ms()` is not skewed (no
    production actor reads it: Raft's time is its tick timer). Actors started
    after this call (a restart) run at the true rate.
    """
    assert rate > 0.0
    contexts = [ctx for address, ctx in sorted(runtime._contexts.items()) if member_of(address) == member]  # noqa: SLF001
    for ctx in contexts:
        base = type(ctx).set_timer.__get__(ctx)

        def set_timer(name: str, delay_ms: int, _base: Callable[[str, int], None] = base) -> None:
            _base(name, max(0, round(delay_ms / rate)))

        ctx.set_timer = set_timer  # type: ignore[method-assign]

    def undo() -> None:
        for ctx in contexts:
            ctx.__dict__.pop("set_timer", None)

    return undo


def current_leader(runtime: SimRuntime, members: Iterable[str]) -> str | None:
    """The running member that believes it leads in the highest term (RaftActor._core), or None."""
    best: tuple[int, str] | None = None
    for m in members:
        address = f"{m}/raft"
        if not runtime.is_running(address):
            continue
        core = getattr(runtime.actor(address), "_core", None)
        if core is not None and core.role == "leader" and (best is None or core.term > best[0]):
            best = (core.term, m)
    return best[1] if best else None


# ---------------------------------------------------------------------------------------------
# The nemesis


@dataclass(frozen=True, slots=True)
class FaultEvent:
    at_ms: int
    action: str  # "start" | "stop"
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.at_ms:>9}ms nemesis {self.action} {self.kind} {self.detail}"


@dataclass(slots=True)
class _Fault:
    kind: str
    detail: str
    until_ms: int
    member: str | None  # the member a crash, pause or clock fault holds
    undo: Callable[[], None]
    over: Callable[[], str] | None = None  # a fault that ends when this says how (polled), not at until_ms


class Nemesis:
    """Starts a random fault every exponentially distributed interval, each for a random duration.

    Drive it with `step()` at (or after) `next_due_ms()`, or `install()` it as
    an actor so the runtime drives it. `heal_all()` ends the faults and starts
    no more. At most `max_active` faults at once, one of each kind, one
    partition at a time, and at most `max_down` members crashed or paused.
    """

    def __init__(
        self,
        rng: random.Random,
        runtime: SimRuntime,
        network: FaultyNetwork,
        members: Sequence[str],
        kinds: Collection[str] = ("partition", "crash"),
        *,
        mean_interval_ms: int = 2000,
        min_duration_ms: int = 100,
        max_duration_ms: int = 3000,
        max_active: int = 2,
        max_down: int | None = None,
        drop: float = 0.1,
        duplicate: float = 0.05,
        delay: float = 0.2,
        clock_rates: tuple[float, float] = (0.5, 2.0),
    ) -> None:
        assert members and len(set(members)) == len(members)
        assert mean_interval_ms > 0 and 0 < min_duration_ms <= max_duration_ms and max_active >= 1
        assert 0.0 < clock_rates[0] <= clock_rates[1]
        for name, p in (("drop", drop), ("duplicate", duplicate), ("delay", delay)):
            _check_probability(name, p)
        self._rng = rng
        self._rt = runtime
        self._net = network
        self.members = tuple(members)
        self.kinds = _expand_kinds(kinds)
        self._mean_interval_ms = mean_interval_ms
        self._min_duration_ms = min_duration_ms
        self._max_duration_ms = max_duration_ms
        self._max_active = max_active
        self._max_down = max(1, (len(members) - 1) // 2) if max_down is None else max_down
        self._probabilities = {"drop": drop, "duplicate": duplicate, "delay": delay}
        self._clock_rates = clock_rates
        self._active: list[_Fault] = []
        self._enabled = True
        self._next_start_ms = runtime.now_ms + self._interval_ms()
        self.log: list[FaultEvent] = []
        # `corrupt`: members whose store holds a flipped byte now; flips never flagged (a failure);
        # the operator's disarm of the CORRUPT alarm after a repair (sent by the driver actor).
        self.corrupted: set[str] = set()
        self.unflagged: list[str] = []
        self._flag_deadline_ms: int | None = None  # set at heal_all
        self._operator = False  # a flip was repaired: the operator watches for the alarm from then on
        self._next_disarm_ms = 0
        self._last_alarm_ms: int | None = None
        self._disarms_sent = 0
        self.outbox: list[tuple[str, dict[str, Any]]] = []

    # -- driving
    def next_due_ms(self) -> int | None:
        """When `step` has something to do next; None once healed with nothing left to stop."""
        dues = [f.until_ms for f in self._active]
        if self._enabled:
            dues.append(self._next_start_ms)
        if self._operator:
            dues.append(self._next_disarm_ms)
        return min(dues) if dues else None

    def step(self) -> None:
        """Stop the faults that are over, and start one if it is time."""
        now = self._rt.now_ms
        for fault in [f for f in self._active if f.until_ms <= now]:
            if fault.over is not None:
                outcome = fault.over()
                if not outcome:
                    fault.until_ms = now + CORRUPT_POLL_MS
                    continue
                fault.detail = f"{fault.detail}: {outcome}"
            self._stop(fault)
        if self._enabled and now >= self._next_start_ms:
            self._start_one(now)
            self._next_start_ms = now + self._interval_ms()
        self._disarm(now)

    def install(self) -> None:
        """Add an actor to the runtime that calls `step` when due: any `runtime.run` then drives the faults."""
        self._rt.add(_DRIVER, lambda: _Driver(self))

    def heal_all(self) -> int:
        """End every fault and start no more; returns when the last one is over (a pause runs to its end)."""
        self._enabled = False
        self._flag_deadline_ms = self._rt.now_ms + CORRUPT_FLAG_BOUND_MS
        for fault in list(self._active):
            if fault.kind not in ("pause", "corrupt"):  # a corruption lasts until flagged
                self._stop(fault)
        return max([self._rt.now_ms] + [f.until_ms for f in self._active])

    @property
    def settled(self) -> bool:
        """No corruption left to flag or repair, and no alarm left to disarm."""
        return not self.corrupted and not any(f.kind == "corrupt" for f in self._active) and not (self._operator and self._alarm_raised())

    @property
    def active(self) -> list[tuple[str, str]]:
        return [(f.kind, f.detail) for f in self._active]

    # -- starting and stopping
    def _start_one(self, now_ms: int) -> None:
        if len(self._active) >= self._max_active:
            return
        candidates = [k for k in self.kinds if self._can_start(k)]
        if not candidates:
            return
        kind = self._rng.choice(candidates)
        until_ms = now_ms + self._rng.randint(self._min_duration_ms, self._max_duration_ms)
        if kind == "corrupt":
            detail, member, undo, over = self._start_corrupt()
            until_ms = now_ms + CORRUPT_POLL_MS
        else:
            detail, member, undo = getattr(self, f"_start_{kind.replace('-', '_')}")(until_ms)
            over = None
        self._active.append(_Fault(kind, detail, until_ms, member, undo, over))
        self._record("start", kind, f"{detail} until {until_ms}ms")

    def _stop(self, fault: _Fault) -> None:
        self._active.remove(fault)
        fault.undo()
        self._record("stop", fault.kind, fault.detail)

    def _can_start(self, kind: str) -> bool:
        active_kinds = {f.kind for f in self._active}
        if kind in active_kinds:
            return False
        partitioned = active_kinds & {*PARTITION_KINDS, "stale_leader"}  # one partition at a time
        if kind in PARTITION_KINDS:
            return not partitioned and len(self.members) >= (3 if kind == "bridge" else 2)
        if kind == "stale_leader":
            return not partitioned and current_leader(self._rt, self.members) in self._free_members()
        if kind == "corrupt":  # one at a time, and not before the last one's alarm is disarmed for good
            quiet = self._last_alarm_ms is None or self._rt.now_ms - self._last_alarm_ms >= DISARM_QUIET_MS
            if self.corrupted or not quiet or (self._operator and self._alarm_raised()):
                return False
        if kind in DOWN_KINDS:
            down = sum(1 for f in self._active if f.kind in DOWN_KINDS)
            return down < self._max_down and bool(self._free_members())
        if kind == "clock":
            return bool(self._free_members())
        return True

    def _free_members(self) -> list[str]:
        """Members no crash, pause or clock fault holds, with every actor running."""
        held = {f.member for f in self._active if f.member is not None}
        addresses = [a for a in self._rt._factories]  # noqa: SLF001 -- which actors a member has
        return [
            m for m in self.members
            if m not in held and all(self._rt.is_running(a) for a in addresses if member_of(a) == m)
        ]

    def _record(self, action: str, kind: str, detail: str) -> None:
        event = FaultEvent(self._rt.now_ms, action, kind, detail)
        self.log.append(event)
        self._rt.trace_log("nemesis", "info", f"{action} {kind}", {"detail": detail})

    def _interval_ms(self) -> int:
        return max(1, round(self._rng.expovariate(1.0 / self._mean_interval_ms)))

    def _heal_partition(self) -> None:
        self._net.heal(_PARTITION_TAG)

    # Each starter returns (detail, member held or None, undo).
    def _start_isolate(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        member = self._rng.choice(self.members)
        self._net.isolate(member)
        return member, None, self._heal_partition

    def _start_leader(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        leader = current_leader(self._rt, self.members)
        target = leader if leader is not None else self._rng.choice(self.members)
        self._net.isolate_leader(target)
        return (f"{target} (leader)" if leader else f"{target} (no leader seen)"), None, self._heal_partition

    def _start_split(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        order = list(self.members)
        self._rng.shuffle(order)
        cut = self._rng.randint(1, len(order) - 1)
        left, right = sorted(order[:cut]), sorted(order[cut:])
        self._net.split([left, right])
        return f"{','.join(left)} | {','.join(right)}", None, self._heal_partition

    def _start_one_way(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        src, dst = self._rng.sample(self.members, 2)
        self._net.one_way(src, dst)
        return f"{src} -> {dst} lost", None, self._heal_partition

    def _start_bridge(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        order = list(self.members)
        self._rng.shuffle(order)
        middle, rest = order[0], order[1:]
        cut = self._rng.randint(1, len(rest) - 1)
        left, right = sorted(rest[:cut]), sorted(rest[cut:])
        self._net.bridge(left, right, middle)
        return f"{','.join(left)} | {','.join(right)} bridged by {middle}", None, self._heal_partition

    def _start_crash(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        member = self._rng.choice(self._free_members())
        self._rt.crash_member(member)
        return member, member, lambda: self._rt.restart_member(member)

    def _start_pause(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        member = self._rng.choice(self._free_members())
        moved = pause_member(self._rt, self._net, member, until_ms)
        return f"{member} ({moved} events deferred)", member, lambda: self._net.release(member)

    def _start_clock(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        member = self._rng.choice(self._free_members())
        lo, hi = self._clock_rates
        rate = round(self._rng.uniform(lo, hi), 2)
        return f"{member} timers at rate {rate}", member, skew_timers(self._rt, member, rate)

    def _start_disk_crash(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        # The power goes out after the member's next 0-3 disk writes (0: now), possibly mid-turn;
        # its disk keeps only what was synced. It comes back when the fault ends.
        member = self._rng.choice(self._free_members())
        disk = self._rt.disk(member)
        writes = self._rng.randint(0, 3)
        if writes == 0:
            self._rt.power_loss(member)
        else:
            disk.power_loss_after = writes
        rt = self._rt

        def undo() -> None:
            disk.power_loss_after = None
            rt.restart_member(member)

        return f"{member} power lost after {writes} more disk writes", member, undo

    def _start_fsync_fail(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        # The member's next synced write fails: it must stop (it is restarted when the fault ends).
        member = self._rng.choice(self._free_members())
        disk = self._rt.disk(member)
        disk.fail_next_sync = True
        rt = self._rt

        def undo() -> None:
            disk.fail_next_sync = False
            rt.restart_member(member)

        return f"{member} next fsync fails", member, undo

    def _start_disk_full(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        member = self._rng.choice(self._free_members())
        disk = self._rt.disk(member)
        disk.full = True
        rt = self._rt

        def undo() -> None:
            disk.full = False
            rt.restart_member(member)  # if a write it could not do stopped it

        return f"{member} disk full", member, undo

    def _start_disk_slow(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        # Every fsync of the member takes this long, and holds up the actor that asked for it
        # (etcd warns from 1 s of WAL fsync; a busy or failing disk does hundreds of ms).
        member = self._rng.choice(self.members)
        disk = self._rt.disk(member)
        disk.slow_ms = self._rng.choice((5, 20, 50, 100, 300, 1000))

        def undo() -> None:
            disk.slow_ms = 0

        return f"{member} fsync takes {disk.slow_ms}ms", None, undo

    def _start_corrupt(self) -> tuple[str, str, Callable[[], None], Callable[[], str]]:
        # A byte of one revision record flips on the member's disk. It lasts until petcd flags it
        # (the CORRUPT alarm raised, or the member stopped on the record's checksum) or the record is
        # compacted away; then the operator repairs it (member down, byte back, member up) and
        # disarms the alarm. Not flagged within CORRUPT_FLAG_BOUND_MS of healing: a failure.
        member = self._rng.choice(self._free_members())
        disk = self._rt.disk(member)
        flip = disk.flip_record_byte(self._rng)
        if flip is None:
            return f"{member}", member, lambda: None, lambda: "no record to corrupt"
        self.corrupted.add(member)
        self._rt.stop_reasons.pop(member, None)  # a stop from before says nothing of this flip
        main, sub = rev_from_bytes(flip.rev_key)
        detail = f"{member} byte {flip.offset} of the record of revision {main}.{sub} ^ {flip.mask:#04x}"

        def over() -> str:
            if self._alarm_raised():
                return "flagged by the CORRUPT alarm"
            if self._rt.stop_reasons.get(member, "").startswith("corrupt store") and not self._rt.is_running(f"{member}/apply"):
                return f"flagged: {member} stopped on the record's checksum"
            if not disk.still_flipped(flip):
                return "the record was compacted away before any check"
            if self._flag_deadline_ms is not None and self._rt.now_ms >= self._flag_deadline_ms:
                self.unflagged.append(detail)
                return f"NOT flagged within {CORRUPT_FLAG_BOUND_MS} ms of healing"
            return ""

        def repair() -> None:
            self._rt.crash_member(member)
            disk.unflip(flip)
            self._rt.restart_member(member)
            self.corrupted.discard(member)
            self._operator = True
            self._next_disarm_ms = self._rt.now_ms

        return detail, member, repair, over

    def _alarm_raised(self) -> bool:
        """Has any running member applied a CORRUPT alarm?"""
        for m in self.members:
            address = f"{m}/apply"
            store = getattr(self._rt.actor(address), "_store", None) if self._rt.is_running(address) else None
            if store is not None and any(alarm == ALARM_CORRUPT for _, alarm in store.alarms()):
                return True
        return False

    def _disarm(self, now: int) -> None:
        """The operator, once a flip was repaired: `etcdctl alarm disarm` whenever a CORRUPT alarm shows."""
        if not self._operator or now < self._next_disarm_ms:
            return
        self._next_disarm_ms = now + DISARM_RETRY_MS
        if self.corrupted or not self._alarm_raised():
            return  # (an operator disarms after a repair, not while a flip waits to be flagged)
        self._last_alarm_ms = now
        up = [m for m in self.members if self._rt.is_running(f"{m}/raft")]
        if not up:
            return
        self._disarms_sent += 1
        req = {"op": "alarm", "action": ALARM_DEACTIVATE, "memberID": 0, "alarm": ALARM_CORRUPT}
        self.outbox.append((f"{self._rng.choice(up)}/raft", {"t": "propose", "req": req, "origin": [_DRIVER, self._disarms_sent]}))

    def _start_late_snapshot(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        # Every snapshot sent while this lasts arrives after it ends: other faults (a leader
        # partition, a crash) get the time to depose its sender before it lands.
        delay = max(1, until_ms - self._rt.now_ms)
        self._net.snapshot_delay_ms = delay
        return f"snapshots delayed {delay}ms", None, lambda: setattr(self._net, "snapshot_delay_ms", 0)

    def _start_stale_leader(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        # The leader is cut off from the other members (its clients still reach it) and its timers
        # run slow: it goes on believing it leads -- answering lease keep-alives, serving reads --
        # while the others elect a new leader (etcd issue #15247).
        leader = current_leader(self._rt, self.members)
        assert leader is not None
        self._net.isolate_leader(leader)
        undo_clock = skew_timers(self._rt, leader, 0.25)

        def undo() -> None:
            undo_clock()
            self._heal_partition()

        return f"{leader} (leader) cut off, timers at rate 0.25", leader, undo

    def _start_network(self, kind: str) -> tuple[str, str | None, Callable[[], None]]:
        net = self._net
        setters: dict[str, Callable[[Any], None]] = {
            "drop": lambda v: net.configure(drop=v),
            "duplicate": lambda v: net.configure(duplicate=v),
            "delay": lambda v: net.configure(delay=v),
            "reorder": lambda v: net.configure(reorder=v),
        }
        before = getattr(net, kind)
        value = True if kind == "reorder" else self._probabilities[kind]
        setters[kind](value)
        return f"{kind}={value}", None, lambda: setters[kind](before)

    def _start_drop(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        return self._start_network("drop")

    def _start_duplicate(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        return self._start_network("duplicate")

    def _start_delay(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        return self._start_network("delay")

    def _start_reorder(self, until_ms: int) -> tuple[str, str | None, Callable[[], None]]:
        return self._start_network("reorder")


def _expand_kinds(kinds: Collection[str]) -> tuple[str, ...]:
    """Kind names and groups ("partition", "network", "all") -> kinds, in ALL_KINDS order (deterministic)."""
    wanted: set[str] = set()
    for k in kinds:
        if k in KIND_GROUPS:
            wanted.update(KIND_GROUPS[k])
        elif k in KNOWN_KINDS:
            wanted.add(k)
        else:
            raise ValueError(f"unknown fault kind {k!r}; known: {', '.join(KNOWN_KINDS)} or {', '.join(KIND_GROUPS)}")
    return tuple(k for k in KNOWN_KINDS if k in wanted)


_DRIVER = "nemesis/driver"


class _Driver:
    """An actor whose only job is to call `Nemesis.step` on time, and send what the operator asks."""

    _TIMER = "step"

    def __init__(self, nemesis: Nemesis) -> None:
        self._nemesis = nemesis

    def start(self, ctx: Context) -> None:
        self._arm(ctx)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        # Only answers to the operator's disarms come here; the nemesis looks at the stores instead.
        assert all(msg["t"] == "resp" for _, msg in batch), "only answers to the operator come to the nemesis"

    def on_timer(self, ctx: Context, name: str) -> None:
        self._nemesis.step()
        outbox, self._nemesis.outbox = self._nemesis.outbox, []
        for to, msg in outbox:
            ctx.send(to, msg)
        self._arm(ctx)

    def stop(self) -> None:
        pass

    def _arm(self, ctx: Context) -> None:
        due = self._nemesis.next_due_ms()
        if due is not None:
            ctx.set_timer(self._TIMER, max(0, due - ctx.now_ms()))
