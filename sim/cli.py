"""`petcd sim run` and `petcd sim swarm`: simulated fault campaigns, reproducible from a seed."""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import TextIO

from petcd.sim.faults import ALL_KINDS, DISK_KINDS, KIND_GROUPS
from petcd.sim.run import FAULT_CHOICES, SimReport, run

# the fault names `all` covers (a group such as "partition" is covered when all its kinds are)
_ALL_NAMES = {f for f in FAULT_CHOICES if set(KIND_GROUPS.get(f, (f,))) <= set(ALL_KINDS)}

SWARM_FAULT_MIXES = (["all"], ["partition", "crash"], ["drop", "delay", "reorder"], ["pause", "clock", "duplicate"], ["crash", "pause"],
                     ["partition", "drop", "duplicate"], ["clock", "delay", "crash"])
# what `--faults all` and `--faults raft` stand for when a swarm draws its mixes from a list
_SWARM_GROUPS = {"all": [f for f in FAULT_CHOICES if f not in ("raft", "disk", "all") and f in _ALL_NAMES],
                 "raft": ["late_snapshot", "stale_leader"], "disk": list(DISK_KINDS)}


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
    """One line of counts (the KV clients' operations by outcome, faults started, time); `_explain` says what they mean."""
    kv = r.kv_ops
    ok = sum(1 for op in kv if op.outcome == "ok")
    failed = sum(1 for op in kv if op.outcome == "fail")
    info = sum(1 for op in kv if op.outcome == "info")
    ratio = r.virtual_ms / 1000 / r.wall_s if r.wall_s else 0.0
    return (f"ops={len(kv)} ok={ok} failed={failed} indeterminate={info} faults={len(r.faults_seen)} "
            f"virtual={r.virtual_ms / 1000:.1f}s wall={r.wall_s:.2f}s speedup={ratio:.0f}x")


def _explain(r: SimReport) -> str:
    """What the summary's counts mean, and why ok + indeterminate may differ from what linearizability judged."""
    from petcd.sim.check.history import explain_kv_counts

    others = {kind: sum(1 for op in r.history if op.kind == kind) for kind in ("watch", "lease", "lock")}
    return (f"counts: {explain_kv_counts(r.history)}; the {others['watch']} watchers, {others['lease']} leases and "
            f"{others['lock']} lock holds are judged by their own checkers; faults = faults started")


def _report_path(arg: str, seed: int) -> str:
    """--report FILE, or --report DIR (an existing directory, or a path ending in /): DIR/sim-seed-S.html."""
    if arg.endswith(("/", os.sep)) or os.path.isdir(arg):
        os.makedirs(arg, exist_ok=True)
        return os.path.join(arg, f"sim-seed-{seed}.html")
    return arg


def history_sections(r: SimReport) -> dict[str, list]:
    """What a history file carries besides the operations (see petcd.sim.check.history)."""
    sections: dict[str, list] = {"run": [_run_info(r)]}
    if r.lease_bound_ms is not None:
        sections["options"] = [{"lease_bound_ms": r.lease_bound_ms}]
    sections["fault"] = r.faults_seen
    sections["leader"] = r.leaders
    if r.committed is not None:
        sections["committed"] = r.committed
    return sections


def _run_info(r: SimReport) -> dict[str, object]:
    return {"command": r.command(), "seed": r.seed, "verdict": "ok" if r.ok else "fail", "digest": r.digest}


def cmd_run(args: argparse.Namespace) -> int:
    report = run(args.seed, args.members, args.ops, args.faults, trace=args.trace)
    for v in report.verdicts:
        print(f"{v.checker:16} {'ok' if v.ok else 'FAIL'}  {v.summary}")
    print(_summary(report))
    print(_explain(report))
    if args.trace and not report.ok:
        print("--- faults")
        print("\n".join(report.fault_log))
        print("--- trace (last 200 lines)")
        print("\n".join(report.trace[-200:]))
    if args.history:
        from petcd.sim.check.history import dump_history

        dump_history(report.history, args.history, history_sections(report))
        print(f"history: {args.history} (petcd check {args.history} runs the same checkers on it)")
    if args.report:
        from petcd.sim.check.report import write_html_report

        path = _report_path(args.report, report.seed)
        write_html_report(path, report.history, report.verdicts, title=f"petcd sim run --seed {report.seed}",
                          faults=report.faults_seen, leaders=report.leaders, run=_run_info(report),
                          trace=report.trace[-200:] if not report.ok else ())
        print(f"report: {path}")
    print(f"seed={report.seed} verdict={'ok' if report.ok else 'fail'} digest={report.digest}")
    return 0 if report.ok else 1


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """A progress bar with an estimated finish time, on a terminal (redrawn in place) or, when asked, on any stream
    (one line per update). Wall-clock only: it never changes what is run or printed on stdout."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO, *, enabled: bool, clock=time.monotonic) -> None:
        self.total, self.stream, self.enabled, self._clock = total, stream, enabled, clock
        self._tty = enabled and stream.isatty()
        self._started = clock()
        self._drawn = False

    def line(self, done: int, failed: int) -> str:
        elapsed = self._clock() - self._started
        filled = self.WIDTH * done // max(1, self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        s = f"[{bar}] {done}/{self.total} seeds, {failed} failed, {_fmt_s(elapsed)} elapsed"
        if 0 < done < self.total:
            eta = elapsed / done * (self.total - done)
            s += f", eta {_fmt_s(eta)} (finishes about {time.strftime('%H:%M:%S', time.localtime(time.time() + eta))})"
        elif done == self.total:
            s += ", done"
        return s

    def update(self, done: int, failed: int) -> None:
        if not self.enabled:
            return
        if self._tty:
            self.stream.write("\r\x1b[K" + self.line(done, failed))
            self._drawn = True
        else:
            self.stream.write(self.line(done, failed) + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the terminal's bar line."""
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def clear(self) -> None:
        """Before writing to stdout: take the bar off the terminal's line (it is drawn again at the next update)."""
        if self._tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def swarm_mix(seed: int, faults: list[str] | None) -> tuple[int, list[str]]:
    """The cluster size and fault mix of one swarm seed: from the built-in mixes, or drawn from `faults`."""
    rng = random.Random(f"swarm/{seed}")
    members = rng.choice((3, 3, 5))
    if faults is None:
        return members, list(rng.choice(SWARM_FAULT_MIXES))
    pool: list[str] = []
    for name in faults:
        for f in _SWARM_GROUPS.get(name, [name]):
            if f != "none" and f not in pool:
                pool.append(f)
    if not pool:
        return members, []
    drawn = rng.sample(pool, rng.randint(1, len(pool)))
    return members, sorted(drawn, key=pool.index)


def cmd_swarm(args: argparse.Namespace) -> int:
    failing: list[SimReport] = []
    seeds = args.seeds
    progress = Progress(len(seeds), sys.stderr, enabled=args.progress if args.progress is not None else sys.stderr.isatty())
    progress.update(0, 0)
    for n, seed in enumerate(seeds, 1):
        members, faults = swarm_mix(seed, args.faults)
        report = run(seed, members, args.ops, list(faults))
        status = "ok" if report.ok else "FAIL"
        progress.clear()
        print(f"[{n}/{len(seeds)}] seed={seed} members={members} faults={','.join(faults) or 'none'} {status} {_summary(report)}",
              flush=True)
        if not report.ok:
            failing.append(report)
        progress.update(n, len(failing))
    progress.finish()
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
    p_run.add_argument("--report", metavar="FILE.html|DIR/",
                       help="write an HTML report of the run, passing or not (into DIR as sim-seed-S.html)")
    p_run.set_defaults(func=cmd_run)
    p_swarm = sub.add_parser("swarm", help="many seeds, random fault mixes and cluster sizes")
    p_swarm.add_argument("--seeds", type=_seeds, required=True, help="A-B")
    p_swarm.add_argument("--ops", type=int, default=300)
    p_swarm.add_argument("--faults", type=_faults, default=None,
                         help="comma list as for `sim run`: each seed draws its mix (a non-empty subset) from it "
                              "(default: built-in mixes)")
    p_swarm.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                         help="a progress bar with an estimated finish time on stderr (default: when stderr is a terminal)")
    p_swarm.set_defaults(func=cmd_swarm)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
