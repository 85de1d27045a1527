"""The simulator's fault injection (sim/faults.py) and safety checkers (sim/invariants.py)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise

import pytest

from petcd.actors.actor import Context, Envelope
from petcd.sim.cluster import build
from petcd.sim.faults import FaultyNetwork, Nemesis, pause_member, skew_timers
from petcd.sim.invariants import InvariantChecker, InvariantViolation, MemberView, run_checked
from petcd.sim.runtime import SimRuntime

# ---------------------------------------------------------------------------------------------
# Dummy actors: "x/ping" sends numbered pings to its targets, "x/echo" answers each with a pong.

Inbox = list[tuple[int, str, str, int]]  # (arrival ms, sender, type, number)


class Pinger:
    def __init__(self, targets: list[str], count: int, inbox: Inbox, every_ms: int = 1) -> None:
        self._targets, self._count, self._inbox, self._every_ms = targets, count, inbox, every_ms
        self._sent = 0

    def start(self, ctx: Context) -> None:
        ctx.set_timer("tick", 0)

    def on_timer(self, ctx: Context, name: str) -> None:
        for t in self._targets:
            ctx.send(t, {"t": "ping", "n": self._sent})
        self._sent += 1
        if self._sent < self._count:
            ctx.set_timer("tick", self._every_ms)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        self._inbox.extend((ctx.now_ms(), sender, msg["t"], msg["n"]) for sender, msg in batch)

    def stop(self) -> None:
        pass


class Echo:
    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    def start(self, ctx: Context) -> None:
        pass

    def on_timer(self, ctx: Context, name: str) -> None:
        raise AssertionError(name)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        for sender, msg in batch:
            self._inbox.append((ctx.now_ms(), sender, msg["t"], msg["n"]))
            ctx.send(sender, {"t": "pong", "n": msg["n"]})

    def stop(self) -> None:
        pass


class Ticker:
    def __init__(self, ticks: list[int], every_ms: int = 10) -> None:
        self._ticks, self._every_ms = ticks, every_ms

    def start(self, ctx: Context) -> None:
        ctx.set_timer("tick", self._every_ms)

    def on_timer(self, ctx: Context, name: str) -> None:
        self._ticks.append(ctx.now_ms())
        ctx.set_timer("tick", self._every_ms)

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        pass

    def stop(self) -> None:
        pass


def _world(seed: int, network: FaultyNetwork, members: list[str], count: int = 50, every_ms: int = 1) -> tuple[SimRuntime, dict[str, Inbox]]:
    """Each member has an echo and a pinger that pings its own echo and every other member's."""
    rt = SimRuntime(seed, network)
    inbox: dict[str, Inbox] = defaultdict(list)
    for m in members:
        rt.add(f"{m}/echo", lambda m=m: Echo(inbox[f"{m}/echo"]))
    for m in members:
        targets = [f"{m}/echo"] + [f"{o}/echo" for o in members if o != m]
        rt.add(f"{m}/ping", lambda m=m, t=targets: Pinger(t, count, inbox[f"{m}/ping"], every_ms))
    return rt, inbox


def _from(inbox: Inbox, sender: str, kind: str = "ping") -> list[int]:
    return [n for _, s, t, n in inbox if s == sender and t == kind]


# ---------------------------------------------------------------------------------------------
# FaultyNetwork


def test_without_faults_every_message_arrives_once_in_order():
    rt, inbox = _world(1, FaultyNetwork(["a", "b"]), ["a", "b"])
    rt.run(until_ms=10_000)
    for echo in ("a/echo", "b/echo"):
        assert _from(inbox[echo], "a/ping") == list(range(50))
        assert _from(inbox[echo], "b/ping") == list(range(50))


def test_drop_loses_only_messages_across_members():
    net = FaultyNetwork(["a", "b"], drop=1.0)
    rt, inbox = _world(1, net, ["a", "b"])
    rt.run(until_ms=10_000)
    assert _from(inbox["a/echo"], "a/ping") == list(range(50))
    assert _from(inbox["b/echo"], "b/ping") == list(range(50))
    assert _from(inbox["b/echo"], "a/ping") == [] and _from(inbox["a/echo"], "b/ping") == []
    assert _from(inbox["a/ping"], "a/echo", "pong") == list(range(50))
    assert net.counts["dropped"] == 100  # one wire message per pinger turn across


def test_duplicate_delivers_cross_member_messages_twice():
    net = FaultyNetwork(["a", "b"], duplicate=1.0)
    rt, inbox = _world(2, net, ["a", "b"])
    rt.run(until_ms=10_000)
    assert sorted(_from(inbox["b/echo"], "a/ping")) == sorted(list(range(50)) * 2)
    assert _from(inbox["b/echo"], "b/ping") == list(range(50)), "inside a member: exactly once"
    assert len(_from(inbox["a/ping"], "b/echo", "pong")) == 200  # each of 100 pings answered, each answer doubled
    assert len(_from(inbox["a/ping"], "a/echo", "pong")) == 50


def test_reorder_applies_across_members_only():
    net = FaultyNetwork(["a", "b"], delay=0.5, max_delay_ms=40, reorder=True)
    rt, inbox = _world(3, net, ["a", "b"], count=200)
    rt.run(until_ms=10_000)
    across = _from(inbox["b/echo"], "a/ping")
    assert sorted(across) == list(range(200)) and across != sorted(across), "delays reorder across members"
    assert _from(inbox["b/echo"], "b/ping") == list(range(200)), "inside a member: in order"
    # The same delays without reorder: a FIFO link holds later messages behind a delayed one.
    rt, inbox = _world(3, FaultyNetwork(["a", "b"], delay=0.5, max_delay_ms=40), ["a", "b"], count=200)
    rt.run(until_ms=10_000)
    assert _from(inbox["b/echo"], "a/ping") == list(range(200))


def test_one_way_partition_is_asymmetric_and_spares_the_inside_of_members():
    net = FaultyNetwork(["a", "b"])
    net.one_way("a", "b")
    rt, inbox = _world(4, net, ["a", "b"])
    rt.run(until_ms=10_000)
    assert _from(inbox["b/echo"], "a/ping") == [], "a -> b is cut"
    assert _from(inbox["a/echo"], "b/ping") == list(range(50)), "b -> a still works"
    assert _from(inbox["b/ping"], "a/echo", "pong") == [], "answers go a -> b: cut"
    assert _from(inbox["a/echo"], "a/ping") == list(range(50)) and _from(inbox["b/echo"], "b/ping") == list(range(50))
    assert net.counts["blocked"] > 0


def test_isolate_then_heal():
    net = FaultyNetwork(["a", "b", "c"])
    net.isolate("a")
    rt, inbox = _world(5, net, ["a", "b", "c"], count=100, every_ms=10)
    rt.run(until_ms=495)  # pings 0..49 sent (one per 10 ms) and arrived
    assert _from(inbox["a/echo"], "b/ping") == [] and _from(inbox["b/echo"], "a/ping") == []
    assert _from(inbox["b/echo"], "c/ping") == list(range(50)), "b and c still talk"
    net.heal()
    rt.run(until_ms=10_000)
    assert _from(inbox["a/echo"], "b/ping") == list(range(50, 100)), "after heal, new messages arrive"


def test_partition_shapes():
    members = ["m1", "m2", "m3", "m4", "m5"]
    net = FaultyNetwork(members)

    def cut() -> set[tuple[str, str]]:
        return {(a, b) for a in members for b in members if net.is_blocked(a, b)}

    net.isolate("m3")
    assert cut() == {("m3", o) for o in members if o != "m3"} | {(o, "m3") for o in members if o != "m3"}
    net.split([["m1", "m2"], ["m3", "m4", "m5"]])
    assert cut() == {(a, b) for a in members for b in members if (a in ("m1", "m2")) != (b in ("m1", "m2"))}
    net.one_way("m1", "m2")
    assert cut() == {("m1", "m2")}, "a new partition replaces the previous one (same tag)"
    net.bridge(["m1", "m2"], ["m4", "m5"], "m3")
    assert cut() == {(a, b) for a in ("m1", "m2") for b in ("m4", "m5")} | {(b, a) for a in ("m1", "m2") for b in ("m4", "m5")}
    net.isolate_leader("m5", tag="other")
    assert ("m5", "m3") in cut() and ("m1", "m4") in cut(), "tags add up"
    net.heal("other")
    assert ("m5", "m3") not in cut() and ("m1", "m4") in cut()
    net.heal()
    assert cut() == set()
    with pytest.raises(AssertionError):
        net.split([["m1", "m2"], ["m3"]])  # m4, m5 left out
    with pytest.raises(AssertionError):
        net.isolate("c0")  # not a member


def test_same_seed_same_faults():
    def run(seed: int) -> tuple[str, dict, dict]:
        net = FaultyNetwork(["a", "b", "c"], drop=0.2, duplicate=0.2, delay=0.3, reorder=True)
        rt, inbox = _world(seed, net, ["a", "b", "c"], count=100)
        rt.run(until_ms=10_000)
        return rt.digest(), dict(inbox), dict(net.counts)

    d1, i1, c1 = run(7)
    d2, i2, c2 = run(7)
    d3, i3, _ = run(8)
    assert (d1, i1, c1) == (d2, i2, c2)
    assert d3 != d1 and i3 != i1
    assert c1["dropped"] and c1["duplicated"] and c1["delayed"]


def test_random_faults_spare_clients_unless_asked():
    for fault_clients, expect_loss in ((False, False), (True, True)):
        net = FaultyNetwork(["a"], drop=0.5, fault_clients=fault_clients)
        rt, inbox = _world(9, net, ["a", "c0"], count=100)  # c0 plays a client: not a network member
        rt.run(until_ms=10_000)
        lost = len(_from(inbox["a/echo"], "c0/ping")) < 100
        assert lost == expect_loss


def test_pause_defers_timers_and_messages_and_loses_nothing():
    net = FaultyNetwork(["a", "b"])
    rt, inbox = _world(6, net, ["a", "b"], count=60, every_ms=5)
    ticks: list[int] = []
    rt.add("b/tick", lambda: Ticker(ticks))
    rt.run(until_ms=100)
    moved = pause_member(rt, net, "b", 400)
    assert moved > 0
    rt.run(until_ms=5_000)
    assert not [t for t in ticks if 100 < t < 400], "a paused member's timers do not fire"
    assert 400 in ticks and ticks[-1] > 400, "they fire at the end of the pause, then as before"
    assert not [ms for ms, *_ in inbox["b/echo"] if 100 < ms < 400], "nothing arrives while paused"
    assert _from(inbox["b/echo"], "a/ping") == list(range(60)), "held, not lost, and in order"
    assert max(n for _, s, _, n in inbox["a/echo"] if s == "b/ping") == 59, "b's pinger resumes"


def test_skewed_timers_run_at_the_given_rate():
    rt = SimRuntime(1, FaultyNetwork(["a"]))
    ticks: list[int] = []
    rt.add("a/tick", lambda: Ticker(ticks, every_ms=10))
    rt.run(until_ms=100)
    undo = skew_timers(rt, "a", 2.0)
    rt.run(until_ms=200)
    undo()
    rt.run(until_ms=300)
    fast = [b - a for a, b in pairwise(ticks) if 110 <= a < 200]
    slow = [b - a for a, b in pairwise(ticks) if a >= 205]
    assert fast and set(fast) == {5}, ticks
    assert slow and set(slow) == {10}, ticks


# ---------------------------------------------------------------------------------------------
# Nemesis


def _nemesis_run(seed: int, kinds: tuple[str, ...] = ("all",)) -> tuple[SimRuntime, FaultyNetwork, Nemesis, dict[str, Inbox]]:
    members = ["m1", "m2", "m3", "m4", "m5"]
    net = FaultyNetwork(members)
    rt, inbox = _world(seed, net, members, count=1_000, every_ms=25)
    nemesis = Nemesis(random.Random(seed), rt, net, members, kinds, mean_interval_ms=200, min_duration_ms=50, max_duration_ms=600, max_active=3)
    nemesis.install()
    rt.run(until_ms=8_000)
    return rt, net, nemesis, inbox


def test_nemesis_is_reproducible_and_heals():
    rt, net, nemesis, inbox = _nemesis_run(21)
    rt2, _, nemesis2, _ = _nemesis_run(21)
    assert [str(e) for e in nemesis.log] == [str(e) for e in nemesis2.log] and rt.digest() == rt2.digest()
    _, _, nemesis3, _ = _nemesis_run(22)
    assert [str(e) for e in nemesis3.log] != [str(e) for e in nemesis.log]
    started = {e.kind for e in nemesis.log if e.action == "start"}
    assert len(started) >= 8, started
    # Every stop follows its start; faults of one kind never overlap.
    open_kinds: set[str] = set()
    for e in nemesis.log:
        if e.action == "start":
            assert e.kind not in open_kinds, e
            open_kinds.add(e.kind)
        else:
            open_kinds.remove(e.kind)
    quiet_ms = nemesis.heal_all()
    assert not net.blocked_pairs and net.drop == net.duplicate == net.delay == 0.0 and not net.reorder
    rt.run(until_ms=max(quiet_ms, rt.now_ms) + 1)
    assert nemesis.active == [] and nemesis.next_due_ms() is None
    assert all(rt.is_running(f"m{i}/{r}") for i in range(1, 6) for r in ("echo", "ping"))
    # After healing, members talk again (pings continue until their count runs out).
    before = len(inbox["m1/echo"])
    rt.run(until_ms=rt.now_ms + 1_000)
    assert {s for _, s, _, _ in inbox["m1/echo"][before:]} == {f"m{i}/ping" for i in range(1, 6)}


def test_nemesis_rejects_unknown_kinds():
    rt = SimRuntime(1, FaultyNetwork(["a"]))
    with pytest.raises(ValueError, match="unknown fault kind"):
        Nemesis(random.Random(1), rt, FaultyNetwork(["a"]), ["a"], {"meteor"})


# ---------------------------------------------------------------------------------------------
# Invariant checkers on hand-made situations


@dataclass(frozen=True)
class _E:
    index: int
    term: int
    data: bytes


class FakeLog:
    """A RaftLog's read side over (term, data) pairs from `first_index` on."""

    def __init__(self, items: list[tuple[int, bytes]], first_index: int = 1, snapshot_term: int = 0) -> None:
        self.items = [_E(first_index + k, t, d) for k, (t, d) in enumerate(items)]
        self.first_index, self._snapshot_term = first_index, snapshot_term

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.items) - 1

    def term(self, index: int) -> int:
        return self._snapshot_term if index == self.first_index - 1 else self.items[index - self.first_index].term

    def entries(self, lo: int, hi: int) -> list[_E]:
        return self.items[lo - self.first_index : hi - self.first_index]


class FakeStore:
    def __init__(self, applied: int, state_hash: int) -> None:
        self.applied, self.state_hash = applied, state_hash

    def applied_index(self) -> int:
        return self.applied

    def hash_kv(self, revision: int) -> tuple[int, int, int]:
        return self.state_hash, 0, self.applied + 1


def V(member: str, term: int, role: str = "follower", commit: int = 0, log: FakeLog | None = None, store: FakeStore | None = None) -> MemberView:
    return MemberView(member, term, role, commit, log if log is not None else FakeLog([]), store)


def _violation(checker: InvariantChecker, views: list[MemberView]) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as info:
        checker.observe(views, 1234)
    return info.value


def test_two_leaders_in_one_term():
    err = _violation(InvariantChecker(), [V("m1", 3, "leader"), V("m2", 3, "leader"), V("m3", 3)])
    assert err.invariant == "election safety" and "m1 and m2" in str(err) and "term 3" in str(err) and "1234 ms" in str(err)


def test_a_leader_is_remembered_after_it_crashes():
    checker = InvariantChecker()
    checker.observe([V("m1", 2, "leader"), V("m2", 2)])
    checker.observe([MemberView("m1"), V("m2", 2)])  # m1 is down
    err = _violation(checker, [MemberView("m1"), V("m2", 2, "leader")])
    assert "m1 and m2 were both leader in term 2" in str(err)


def test_a_follower_names_the_leader_its_term_elected():
    checker = InvariantChecker()
    checker.observe([V("m1", 2, "leader"), MemberView("m2", 2, "follower", 0, FakeLog([]), None, "m1")])
    checker.observe([V("m1", 3), V("m3", 3, "leader"), MemberView("m2", 3, "follower", 0, FakeLog([]), None, "m3")])
    err = _violation(checker, [V("m1", 3), V("m3", 3, "leader"), MemberView("m2", 3, "follower", 0, FakeLog([]), None, "m1")])
    assert err.invariant == "leader agreement" and "m2 follows m1 in term 3, whose leader was m3" in str(err)


def test_a_term_never_goes_down():
    checker = InvariantChecker()
    checker.observe([V("m1", 3)])
    assert "from 3 to 2" in str(_violation(checker, [V("m1", 2)]))


def test_log_matching_same_index_and_term_different_data():
    m1 = FakeLog([(1, b"a"), (1, b"b")])
    m2 = FakeLog([(1, b"a"), (1, b"c")])
    err = _violation(InvariantChecker(), [V("m1", 1, log=m1), V("m2", 1, log=m2)])
    assert err.invariant == "log matching" and "index 2, term 1" in str(err)


def test_log_matching_same_entry_different_history():
    m1 = FakeLog([(1, b"a"), (3, b"x")])
    m2 = FakeLog([(2, b"b"), (3, b"x")])
    err = _violation(InvariantChecker(), [V("m1", 3, log=m1), V("m2", 3, log=m2)])
    assert err.invariant == "log matching" and "follows term 1 in m1's log but term 2 in m2's" in str(err)


def test_diverging_committed_entries():
    m1 = FakeLog([(1, b"a"), (1, b"b")])
    m2 = FakeLog([(1, b"a"), (2, b"c")])
    err = _violation(InvariantChecker(), [V("m1", 2, commit=2, log=m1), V("m2", 2, commit=2, log=m2)])
    assert err.invariant == "state machine safety" and "index 2 committed as term 1 at m1 and as term 2 at m2" in str(err)


def test_a_later_leader_lacks_a_committed_entry():
    checker = InvariantChecker()
    checker.observe([V("m1", 1, "leader", 2, FakeLog([(1, b"a"), (1, b"b")])), V("m2", 1, commit=1, log=FakeLog([(1, b"a")]))])
    err = _violation(checker, [MemberView("m1"), V("m2", 2, "leader", 1, FakeLog([(1, b"a"), (2, b"")]))])
    assert err.invariant == "leader completeness" and "m2, leader in term 2" in str(err) and "(index 2, term 1) was committed" in str(err)
    checker = InvariantChecker()
    checker.observe([V("m1", 1, "leader", 2, FakeLog([(1, b"a"), (1, b"b")]))])
    err = _violation(checker, [MemberView("m1"), V("m2", 2, "leader", 1, FakeLog([(1, b"a")]))])
    assert "lacks committed index 2" in str(err)


def test_a_stale_leader_may_lack_newer_commits():
    """A leader of an older term that has not heard of the new one is no violation."""
    checker = InvariantChecker()
    checker.observe([V("m1", 1, "leader", 1, FakeLog([(1, b"a")])), V("m2", 1, commit=1, log=FakeLog([(1, b"a")]))])
    checker.observe(
        [
            V("m1", 1, "leader", 1, FakeLog([(1, b"a"), (1, b"stale")])),
            V("m2", 2, "leader", 2, FakeLog([(1, b"a"), (2, b"")])),
            V("m3", 2, commit=2, log=FakeLog([(1, b"a"), (2, b"")])),
        ]
    )


def test_committed_entries_survive_a_restart():
    checker = InvariantChecker()
    checker.observe([V("m1", 1, "leader", 3, FakeLog([(1, b"a"), (1, b"b"), (1, b"c")]))])
    err = _violation(checker, [V("m1", 1, commit=2, log=FakeLog([(1, b"a"), (1, b"b")]))])  # a new log object: a restart
    assert err.invariant == "durability" and "up to index 3" in str(err)


def test_applied_state_agreement():
    err = _violation(InvariantChecker(), [V("m1", 1, store=FakeStore(5, 0xA)), V("m2", 1, store=FakeStore(5, 0xB))])
    assert err.invariant == "applied state agreement" and "m1 and m2 both applied index 5" in str(err)
    # Compared across time too: m3 reaches index 5 after the others moved on.
    checker = InvariantChecker()
    checker.observe([V("m1", 1, store=FakeStore(5, 0xA)), V("m2", 1, store=FakeStore(5, 0xA)), V("m3", 1, store=FakeStore(3, 0xC))])
    checker.observe([V("m1", 1, store=FakeStore(7, 0xD)), V("m2", 1, store=FakeStore(7, 0xD)), V("m3", 1, store=FakeStore(3, 0xC))])
    err = _violation(checker, [V("m1", 1, store=FakeStore(7, 0xD)), V("m2", 1, store=FakeStore(7, 0xD)), V("m3", 1, store=FakeStore(5, 0xE))])
    assert "m1 and m3 both applied index 5" in str(err)


def test_a_healthy_history_passes():
    """Elections, a replaced uncommitted suffix, compaction and restarts: no violation."""
    checker = InvariantChecker()
    a, b, x = (1, b"a"), (1, b"b"), (1, b"x")
    checker.observe([V("m1", 1, "leader", 2, FakeLog([a, b, x]), FakeStore(2, 7)), V("m2", 1, commit=2, log=FakeLog([a, b]), store=FakeStore(2, 7))])
    # m1 crashes; m2 wins term 2; its empty entry replaces m1's uncommitted x on m3.
    m3_log = FakeLog([a, b, x])
    checker.observe([MemberView("m1"), V("m2", 1, commit=2, log=FakeLog([a, b])), V("m3", 1, commit=1, log=m3_log)])
    leader_log = FakeLog([a, b, (2, b"")])
    checker.observe(
        [
            MemberView("m1"),
            V("m2", 2, "leader", 3, leader_log, FakeStore(3, 8)),
            V("m3", 2, commit=3, log=FakeLog([a, b, (2, b"")]), store=FakeStore(3, 8)),
        ]
    )
    # m1 restarts with its old log, learns of term 2; m2 compacts up to index 2.
    checker.observe(
        [
            V("m1", 2, commit=3, log=FakeLog([a, b, (2, b"")]), store=FakeStore(3, 8)),
            V("m2", 2, "leader", 3, FakeLog([(2, b"")], first_index=3, snapshot_term=1), FakeStore(3, 8)),
            V("m3", 3, "candidate", 3, FakeLog([a, b, (2, b"")]), FakeStore(3, 8)),
        ]
    )
    assert checker.stats["leaders"] == 2 and checker.committed_index == 3
    assert checker.stats["hash_matches"] >= 3 and checker.stats["leader_checks"] == 2


def test_compare_all_finds_what_the_incremental_check_trusts():
    """Committed prefixes are read once; the final pairwise comparison reads everything."""
    m1, m2 = FakeLog([(1, b"a"), (1, b"b")]), FakeLog([(1, b"a"), (1, b"b")])
    views = [V("m1", 1, "leader", 2, m1), V("m2", 1, commit=2, log=m2)]
    checker = InvariantChecker()
    checker.observe(views)
    m2.items[0] = _E(1, 1, b"overwritten")  # a bug rewrites a committed entry in place
    checker.observe(views)
    with pytest.raises(InvariantViolation, match="m1 and m2 agree on .index 2, term 1. but differ at index 1"):
        checker.compare_all(views)


# ---------------------------------------------------------------------------------------------
# On the real actors


KEYS = [b"k1", b"k2", b"k3"]


def test_one_member_cluster_checked_after_every_step(tmp_path):
    cluster = build(5, 1, str(tmp_path / "checked"))
    cluster.add_clients(count=3, ops_per_client=40, keys=KEYS)
    run = run_checked(cluster, 60_000, 0, until=cluster.clients_done)
    assert run.reached
    writes = [op for op in cluster.history if op.kind != "get" and op.outcome == "ok"]
    assert run.checker.stats["leaders"] >= 1 and run.checker.committed_index >= len(writes)
    assert run.checker.stats["checks"] > 300  # one per step
    # Checking only reads: the same seed without checks takes the very same steps.
    plain = build(5, 1, str(tmp_path / "plain"))
    plain.add_clients(count=3, ops_per_client=40, keys=KEYS)
    assert plain.runtime.run(until=plain.clients_done, until_ms=60_000)
    assert plain.runtime.digest() == cluster.runtime.digest()


def test_one_member_cluster_under_crashes_pauses_and_clock_skew(tmp_path):
    seed = 10
    net = FaultyNetwork(["m1"])
    cluster = build(seed, 1, str(tmp_path), net)
    cluster.add_clients(count=3, ops_per_client=300, keys=KEYS)
    nemesis = Nemesis(random.Random(seed), cluster.runtime, net, cluster.members, {"crash", "pause", "clock"}, mean_interval_ms=150, max_duration_ms=1000)
    nemesis.install()
    run = run_checked(cluster, 8_000, 5)
    kinds = {e.kind for e in nemesis.log if e.action == "start"}
    assert kinds == {"crash", "pause", "clock"}, nemesis.log
    quiet_ms = nemesis.heal_all()
    run = run_checked(cluster, quiet_ms + 60_000, 0, until=cluster.clients_done, checker=run.checker)
    assert run.reached, "clients finish once faults are healed"
    assert any(op.outcome == "info" for op in cluster.history), "faults made some operations time out"
    assert [op for op in cluster.history[-10:] if op.outcome == "ok"], "and operations succeed after healing"
    assert run.checker.stats["leaders"] >= 2, "every restart of a lone member elects it again, in a new term"


def test_three_members_under_every_fault_stay_safe_and_recover(tmp_path):
    seed = 3
    members = ["m1", "m2", "m3"]
    net = FaultyNetwork(members)
    cluster = build(seed, 3, str(tmp_path), net)
    cluster.add_clients(count=3, ops_per_client=200, keys=KEYS)
    nemesis = Nemesis(random.Random(seed), cluster.runtime, net, members, {"all"}, mean_interval_ms=500, max_duration_ms=3000)
    nemesis.install()
    run = run_checked(cluster, 20_000, 0)
    assert len({e.kind for e in nemesis.log}) >= 8, nemesis.log
    quiet_ms = nemesis.heal_all()
    run = run_checked(cluster, quiet_ms + 120_000, 0, until=cluster.clients_done, checker=run.checker)
    assert run.reached, "clients finish once faults are healed"
    assert run.checker.stats["pairs_compared"] >= 3 and run.checker.stats["hash_matches"] > 0


class _SlowWriter:
    """Writes a synced file (slow on a slow disk), then sends "after-write" to m1/inbox."""

    def __init__(self, path: str) -> None:
        self._path = path

    def start(self, ctx: Context) -> None:
        ctx.set_timer("go", 10)

    def on_timer(self, ctx: Context, name: str) -> None:
        ctx.disk.write_file(self._path, b"x")
        ctx.send("m1/inbox", {"t": "after-write"})

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        pass

    def stop(self) -> None:
        pass


class _Inbox:
    def __init__(self, got: list[str]) -> None:
        self._got = got

    def start(self, ctx: Context) -> None:
        pass

    def on_timer(self, ctx: Context, name: str) -> None:
        pass

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        self._got.extend(msg["t"] for _, msg in batch)

    def stop(self) -> None:
        pass


def test_what_a_member_queued_behind_a_slow_fsync_dies_with_it(tmp_path):
    """Found by the campaign, seed 3551: an apply message the Raft actor sent after a slow fsync
    reached the next incarnation of the apply actor, though the member crashed mid-fsync."""
    rt = SimRuntime(1)
    got: list[str] = []
    rt.disk("m1").slow_ms = 300
    rt.add("m1/writer", lambda: _SlowWriter(str(tmp_path / "f")))
    rt.add("m1/inbox", lambda: _Inbox(got))
    rt.run(until_ms=100)  # the write began at 10 ms and takes until 310 ms
    rt.crash_member("m1")
    rt.restart_member("m1")
    rt.run(until_ms=1000)
    assert got.count("after-write") == 1, got  # only the second incarnation's message arrives
