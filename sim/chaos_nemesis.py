"""The nemesis of `petcd chaos`: a thread that injects one fault at a time into a real cluster.

Each round, drawn from the seeded rng: wait a gap, pick a fault kind among those
enabled and a target (the current leader half of the time), inject it, hold it,
undo it. Kinds:

- kill: kill -9 of the member's whole process group, then restart with the same
  command line and data dir after the hold;
- pause: SIGSTOP of the member's whole process group, SIGCONT after the hold;
- partition: cut links, both ways, then heal them after the hold. Shapes:
  `leader` or `one` (a member alone), `split` (a random minority), `bridge` (two
  sides that cannot talk, one member that sees both), `ring` (each member sees its
  two neighbours only; 4+ members); and with --net netns, where clients have links
  of their own: `client-alone` (one client cut from every member),
  `clients-from-leader` (every client cut from the leader, which keeps its peers) and
  `sides-with-clients` (a member alone, each client on a random side).
  With --net hook the links are petcd's peer fault files (member to member only).

Every fault injected is also kept as a schedule entry (`schedule`): its kind, the
members or links it hit, when it started and how long it was held (ms since the
run started). A nemesis given such a schedule (`replay=`) injects the very same
faults at the same offsets instead of drawing them.

Every start and end goes to `log` with its time (ms since the run started): a
start is noted once the fault is in force, an end just before it is undone, so
the fault was in force between the two. `heal_all` undoes whatever is in force;
the thread calls it when stopped.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from petcd.sim.chaos_cluster import LocalCluster, Member

FAULT_KINDS = ("kill", "pause", "partition")
SCHEDULE_FORMAT = "petcd-chaos-schedule/1"
MEMBER_SHAPES = ("leader", "one", "split", "bridge", "ring")
CLIENT_SHAPES = ("client-alone", "clients-from-leader", "sides-with-clients")


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
                 clients: list[str] = (), replay: list[dict[str, Any]] | None = None,  # type: ignore[assignment]
                 first_after_s: float = 1.0, gap_s: tuple[float, float] = (0.5, 2.0), hold_s: tuple[float, float] = (1.0, 3.0)) -> None:
        super().__init__(name="chaos-nemesis", daemon=True)
        assert (kinds and set(kinds) <= set(FAULT_KINDS)) or replay is not None, kinds
        self.cluster = cluster
        self.kinds = list(kinds)
        self.rng = rng
        self.start_ns = start_ns
        self.clients = list(clients)  # client node names whose links can be cut (--net netns)
        self.replay = replay
        self.first_after_s = first_after_s
        self.gap_s = gap_s
        self.hold_s = hold_s
        self.log: list[FaultEvent] = []
        self.schedule: list[dict[str, Any]] = []  # what was injected, replayable
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()  # one fault action at a time (the thread, or heal_all from outside)
        self._partitioned = False
        self._aborted = False
        self._bag: list[str] = []
        self.unexpected_exits: list[str] = []
        self.skipped: list[dict[str, Any]] = []  # replayed entries the run ended before

    def now_ms(self) -> int:
        return (time.monotonic_ns() - self.start_ns) // 1_000_000

    def note(self, action: str, kind: str, target: str, at_ms: int | None = None) -> FaultEvent:
        e = FaultEvent(self.now_ms() if at_ms is None else at_ms, action, kind, target)
        self.log.append(e)
        return e

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
            if self.replay is not None:
                self._run_replay()
                return
            if self.stopping.wait(self.first_after_s):
                return
            while not self.stopping.is_set():
                self._check_members()
                kind = self._next_kind()
                hold_ms = int(self.rng.uniform(*self.hold_s) * 1000)
                self._execute(self._plan(kind), hold_ms)
                if self.stopping.wait(self.rng.uniform(*self.gap_s)):
                    break
        except BaseException as e:  # noqa: BLE001 -- reported by the caller
            self.error = e
            self.note("note", "error", "".join(traceback.format_exception(e)).strip().replace("\n", " | "))

    def _run_replay(self) -> None:
        assert self.replay is not None
        for i, entry in enumerate(self.replay):
            if self.stopping.wait(max(0.0, (self.start_ns + entry["at_ms"] * 1_000_000 - time.monotonic_ns()) / 1e9)):
                self.skipped = list(self.replay[i:])
                return
            self._check_members()
            plan = {k: v for k, v in entry.items() if k not in ("at_ms", "hold_ms")}
            self._execute(plan, int(entry["hold_ms"]))
            if self.stopping.is_set():
                self.skipped = list(self.replay[i + 1:])
                return

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

    # -- planning: what to do, as a JSON-able dict (a schedule entry without its times)
    def _plan(self, kind: str) -> dict[str, Any]:
        if kind == "partition":
            return self._plan_partition()
        leader = self.cluster.leader(timeout_s=0.5) if self.rng.random() < 0.5 else None
        target = leader if leader is not None else self.rng.choice(self.cluster.members)
        return {"kind": kind, "target": target.name, "chosen": "leader" if leader is not None else "random"}

    def _plan_partition(self) -> dict[str, Any]:
        members = list(self.cluster.members)
        names = [m.name for m in members]
        shapes = [s for s in MEMBER_SHAPES if (s != "bridge" or len(members) >= 3) and (s != "ring" or len(members) >= 4)]
        if self.clients and all(self.cluster.can_cut(c, m) for c in self.clients[:1] for m in names[:1]):
            shapes += CLIENT_SHAPES
        shape = self.rng.choice(shapes)
        if shape in ("leader", "one", "split", "sides-with-clients", "clients-from-leader"):
            if shape in ("leader", "clients-from-leader"):
                leader = self.cluster.leader(timeout_s=0.5)
                alone = [leader.name] if leader is not None else [self.rng.choice(names)]
            elif shape == "split" and len(names) >= 4:
                alone = self.rng.sample(names, self.rng.randint(1, (len(names) - 1) // 2))
            else:
                alone = [self.rng.choice(names)]
            rest = [n for n in names if n not in alone]
            if shape == "clients-from-leader":
                cuts = [(c, alone[0]) for c in self.clients]
                label = f"{shape}: {'+'.join(self.clients)} x {alone[0]}"
            else:
                if shape == "sides-with-clients":
                    for c in self.clients:
                        (alone if self.rng.random() < 0.5 else rest).append(c)
                cuts = [(a, b) for a in alone for b in rest if a in names or b in names]  # clients do not talk to each other
                label = f"{shape}: {'+'.join(alone)} | {'+'.join(rest)}"
        elif shape == "bridge":
            order = self.rng.sample(names, len(names))
            bridge, others = order[0], order[1:]
            half = len(others) // 2
            left, right = others[:half], others[half:]
            cuts = [(a, b) for a in left for b in right]
            label = f"bridge: {'+'.join(left)} | {'+'.join(right)}, {bridge} sees both"
        elif shape == "ring":
            order = self.rng.sample(names, len(names))
            n = len(order)
            near = {frozenset((order[i], order[(i + 1) % n])) for i in range(n)}
            cuts = [(a, b) for i, a in enumerate(order) for b in order[i + 1:] if frozenset((a, b)) not in near]
            label = f"ring: {'-'.join(order)}-{order[0]}"
        else:  # client-alone
            c = self.rng.choice(self.clients)
            cuts = [(c, m) for m in names]
            label = f"client-alone: {c} | {'+'.join(names)}"
        return {"kind": "partition", "shape": shape, "cuts": [list(p) for p in cuts], "label": label}

    # -- doing it
    def _member(self, name: str) -> Member:
        for m in self.cluster.members:
            if m.name == name:
                return m
        raise KeyError(f"no member {name!r} in this cluster")

    def _execute(self, plan: dict[str, Any], hold_ms: int) -> None:
        kind = plan["kind"]
        with self._lock:
            if self.stopping.is_set():
                return
            if kind == "partition":
                self.cluster.cut([(a, b) for a, b in plan["cuts"]])
                self._partitioned = True
                started = self.note("start", kind, plan["label"])
            else:
                target = self._member(plan["target"])
                if kind == "kill":
                    target.kill()
                else:
                    target.pause()
                started = self.note("start", kind, f"{target.name} ({target.member_id})")
        entry = {"at_ms": started.at_ms, "hold_ms": hold_ms, **plan}
        self.schedule.append(entry)
        self.stopping.wait(hold_ms / 1000)  # cut short by stop(), which heals
        with self._lock:
            if self._aborted:
                return
            entry["hold_ms"] = self.now_ms() - started.at_ms
            if kind == "partition":
                if self._partitioned:
                    self.note("end", kind, "healed")
                    self.cluster.heal_partitions()
                    self._partitioned = False
            elif kind == "kill":
                if target.killed:
                    self._restart(target)
            elif target.paused:
                self.note("end", kind, target.name)
                target.resume()

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
                    self.note("end", "pause", f"{m.name} (heal)")
                    m.resume()
            if self._partitioned:
                self._partitioned = False
                self.note("end", "partition", "healed (heal)")
            self.cluster.heal_partitions()
            for m in self.cluster.members:
                if m.killed:
                    m.start()
                    self.note("end", "kill", f"{m.name} restarted (heal)")
                elif m.proc is not None and m.proc.poll() is not None:
                    msg = f"{m.name} exited on its own with code {m.proc.returncode}"
                    self.unexpected_exits.append(msg)
                    self.note("note", "crash", msg)
                    m.start()


# ---------------------------------------------------------------------------
# Schedules on disk

def write_schedule(path: str, header: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """The faults of a run as JSON: {"format", server, net, members, clients, seed, duration_s, quiet_tail_s, faults: [...]}."""
    doc = {"format": SCHEDULE_FORMAT, **header, "faults": entries}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def read_schedule(path: str) -> dict[str, Any]:
    """A schedule written by `write_schedule`, checked; raises ValueError saying what is wrong."""
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("format") != SCHEDULE_FORMAT:
        raise ValueError(f"{path} is not a petcd chaos schedule (format {SCHEDULE_FORMAT!r})")
    faults = doc.get("faults")
    if not isinstance(faults, list):
        raise ValueError(f"{path}: 'faults' must be a list")
    last = -1
    for i, e in enumerate(faults):
        where = f"{path}: fault #{i + 1}"
        if not isinstance(e, dict) or e.get("kind") not in FAULT_KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(FAULT_KINDS)}")
        if not isinstance(e.get("at_ms"), int) or not isinstance(e.get("hold_ms"), int) or e["at_ms"] < 0 or e["hold_ms"] < 0:
            raise ValueError(f"{where}: at_ms and hold_ms must be non-negative integers")
        if e["at_ms"] < last:
            raise ValueError(f"{where}: faults must be in the order they start")
        last = e["at_ms"]
        if e["kind"] == "partition":
            cuts = e.get("cuts")
            if not isinstance(cuts, list) or not all(isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c) for c in cuts):
                raise ValueError(f"{where}: a partition needs 'cuts', a list of [node, node] pairs")
            e.setdefault("label", "partition: " + ", ".join(f"{a}-{b}" for a, b in cuts))
            e.setdefault("shape", "custom")
        elif not isinstance(e.get("target"), str):
            raise ValueError(f"{where}: a {e['kind']} needs a 'target' member name")
    return doc


def schedule_nodes(entries: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """(member names, client names) a schedule's faults touch: members are m<N>, clients c<N>."""
    names = set()
    for e in entries:
        if e["kind"] == "partition":
            names.update(x for pair in e["cuts"] for x in pair)
        else:
            names.add(e["target"])
    return {n for n in names if n.startswith("m")}, {n for n in names if n.startswith("c")}
