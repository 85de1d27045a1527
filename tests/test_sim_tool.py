"""`petcd sim` as our users run it: reproducible from a seed, and its checkers catch bugs planted on purpose."""

from __future__ import annotations

import subprocess
import sys

import pytest

from petcd.actors.raft import RaftCore
from petcd.actors.raft_actor import RaftActor
from petcd.actors.watch_actor import WatchActor
from petcd.sim.run import run

SWARM_SEEDS = range(1000, 1050)


def _petcd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "petcd.rpc.server_cli", *args], capture_output=True, text=True, timeout=300)


def test_the_same_seed_gives_the_same_digest_and_another_seed_another():
    a = _petcd("sim", "run", "--seed", "7", "--members", "3", "--ops", "400", "--faults", "all")
    b = _petcd("sim", "run", "--seed", "7", "--members", "3", "--ops", "400", "--faults", "all")
    c = _petcd("sim", "run", "--seed", "8", "--members", "3", "--ops", "400", "--faults", "all")
    for out in (a, b, c):
        assert out.returncode == 0, out.stdout + out.stderr
    last = [out.stdout.strip().splitlines()[-1] for out in (a, b, c)]
    assert last[0] == last[1] and last[0].startswith("seed=7 verdict=ok digest=")
    assert last[2].startswith("seed=8 verdict=ok") and last[2].split("digest=")[1] != last[0].split("digest=")[1]
    print("\n" + a.stdout)


def test_bad_arguments_are_refused_clearly():
    out = _petcd("sim", "run", "--seed", "1", "--faults", "earthquake")
    assert out.returncode == 2 and "unknown fault 'earthquake'" in out.stderr
    out = _petcd("sim", "swarm", "--seeds", "9-3")
    assert out.returncode == 2 and "--seeds wants A <= B" in out.stderr


@pytest.mark.parametrize("seed", SWARM_SEEDS)
def test_swarm_with_all_faults(seed):
    report = run(seed, members=3 if seed % 3 else 5, ops=300, faults=["all"])
    assert report.ok, f"{report.command()}: " + "; ".join(v.summary for v in report.verdicts if not v.ok)
    assert any(v.checker == "linearizability" and v.ok for v in report.verdicts)


def _failing(seeds: range, faults: list[str]) -> list[tuple[int, list[str]]]:
    out = []
    for seed in seeds:
        report = run(seed, members=3, ops=300, faults=faults)
        if not report.ok:
            out.append((seed, [v.checker for v in report.verdicts if not v.ok]))
    return out


def test_linearizability_catches_followers_serving_reads_without_read_index(monkeypatch):
    def stale_read(self, ctx, req, origin):
        if self._core.role == "leader":
            return original(self, ctx, req, origin)
        ctx.send(self._apply_addr, {"t": "read", "req": req, "origin": origin})  # the bug: no ReadIndex

    original = RaftActor._read
    monkeypatch.setattr(RaftActor, "_read", stale_read)
    failing = _failing(range(1, 9), ["partition"])
    assert failing and all("linearizability" in checkers for _, checkers in failing), failing


def test_raft_invariants_catch_votes_for_out_of_date_candidates(monkeypatch):
    original = RaftCore._on_vote_request

    def careless_vote(self, sender, msg):
        return original(self, sender, {**msg, "last_term": 1 << 30})  # the bug: every candidate looks up to date

    monkeypatch.setattr(RaftCore, "_on_vote_request", careless_vote)
    failing = _failing(range(1, 13), ["partition", "crash"])
    assert failing, "no seed caught a leader elected without the committed entries"
    assert all(set(checkers) & {"raft", "assertion", "linearizability", "liveness"} for _, checkers in failing)


def test_watch_checker_catches_a_skipped_revision(monkeypatch):
    original = WatchActor._deliver

    def skipping(self, w, revs, through):
        return original(self, w, [(rev, evs) for rev, evs in revs if rev % 17 != 0], through)  # the bug

    monkeypatch.setattr(WatchActor, "_deliver", skipping)
    failing = _failing(range(1, 3), [])
    assert [checkers for _, checkers in failing] == [["watch"], ["watch"]]


def test_lease_checker_catches_leases_expired_by_followers(monkeypatch):
    from petcd.actors.lease_actor import LeaseActor

    original = LeaseActor.on_timer

    def eager(self, ctx, name):
        self._is_leader = True  # the bug: every member's reaper expires leases (followers never see keep-alives)
        return original(self, ctx, name)

    monkeypatch.setattr(LeaseActor, "on_timer", eager)
    failing = _failing(range(1, 4), [])
    assert failing and all("lease" in checkers for _, checkers in failing), failing


def test_serving_does_not_import_the_simulation_package():
    # The member's processes (supervisor, gateway, actors) and the CLI up to parsing a member's flags: none may load
    # petcd.sim or petcd.sim.check, which only `petcd sim|check|chaos|bench` import, inside those subcommands.
    code = (
        "import importlib, pkgutil, sys\n"
        "import petcd.rpc.server_cli, petcd.rpc.gateway, petcd.rpc.member, petcd.actors, petcd.store\n"
        "for pkg in (petcd.actors, petcd.store):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "from petcd.rpc.config import parse\n"
        "parse(['--name', 'x', '--data-dir', '/nonexistent/x.etcd'], {})\n"
        "print(sorted(m for m in sys.modules if m == 'petcd.sim' or m.startswith('petcd.sim.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"the serving path imported the simulator: {out.stdout}"
