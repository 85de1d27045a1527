"""`petcd check HISTORY [--report out.html] [--checkers linearizability,watch,lease,lock]`.

Loads a JSON-lines history (see history.py), runs every checker the history has
material for (or the ones named), prints what it read, one line per checker,
which checkers it ran and which not (and why), what the KV counts mean, and a final
`verdict=ok|fail|unknown` line. The history file's #petcd: sections (written by
`petcd sim run --history`) supply the committed events for the watch checker,
unless --committed is given, the leaders and faults for the report, and what
the lease checker judged the run with: a lease bound (counted from each lease's
last renewal) when the options carry one, unless --lease-bound is given, else
the leaders and faults (each lease's deadline then counts from the last leader
change and fault too, see lease.py); --lease-leaders and --lease-flat choose.
Exit status: 0 all passed, 1 a checker failed, 2 undecided (a search ran out of
its step budget, nothing failed), 3 bad usage or an unreadable history.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from petcd.sim.check.history import KV_KINDS, HistoryError, Op, explain_kv_counts, load_history, load_sections
from petcd.sim.check.verdict import FAIL, OK, UNKNOWN, Verdict, overall

CHECKERS = ("linearizability", "watch", "lease", "lock")
KV_KINDS_SET = set(KV_KINDS)
KINDS = {"linearizability": KV_KINDS_SET, "watch": {"watch"}, "lease": {"lease"}, "lock": {"lock"}}
EXIT = {OK: 0, FAIL: 1, UNKNOWN: 2}
EXIT_USAGE = 3


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="petcd check", description="Check a recorded history (JSON lines).")
    p.add_argument("history", help="the history file")
    p.add_argument("--report", metavar="OUT.html", help="write a self-contained HTML report")
    p.add_argument("--checkers", default=None, help=f"comma-separated subset of {','.join(CHECKERS)} (default: all with ops)")
    p.add_argument("--no-revisions", action="store_true", help="linearizability: ignore reported revisions")
    p.add_argument("--max-steps", type=int, default=None, help="linearizability: search step budget per partition")
    p.add_argument("--election-timeout", type=int, default=1000, metavar="MS", help="lease: the cluster's election timeout")
    p.add_argument("--lease-bound", type=int, default=None, metavar="MS", help="lease: allowed lateness (default 2000 + election timeout)")
    lease_mode = p.add_mutually_exclusive_group()
    lease_mode.add_argument("--lease-leaders", action="store_true",
                            help="lease: count deadlines from the history's leader changes and faults too, even when its "
                                 "run did not (its options carry a lease bound)")
    lease_mode.add_argument("--lease-flat", action="store_true",
                            help="lease: ignore the history's leaders and faults: deadlines count from the last renewal only")
    p.add_argument("--lease-tolerance", type=int, default=0, metavar="MS", help="lease: slack for early expiry (client RTT)")
    p.add_argument("--clock-rates", default="1,1", metavar="SLOW,FAST",
                   help="lease: slowest and fastest rate of the leader's clock against the clients' (default 1,1)")
    p.add_argument("--committed", metavar="EVENTS.jsonl", help="watch: the full list of committed events, one JSON object a line")
    return p


def run_checkers(
    history: Sequence[Op],
    checkers: Sequence[str] | None = None,
    *,
    use_revisions: bool = True,
    max_steps: int | None = None,
    committed: list[Any] | None = None,
    election_timeout_ms: int = 1000,
    lease_bound_ms: int | None = None,
    lease_tolerance_ms: int = 0,
    clock_rates: tuple[float, float] = (1.0, 1.0),
    leaders: list[Any] | None = None,
    faults: list[Any] | None = None,
) -> list[Verdict]:
    """Run the named checkers (default: every checker with ops in the history); one Verdict each."""
    from petcd.sim.check.lease import check_leases
    from petcd.sim.check.linearizability import DEFAULT_MAX_STEPS, check_linearizability
    from petcd.sim.check.lock import check_locks
    from petcd.sim.check.watch import check_watch

    kinds = {op.kind for op in history}
    names = [c for c in CHECKERS if KINDS[c] & kinds] if checkers is None else list(checkers)
    out: list[Verdict] = []
    for name in names:
        if name == "linearizability":
            out.append(
                check_linearizability(
                    history, use_revisions=use_revisions, max_steps=max_steps or DEFAULT_MAX_STEPS
                )
            )
        elif name == "watch":
            out.append(check_watch(history, committed))
        elif name == "lease":
            out.append(
                check_leases(
                    history, bound_ms=lease_bound_ms, election_timeout_ms=election_timeout_ms,
                    tolerance_ms=lease_tolerance_ms, clock_rates=clock_rates, leaders=leaders, faults=faults,
                )
            )
        elif name == "lock":
            out.append(check_locks(history))
        else:
            raise ValueError(f"unknown checker {name!r} (known: {', '.join(CHECKERS)})")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["check"]:
        args_list = args_list[1:]
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except _Usage as e:
        print(f"petcd check: {e}", file=sys.stderr)
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    checkers = None
    if args.checkers:
        checkers = [c.strip() for c in args.checkers.split(",") if c.strip()]
        unknown = [c for c in checkers if c not in CHECKERS]
        if unknown:
            print(f"petcd check: unknown checker(s) {', '.join(unknown)} (known: {', '.join(CHECKERS)})", file=sys.stderr)
            return EXIT_USAGE
    try:
        slow, fast = (float(x) for x in args.clock_rates.split(","))
        if not 0 < slow <= fast:
            raise ValueError
    except ValueError:
        print(f"petcd check: --clock-rates wants SLOW,FAST with 0 < SLOW <= FAST, not {args.clock_rates!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        history = load_history(args.history)
        sections = load_sections(args.history)
        committed = None
        committed_from = ""
        if args.committed:
            with open(args.committed, encoding="utf-8") as f:
                committed = [json.loads(line) for line in f if line.strip()]
        elif "committed" in sections:
            committed, committed_from = sections["committed"], "the history file"
    except (OSError, HistoryError, json.JSONDecodeError) as e:
        print(f"petcd check: {e}", file=sys.stderr)
        return EXIT_USAGE
    options: dict[str, Any] = {}
    for o in sections.get("options", []):
        options.update(o if isinstance(o, dict) else {})
    # A lease bound in the options says the run judged leases without its leaders and faults: do the same
    # (the run's verdict), unless asked to use them. With them the lease checker counts each deadline from
    # the last leader change and fault itself, and the default bound applies.
    leaders = faults = None
    has_sections = "leader" in sections or "fault" in sections
    if has_sections and not args.lease_flat and (args.lease_leaders or options.get("lease_bound_ms") is None):
        leaders, faults = sections.get("leader", []), sections.get("fault", [])
    lease_bound = args.lease_bound
    if lease_bound is None and leaders is None and options.get("lease_bound_ms") is not None:
        lease_bound = int(options["lease_bound_ms"])
    kinds = {op.kind for op in history}
    counts: dict[str, int] = {}
    for op in history:
        counts[op.kind] = counts.get(op.kind, 0) + 1
    run_info = (sections.get("run") or [None])[0]
    print(f"history: {args.history}: {len(history)} operations ("
          + (", ".join(f"{n} {k}" for k, n in counts.items()) or "none") + ")"
          + (f", recorded by `{run_info['command']}`" if isinstance(run_info, dict) and run_info.get("command") else ""))
    used = []
    if committed_from:
        used.append(f"{len(committed or [])} committed events (the watch checker's truth)")
    if args.lease_bound is None and lease_bound is not None:
        used.append(f"lease bound {lease_bound} ms")
    if leaders is not None:
        used.append(f"{len(leaders)} leader terms and {len(faults or [])} faults (lease deadlines count from the last of them)")
    if used:
        print("from the history file: " + ", ".join(used) + " (flags override)")
    not_run: list[str] = []
    if checkers is not None:
        for c in checkers:
            if not KINDS[c] & kinds:
                print(f"{c} skipped: no {c} operations in the history")
                not_run.append(f"{c} (no {c} operations)")
        not_run += [f"{c} (not asked for)" for c in CHECKERS if c not in checkers]
        checkers = [c for c in checkers if KINDS[c] & kinds]
    else:
        not_run = [f"{c} (no {c} operations)" for c in CHECKERS if not KINDS[c] & kinds]
    try:
        verdicts = run_checkers(
            history,
            checkers,
            use_revisions=not args.no_revisions,
            max_steps=args.max_steps,
            committed=committed,
            election_timeout_ms=args.election_timeout,
            lease_bound_ms=lease_bound,
            lease_tolerance_ms=args.lease_tolerance,
            clock_rates=(slow, fast),
            leaders=leaders,
            faults=faults,
        )
    except (KeyError, TypeError, ValueError) as e:
        print(f"petcd check: malformed history: {e!r}", file=sys.stderr)
        return EXIT_USAGE
    for v in verdicts:
        print(v.line())
    if not verdicts:
        print("nothing to check: no operations of a checked kind")
    print(f"ran {len(verdicts)} of {len(CHECKERS)} checkers: {', '.join(v.checker for v in verdicts) or 'none'}"
          + (f"; not run: {', '.join(not_run)}" if not_run else ""))
    if KV_KINDS_SET & kinds:
        print(f"counts: {explain_kv_counts(history)}")
    if args.report:
        from petcd.sim.check.report import write_html_report

        write_html_report(args.report, history, verdicts, faults=sections.get("fault", []), leaders=sections.get("leader", []),
                          run=run_info if isinstance(run_info, dict) else None)
        print(f"report: {args.report}")
    status = overall(verdicts)
    print(f"verdict={status}")
    return EXIT[status]


if __name__ == "__main__":
    sys.exit(main())
