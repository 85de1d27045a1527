"""Reports of simulated runs and of `petcd check`: real `petcd sim run --report/--history`, the report's content
(every operation with its key, value and outcome on hover, fault bands, leader lanes, a failure's unplaced
operations first), `petcd check` running every checker a simulated history has material for, and
`petcd sim swarm --faults` and its progress bar."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
from pathlib import Path

import pytest

from petcd.sim import cli as sim_cli
from petcd.sim.check import main as check_main
from petcd.sim.check.history import KV_KINDS, load_history, load_sections, make_op

SEED = 7  # 60 ops with all faults: 14 faults, several leaderships, indeterminate ops
OPS = "60"


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """One real `petcd sim run --seed SEED --ops 60 --history H --report DIR/`."""
    d = tmp_path_factory.mktemp("simrun")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = sim_cli.main(["run", "--seed", str(SEED), "--ops", OPS, "--history", str(d / "h.jsonl"), "--report", f"{d}/"])
    print(out.getvalue())
    return rc, out.getvalue(), d / "h.jsonl", d / f"sim-seed-{SEED}.html"


def _titles(text: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<title>([^<]*)</title>", text)]


def test_a_passing_run_writes_a_report_with_every_op_the_faults_and_the_leaders(sim_run):
    rc, out, history_path, report_path = sim_run
    assert rc == 0 and out.strip().splitlines()[-1].startswith(f"seed={SEED} verdict=ok digest=")
    assert f"report: {report_path}" in out and report_path.exists()
    text = report_path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "verdict=ok" in text and 'id="unplaced"' not in text
    assert "<script" not in text and "src=" not in text
    history, sections = load_history(history_path), load_sections(history_path)

    # every operation is a bar whose hover text gives its key, value and outcome
    titles = _titles(text)
    for i, op in enumerate(history):
        assert any(t.startswith(f"[{i}] {op.label()}\n") for t in titles), op.label()
    puts = [(i, op) for i, op in enumerate(history) if op.kind == "put" and op.outcome == "ok"]
    i, p = puts[0]
    key, value = p["key"].decode(), p["value"].decode()
    assert any(t.startswith(f"[{i}] {p.process}#{p.id} put '{key}'='{value}' -> ok rev=") for t in titles)
    info = [op for op in history if op.kind in KV_KINDS and op.outcome == "info"]
    assert info and any(f"{info[0].label()}\n" in t for t in titles)

    # faults: a band across the operations and a bar in its kind's lane, each with its times on hover
    faults = sections["fault"]
    assert len(faults) >= 5
    assert re.findall(r'class="fault-band" data-kind="([a-z_-]+)"', text) == [f["kind"] for f in faults]
    assert re.findall(r'class="fault" data-kind="([a-z_-]+)"', text) == [f["kind"] for f in faults]
    for f in faults:
        assert f"fault {f['kind']} {f['detail']}: from {f['from_ms']} ms to {f['to_ms']} ms" in titles

    # which member led when: one lane per member that led, a bar per term
    leaders = sections["leader"]
    assert len({s["term"] for s in leaders}) >= 2
    drawn = re.findall(r'class="leader" data-member="(m\d)" data-term="(\d+)"', text)
    assert drawn == [(s["member"], str(s["term"])) for s in leaders]
    for m in {s["member"] for s in leaders}:
        assert f">{m} leads</text>" in text

    # the counts are explained
    assert "linearizability judges" in out and "60 KV operations" in text


def test_petcd_check_runs_every_checker_a_simulated_history_has_material_for(sim_run, capsys):
    _, sim_out, history_path, _ = sim_run
    assert check_main([str(history_path)]) == 0
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert lines[0].startswith(f"history: {history_path}: ") and f"recorded by `petcd sim run --seed {SEED} " in lines[0]
    assert re.search(r"^from the history file: \d+ committed events \(the watch checker's truth\), \d+ leader terms and \d+ faults "
                     r"\(lease deadlines count from the last of them\)", out, re.M)
    verdict_lines = [line for line in lines if re.match(r"^(linearizability|watch|lease|lock) (ok|fail|unknown): ", line)]
    assert [line.split()[0] for line in verdict_lines] == ["linearizability", "watch", "lease", "lock"]
    assert "ran 4 of 4 checkers: linearizability, watch, lease, lock" in lines and lines[-1] == "verdict=ok"
    # the same verdicts as the run itself (linearizability's search time aside)
    for checker in ("watch", "lease", "lock"):
        summary = next(line for line in verdict_lines if line.startswith(f"{checker} ok: ")).split(": ", 1)[1]
        assert re.search(rf"^{checker} +ok  {re.escape(summary)}$", sim_out, re.M), checker
    assert re.search(r"^counts: 60 KV operations: \d+ ok .* linearizability judges \d+ = \d+ ok \+ \d+ indeterminate", out, re.M)


def test_petcd_check_says_which_checkers_it_did_not_run_and_why(tmp_path, capsys):
    path = tmp_path / "kv.jsonl"
    path.write_text(json.dumps({"process": "p1", "id": 1, "kind": "put", "invoke_ms": 0, "complete_ms": 5, "outcome": "ok",
                                "key": "x", "value": "1", "result": {}}) + "\n")
    assert check_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert ("ran 1 of 4 checkers: linearizability; not run: watch (no watch operations), lease (no lease operations), "
            "lock (no lock operations)") in out.splitlines()


def test_a_failing_history_report_lists_the_operations_that_could_not_be_placed_first(sim_run, tmp_path, capsys):
    _, _, history_path, _ = sim_run
    history = load_history(history_path)
    # plant a stale read after the end of the real run: it sees a value of k that a later ok put overwrote
    puts = [op for op in history if op.kind == "put" and op.outcome == "ok"]
    key = puts[0]["key"]
    old = next(op["value"] for op in puts if op["key"] == key)
    assert any(op["key"] == key and op["value"] != old for op in puts)
    end = max(op.complete_ms or op.invoke_ms for op in history)
    stale = make_op("stale", 1, "get", end + 100, end + 110, "ok", key=key, result={"value": old})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(history_path.read_text() + json.dumps({"process": "stale", "id": 1, "kind": "get", "invoke_ms": end + 100,
                                                          "complete_ms": end + 110, "outcome": "ok", "key": key.decode(),
                                                          "result": {"value": old.decode()}}) + "\n")
    report = tmp_path / "bad.html"
    assert check_main([str(bad), "--report", str(report)]) == 1
    out = capsys.readouterr().out
    print(out)
    assert re.search(rf"^linearizability fail: NOT linearizable: .*{re.escape(stale.label())} cannot be placed", out, re.M)
    assert out.splitlines()[-1] == "verdict=fail"
    text = report.read_text()
    # what failed comes first: before the verdict table and the timeline
    assert text.index('id="unplaced"') < text.index("<th>checker</th>") < text.index("<svg")
    unplaced = text[text.index('id="unplaced"'):text.index("</div>", text.index('id="unplaced"'))]
    assert "could not be placed" in unplaced and html.escape(stale.label(), quote=True) in unplaced
    # the timeline marks it, and still has the run's faults and leaders
    assert re.search(r'stroke="#d00000" stroke-width="3"><title>\[\d+\] ' + re.escape(html.escape(stale.label(), quote=True)), text)
    sections = load_sections(bad)
    assert len(re.findall(r'class="fault-band"', text)) == len(sections["fault"])
    assert len(re.findall(r'class="leader"', text)) == len(sections["leader"])


def test_swarm_draws_each_seeds_faults_from_the_list_given(capsys):
    assert sim_cli.main(["swarm", "--seeds", "1-2", "--ops", "30", "--faults", "partition,crash"]) == 0
    captured = capsys.readouterr()
    print(captured.out)
    assert captured.err == ""  # no progress bar: stderr is not a terminal and none was asked for
    drawn = re.findall(r"^\[\d/2\] seed=\d members=\d faults=(\S+) ok ", captured.out, re.M)
    assert len(drawn) == 2 and all(set(d.split(",")) <= {"partition", "crash"} for d in drawn)
    # every seed draws a non-empty mix from the list; "all" and "raft" stand for their faults; none is none
    mixes = [sim_cli.swarm_mix(seed, ["drop", "crash", "raft"])[1] for seed in range(1, 41)]
    assert all(m and set(m) <= {"drop", "crash", "late_snapshot", "stale_leader"} for m in mixes)
    assert len({tuple(m) for m in mixes}) > 3
    assert set().union(*(sim_cli.swarm_mix(s, ["all"])[1] for s in range(1, 41))) == {
        "drop", "delay", "duplicate", "reorder", "partition", "crash", "pause", "clock", "late_snapshot", "stale_leader",
        "disk-crash", "fsync-fail", "disk-full", "disk-slow", "corrupt"}
    assert sim_cli.swarm_mix(5, ["none"])[1] == []
    assert all(sim_cli.swarm_mix(s, None)[1] in [list(m) for m in sim_cli.SWARM_FAULT_MIXES] for s in range(1, 20))


def test_swarm_shows_a_progress_bar_with_an_estimated_finish_when_asked(capsys):
    assert sim_cli.main(["swarm", "--seeds", "3-4", "--ops", "30", "--faults", "drop", "--progress"]) == 0
    captured = capsys.readouterr()
    assert "seeds" not in captured.out and "eta" not in captured.out  # stdout stays the campaign's lines
    bars = captured.err.splitlines()
    assert [b.split("] ")[1].split(",")[0] for b in bars] == ["0/2 seeds", "1/2 seeds", "2/2 seeds"]
    assert re.search(r"^\[#{15}\.{15}\] 1/2 seeds, 0 failed, \d+:\d\d elapsed, eta \d+:\d\d \(finishes about \d\d:\d\d:\d\d\)$",
                     bars[1])
    assert bars[2].startswith("[" + "#" * 30 + "] 2/2 seeds, 0 failed") and bars[2].endswith(", done")


def test_the_progress_estimate_is_the_mean_time_per_seed_so_far():
    now = [100.0]
    bar = sim_cli.Progress(4, io.StringIO(), enabled=True, clock=lambda: now[0])
    now[0] = 110.0  # one seed in 10 s: three more take 30 s
    assert "1/4 seeds, 0 failed, 0:10 elapsed, eta 0:30 (finishes about " in bar.line(1, 0)
    now[0] = 4000.0
    assert "3/4 seeds, 1 failed, 1:05:00 elapsed, eta 21:40 " in bar.line(3, 1)


def test_the_history_sections_round_trip(tmp_path):
    from petcd.sim.check.history import dump_history

    ops = [make_op("p", 1, "put", 0, 1, "ok", key="a", value="1", result={"revision": 2})]
    events = [{"revision": 2, "type": "PUT", "key": b"a\x00", "value": b"1", "prev_value": None}]
    dump_history(ops, tmp_path / "h.jsonl", {"options": [{"lease_bound_ms": 7}], "committed": events})
    assert load_history(tmp_path / "h.jsonl") == ops
    sections = load_sections(tmp_path / "h.jsonl")
    assert sections["options"] == [{"lease_bound_ms": 7}]
    assert sections["committed"] == [{"revision": 2, "type": "PUT", "key": {"b64": "YQA="}, "value": "1", "prev_value": None}]
    assert Path(tmp_path / "h.jsonl").read_text().startswith("#petcd:options ")
