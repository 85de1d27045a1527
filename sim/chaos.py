"""`petcd chaos`: Jepsen-style fault runs against real processes, for petcd or real etcd alike.

    petcd chaos [--server petcd|etcd] [--net hook|netns] [--members N] [--clients C] [--duration S] [--seed S]
                [--faults kill,pause,partition] [--schedule FILE] [--schedule-out FILE]
                [--workdir DIR] [--history FILE] [--report FILE]

A run starts a local cluster of N members (petcd members as
`python -m petcd.rpc.server_cli <etcd flags>`, or the etcd binary with the very
same flags), then C client processes doing random put / get / cas / delete /
two-key txn operations over gRPC against random members, while a seeded nemesis
kills (-9) and restarts members, pauses them (SIGSTOP/SIGCONT of the whole
process group) and partitions them. Near the end everything is healed and a
write must succeed within a bound. The recorded history is then judged by
`petcd.sim.check`'s linearizability checker; the exit status is 0 only if every
verdict is ok.

How links are cut (`--net`):

- hook (default): members on free loopback ports; partitions go through petcd's
  peer fault hook (`--experimental-peer-fault-file`), so petcd only, member to
  member only. Needs no privileges.
- netns: every member and every client in its own Linux network namespace, joined
  by veth pairs to a bridge in a hub namespace (`petcd.sim.netns`); cuts are
  blackhole routes, so they work for etcd too and between clients and members.
  Needs root and iproute2. The namespaces are the run's own and are deleted at the
  end whatever happens (and those of earlier runs killed with -9, at the start).
  `tc netem` is checked once; this kernel has none, so slow or lossy links are not
  modelled here (that stays with the peer fault hook).

The fault schedule is drawn from --seed, but the run is real: timing, and so the
history, differ from one run to the next. What the nemesis did is written as
JSON (`schedule.json` in the workdir, and --schedule-out FILE): every fault, its
targets, when it started and how long it was held. `--schedule FILE` replays
one: the same faults on the same members at the same offsets (members, clients,
server, net, seed and duration default to the recorded ones).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import sys
import threading
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.sim.chaos_client import CHANNEL_OPTIONS, classify, merge_histories, run_client
from petcd.sim.chaos_cluster import INTERRUPTED, ChaosError, LocalCluster, check_interrupted
from petcd.sim.chaos_nemesis import FAULT_KINDS, Nemesis, read_schedule, schedule_nodes, write_schedule

KEYS = ["k0", "k1", "k2", "k3", "k4"]
# The faults each (net, server) can do: the peer fault hook is petcd's; namespaces cut anyone's links.
SERVER_FAULTS = {("hook", "petcd"): FAULT_KINDS, ("hook", "etcd"): ("kill", "pause"),
                 ("netns", "petcd"): FAULT_KINDS, ("netns", "etcd"): FAULT_KINDS}
DEFAULTS = {"server": "petcd", "net": "hook", "members": 3, "clients": 5, "duration": 30.0}


@dataclass
class ChaosResult:
    server: str
    seed: int
    workdir: str
    net: str = "hook"
    schedule_path: str | None = None  # the faults of this run, replayable with --schedule
    replay_skipped: int = 0  # replayed faults the run ended before
    history: list[Any] = field(default_factory=list)  # petcd.sim.check.history.Op
    verdicts: list[Any] = field(default_factory=list)  # petcd.sim.check.verdict.Verdict
    fault_log: list[str] = field(default_factory=list)
    fault_counts: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0  # the clients' phase, as asked
    healed_ms: int | None = None  # when the nemesis healed everything (ms since the run started)
    recovered_ms: int | None = None  # from healing to the first write that succeeded after it
    final_write_ms: int | None = None  # how long the final-phase write took to succeed (None: it never did)
    check_s: float = 0.0
    report_error: str | None = None

    @property
    def faults(self) -> int:
        return sum(self.fault_counts.values())

    @property
    def ok(self) -> bool:
        return bool(self.verdicts) and all(v.ok for v in self.verdicts)

    def outcome_counts(self) -> dict[str, int]:
        out = {"ok": 0, "fail": 0, "info": 0}
        for op in self.history:
            out[op.outcome] = out.get(op.outcome, 0) + 1
        return out


def _faults(text: str) -> list[str]:
    names = [f.strip() for f in text.split(",") if f.strip()]
    for name in names:
        if name not in (*FAULT_KINDS, "none"):
            raise argparse.ArgumentTypeError(f"unknown fault {name!r}; choose from {', '.join(FAULT_KINDS)} or none")
    return [n for n in names if n != "none"] if "none" not in names or len(names) > 1 else []


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="petcd chaos", description="Fault runs against a local cluster of real processes, judged by the linearizability checker.")
    p.add_argument("--server", choices=("petcd", "etcd"), default=None, help="default petcd")
    p.add_argument("--net", choices=("hook", "netns"), default=None,
                   help="how links are cut: hook = petcd's peer fault hook (petcd only, no privileges; the default), "
                        "netns = a network namespace per member and client, cut with blackhole routes (root; etcd too)")
    p.add_argument("--etcd-binary", help="the etcd to run with --server etcd (default: etcd on PATH)")
    p.add_argument("--members", type=int, default=None, metavar="N", help="default 3")
    p.add_argument("--clients", type=int, default=None, metavar="C", help="default 5")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="how long the clients run (default 30)")
    p.add_argument("--seed", type=int, default=None, help="seeds the fault schedule and the clients' choices (default: random)")
    p.add_argument("--faults", type=_faults, default=None,
                   help="comma list of kill, pause, partition, or none (default: all the server and --net support; "
                        "partition needs petcd or --net netns)")
    p.add_argument("--schedule", metavar="FILE", help="replay the faults recorded in FILE (a run's schedule.json) instead of drawing them")
    p.add_argument("--schedule-out", metavar="FILE", help="also write the run's fault schedule here (it is always in the workdir)")
    p.add_argument("--workdir", help="keep the members' data and logs here (default: a temp dir, removed when the run passes)")
    p.add_argument("--history", help="write the history (JSON lines, for `petcd check`) here")
    p.add_argument("--report", help="write an HTML report of the run here (passing or not)")
    p.add_argument("--op-timeout", type=float, default=2.0, metavar="SECONDS", help="client deadline per operation (default 2)")
    p.add_argument("--recovery-bound", type=float, default=30.0, metavar="SECONDS",
                   help="after healing, a write must succeed within this (default 30)")
    p.add_argument("--quiet-tail", type=float, default=None, metavar="SECONDS",
                   help="fault-free time at the end of the client phase (default: a quarter of --duration, 2-8 s)")
    p.add_argument("--check-budget", type=int, default=None, help="step budget for the linearizability search (default: the checker's)")
    p.add_argument("-v", "--verbose", action="store_true", help="print faults as they happen")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    replay: list[dict[str, Any]] | None = None
    if args.schedule is not None:
        if args.faults is not None:
            print("petcd chaos: --faults and --schedule exclude each other (the schedule says which faults)", file=sys.stderr)
            return 2
        try:
            doc = read_schedule(args.schedule)
        except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            print(f"petcd chaos: cannot replay {args.schedule}: {e}", file=sys.stderr)
            return 2
        replay = doc["faults"]
        for key in ("server", "net", "members", "clients", "duration"):
            if getattr(args, key) is None and doc.get(key if key != "duration" else "duration_s") is not None:
                setattr(args, key, doc[key if key != "duration" else "duration_s"])
        if args.seed is None and isinstance(doc.get("seed"), int):
            args.seed = doc["seed"]
        if args.quiet_tail is None and isinstance(doc.get("quiet_tail_s"), (int, float)):
            args.quiet_tail = doc["quiet_tail_s"]
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.members < 1 or args.clients < 1 or args.duration <= 0:
        print("petcd chaos: --members, --clients and --duration must be positive", file=sys.stderr)
        return 2
    if args.net == "netns":
        from petcd.sim.netns import unavailable

        why = unavailable()
        if why:
            print(f"petcd chaos: --net netns is not available here: {why}", file=sys.stderr)
            return 2
    supported = SERVER_FAULTS[(args.net, args.server)]
    if replay is not None:
        faults = sorted({e["kind"] for e in replay}, key=FAULT_KINDS.index)
        problem = _replay_problem(replay, args)
        if problem:
            print(f"petcd chaos: cannot replay {args.schedule}: {problem}", file=sys.stderr)
            return 2
    else:
        faults = list(supported) if args.faults is None else args.faults
    refused = [f for f in faults if f not in supported]
    if refused:
        print(f"petcd chaos: fault {', '.join(refused)} is not available with --server {args.server} --net {args.net}: "
              f"partitions with --net hook go through petcd's --experimental-peer-fault-file hook, which etcd does not have; "
              f"use --net netns (root) to partition etcd (or choose from {', '.join(supported)})", file=sys.stderr)
        return 2
    if args.members < 2 and "partition" in faults and replay is None:
        if args.faults is not None:
            print("petcd chaos: a partition needs at least 2 members", file=sys.stderr)
            return 2
        faults.remove("partition")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    own_workdir = args.workdir is None
    workdir = tempfile.mkdtemp(prefix=f"petcd-chaos-{args.server}-") if own_workdir else os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    print(f"petcd chaos: server={args.server} net={args.net} members={args.members} clients={args.clients} duration={args.duration:g}s "
          f"seed={seed} faults={','.join(faults) or 'none'}{f' schedule={args.schedule}' if replay is not None else ''} "
          f"workdir={workdir}", flush=True)
    INTERRUPTED.clear()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C, and a plain kill (SIGTERM), stop the run through its finally blocks: servers stopped, namespaces deleted.
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_sigint)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_sigint)
    try:
        result = run(args, seed, faults, workdir, replay)
    except ChaosError as e:
        print(f"petcd chaos: {e}", file=sys.stderr)
        print(f"petcd chaos: data and logs kept in {workdir}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\npetcd chaos: interrupted; every server was stopped; data and logs kept in {workdir}", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print_result(result)
    if args.history:
        print(f"history: {args.history}")
    if args.schedule_out:
        print(f"schedule: {args.schedule_out}")
    if args.report:
        print(f"report: {args.report}" if result.report_error is None else f"report: not written: {result.report_error}")
    if result.ok and own_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not result.ok:
        print(f"data, logs and history kept in {workdir}")
        if result.schedule_path:
            print(f"replay these faults: petcd chaos --schedule {result.schedule_path}"
                  + (f" --etcd-binary {args.etcd_binary}" if args.etcd_binary else ""))
    print(f"server={result.server} verdict={'ok' if result.ok else 'fail'} ops={len(result.history)} faults={result.faults}")
    return 0 if result.ok else 1


def _on_sigint(signum: int, frame: Any) -> None:
    INTERRUPTED.set()
    raise KeyboardInterrupt


def _replay_problem(entries: list[dict[str, Any]], args: argparse.Namespace) -> str | None:
    """Why this cluster cannot take these faults (members or clients it lacks, links it cannot cut), or None."""
    members, clients = schedule_nodes(entries)
    have_m = {f"m{i + 1}" for i in range(args.members)}
    have_c = {f"c{i}" for i in range(args.clients)}
    unknown = sorted((members - have_m) | (clients - have_c))
    if unknown:
        return f"it names {', '.join(unknown)}, which a run with --members {args.members} --clients {args.clients} does not have"
    cuts = [tuple(c) for e in entries if e["kind"] == "partition" for c in e["cuts"]]
    if clients & {x for c in cuts for x in c} and args.net != "netns":
        return "it cuts clients off, which needs --net netns"
    if cuts and args.net == "hook" and args.server != "petcd":
        return "it partitions etcd members, which needs --net netns"
    return None


def print_result(r: ChaosResult) -> None:
    counts = r.outcome_counts()
    n = len(r.history)
    rate = n / r.duration_s if r.duration_s else 0.0
    print("--- faults")
    for line in r.fault_log:
        print(line)
    if r.replay_skipped:
        print(f"({r.replay_skipped} faults of the replayed schedule were not reached before the run ended)")
    print(f"--- {n} ops in {r.duration_s:g}s ({rate:.0f} ops/s): ok={counts['ok']} fail={counts['fail']} indeterminate={counts['info']}; "
          f"faults: {', '.join(f'{k}={v}' for k, v in sorted(r.fault_counts.items())) or 'none'}; "
          f"checked in {r.check_s:.1f}s")
    if r.healed_ms is not None:
        first = f"the first write after it succeeded {r.recovered_ms} ms later" if r.recovered_ms is not None else "no write succeeded after it"
        final = f"{r.final_write_ms} ms" if r.final_write_ms is not None else "never"
        print(f"--- healed at {r.healed_ms} ms; {first}; final write after the clients stopped: {final}")
    for v in r.verdicts:
        print(v.line())


# ---------------------------------------------------------------------------
def run(args: argparse.Namespace, seed: int, faults: list[str], workdir: str,
        replay: list[dict[str, Any]] | None = None) -> ChaosResult:
    """One whole run; every process it starts is stopped, and every namespace deleted, before it returns or raises."""
    result = ChaosResult(args.server, seed, workdir, duration_s=args.duration, net=args.net)
    data_root = os.path.join(workdir, "data")
    shutil.rmtree(data_root, ignore_errors=True)  # a fresh cluster: the checker assumes every key starts absent
    client_names = [f"c{i}" for i in range(args.clients)]
    net = None
    if args.net == "netns":
        from petcd.sim.netns import NetnsError, NetnsNet, cleanup_stale

        stale = cleanup_stale()
        if stale:
            print(f"petcd chaos: deleted {len(stale)} namespaces left by earlier runs: {', '.join(stale)}", flush=True)
        net = NetnsNet([f"m{i + 1}" for i in range(args.members)] + client_names)
        try:
            net.setup()
        except NetnsError as e:
            raise ChaosError(f"--net netns: cannot make the run's namespaces: {e}") from e
        print(f"petcd chaos: net=netns: namespaces {net.ns('*')} on {net.subnet}, reached from here through {net.root_link} "
              f"({net.control_address})", flush=True)
        if net.netem is not None:
            print(f"petcd chaos: tc netem is not available in this kernel ({net.netem}): --net netns cuts links but "
                  f"does not make them slow or lossy; loss and delay stay with the peer fault hook", flush=True)
    nemesis: Nemesis | None = None
    start_ns = time.monotonic_ns()
    quiet = args.quiet_tail if args.quiet_tail is not None else min(8.0, max(2.0, args.duration / 4))
    try:
        cluster = LocalCluster.create(data_root, args.members, args.server, args.etcd_binary, netns=net)
        ctx = multiprocessing.get_context("spawn")
        clients: list[Any] = []
        stop_event = ctx.Event()
        out_paths = [os.path.join(workdir, f"client-{i}.ops") for i in range(args.clients)]
        for path in out_paths:
            if os.path.exists(path):
                os.remove(path)
        extra_ops: list[dict[str, Any]] = []
        completed = False
        try:
            cluster.start()
            ready, go = ctx.Queue(), ctx.Event()
            shared_start, shared_stop = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False)
            for i in range(args.clients):
                cfg = {"index": i, "seed": seed, "endpoints": cluster.endpoints(), "keys": KEYS, "op_timeout_s": args.op_timeout,
                       "out_path": out_paths[i], "stop_event": stop_event, "ready": ready, "go": go,
                       "start_ns": shared_start, "stop_at_ns": shared_stop,
                       "netns": net.ns_path(client_names[i]) if net is not None else None}
                proc = ctx.Process(target=run_client, args=(cfg,), name=f"chaos-client-{i}", daemon=True)
                proc.start()
                clients.append(proc)
            _wait_clients_ready(ready, clients)
            start_ns = time.monotonic_ns()
            stop_at_ns = start_ns + int(args.duration * 1e9)
            shared_start.value, shared_stop.value = start_ns, stop_at_ns
            go.set()
            if faults or replay is not None:
                nemesis = Nemesis(cluster, faults, random.Random(f"{seed}/nemesis"), start_ns,
                                  clients=client_names if net is not None else [], replay=replay)
                if args.verbose:
                    _echo_faults(nemesis)
                nemesis.start()
            fault_end_ns = stop_at_ns - int(quiet * 1e9)
            _sleep_until(fault_end_ns)
            if nemesis is not None:
                nemesis.stop()
            result.healed_ms = (time.monotonic_ns() - start_ns) // 1_000_000
            _sleep_until(stop_at_ns)
            stop_event.set()
            for proc in clients:
                check_interrupted()
                proc.join(timeout=max(1.0, args.op_timeout + 10.0))
            # Liveness: after healing, a write must succeed within the bound.
            final_ms = (time.monotonic_ns() - start_ns) // 1_000_000
            done_ms, extra_ops = _final_phase(cluster, start_ns, args)
            if done_ms is not None:
                result.final_write_ms = done_ms - final_ms
            completed = True
        finally:
            _teardown(cluster, clients, nemesis, stop_event, aborted=not completed)
    finally:
        try:
            if net is not None:
                problems = net.teardown()
                if problems:
                    print(f"petcd chaos: could not delete every namespace: {'; '.join(problems)}", file=sys.stderr)
        finally:
            result.schedule_path = _save_schedule(args, seed, quiet, workdir, nemesis)
    if nemesis is not None:
        result.fault_log = [str(e) for e in nemesis.log]
        result.fault_counts = nemesis.counts()
        result.replay_skipped = len(nemesis.skipped)
    with open(os.path.join(workdir, "nemesis.log"), "w") as f:
        f.write("".join(line + "\n" for line in result.fault_log))
    raw = merge_histories(out_paths) + extra_ops
    from petcd.sim.chaos_check import judge  # the checkers are imported only once the servers are down

    judge(result, raw, cluster, nemesis, args)
    return result


def _save_schedule(args: argparse.Namespace, seed: int, quiet: float, workdir: str, nemesis: Nemesis | None) -> str | None:
    """The faults the nemesis injected, as a replayable schedule in the workdir (and --schedule-out)."""
    header = {"server": args.server, "net": args.net, "members": args.members, "clients": args.clients, "seed": seed,
              "duration_s": args.duration, "quiet_tail_s": quiet}
    entries = list(nemesis.schedule) if nemesis is not None else []
    path = os.path.join(workdir, "schedule.json")
    try:
        write_schedule(path, header, entries)
        if args.schedule_out:
            write_schedule(os.path.abspath(args.schedule_out), header, entries)
    except OSError as e:
        print(f"petcd chaos: could not write the fault schedule: {e}", file=sys.stderr)
        return None
    return path


def _teardown(cluster: LocalCluster, clients: list[Any], nemesis: Nemesis | None, stop_event: Any, aborted: bool) -> None:
    """Stop the nemesis, the clients and every server, even on Ctrl-C (a second Ctrl-C is ignored meanwhile)."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        stop_event.set()
        if nemesis is not None:
            if aborted:
                nemesis.abort()
            elif nemesis.is_alive():
                nemesis.stop()
        for proc in clients:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        cluster.stop()
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _echo_faults(nemesis: Nemesis) -> None:
    class EchoLog(list):  # type: ignore[type-arg]
        def append(self, e: Any) -> None:
            super().append(e)
            print(f"  nemesis {e}", flush=True)

    nemesis.log = EchoLog()


def _wait_clients_ready(ready: Any, clients: list[Any], timeout_s: float = 120.0) -> None:
    import queue

    deadline = time.monotonic() + timeout_s
    pending = len(clients)
    while pending:
        check_interrupted()
        if time.monotonic() > deadline:
            raise ChaosError(f"{pending} client processes not ready after {timeout_s:g} s")
        dead = [p.name for p in clients if p.exitcode is not None]
        if dead:
            raise ChaosError(f"client processes exited before starting: {', '.join(dead)}")
        try:
            ready.get(timeout=0.5)
            pending -= 1
        except queue.Empty:
            pass


def _sleep_until(deadline_ns: int) -> None:
    while True:
        left = (deadline_ns - time.monotonic_ns()) / 1e9
        if left <= 0:
            return
        check_interrupted()
        time.sleep(min(left, 0.5))


def _final_phase(cluster: LocalCluster, start_ns: int, args: argparse.Namespace) -> tuple[int | None, list[dict[str, Any]]]:
    """A write that must succeed within --recovery-bound of healing, then a linearizable read of every key.

    Both are recorded in the history (process "final"), so the final reads pin down the end state.
    """
    ops: list[dict[str, Any]] = []

    def now_ms() -> int:
        return (time.monotonic_ns() - start_ns) // 1_000_000

    channels = [grpc.insecure_channel(ep, options=CHANNEL_OPTIONS) for ep in cluster.endpoints()]
    stubs = [pb_grpc.KVStub(ch) for ch in channels]
    deadline = time.monotonic() + args.recovery_bound
    done_ms: int | None = None
    try:
        n = 0
        while time.monotonic() < deadline and done_ms is None:
            check_interrupted()
            n += 1
            key, value = KEYS[0].encode(), f"final-{n}".encode()
            op = {"process": "final", "id": n, "kind": "put", "key": key, "value": value, "invoke_ms": now_ms(),
                  "complete_ms": None, "outcome": "info", "result": {}}
            ops.append(op)
            try:
                resp = stubs[n % len(stubs)].Put(pb.PutRequest(key=key, value=value), timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            except grpc.RpcError as e:
                op["outcome"], op["error"] = classify(e)
                if op["outcome"] == "fail":
                    op["complete_ms"] = now_ms()
                time.sleep(0.1)
                continue
            op.update(outcome="ok", complete_ms=now_ms(), result={"revision": resp.header.revision})
            done_ms = op["complete_ms"]
        if done_ms is not None:
            for i, key in enumerate(KEYS):
                check_interrupted()
                n += 1
                op = {"process": "final", "id": n, "kind": "get", "key": key.encode(), "invoke_ms": now_ms(),
                      "complete_ms": None, "outcome": "info", "result": {}}
                ops.append(op)
                try:
                    resp = stubs[i % len(stubs)].Range(pb.RangeRequest(key=key.encode()), timeout=5)
                except grpc.RpcError as e:
                    op["outcome"], op["error"] = classify(e)
                    continue
                value = bytes(resp.kvs[0].value) if resp.kvs else None
                op.update(outcome="ok", complete_ms=now_ms(), result={"value": value, "revision": resp.header.revision})
    finally:
        for ch in channels:
            ch.close()
    return done_ms, ops


if __name__ == "__main__":
    sys.exit(main())
