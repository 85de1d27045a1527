"""`petcd chaos`: short fault runs against real petcd and real etcd processes, judged by the checkers.

Each run starts a 3-member cluster, five client processes and the nemesis for
about 16 s; the two runs take most of this file's time (about a minute).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import os
import re
from dataclasses import dataclass

import pytest

from petcd.sim import chaos
from petcd.sim.chaos_check import check_history, write_report
from petcd.sim.check.history import Op, load_history

DURATION_S = "18"


def leftover_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (a run's workdir)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            out.append(f"{pid}: {cmd[:200]}")
    return out


@dataclass
class Run:
    rc: int
    out: str
    workdir: str
    history: str


def run_chaos(workdir: str, *argv: str) -> Run:
    history = os.path.join(workdir, "history.jsonl")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = chaos.main([*argv, "--duration", DURATION_S, "--workdir", workdir, "--history", history,
                         "--report", os.path.join(workdir, "report.html")])
    left = leftover_processes(workdir)
    assert not left, "servers or clients left running:\n" + "\n".join(left)
    return Run(rc, buf.getvalue(), workdir, history)


def summary(out: str) -> tuple[str, str, int, int]:
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(r"server=(\w+) verdict=(ok|fail) ops=(\d+) faults=(\d+)", last)
    assert m, f"unexpected last line {last!r}"
    return m[1], m[2], int(m[3]), int(m[4])


def nemesis_log(workdir: str) -> str:
    with open(os.path.join(workdir, "nemesis.log")) as f:
        return f.read()


@pytest.fixture(scope="module")
def petcd_run(tmp_path_factory) -> Run:
    return run_chaos(str(tmp_path_factory.mktemp("chaos-petcd")), "--server", "petcd", "--seed", "7", "--faults", "kill,pause,partition")


def test_petcd_under_kill_pause_and_partition_stays_linearizable(petcd_run):
    rc, out, workdir, history = petcd_run.rc, petcd_run.out, petcd_run.workdir, petcd_run.history
    print(out)  # shown when the test fails
    server, verdict, ops, faults = summary(out)
    assert (server, verdict, rc) == ("petcd", "ok", 0)
    assert re.search(r"^linearizability ok: linearizable: \d+ ops", out, re.M)
    assert re.search(r"^liveness ok:", out, re.M)
    log = nemesis_log(workdir)
    for kind in ("kill", "pause", "partition"):
        assert re.search(rf"start {kind} ", log), f"no {kind} fault was injected:\n{log}"
        assert re.search(rf"end   {kind} ", log), f"a {kind} fault was never undone:\n{log}"
    assert faults >= 3 and ops > 100
    # The faults are recorded as a replayable schedule next to the history.
    with open(os.path.join(workdir, "schedule.json")) as f:
        schedule = json.load(f)
    assert (schedule["server"], schedule["net"], schedule["seed"]) == ("petcd", "hook", 7)
    assert [e["kind"] for e in schedule["faults"]] == re.findall(r"start (\w+) ", log)
    recorded = load_history(history)
    assert len(recorded) == ops
    assert any(op.outcome != "ok" for op in recorded), "faults were injected but no client noticed"


def test_etcd_under_kill_and_pause_stays_linearizable(tmp_path):
    run = run_chaos(str(tmp_path), "--server", "etcd", "--seed", "7", "--faults", "kill,pause")
    rc, out, workdir = run.rc, run.out, run.workdir
    print(out)
    server, verdict, ops, faults = summary(out)
    assert (server, verdict, rc) == ("etcd", "ok", 0)
    log = nemesis_log(workdir)
    for kind in ("kill", "pause"):
        assert re.search(rf"start {kind} ", log), f"no {kind} fault was injected:\n{log}"
    assert faults >= 2 and ops > 100


def test_partitions_are_refused_for_etcd_without_namespaces(capsys):
    assert chaos.main(["--server", "etcd", "--faults", "kill,partition"]) == 2
    err = capsys.readouterr().err
    assert "partition is not available with --server etcd --net hook" in err
    assert "use --net netns" in err  # the way to partition etcd (tests/test_chaos_netns.py)


def _stale_read(ops: list[Op]) -> tuple[int, bytes]:
    """A get and a value it must not return: overwritten (by a put that completed) before the get was invoked."""
    puts = [op for op in ops if op.kind == "put" and op.outcome == "ok"]
    for i, op in enumerate(ops):
        if op.kind != "get" or op.outcome != "ok":
            continue
        key = op["key"]
        before = [p for p in puts if p["key"] == key and p.complete_ms < op.invoke_ms]
        for old in before:
            if any(newer.invoke_ms > old.complete_ms for newer in before) and old["value"] != op.result["value"]:
                return i, old["value"]
    raise AssertionError("no read to doctor in the history")


def test_the_checker_catches_a_doctored_history(petcd_run, tmp_path):
    ops = load_history(petcd_run.history)
    assert all(v.ok for v in check_history(ops))
    i, stale = _stale_read(ops)
    doctored = copy.deepcopy(ops)
    doctored[i].fields["result"]["value"] = stale
    verdicts = check_history(doctored)
    assert not all(v.ok for v in verdicts), f"a stale read went unnoticed: {doctored[i].label()}"
    assert any(v.status == "fail" for v in verdicts)
    report = tmp_path / "report.html"
    problem = write_report(str(report), doctored, verdicts)
    if importlib.util.find_spec("petcd.sim.check.report") is not None:
        assert problem is None and report.stat().st_size > 0, problem
    # A read of a value nobody ever wrote is caught too.
    doctored = copy.deepcopy(ops)
    doctored[i].fields["result"]["value"] = b"never written"
    assert any(v.status == "fail" for v in check_history(doctored))


def test_the_report_of_a_chaos_run_shades_the_nemesis_faults(tmp_path):
    from petcd.sim.chaos_check import fault_spans
    from petcd.sim.chaos_nemesis import FaultEvent
    from petcd.sim.check.history import make_op

    log = [FaultEvent(100, "start", "kill", "m2 (8e9e05c52164694d)"), FaultEvent(150, "start", "partition", "m1 | m2 m3"),
           FaultEvent(300, "end", "partition", "healed"), FaultEvent(400, "end", "kill", "m2 restarted"),
           FaultEvent(500, "start", "pause", "m3 (fe3c)")]
    spans = fault_spans(log, 900)
    assert [(s["kind"], s["from_ms"], s["to_ms"]) for s in spans] == [("kill", 100, 400), ("partition", 150, 300), ("pause", 500, 900)]
    ops = [make_op("p1", 1, "put", 0, 50, "ok", key="k", value="v", result={"revision": 2})]
    report = tmp_path / "r.html"
    assert write_report(str(report), ops, check_history(ops), faults=spans) is None
    text = report.read_text()
    assert re.findall(r'class="fault-band" data-kind="(\w+)"', text) == ["kill", "partition", "pause"]
    assert "fault kill m2 (8e9e05c52164694d): from 100 ms to 400 ms" in text
