"""`petcd sim run` and `petcd sim swarm`: simulated fault campaigns, reproducible from a seed."""

from __future__ import annotations

import argparse
import random
import sys

from petcd.sim.run import FAULT_CHOICES, SimReport, run

SWARM_FAULT_MIXES = (["all"], ["partition", "crash"], ["drop", "delay", "reorder"], ["pause", "clock", "duplicate"], ["crash", "pause"],
                     ["partition", "drop", "duplicate"], ["clock", "delay", "crash"])


def _faults(text: str) -> list[str]:
    names = [f.strip() for f in text.split(",") if f.strip()]
    for name in names:
        if name not in (*FAULT_CHOICES, "none"):
            raise argparse.ArgumentTypeError(f"unknown fault {name!r}; choose from {', '.join(FAULT_CHOICES)} or none")
    return names


def _seeds(text: str) -> range:
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds wants A-B, got {text!r}") from None
    if hi < lo:
        raise argparse.ArgumentTypeError(f"--seeds wants A <= B, got {text!r}")
    return range(lo, hi + 1)


def _summary(r: SimReport) -> str:
    ok = sum(1 for op in r.history if op.outcome == "ok")
    info = sum(1 for op in r.history if op.outcome == "info")
    ratio = r.virtual_ms / 1000 / r.wall_s if r.wall_s else 0.0
    return (f"ops={len(r.history)} ok={ok} indeterminate={info} faults={len(r.fault_log) // 2} "
            f"virtual={r.virtual_ms / 1000:.1f}s wall={r.wall_s:.2f}s speedup={ratio:.0f}x")


def cmd_run(args: argparse.Namespace) -> int:
    report = run(args.seed, args.members, args.ops, args.faults, trace=args.trace)
    for v in report.verdicts:
        print(f"{v.checker:16} {'ok' if v.ok else 'FAIL'}  {v.summary}")
    print(_summary(report))
    if args.trace and not report.ok:
        print("--- faults")
        print("\n".join(report.fault_log))
        print("--- trace (last 200 lines)")
        print("\n".join(report.trace[-200:]))
    if args.history:
        from petcd.sim.check.history import dump_history

        dump_history(report.history, args.history)
    if args.report and not report.ok:
        from petcd.sim.check.report import write_html_report

        write_html_report(args.report, report.history, report.verdicts)
        print(f"report: {args.report}")
    print(f"seed={report.seed} verdict={'ok' if report.ok else 'fail'} digest={report.digest}")
    return 0 if report.ok else 1


def cmd_swarm(args: argparse.Namespace) -> int:
    failing: list[SimReport] = []
    seeds = args.seeds
    for n, seed in enumerate(seeds, 1):
        rng = random.Random(f"swarm/{seed}")
        members = rng.choice((3, 3, 5))
        faults = rng.choice(SWARM_FAULT_MIXES)
        report = run(seed, members, args.ops, list(faults))
        status = "ok" if report.ok else "FAIL"
        print(f"[{n}/{len(seeds)}] seed={seed} members={members} faults={','.join(faults)} {status} {_summary(report)}", flush=True)
        if not report.ok:
            failing.append(report)
    print(f"{len(seeds) - len(failing)} passed, {len(failing)} failed")
    for report in failing:
        bad = ", ".join(v.checker for v in report.verdicts if not v.ok)
        print(f"FAILED seed={report.seed} ({bad}); replay: {report.command()} --trace")
    return 1 if failing else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="petcd sim", description="Deterministic simulation of a petcd cluster under faults.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="one seed")
    p_run.add_argument("--seed", type=int, required=True)
    p_run.add_argument("--members", type=int, default=3, choices=range(1, 8), metavar="N")
    p_run.add_argument("--ops", type=int, default=1000)
    p_run.add_argument("--faults", type=_faults, default=["all"], help=f"comma list of: {', '.join(FAULT_CHOICES)}, or none")
    p_run.add_argument("--trace", action="store_true", help="print the faults and the events that led to a failure")
    p_run.add_argument("--history", help="write the operation history (JSON lines) here, for `petcd check`")
    p_run.add_argument("--report", help="write an HTML report here if a checker fails")
    p_run.set_defaults(func=cmd_run)
    p_swarm = sub.add_parser("swarm", help="many seeds, random fault mixes and cluster sizes")
    p_swarm.add_argument("--seeds", type=_seeds, required=True, help="A-B")
    p_swarm.add_argument("--ops", type=int, default=300)
    p_swarm.set_defaults(func=cmd_swarm)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
