"""Many seeds of 3- and 5-member clusters under every fault: safety after every step, liveness after healing."""

from __future__ import annotations

import random

import pytest

from petcd.sim.cluster import build
from petcd.sim.faults import FaultyNetwork, Nemesis, current_leader
from petcd.sim.invariants import InvariantChecker, run_checked

KEYS = [b"a", b"b", b"c", b"d"]
FAULT_MS = 10_000
# After the last fault ends, a leader must be elected and every client finish within this.
LIVENESS_BOUND_MS = 30_000
SEEDS = [(seed, 3 if seed % 2 else 5) for seed in range(1, 61)]


@pytest.mark.parametrize("seed, size", SEEDS, ids=[f"seed{s}-{n}members" for s, n in SEEDS])
def test_safe_under_faults_and_live_after_healing(tmp_path, seed, size):
    members = [f"m{i + 1}" for i in range(size)]
    net = FaultyNetwork(members)
    cluster = build(seed, size, str(tmp_path), net, snapshot_count=100)
    cluster.add_clients(count=3, ops_per_client=80, keys=KEYS)
    nemesis = Nemesis(random.Random(seed), cluster.runtime, net, members, {"all"}, mean_interval_ms=400, max_duration_ms=2500)
    nemesis.install()
    checker = InvariantChecker()
    checker.state_exempt = nemesis.corrupted  # a store with a flipped byte differs until repaired (`corrupt`)
    run = run_checked(cluster, FAULT_MS, 0, checker=checker)
    healed_at = nemesis.heal_all()
    # Clients may finish during the faults, just as the last one deposed the leader: a leader must follow within the
    # bound (and a flipped byte must be flagged, repaired and its alarm disarmed).
    led_and_done = lambda: cluster.clients_done() and current_leader(cluster.runtime, members) is not None and nemesis.settled  # noqa: E731
    run = run_checked(cluster, healed_at + LIVENESS_BOUND_MS, 0, until=led_and_done, checker=run.checker)
    assert run.reached, f"seed {seed}: clients did not finish within {LIVENESS_BOUND_MS} ms of healing; faults: {nemesis.log[-5:]}"
    assert current_leader(cluster.runtime, members) is not None
    assert not nemesis.unflagged, f"seed {seed}: a flipped byte was never flagged"
    # Every member agrees on the applied state once quiet (run_checked's final check compares hashes).
    assert run.checker.stats["leaders"] >= 1
    assert sum(1 for e in nemesis.log if e.action == "start") >= 5, "the nemesis did inject faults"
    assert sum(1 for op in cluster.history if op.outcome == "ok") >= 100, "and the cluster did work"
