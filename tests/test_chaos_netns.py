"""`petcd chaos --net netns`: members and clients in network namespaces, links cut with blackhole routes.

Short runs (a few seconds, three members, two or three clients) against petcd and real
etcd that must partition, stay linearizable and leave no namespace or process behind; a
recorded fault schedule replayed; a client cut off from every member; teardown after a
failed start; and the refusals. About 45 s in all. Needs root and iproute2 (skipped
without them, except the refusal checks).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from petcd.sim import chaos
from petcd.sim.check.history import load_history
from petcd.sim.netns import PREFIX, _start_ticks, cleanup_stale, list_namespaces, unavailable
from tests.test_chaos import leftover_processes, nemesis_log, summary

NO_NETNS = unavailable()
needs_netns = pytest.mark.skipif(NO_NETNS is not None, reason=f"--net netns cannot run here: {NO_NETNS}")


def our_namespaces() -> set[str]:
    return {n for n in list_namespaces() if n.startswith(PREFIX)}


@dataclass
class Run:
    rc: int
    out: str
    err: str
    workdir: str
    history: str
    schedule: str


def run_netns(workdir: str, *argv: str) -> Run:
    """One `petcd chaos --net netns` run, in-process; checks it left no namespace and no process behind."""
    before = our_namespaces()
    history = os.path.join(workdir, "history.jsonl")
    schedule = os.path.join(workdir, "schedule-out.json")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = chaos.main(["--net", "netns", "--workdir", workdir, "--history", history, "--schedule-out", schedule,
                         "--op-timeout", "1", *argv])
    left = our_namespaces() - before
    assert not left, f"namespaces left behind: {sorted(left)}"
    procs = leftover_processes(workdir)
    assert not procs, "servers or clients left running:\n" + "\n".join(procs)
    return Run(rc, out.getvalue(), err.getvalue(), workdir, history, schedule)


def faults_of(schedule_path: str) -> list[dict]:
    with open(schedule_path) as f:
        return json.load(f)["faults"]


def without_times(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in ("at_ms", "hold_ms")}


def assert_partitioned_and_linearizable(run: Run, server: str) -> None:
    print(run.out, run.err)  # shown when the test fails
    got_server, verdict, ops, faults = summary(run.out)
    assert (got_server, verdict, run.rc) == (server, "ok", 0)
    assert re.search(r"^linearizability ok: linearizable: \d+ ops", run.out, re.M)
    assert "net=netns: namespaces pchaos-" in run.out
    # This kernel has no netem: the run says so (and where loss and delay stay).
    assert "tc netem is not available" in run.out or "tc netem" not in run.out
    log = nemesis_log(run.workdir)
    assert re.search(r"start partition ", log), f"no partition was made:\n{log}"
    assert re.search(r"end   partition ", log), f"a partition was never healed:\n{log}"
    assert faults >= 1 and ops > 20
    assert any(e["kind"] == "partition" and e["cuts"] for e in faults_of(run.schedule))


@pytest.fixture(scope="module")
def etcd_run(tmp_path_factory) -> Run:
    return run_netns(str(tmp_path_factory.mktemp("netns-etcd")), "--server", "etcd", "--seed", "5", "--faults", "partition",
                     "--duration", "6", "--quiet-tail", "1.5", "--clients", "3")


@needs_netns
def test_petcd_partitioned_through_namespaces_stays_linearizable(tmp_path):
    run = run_netns(str(tmp_path), "--server", "petcd", "--seed", "11", "--faults", "partition",
                    "--duration", "5", "--quiet-tail", "1.5", "--clients", "2")
    assert_partitioned_and_linearizable(run, "petcd")
    # No peer fault hook in this mode: the cut was the kernel's.
    assert "--experimental-peer-fault-file" not in open(os.path.join(run.workdir, "data", "m1.log")).read()


@needs_netns
def test_etcd_partitioned_through_namespaces_stays_linearizable(etcd_run):
    assert_partitioned_and_linearizable(etcd_run, "etcd")


@needs_netns
def test_a_recorded_schedule_replays_the_same_faults(etcd_run, tmp_path):
    recorded = faults_of(etcd_run.schedule)
    with open(etcd_run.schedule) as f:
        doc = json.load(f)
    assert (doc["server"], doc["net"], doc["members"], doc["clients"], doc["seed"]) == ("etcd", "netns", 3, 3, 5)
    # Server, net, sizes, seed and duration all come from the file.
    replay = run_netns(str(tmp_path), "--schedule", etcd_run.schedule)
    print(replay.out, replay.err)
    assert summary(replay.out)[:2] == ("etcd", "ok") and replay.rc == 0
    replayed = faults_of(replay.schedule)
    # A fault recorded in the last instant before the quiet tail may miss it in the replay; none earlier may.
    fault_end_ms = (doc["duration_s"] - doc["quiet_tail_s"]) * 1000
    expected = [without_times(e) for e in recorded if e["at_ms"] < fault_end_ms - 300]
    assert expected and any(e["kind"] == "partition" for e in expected)
    assert [without_times(e) for e in replayed][:len(expected)] == expected
    # Each replayed fault started no earlier than its recorded offset.
    assert all(r["at_ms"] >= e["at_ms"] for r, e in zip(replayed, recorded))


@needs_netns
def test_a_client_cut_off_from_every_member_gets_no_answers_while_the_cluster_stays_up(tmp_path):
    schedule = tmp_path / "cut-c0.json"
    schedule.write_text(json.dumps({
        "format": "petcd-chaos-schedule/1", "server": "etcd", "net": "netns", "members": 3, "clients": 2, "seed": 3,
        "duration_s": 5, "quiet_tail_s": 1,
        "faults": [{"at_ms": 1000, "hold_ms": 2500, "kind": "partition", "shape": "client-alone",
                    "cuts": [["c0", "m1"], ["c0", "m2"], ["c0", "m3"]], "label": "client-alone: c0 | m1+m2+m3"}]}))
    run = run_netns(str(tmp_path / "run"), "--schedule", str(schedule), "--op-timeout", "0.5")
    print(run.out, run.err)
    assert summary(run.out)[:2] == ("etcd", "ok") and run.rc == 0
    log = nemesis_log(run.workdir)
    cut = re.search(r"^\s*(\d+) ms  start partition client-alone: c0", log, re.M)
    healed = re.search(r"^\s*(\d+) ms  end   partition", log, re.M)
    assert cut and healed, log
    cut_ms, healed_ms = int(cut[1]), int(healed[1])  # the cut was in force between the two
    ops = load_history(run.history)

    def during(op) -> bool:  # invoked once the cut was in force, and over (or given up on) before it was healed
        return op.invoke_ms >= cut_ms and (op.complete_ms is None or op.complete_ms <= healed_ms)

    cut_off = [op for op in ops if op.process == "c0" and during(op)]
    assert cut_off, "c0 tried nothing while it was cut off"
    assert all(op.outcome in ("fail", "info") for op in cut_off), [op.label() for op in cut_off if op.outcome == "ok"]
    others = [op for op in ops if op.process == "c1" and during(op) and op.outcome == "ok"]
    assert others, "the cluster did not answer the client that was not cut off"
    assert any(op.process == "c0" and op.outcome == "ok" and op.invoke_ms > healed_ms for op in ops), "c0 never recovered"


@needs_netns
def test_namespaces_are_deleted_when_the_cluster_fails_to_start(tmp_path):
    run = run_netns(str(tmp_path), "--server", "etcd", "--etcd-binary", "/bin/false", "--duration", "2", "--clients", "1")
    assert run.rc == 2
    assert "exited with 1 while starting" in run.err


@needs_netns
def test_namespaces_of_dead_runs_are_deleted_and_live_ones_kept():
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{PREFIX}{gone.pid}.1.1-m1"  # a pid that is no more (and never started at tick 1)
    me = os.getpid()
    live = f"{PREFIX}{me}.{_start_ticks(me)}.999-m1"
    made = []
    try:
        for name in (dead, live):
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
        removed = cleanup_stale()
        assert dead in removed and live not in removed
        assert live in list_namespaces() and dead not in list_namespaces()
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_netns_is_refused_without_the_ip_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "petcd.sim.chaos", "--net", "netns", "--duration", "1"],
                          env={**os.environ, "PATH": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--net netns is not available here:" in proc.stderr


def test_a_schedule_that_cuts_clients_is_refused_without_netns(tmp_path, capsys):
    schedule = tmp_path / "s.json"
    schedule.write_text(json.dumps({"format": "petcd-chaos-schedule/1", "server": "petcd", "members": 3, "clients": 2,
                                    "faults": [{"at_ms": 10, "hold_ms": 10, "kind": "partition", "cuts": [["c0", "m1"]]}]}))
    assert chaos.main(["--schedule", str(schedule), "--net", "hook"]) == 2
    assert "cuts clients off, which needs --net netns" in capsys.readouterr().err
    schedule.write_text(json.dumps({"format": "petcd-chaos-schedule/1", "faults": [{"at_ms": 10, "kind": "kill"}]}))
    assert chaos.main(["--schedule", str(schedule)]) == 2
    assert "at_ms and hold_ms must be non-negative integers" in capsys.readouterr().err
