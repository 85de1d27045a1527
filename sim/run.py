"""One simulated run: a whole cluster and its clients on virtual time, faults, then every checker.

The same seed and arguments give the same trace, so the same `digest`, on any
machine: every random choice comes from the seed, and time is virtual.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from petcd.sim.check.verdict import Verdict
from petcd.sim.cluster import SimCluster, build
from petcd.sim.faults import KIND_GROUPS, KNOWN_KINDS, FaultyNetwork, Nemesis, current_leader
from petcd.sim.invariants import InvariantChecker, InvariantViolation, run_checked
from petcd.sim.lease_client import LeaseClient, LeaseLog
from petcd.sim.lock_client import LockClient, LockLog
from petcd.sim.watch_client import WatchClient, WatchLog
from petcd.sim import checks

FAULT_CHOICES = ("drop", "delay", "duplicate", "reorder", "partition", "crash", "pause", "clock", "late_snapshot", "stale_leader",
                 "disk-crash", "fsync-fail", "disk-full", "disk-slow", "corrupt", "raft", "disk", "all")
KEYS = [b"k0", b"k1", b"k2", b"k3", b"k4"]
# Faults run while the clients work, for at most this long; then everything heals.
FAULT_PHASE_MS = 20_000
# After healing, a leader must be elected and every client must finish within this.
LIVENESS_BOUND_MS = 30_000


def fault_kinds(names: list[str]) -> set[str]:
    """User fault names to the nemesis's kinds ("partition" and "all" are groups)."""
    kinds: set[str] = set()
    for name in names:
        if name not in FAULT_CHOICES:
            raise ValueError(f"unknown fault {name!r} (choose from {', '.join(FAULT_CHOICES)})")
        kinds.update(KIND_GROUPS.get(name, (name,)))
    assert kinds <= set(KNOWN_KINDS)
    return kinds


@dataclass(slots=True)
class SimReport:
    seed: int
    members: int
    ops: int
    faults: list[str]
    verdicts: list[Verdict] = field(default_factory=list)
    digest: str = ""
    virtual_ms: int = 0
    wall_s: float = 0.0
    # petcd.sim.check.history.Op: the KV clients' operations, then one op per watcher, lease and lock hold
    history: list[Any] = field(default_factory=list)
    fault_log: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    faults_seen: list[dict[str, Any]] = field(default_factory=list)  # {kind, detail, from_ms, to_ms}: each fault, start to end
    leaders: list[dict[str, Any]] = field(default_factory=list)  # {member, term, from_ms, to_ms | None}: who led when
    committed: list[dict[str, Any]] | None = None  # every committed event (the watch checker's truth); None on a failed run
    lease_bound_ms: int | None = None  # the lease checker's lateness bound for this run (None: its default)

    @property
    def kv_ops(self) -> list[Any]:
        return [op for op in self.history if op.kind in ("put", "get", "cas", "delete", "txn")]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def command(self) -> str:
        return f"petcd sim run --seed {self.seed} --members {self.members} --ops {self.ops} --faults {','.join(self.faults) or 'none'}"


def run(seed: int, members: int = 3, ops: int = 1000, faults: list[str] | None = None, *, clients: int = 5, watchers: int = 2,
        leases: int = 2, lockers: int = 3, trace: bool = False) -> SimReport:
    faults = [f for f in (faults or []) if f != "none"]
    report = SimReport(seed, members, ops, faults)
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix=f"petcd-sim-{seed}-")
    try:
        _run(report, workdir, clients, watchers, leases, lockers, trace)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.wall_s = time.monotonic() - started
    return report


def _run(report: SimReport, workdir: str, clients: int, watchers: int, leases: int, lockers: int, trace: bool) -> None:
    names = [f"m{i + 1}" for i in range(report.members)]
    net = FaultyNetwork(names)
    cluster = build(report.seed, report.members, workdir, net, trace=trace, snapshot_count=100)
    try:
        _run_cluster(report, cluster, net, names, clients, watchers, leases, lockers)
    finally:
        cluster.runtime.close()  # a campaign runs thousands of seeds in one process


def _run_cluster(report: SimReport, cluster: SimCluster, net: FaultyNetwork, names: list[str], clients: int, watchers: int,
                 leases: int, lockers: int) -> None:
    rt = cluster.runtime
    per_client = max(1, report.ops // clients)
    cluster.add_clients(count=clients, ops_per_client=per_client, keys=KEYS)
    watch_logs = [WatchLog(f"w{i}") for i in range(watchers)]
    watch_clients = [WatchClient(names[i % len(names):] + names[: i % len(names)], log) for i, log in enumerate(watch_logs)]
    for i, wc in enumerate(watch_clients):
        rt.add(f"w{i}/watch_client", lambda wc=wc: wc)
    lease_logs = [LeaseLog(f"l{i}", lease_id=0x1EA5E0000 + i, ttl_s=2, key=f"lease/{i}".encode()) for i in range(leases)]
    lease_clients = [LeaseClient(names[i % len(names)], log, keepalives=4) for i, log in enumerate(lease_logs)]
    for i, lc in enumerate(lease_clients):
        rt.add(f"l{i}/lease_client", lambda lc=lc: lc)
    lock_logs = [LockLog(f"k{i}") for i in range(lockers)]
    lock_clients = [LockClient(names[(i + 1) % len(names)], log, lease_id=0x10C0000 + i, rounds=3) for i, log in enumerate(lock_logs)]
    for i, kc in enumerate(lock_clients):
        rt.add(f"k{i}/lock_client", lambda kc=kc: kc)
    all_done = lambda: cluster.clients_done() and all(c.done for c in [*lease_clients, *lock_clients])  # noqa: E731
    nemesis = None
    checker = InvariantChecker()
    if report.faults:
        nemesis = Nemesis(random.Random(report.seed), rt, net, names, fault_kinds(report.faults), mean_interval_ms=500, max_duration_ms=3000)
        nemesis.install()
        checker.state_exempt = nemesis.corrupted
    try:
        checked = run_checked(cluster, FAULT_PHASE_MS, 0, until=all_done, checker=checker)
        healed_at = nemesis.heal_all() if nemesis else rt.now_ms
        # Live: within the bound, every client finished and a leader is in office (clients may finish
        # during the faults, when the last fault has just deposed the leader).
        # (and a corruption flagged, repaired and its alarm disarmed: sim/faults.py `corrupt`).
        settled = lambda: nemesis is None or nemesis.settled  # noqa: E731
        led_and_done = lambda: all_done() and current_leader(rt, names) is not None and settled()  # noqa: E731
        checked = run_checked(cluster, healed_at + LIVENESS_BOUND_MS, 0, until=led_and_done, checker=checked.checker)
        live = checked.reached and current_leader(rt, names) is not None
        report.verdicts.append(Verdict(True, "raft", f"invariants held over {checked.checker.stats.get('checks', 0)} checks"))
        report.verdicts.append(Verdict(live, "liveness", "clients finished after healing" if live else
                                       f"clients did not finish within {LIVENESS_BOUND_MS} ms of healing"))
        if nemesis is not None and nemesis.unflagged:
            report.verdicts.append(Verdict(False, "corruption", f"a flipped byte was never flagged: {'; '.join(nemesis.unflagged)}"))
        for wc in watch_clients:
            wc.stopped = True
        rt.run(until_ms=rt.now_ms + 3000)  # watchers catch up with the end of history before they are judged
    except InvariantViolation as violation:
        report.verdicts.append(Verdict(False, "raft", str(violation)))
    except AssertionError as failed:
        # An invariant asserted inside the actors themselves broke: a bug, found at this seed.
        report.verdicts.append(Verdict(False, "assertion", f"an actor's assertion failed at {rt.now_ms} ms: {failed!r}",
                                       {"traceback": traceback.format_exc()}))
    except Exception as failed:  # noqa: BLE001 - an actor raised: a bug found at this seed, not the end of a campaign
        report.verdicts.append(Verdict(False, "exception", f"an actor raised at {rt.now_ms} ms: {failed!r}",
                                       {"traceback": traceback.format_exc()}))
    report.digest, report.virtual_ms, report.trace = rt.digest(), rt.now_ms, rt.log_lines
    report.fault_log = [str(e) for e in nemesis.log] if nemesis else []
    report.faults_seen = checks.fault_spans(nemesis.log if nemesis else [], rt.now_ms)
    report.leaders = [{"member": m, "term": t, "from_ms": a, "to_ms": b} for m, t, a, b in checker.leadership]
    report.history = (checks.kv_history(cluster.history) + checks.watch_ops(watch_logs) + checks.lease_ops(lease_logs)
                      + checks.lock_ops(lock_logs))
    if not report.ok:
        return  # the state may be broken mid-step: judge nothing more
    report.committed = checks.committed_events(cluster)
    report.lease_bound_ms = checks.lease_bound(faulty=bool(report.faults), leaders=report.leaders, faults=report.faults_seen)
    report.verdicts += checks.check_all(report.history, report.committed, lease_bound_ms=report.lease_bound_ms,
                                        leaders=report.leaders, faults=report.faults_seen)
