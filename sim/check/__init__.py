"""Checkers for recorded histories (Jepsen-style): linearizability of the KV
operations, watch, lease and lock guarantees, an HTML report, and the
`petcd check` command. The history format is described in history.py."""

from petcd.sim.check.cli import main, run_checkers
from petcd.sim.check.history import HistoryError, Op, dump_history, load_history, make_op
from petcd.sim.check.lease import check_leases
from petcd.sim.check.linearizability import check_linearizability
from petcd.sim.check.lock import check_locks
from petcd.sim.check.report import write_html_report
from petcd.sim.check.verdict import Verdict
from petcd.sim.check.watch import Event, check_watch

__all__ = [
    "Event",
    "HistoryError",
    "Op",
    "Verdict",
    "check_leases",
    "check_linearizability",
    "check_locks",
    "check_watch",
    "dump_history",
    "load_history",
    "main",
    "make_op",
    "run_checkers",
    "write_html_report",
]
