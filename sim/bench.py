"""`petcd bench`: load against petcd or any etcd endpoint, in the spirit of etcd's tools/benchmark.

    petcd bench put --clients 50 --conns 10 --total 20000 --endpoints 127.0.0.1:2379
    petcd bench range foo --consistency s --duration 10
    petcd bench put --compare etcd --members 3      # fresh petcd and etcd clusters, same load, one run
    petcd bench check-perf --compare etcd --members 3   # the real `etcdctl check perf` on both

It prints throughput, a latency histogram and percentiles (etcd's report layout), or `--json`.
With `--compare etcd` it starts a fresh local petcd cluster and a fresh real etcd cluster with the
same flags (one after the other, so they never share the CPU), drives both with the same load and
prints both and their ratio.

`check-perf` runs the real `etcdctl check perf --load=L` (60 s, etcd's own verdict lines) and
counts the writes, by revision, between its 10th and 50th second, with the servers' CPU per
write by process over the same window.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import grpc

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.sim.bench_load import KINDS, LoadSpec, WorkerResult, worker_main
from petcd.sim.chaos_cluster import ChaosError, LocalCluster, find_etcd

PERCENTILES = (10, 25, 50, 75, 90, 95, 99, 99.9)
HISTOGRAM_BUCKETS = 10
# Workers import grpc and connect before the common start time; this is how long they get.
WORKER_START_S = 2.0
CHECK_PERF = "check-perf"
# etcdctl check perf runs 60 s; its writes and the servers' CPU are counted in this window of it,
# past its start (clients connecting) and before its end (its final delete of every key it wrote).
CHECK_PERF_WINDOW_S = (10.0, 50.0)
CHECK_PERF_TIMEOUT_S = 300.0  # the run, its final delete included
CHECK_PERF_PREFIX = "/etcdctl-check-perf/"  # etcdctl's default --prefix
_ERRORS = re.compile(r"FAIL: ERROR\((.*)\) -> (\d+)")  # etcdctl's count of each error its requests got
_VERDICT = re.compile(r"(?:PASS|FAIL|Slowest request took too long|Stddev too high)[^\r\n]*")


@dataclass
class Report:
    server: str
    kind: str
    requests: int
    elapsed_s: float
    errors: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list, repr=False)
    # CPU seconds each kind of server process spent during the run, all members summed
    # (servers this run started only; see server_cpu_s).
    cpu_s: dict[str, float] = field(default_factory=dict)
    client_cpu_s: float = 0.0  # the bench's worker processes, all together
    # The share of the machine's CPU time in use during the run (every process, the client's too):
    # near 1.0, the machine, not the server's design, bounds the rate.
    machine_busy: float = 0.0
    notes: list[str] = field(default_factory=list)  # check-perf: etcdctl's verdict lines

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, p: float) -> float:
        lat = self.latencies_s
        if not lat:
            return 0.0
        return lat[min(len(lat) - 1, max(0, math.ceil(p / 100 * len(lat)) - 1))]

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "latencies_s"}
        d["requests_per_s"] = round(self.rate, 2)
        if self.latencies_s:
            d["latency_s"] = {
                "fastest": self.latencies_s[0], "slowest": self.latencies_s[-1],
                "average": statistics.fmean(self.latencies_s),
                **{f"p{p:g}": self.percentile(p) for p in PERCENTILES},
            }
        return d


def run_load(spec: LoadSpec, procs: int, server: str, progress: bool) -> Report:
    """Run `spec` on `procs` worker processes; their latencies merged into one report."""
    mp = multiprocessing.get_context("spawn")  # workers start clean: no grpc state forked from us
    counter = mp.Value("q", 0)
    out = mp.Queue()
    start_at = time.time() + WORKER_START_S
    workers = [mp.Process(target=worker_main, args=(spec, i, procs, counter, start_at, out), daemon=True) for i in range(procs)]
    for w in workers:
        w.start()
    results: list[WorkerResult] = []
    expected = spec.total
    window: list[tuple[int, int]] = []  # the machine's CPU ticks when the load starts, and when a worker is done
    while len(results) < procs:
        if not window and time.time() >= start_at:
            window.append(machine_cpu_ticks())
        try:
            results.append(out.get(timeout=0.2))
        except Exception:  # noqa: BLE001 - queue.Empty: nothing yet
            if not any(w.is_alive() for w in workers) and out.empty():
                raise ChaosError("a bench worker died; see its error above") from None
        if results and len(window) == 1:
            window.append(machine_cpu_ticks())
        if progress:
            _progress_bar(counter.value, expected, spec.duration_s, start_at)
    for w in workers:
        w.join()
    if progress:
        print(file=sys.stderr)
    lat = array.array("d")
    errors: dict[str, int] = {}
    for r in results:
        lat.frombytes(r.latencies)
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    busy_ticks, all_ticks = (after - before for after, before in zip(*window[::-1])) if len(window) == 2 else (0, 0)
    return Report(server, spec.kind, len(lat), max(r.elapsed_s for r in results), errors, sorted(lat),
                  client_cpu_s=sum(r.cpu_s for r in results), machine_busy=busy_ticks / all_ticks if all_ticks else 0.0)


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine so far, from /proc/stat's "cpu" line
    (busy: all but idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _progress_bar(done: int, total: int, duration_s: float, start_at: float) -> None:
    width = 40
    if total:
        frac = min(1.0, done / total)
        label = f"{done}/{total}"
    else:
        frac = min(1.0, max(0.0, time.time() - start_at) / duration_s)
        label = f"{done} requests"
    filled = int(frac * width)
    sys.stderr.write(f"\r [{'=' * filled}{' ' * (width - filled)}] {frac * 100:5.1f}% {label}   ")
    sys.stderr.flush()


def format_report(r: Report) -> str:
    """etcd's benchmark report: summary, histogram, latency distribution."""
    lines = [f"\n{r.server}: {r.kind}", "Summary:", f"  Total:\t{r.elapsed_s:.4f} secs."]
    lat = r.latencies_s
    if lat:
        lines += [
            f"  Slowest:\t{lat[-1]:.4f} secs.",
            f"  Fastest:\t{lat[0]:.4f} secs.",
            f"  Average:\t{statistics.fmean(lat):.4f} secs.",
            f"  Stddev:\t{statistics.pstdev(lat):.4f} secs.",
        ]
    lines.append(f"  Requests/sec:\t{r.rate:.4f}")
    lines += [f"  {note}" for note in r.notes]
    if lat:
        lines += ["", "Response time histogram:"]
        lo, hi = lat[0], lat[-1]
        step = (hi - lo) / HISTOGRAM_BUCKETS or 1e-9
        counts = [0] * (HISTOGRAM_BUCKETS + 1)
        for x in lat:
            counts[min(HISTOGRAM_BUCKETS, int((x - lo) / step))] += 1
        top = max(counts)
        for i, c in enumerate(counts):
            lines.append(f"  {lo + i * step:.4f} [{c}]\t|{'∎' * (c * 40 // top if top else 0)}")
        lines += ["", "Latency distribution:"]
        lines += [f"  {p:g}% in {r.percentile(p):.4f} secs." for p in PERCENTILES]
    if r.cpu_s and r.requests:
        lines += ["", "Server CPU per request, by process (all members):"]
        lines += [f"  {role:<12}{cpu / r.requests * 1e6:10.0f} µs" for role, cpu in sorted(r.cpu_s.items(), key=lambda x: -x[1])]
        lines.append(f"  {'total':<12}{sum(r.cpu_s.values()) / r.requests * 1e6:10.0f} µs")
    if r.requests:
        lines += ["", f"Client CPU per request: {r.client_cpu_s / r.requests * 1e6:.0f} µs",
                  f"Machine busy: {r.machine_busy * 100:.0f} % of {os.cpu_count()} cores"]
    if r.errors:
        lines += ["", "Errors:"] + [f"  [{n}] {name}" for name, n in sorted(r.errors.items())]
    return "\n".join(lines)


def format_comparison(petcd: Report, etcd: Report) -> str:
    ratio = petcd.rate / etcd.rate if etcd.rate else 0.0
    rows = [("requests/s", f"{etcd.rate:.0f}", f"{petcd.rate:.0f}", f"{ratio:.2f}")]
    for p in (50, 90, 99, 99.9) if petcd.latencies_s and etcd.latencies_s else ():
        e, q = etcd.percentile(p) * 1000, petcd.percentile(p) * 1000
        rows.append((f"p{p:g} ms", f"{e:.2f}", f"{q:.2f}", f"{q / e:.2f}" if e else "-"))
    rows.append(("errors", str(sum(etcd.errors.values())), str(sum(petcd.errors.values())), ""))
    out = [f"\n{petcd.kind}: petcd next to etcd (petcd/etcd)", f"  {'':12}{'etcd':>12}{'petcd':>12}{'petcd/etcd':>12}"]
    out += [f"  {a:12}{b:>12}{c:>12}{d:>12}" for a, b, c, d in rows]
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="petcd bench", description="Benchmark petcd or any etcd endpoint (etcd's tools/benchmark loads).")
    p.add_argument("kind", choices=(*KINDS, CHECK_PERF))
    p.add_argument("key", nargs="?", default="foo", help="range: the key to read (default foo)")
    p.add_argument("range_end", nargs="?", default="", help="range: the end of the range")
    p.add_argument("--endpoints", default="127.0.0.1:2379", help="comma-separated host:port list (ignored with --compare)")
    p.add_argument("--compare", choices=("etcd",), help="start fresh petcd and etcd clusters and run the same load on both")
    p.add_argument("--members", type=int, default=1, help="with --compare: cluster size (default 1)")
    p.add_argument("--etcd-binary", help="with --compare: the etcd to run (default: etcd on PATH)")
    p.add_argument("--clients", type=int, default=50, help="concurrent requesters (default 50)")
    p.add_argument("--conns", type=int, default=10, help="gRPC connections (default 10)")
    p.add_argument("--procs", type=int, default=0, help="client worker processes (default: one per core)")
    p.add_argument("--total", type=int, default=0, help="requests in all (default: run for --duration)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds, when --total is not given (default 10)")
    p.add_argument("--rate", type=float, default=0.0, help="requests/s in all (default: unlimited)")
    p.add_argument("--key-size", type=int, default=8)
    p.add_argument("--val-size", type=int, default=256)
    p.add_argument("--key-space-size", type=int, default=1)
    p.add_argument("--sequential-keys", action="store_true")
    p.add_argument("--consistency", choices=("l", "s"), default="l", help="range and txn-mixed reads: linearizable or serializable")
    p.add_argument("--txn-ops", type=int, default=1, help="puts per txn (txn-put, txn-mixed)")
    p.add_argument("--rw-ratio", type=float, default=1.0, help="txn-mixed: reads per write")
    p.add_argument("--watch-keys", type=int, default=1, help="watch: distinct keys the watchers watch")
    p.add_argument("--load", choices=("s", "m", "l", "xl"), default="l", help="check-perf: etcdctl check perf's workload (default l)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-progress", action="store_true")
    return p


def _spec(args: argparse.Namespace, endpoints: list[str]) -> LoadSpec:
    return LoadSpec(
        kind=args.kind, endpoints=tuple(endpoints), clients=args.clients, conns=args.conns, total=args.total,
        duration_s=args.duration, rate=args.rate, key_size=args.key_size, val_size=args.val_size,
        key_space_size=args.key_space_size, sequential_keys=args.sequential_keys, consistency=args.consistency,
        range_key=args.key, range_end=args.range_end, txn_ops=args.txn_ops, rw_ratio=args.rw_ratio, watch_keys=args.watch_keys,
    )


def _check(args: argparse.Namespace) -> str | None:
    for name in ("clients", "conns", "key_size", "key_space_size", "txn_ops", "members", "watch_keys"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    for name in ("total", "procs", "val_size"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must not be negative"
    if not args.total and args.duration <= 0:
        return "--duration must be positive (or give --total)"
    if args.kind in ("txn-put", "txn-mixed") and args.key_space_size < args.txn_ops:
        return "--key-space-size must be at least --txn-ops (keys in one txn must differ)"
    if args.key_space_size > 10 ** args.key_size:
        return "--key-space-size does not fit in --key-size digits"
    if args.rate < 0 or args.rw_ratio < 0:
        return "--rate and --rw-ratio must not be negative"
    return None


def _on_cluster(server: str, args: argparse.Namespace, root: str, procs: int, progress: bool) -> Report:
    cluster = LocalCluster.create(os.path.join(root, server), args.members, server=server, etcd_binary=args.etcd_binary)
    try:
        cluster.start()
        groups = [m.proc.pid for m in cluster.members if m.proc is not None]
        if args.kind == CHECK_PERF:
            return run_check_perf(cluster.endpoints(), args.load, args.etcdctl, groups, server)
        before = server_cpu_s(groups)
        report = run_load(_spec(args, cluster.endpoints()), procs, server, progress)
        after = server_cpu_s(groups)
        report.cpu_s = {role: round(after[role] - before.get(role, 0.0), 3) for role in after}
        return report
    finally:
        cluster.stop()


def _etcdctl(etcd_binary: str | None) -> str:
    """The etcdctl beside the etcd --compare runs (the Debian package ships both), else on PATH."""
    try:
        beside = os.path.join(os.path.dirname(find_etcd(etcd_binary)), "etcdctl")
    except ChaosError:
        beside = ""
    found = beside if os.access(beside, os.X_OK) else shutil.which("etcdctl")
    if not found:
        raise ChaosError("etcdctl not found on PATH (check-perf runs the real etcdctl check perf)")
    return found


def run_check_perf(endpoints: list[str], load: str, etcdctl: str, groups: list[int], server: str) -> Report:
    """The real `etcdctl check perf --load=LOAD` against `endpoints`; its writes (by revision) and the
    CPU of the processes of `groups` (none: not measured) and of etcdctl, in CHECK_PERF_WINDOW_S."""
    marks = []
    with tempfile.TemporaryFile("w+") as out:  # not a pipe: nobody reads it while the run lasts
        proc = subprocess.Popen([etcdctl, f"--endpoints={','.join(endpoints)}", "check", "perf", f"--load={load}"],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "ETCDCTL_API": "3"})
        started = time.monotonic()
        try:
            for at_s in CHECK_PERF_WINDOW_S:
                try:  # until that second of etcdctl's fixed-length run, unless it ends before
                    proc.wait(timeout=max(0.0, started + at_s - time.monotonic()))
                    break
                except subprocess.TimeoutExpired:
                    pass
                marks.append((time.monotonic(), _revision(endpoints[0]), server_cpu_s(groups), _process_cpu_s(proc.pid), machine_cpu_ticks()))
            proc.wait(timeout=CHECK_PERF_TIMEOUT_S)
        except (grpc.RpcError, subprocess.TimeoutExpired) as e:
            what = f"no revision from {endpoints[0]}: {e.details()}" if isinstance(e, grpc.RpcError) else f"still running after {CHECK_PERF_TIMEOUT_S:.0f} s"
            raise ChaosError(f"etcdctl check perf against {server}: {what}; stopped it, so its keys may be left: "
                             f"etcdctl --endpoints={','.join(endpoints)} del --prefix {CHECK_PERF_PREFIX}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        output = out.read()
    # Its verdict, one finding per line; its progress bar (carriage returns) may precede the first.
    verdict = [m.group(0) for m in _VERDICT.finditer(output)]
    if len(marks) < 2 or not verdict:
        raise ChaosError(f"etcdctl check perf against {server} did not run its course:\n{output[-2000:]}")
    (t0, rev0, cpu0, ctl0, ticks0), (t1, rev1, cpu1, ctl1, ticks1) = marks
    busy, total = ticks1[0] - ticks0[0], ticks1[1] - ticks0[1]
    errors = {m.group(1): int(m.group(2)) for m in _ERRORS.finditer(output)}
    return Report(server, CHECK_PERF, rev1 - rev0, t1 - t0, errors, cpu_s={role: round(cpu1[role] - cpu0.get(role, 0.0), 3) for role in cpu1},
                  client_cpu_s=ctl1 - ctl0, machine_busy=busy / total if total else 0.0, notes=verdict)


def _revision(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as channel:
        return pb_grpc.KVStub(channel).Range(pb.RangeRequest(key=b"\0", limit=1), timeout=10).header.revision


def _process_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_s(process_groups: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by every live process of these process groups
    (each member runs in its own group), summed by what the process is: a petcd member's
    supervisor, raft, apply, watch, lease, gateway and peer-tls processes, or etcd."""
    tick_s = 1 / os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) not in process_groups:  # fields[2]: the process group (stat field 5)
            continue
        role = _role(argv)
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) * tick_s  # utime, stime
    return out


def _role(argv: list[str]) -> str:
    if "petcd.actors.proc_runtime" in argv:
        return argv[argv.index("petcd.actors.proc_runtime") + 1]
    for module, role in (("petcd.rpc.gateway", "gateway"), ("petcd.rpc.peer_tls", "peer-tls"), ("petcd.rpc.server_cli", "supervisor")):
        if module in argv:
            return role
    return os.path.basename(argv[0]) or "other"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"petcd bench: {problem}", file=sys.stderr)
        return 2
    procs = args.procs or max(1, min(os.cpu_count() or 1, args.clients))
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    try:
        args.etcdctl = _etcdctl(args.etcd_binary) if args.kind == CHECK_PERF else None  # found before anything starts
        if args.compare:
            with tempfile.TemporaryDirectory(prefix="petcd-bench-") as root:
                reports = [_on_cluster(server, args, root, procs, progress) for server in ("etcd", "petcd")]
        elif args.kind == CHECK_PERF:
            reports = [run_check_perf(args.endpoints.split(","), args.load, args.etcdctl, [], args.endpoints)]
        else:
            reports = [run_load(_spec(args, args.endpoints.split(",")), procs, args.endpoints, progress)]
    except ChaosError as e:
        print(f"petcd bench: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"reports": [r.as_dict() for r in reports]}, indent=2))
    else:
        for r in reports:
            print(format_report(r))
        if len(reports) == 2:
            print(format_comparison(reports[1], reports[0]))
    return 0
