"""Judging a `petcd chaos` run: the recorded history through `petcd.sim.check`, plus the run's own verdicts."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from petcd.sim.check.history import Op, dump_history, op_from_json
from petcd.sim.check.verdict import Verdict


def to_ops(raw: list[dict[str, Any]]) -> list[Op]:
    return [op_from_json(o) for o in raw]


def check_history(ops: list[Op], budget: int | None = None) -> list[Verdict]:
    """Every checker of `petcd.sim.check` that has operations in the history (here: linearizability)."""
    from petcd.sim.check.cli import run_checkers

    return run_checkers(ops, max_steps=budget)


def first_write_after(ops: list[Op], healed_ms: int | None) -> int | None:
    """ms from healing to the completion of the first write that took effect after it."""
    if healed_ms is None:
        return None
    done = [op.complete_ms for op in ops if op.outcome == "ok" and op.invoke_ms >= healed_ms and op.complete_ms is not None
            and (op.kind in ("put", "delete", "txn") or (op.kind == "cas" and (op.result or {}).get("succeeded")))]
    return min(done) - healed_ms if done else None


def judge(result: Any, raw: list[dict[str, Any]], cluster: Any, nemesis: Any, args: argparse.Namespace) -> None:
    """Fill result.history and result.verdicts; write the history and, on failure, the HTML report."""
    result.history = to_ops(raw)
    history_path = args.history or os.path.join(result.workdir, "history.jsonl")
    dump_history(result.history, history_path)
    started = time.monotonic()
    verdicts = check_history(result.history, args.check_budget)
    result.check_s = time.monotonic() - started
    result.recovered_ms = first_write_after(result.history, result.healed_ms)
    if result.final_write_ms is not None:
        verdicts.append(Verdict(True, "liveness", f"after healing, the final write succeeded in {result.final_write_ms} ms"
                                + (f" (the first client write {result.recovered_ms} ms after healing)" if result.recovered_ms is not None else "")))
    else:
        verdicts.append(Verdict(False, "liveness", f"after healing, no write succeeded within {args.recovery_bound:g} s"))
    crashes = list(nemesis.unexpected_exits) if nemesis is not None else []
    if nemesis is not None and nemesis.error is not None:
        verdicts.append(Verdict(False, "nemesis", f"the nemesis failed: {nemesis.error!r}"))
    verdicts.append(Verdict(not crashes, "crashes", "; ".join(crashes) if crashes else "no member exited unless killed"))
    result.verdicts = verdicts
    if args.report:
        faults = fault_spans(nemesis.log if nemesis is not None else [], result.healed_ms)
        result.report_error = write_report(args.report, result.history, result.verdicts, faults=faults)


def fault_spans(log: list[Any], end_ms: int | None) -> list[dict[str, Any]]:
    """The chaos nemesis's start/end events as {kind, detail, from_ms, to_ms}: an end closes the open fault of its
    kind on the same member (its target's first word), else the oldest open one of its kind."""
    spans: list[dict[str, Any]] = []
    open_: list[dict[str, Any]] = []
    for e in log:
        if e.action == "start":
            span = {"kind": e.kind, "detail": e.target, "from_ms": e.at_ms, "to_ms": None}
            spans.append(span)
            open_.append(span)
        elif e.action == "end":
            same = [s for s in open_ if s["kind"] == e.kind]
            who = [s for s in same if s["detail"].split()[:1] == e.target.split()[:1]]
            if same:
                span = (who or same)[0]
                span["to_ms"] = e.at_ms
                open_.remove(span)
    for span in open_:
        span["to_ms"] = max(span["from_ms"], end_ms) if end_ms is not None else None
    return spans


def write_report(path: str, history: list[Op], verdicts: list[Verdict], *, faults: list[dict[str, Any]] = ()) -> str | None:  # type: ignore[assignment]
    """The HTML report of a run, passing or not; returns why it could not be written, or None."""
    try:
        from petcd.sim.check.report import write_html_report
    except ImportError as e:
        return f"petcd.sim.check.report is not available ({e})"
    try:
        write_html_report(path, history, verdicts, title="petcd chaos", faults=faults)
    except Exception as e:  # noqa: BLE001 -- the verdicts matter more than the report
        return f"{type(e).__name__}: {e}"
    return None
