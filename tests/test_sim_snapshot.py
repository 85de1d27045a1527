"""Under simulation: a member down while the others compact their logs catches up from a snapshot."""

from __future__ import annotations

import pytest

from petcd.sim.cluster import build
from petcd.sim.invariants import InvariantChecker, InvariantViolation, run_checked

KEYS = [b"k1", b"k2", b"k3"]


def test_a_crashed_member_catches_up_by_snapshot(tmp_path):
    cluster = build(5, 3, str(tmp_path), trace=True, snapshot_count=50)
    rt = cluster.runtime
    rt.run(until_ms=3000)
    rt.crash_member("m3")
    cluster.add_clients(count=2, ops_per_client=150, keys=KEYS)
    assert rt.run(until=cluster.clients_done, until_ms=120_000)
    leader_log = rt.actor("m1/raft")._log
    assert leader_log.snapshot_index > 0, "the live members compacted their logs"
    rt.restart_member("m3")
    stores = [rt.actor(f"{m}/apply")._store for m in cluster.members]
    assert rt.run(until=lambda: len({s.hash_kv(0) for s in stores}) == 1, until_ms=rt.now_ms + 20_000), "m3 caught up"
    rt.run(until_ms=rt.now_ms + 100)
    assert any("installed a snapshot" in line for line in rt.log_lines if line.split()[1] == "m3/raft")


class _Granter:
    """Grants one lease through `member`'s Raft actor and records the answer."""

    def __init__(self, member: str, lease_id: int, ttl_s: int) -> None:
        self.member, self.lease_id, self.ttl_s = member, lease_id, ttl_s
        self.answer: dict | None = None

    def start(self, ctx) -> None:
        ctx.send(f"{self.member}/raft", {"t": "propose", "req": {"op": "lease_grant", "ID": self.lease_id, "TTL": self.ttl_s},
                                          "origin": [ctx.address, 1]})

    def stop(self) -> None:
        pass

    def on_timer(self, ctx, name: str) -> None:
        pass

    def receive(self, ctx, batch) -> None:
        for _sender, msg in batch:
            if msg.get("t") == "resp":
                self.answer = msg["resp"]


def test_a_member_that_caught_up_by_snapshot_knows_its_leases(tmp_path):
    """The lease actor learns of the leases a snapshot brings: without that, a member that caught
    up by snapshot and then led never expired them (found by the simulator: seeds 1000 and 1040)."""
    cluster = build(5, 3, str(tmp_path), trace=True, snapshot_count=50)
    rt = cluster.runtime
    rt.run(until_ms=3000)
    rt.crash_member("m3")
    granter = _Granter("m1", 0x5EED, 600)
    rt.add("g/granter", lambda: granter)
    assert rt.run(until=lambda: granter.answer is not None, until_ms=rt.now_ms + 10_000)
    assert "error" not in granter.answer, granter.answer
    cluster.add_clients(count=2, ops_per_client=150, keys=KEYS)
    assert rt.run(until=cluster.clients_done, until_ms=120_000)
    assert rt.actor("m1/raft")._log.snapshot_index > 0, "the live members compacted their logs"
    rt.restart_member("m3")
    assert rt.run(until=lambda: any("installed a snapshot" in line for line in rt.log_lines if " m3/raft " in line),
                  until_ms=rt.now_ms + 20_000)
    assert rt.run(until=lambda: 0x5EED in rt.actor("m3/lease")._leases, until_ms=rt.now_ms + 1000), \
        "m3's lease actor does not know the lease its snapshot brought"


def _late_snapshot_of_a_deposed_leader(tmp_path, checker: InvariantChecker) -> None:
    """A member restarts behind the compacted logs; the leader's snapshot to it is slow, and meanwhile
    its sender is deposed; the snapshot lands in the newer term. Raft invariants checked after every step."""
    from petcd.sim.faults import FaultyNetwork, current_leader

    members = ["m1", "m2", "m3"]
    net = FaultyNetwork(members)
    cluster = build(5, 3, str(tmp_path), net, trace=True, snapshot_count=50)
    rt = cluster.runtime

    def run(until_ms: int, until=None) -> bool:
        return run_checked(cluster, until_ms, 0, until=until, checker=checker, final=False).reached

    run(3000)
    old, lagging = current_leader(rt, members), "m3"
    assert old != lagging
    rt.crash_member(lagging)
    cluster.add_clients(count=2, ops_per_client=150, keys=KEYS)
    assert run(120_000, cluster.clients_done)
    assert rt.actor(f"{old}/raft")._log.snapshot_index > 0, "the live members compacted their logs"
    # The old leader's snapshot to the restarted member is slow to arrive...
    net.snapshot_delay_ms = 5000
    rt.restart_member(lagging)
    assert run(rt.now_ms + 10_000, lambda: net.counts["snapshot_delayed"] > 0)
    net.snapshot_delay_ms = 0
    # ...and meanwhile its sender is deposed: the other two elect a leader of a newer term.
    old_term = rt.actor(f"{old}/raft")._core.term
    net.isolate(old)
    new_leader = lambda: (current_leader(rt, [m for m in members if m != old]) or "")  # noqa: E731
    assert run(rt.now_ms + 20_000, lambda: new_leader() != "" and rt.actor(f"{new_leader()}/raft")._core.term > old_term)
    stores = [rt.actor(f"{m}/apply")._store for m in members if m != old]
    assert run(rt.now_ms + 20_000, lambda: len({s.hash_kv(0) for s in stores}) == 1)
    run(rt.now_ms + 6000)  # the late snapshot lands
    lines = [line for line in rt.log_lines if line.split()[1] == f"{lagging}/raft"]
    assert any("dropped a snapshot chunk of a past term" in line for line in lines), "the late snapshot was not seen"
    net.heal()
    stores = [rt.actor(f"{m}/apply")._store for m in members]
    assert run(rt.now_ms + 20_000, lambda: len({s.hash_kv(0) for s in stores}) == 1), "all caught up"


def test_a_deposed_leaders_late_snapshot_is_dropped(tmp_path):
    _late_snapshot_of_a_deposed_leader(tmp_path, InvariantChecker())


def test_restart_after_a_crash_between_snapshot_install_and_log_reset(tmp_path):
    from petcd.sim.faults import current_leader

    cluster = build(5, 3, str(tmp_path), trace=True, snapshot_count=50)
    rt = cluster.runtime
    rt.run(until_ms=3000)
    rt.crash_member("m3")
    cluster.add_clients(count=2, ops_per_client=150, keys=KEYS)
    assert rt.run(until=cluster.clients_done, until_ms=120_000)
    rt.restart_member("m3")
    raft_log = rt.actor("m3/raft")._log
    last_before = raft_log.last_index
    store = rt.actor("m3/apply")._store
    # Crash m3 the moment its store holds the snapshot, before its Raft actor hears of it.
    assert rt.run(until=lambda: store.applied_index() > last_before, until_ms=rt.now_ms + 20_000)
    assert raft_log.last_index == last_before, "the Raft log was reset in the same step (nothing to test)"
    rt.crash_member("m3")
    rt.run(until_ms=rt.now_ms + 50)  # what was on its way to m3 ("snapshot installed") is lost
    rt.restart_member("m3")
    core = rt.actor("m3/raft")._core
    assert rt.run(until=lambda: core._applied_known, until_ms=rt.now_ms + 1000)
    assert core.commit <= core.last_index(), f"restarted with commit {core.commit} above the last index {core.last_index()}"
    assert current_leader(rt, ["m1", "m2", "m3"]) is not None
    stores = [rt.actor(f"{m}/apply")._store for m in ("m1", "m2", "m3")]
    assert rt.run(until=lambda: len({s.hash_kv(0) for s in stores}) == 1, until_ms=rt.now_ms + 20_000), "m3 caught up"
    core = rt.actor("m3/raft")._core
    assert core.commit <= core.last_index()


def test_the_nemesis_makes_snapshots_late_and_leaders_stale():
    from petcd.sim.run import run

    for seed in (1, 2):
        report = run(seed, 3, 300, ["raft", "partition", "crash"])
        assert report.ok, f"{report.command()}: " + "; ".join(v.summary for v in report.verdicts if not v.ok)
        assert any("start late_snapshot" in line for line in report.fault_log)
        assert any("start stale_leader" in line for line in report.fault_log)


def _no_term_check(self, sender: str, term: int) -> bool:
    """PLANTED BUG (tests only): RaftCore.step_snapshot without its term check, so a deposed
    leader's late snapshot chunk is installed, and its sender followed, in a newer term."""
    from petcd.actors.raft import FOLLOWER

    if term > self.term or self.role != FOLLOWER:
        self._become_follower(term, sender)
    self.leader = sender
    self._election_elapsed = 0
    return True


def test_a_snapshot_installed_without_its_term_check_is_caught(tmp_path, monkeypatch):
    """The planted bug, in the scenario it guards against: a member follows the deposed sender of a
    late snapshot in a newer term ("leader agreement"). The swarm meets this scenario only rarely
    (`--faults raft`: 1 seed of 1-60 at the time of writing), so the suite plays it on purpose."""
    from petcd.actors.raft import RaftCore

    monkeypatch.setattr(RaftCore, "step_snapshot", _no_term_check)
    with pytest.raises(InvariantViolation) as caught:
        _late_snapshot_of_a_deposed_leader(tmp_path, InvariantChecker())
    assert caught.value.invariant == "leader agreement", caught.value
