"""The nemesis of `petcd chaos`: a thread that injects one fault at a time into a real cluster.

Each round, drawn from the seeded rng: wait a gap, pick a fault kind among those
enabled and a target (the current leader half of the time), inject it, hold it,
undo it. Kinds:

- kill: kill -9 of the member's whole process group, then restart with the same
  command line and data dir after the hold;
- pause: SIGSTOP of the member's whole process group, SIGCONT after the hold;
- partition (petcd only): cut Raft traffic, both ways, between two sides (the
  leader or a random member alone, or a random minority) through the members'
  peer fault files; the files are removed after the hold.

Every start and end goes to `log` with its time (ms since the run started).
`heal_all` undoes whatever is in force; the thread calls it when stopped.
"""

from __future__ import annotations

import random
import threading
import traceback
import time
from dataclasses import dataclass

from petcd.sim.chaos_cluster import LocalCluster, Member

FAULT_KINDS = ("kill", "pause", "partition")


@dataclass(slots=True)
class FaultEvent:
    at_ms: int
    action: str  # "start" | "end" | "note"
    kind: str
    target: str

    def __str__(self) -> str:
        return f"{self.at_ms:>7} ms  {self.action:5} {self.kind:9} {self.target}"


class Nemesis(threading.Thread):
    def __init__(self, cluster: LocalCluster, kinds: list[str], rng: random.Random, start_ns: int, *,
                 first_after_s: float = 1.0, gap_s: tuple[float, float] = (0.5, 2.0), hold_s: tuple[float, float] = (1.0, 3.0)) -> None:
        super().__init__(name="chaos-nemesis", daemon=True)
        assert kinds and set(kinds) <= set(FAULT_KINDS), kinds
        self.cluster = cluster
        self.kinds = list(kinds)
        self.rng = rng
        self.start_ns = start_ns
        self.first_after_s = first_after_s
        self.gap_s = gap_s
        self.hold_s = hold_s
        self.log: list[FaultEvent] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()  # one fault action at a time (the thread, or heal_all from outside)
        self._partitioned = False
        self._aborted = False
        self._bag: list[str] = []
        self.unexpected_exits: list[str] = []

    def now_ms(self) -> int:
        return (time.monotonic_ns() - self.start_ns) // 1_000_000

    def note(self, action: str, kind: str, target: str) -> None:
        self.log.append(FaultEvent(self.now_ms(), action, kind, target))

    @property
    def injected(self) -> int:
        return sum(1 for e in self.log if e.action == "start")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.log:
            if e.action == "start":
                out[e.kind] = out.get(e.kind, 0) + 1
        return out

    # ------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self.stopping.wait(self.first_after_s):
                return
            while not self.stopping.is_set():
                self._round()
                if self.stopping.wait(self.rng.uniform(*self.gap_s)):
                    break
        except BaseException as e:  # noqa: BLE001 -- reported by the caller
            self.error = e
            self.note("note", "error", "".join(traceback.format_exception(e)).strip().replace("\n", " | "))

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping.set()
        self.join(timeout_s)
        self.heal_all()

    def abort(self, timeout_s: float = 30.0) -> None:
        """Stop without healing or restarting anything (the run is being torn down)."""
        self._aborted = True
        self.stopping.set()
        self.join(timeout_s)

    def _next_kind(self) -> str:
        """Every enabled kind once per cycle, in a shuffled order: a short run still sees each of them."""
        if not self._bag:
            self._bag = list(self.kinds)
            self.rng.shuffle(self._bag)
        return self._bag.pop()

    def _pick_target(self) -> Member:
        leader = self.cluster.leader(timeout_s=0.5) if self.rng.random() < 0.5 else None
        return leader if leader is not None else self.rng.choice(self.cluster.members)

    def _round(self) -> None:
        self._check_members()
        kind = self._next_kind()
        hold = self.rng.uniform(*self.hold_s)
        with self._lock:
            if self.stopping.is_set():
                return
            if kind == "partition":
                sides, label = self._partition_sides()
                self.cluster.partition(sides)
                self._partitioned = True
                self.note("start", kind, label)
            else:
                target = self._pick_target()
                if kind == "kill":
                    target.kill()
                else:
                    target.pause()
                self.note("start", kind, f"{target.name} ({target.member_id})")
        self.stopping.wait(hold)  # cut short by stop(), which heals
        with self._lock:
            if self._aborted:
                return
            if kind == "partition":
                if self._partitioned:
                    self.cluster.heal_partitions()
                    self._partitioned = False
                    self.note("end", kind, "healed")
            elif kind == "kill":
                if target.killed:
                    self._restart(target)
            elif target.paused:
                target.resume()
                self.note("end", kind, target.name)

    def _partition_sides(self) -> tuple[list[list[Member]], str]:
        members = list(self.cluster.members)
        shape = self.rng.choice(("leader", "one", "split"))
        alone: list[Member]
        if shape == "leader":
            leader = self.cluster.leader(timeout_s=0.5)
            alone = [leader] if leader is not None else [self.rng.choice(members)]
        elif shape == "one" or len(members) < 4:
            alone = [self.rng.choice(members)]
        else:
            alone = self.rng.sample(members, self.rng.randint(1, (len(members) - 1) // 2))
        rest = [m for m in members if m not in alone]
        label = f"{shape}: {'+'.join(m.name for m in alone)} | {'+'.join(m.name for m in rest)}"
        return [alone, rest], label

    def _restart(self, m: Member) -> None:
        m.start()
        self.note("end", "kill", f"{m.name} restarted")

    def _check_members(self) -> None:
        """A member that exited though nobody killed it is noted (and restarted, so the run goes on)."""
        with self._lock:
            if self._aborted:
                return
            for m in self.cluster.members:
                if not m.killed and m.proc is not None and m.proc.poll() is not None:
                    msg = f"{m.name} exited on its own with code {m.proc.returncode}"
                    self.unexpected_exits.append(msg)
                    self.note("note", "crash", msg)
                    m.start()

    def heal_all(self) -> None:
        """SIGCONT every member, restart the killed, remove every partition."""
        with self._lock:
            if self._aborted:
                return
            for m in self.cluster.members:
                if m.paused:
                    m.resume()
                    self.note("end", "pause", f"{m.name} (heal)")
            self.cluster.heal_partitions()
            if self._partitioned:
                self._partitioned = False
                self.note("end", "partition", "healed (heal)")
            for m in self.cluster.members:
                if m.killed:
                    m.start()
                    self.note("end", "kill", f"{m.name} restarted (heal)")
                elif m.proc is not None and m.proc.poll() is not None:
                    msg = f"{m.name} exited on its own with code {m.proc.returncode}"
                    self.unexpected_exits.append(msg)
                    self.note("note", "crash", msg)
                    m.start()
