"""Scale figures, petcd next to real etcd: how cost grows with the work.

    python -m petcd.sim.bench_scale [--keys N] [--val-size B] [--watchers W] [--leases L]
                                    [--only keys,compaction,watch,leases] [--server petcd|etcd|both] [--json]

Each server kind gets a fresh single-member server with the same flags, one after the other (they
never share the CPU), and the same client, in this process, over a few gRPC channels:

- keys: N keys loaded (max-txn-ops puts per Txn, many Txns in flight); the latency of a Range of
  one key (serializable, linearizable), of a Range of 10,000 keys, and the db size (Status.dbSize).
- compaction: the N keys written again (N superseded revisions); a physical Compact to the current
  revision from one channel while another sends Puts at a steady rate until it ends + the put window;
  the Puts' latency against the same stream with no compaction (physical: the one Compact whose
  reply marks the end of the compaction on both servers). Then the keys written once more and a
  default Compact (not physical: both answer at once and free the records afterwards), with the
  Puts' latency over the DEFAULT_COMPACT_TAIL_S after it.
- watch: W watchers on distinct keys, then W watchers on one prefix, over several streams; the time
  to create them, then Puts to the watched keys: delivery latency (Put sent to event received:
  measured from the Put's reply instead, most events of a few watchers would count 0, as they
  arrive before it) and delivered events/s.
- leases: L leases granted at once, one key each; how long after the expected expiries (a grant's
  reply + its TTL: the first one's, the last one's) the first and the last key are gone (a
  count_only Range polled), and the spread between those two.

It prints a table (scenario | figure | petcd | etcd | ratio) or, with --json, one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import grpc

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.sim.chaos_cluster import ChaosError, LocalCluster

SCENARIOS = ("keys", "compaction", "watch", "leases")
SERVERS = ("petcd", "etcd")
TXN_OPS = 128  # etcd's default --max-txn-ops, passed to both servers
QUOTA_BYTES = 8 * 2**30  # etcd's largest recommended quota: 1M keys written twice must fit
SERVER_FLAGS = ("--quota-backend-bytes", str(QUOTA_BYTES), "--max-txn-ops", str(TXN_OPS))
CHANNELS = 4
IN_FLIGHT = 32  # concurrent requests when loading, putting to watched keys, granting leases
WATCH_STREAMS = 20  # the watchers of one kind are spread over this many streams
WIDE_RANGE_KEYS = 10_000
DEFAULT_COMPACT_TAIL_S = 3.0  # Puts measured this long after a default (not physical) Compact's reply
RPC_TIMEOUT_S = 60.0
COMPACT_TIMEOUT_S = 3600.0
LEASE_POLL_S = 0.05
PROGRESS_EVERY_S = 2.0

Figures = dict[str, float]


@dataclass(frozen=True)
class Scale:
    keys: int
    val_size: int
    watchers: int
    leases: int
    lease_ttl: int
    reads: int  # Ranges of one key, per consistency
    wide_reads: int  # Ranges of 10,000 keys
    put_rate: float  # Puts/s while compacting
    put_window_s: float  # the no-compaction stream's length, and how long Puts go on after the compaction
    prefix_puts: int  # Puts under the watched prefix (each reaches every prefix watcher)


class Log:
    """Progress on stderr, stamped with the server and the seconds since the start."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[bench_scale {self.server} {time.monotonic() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def key(i: int) -> bytes:
    return b"k/%09d" % i


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (as `petcd bench` reports them); 0 for no values."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))]


def latency_ms(name: str, seconds: Iterable[float], with_max: bool = False) -> Figures:
    lat = sorted(seconds)
    out = {f"{name} p50 ms": pct(lat, 50) * 1000, f"{name} p99 ms": pct(lat, 99) * 1000}
    if with_max:
        out[f"{name} max ms"] = (lat[-1] if lat else 0.0) * 1000
    return out


async def bounded(jobs: Iterator[Callable[[], Awaitable[None]]], in_flight: int = IN_FLIGHT) -> None:
    """Run the jobs, `in_flight` at a time (workers share the iterator)."""
    async def worker() -> None:
        for job in jobs:
            await job()
    await asyncio.gather(*(worker() for _ in range(in_flight)))


class Client:
    """One client of one server: a few channels, and a KV stub on each."""

    def __init__(self, endpoint: str, log: Log) -> None:
        options = [("grpc.max_receive_message_length", -1)]
        self.channels = [grpc.aio.insecure_channel(endpoint, options=options) for _ in range(CHANNELS)]
        self.kv = [pb_grpc.KVStub(ch) for ch in self.channels]
        self.log = log

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()

    async def put_many(self, what: str, n: int, op: Callable[[int], pb.RequestOp]) -> float:
        """Puts op(0)..op(n-1), TXN_OPS per Txn, IN_FLIGHT Txns in flight; the seconds it took."""
        done = 0
        t0 = last = time.monotonic()

        def send(start: int) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                nonlocal done, last
                batch = [op(i) for i in range(start, min(n, start + TXN_OPS))]
                await self.kv[start // TXN_OPS % CHANNELS].Txn(pb.TxnRequest(success=batch), timeout=RPC_TIMEOUT_S)
                done += len(batch)
                if time.monotonic() - last >= PROGRESS_EVERY_S:
                    last = time.monotonic()
                    self.log(f"{what}: {done}/{n} ({done / (last - t0):.0f}/s)")
            return job

        await bounded(send(start) for start in range(0, n, TXN_OPS))
        return time.monotonic() - t0

    async def load(self, what: str, n: int, val_size: int) -> float:
        """Keys 0..n-1, each with a fresh value of val_size bytes; the seconds it took."""
        value = os.urandom(val_size)
        return await self.put_many(what, n, lambda i: pb.RequestOp(request_put=pb.PutRequest(key=key(i), value=value)))

    async def revision(self) -> int:
        return (await self.kv[0].Range(pb.RangeRequest(key=key(0)), timeout=RPC_TIMEOUT_S)).header.revision

    async def count(self, prefix: bytes) -> int:
        req = pb.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)
        return (await self.kv[0].Range(req, timeout=RPC_TIMEOUT_S)).count


# -- keys
async def timed_ranges(kv: pb_grpc.KVStub, requests: Iterable[pb.RangeRequest], expect: int) -> list[float]:
    """Each Range's latency, one after the other; each must find `expect` keys."""
    out = []
    for req in requests:
        t0 = time.monotonic()
        resp = await kv.Range(req, timeout=RPC_TIMEOUT_S)
        out.append(time.monotonic() - t0)
        if resp.count != expect or len(resp.kvs) != expect:
            raise ChaosError(f"Range {req.key!r}..{req.range_end!r} found {resp.count} keys, not {expect}")
    return out


async def keys_scenario(c: Client, scale: Scale, data_dir: str, load_s: float) -> Figures:
    rng = random.Random(1)
    out: Figures = {"load s": load_s, "load keys/s": scale.keys / load_s}
    for name, serializable in (("serializable", True), ("linearizable", False)):
        reqs = (pb.RangeRequest(key=key(rng.randrange(scale.keys)), serializable=serializable) for _ in range(scale.reads))
        out |= latency_ms(f"range 1 key {name}", await timed_ranges(c.kv[0], reqs, 1))
    wide = min(WIDE_RANGE_KEYS, scale.keys)
    reqs = (pb.RangeRequest(key=key(0), range_end=key(wide)) for _ in range(scale.wide_reads))
    out["wide range keys"] = wide
    out |= latency_ms("wide range", await timed_ranges(c.kv[0], reqs, wide))
    status = await pb_grpc.MaintenanceStub(c.channels[0]).Status(pb.StatusRequest(), timeout=RPC_TIMEOUT_S)
    out["db size MB"] = status.dbSize / 1e6
    out["data dir on disk MB"] = disk_usage(data_dir) / 1e6
    return out


def disk_usage(path: str) -> int:
    """Bytes allocated on disk for the files under path (du)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass  # removed meanwhile
    return total


# -- compaction
async def put_stream(kv: pb_grpc.KVStub, rate: float, end_at: Callable[[], float], tag: bytes) -> tuple[list[tuple[float, float]], int]:
    """Puts at `rate`/s, open loop (each on its own schedule, not waiting for the last), until
    end_at(); ([(sent at, latency)], errors)."""
    samples: list[tuple[float, float]] = []
    errors = [0]

    async def put(i: int) -> None:
        t0 = time.monotonic()
        try:
            await kv.Put(pb.PutRequest(key=b"p/%s/%07d" % (tag, i), value=b"x" * 100), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError:
            errors[0] += 1
            return
        samples.append((t0, time.monotonic() - t0))

    tasks = []
    start = time.monotonic()
    i = 0
    while (due := start + i / rate) < end_at():
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(put(i)))
        i += 1
    await asyncio.gather(*tasks)
    return samples, errors[0]


async def compact_under_puts(c: Client, scale: Scale, physical: bool, tail_s: float) -> tuple[list[float], list[tuple[float, float]], int]:
    """A Compact to the current revision from one channel while another sends Puts at a steady rate
    until tail_s after its reply; ([the Compact's start, its reply], [(sent at, latency)], errors)."""
    revision = await c.revision()
    bounds = [math.inf, math.inf]  # the compaction's start and reply

    async def compact() -> None:
        bounds[0] = time.monotonic()
        try:
            await c.kv[0].Compact(pb.CompactionRequest(revision=revision, physical=physical), timeout=COMPACT_TIMEOUT_S)
        finally:
            bounds[1] = time.monotonic()  # the Put stream ends tail_s after this, even on an error

    c.log(f"compacting to revision {revision} ({'physical' if physical else 'default'})")
    compacting = asyncio.create_task(compact())
    during, errors = await put_stream(c.kv[1], scale.put_rate, lambda: bounds[1] + tail_s, b"during-%d" % physical)
    await compacting
    return bounds, during, errors


async def compaction_scenario(c: Client, scale: Scale) -> Figures:
    out: Figures = {"overwrite s": await c.load("overwrite", scale.keys, scale.val_size)}
    stop = time.monotonic() + scale.put_window_s
    baseline, base_errors = await put_stream(c.kv[1], scale.put_rate, lambda: stop, b"base")
    out |= latency_ms("no-compaction put", (lat for _, lat in baseline), with_max=True)
    # Physical: its reply marks the end of the compaction on both servers.
    bounds, during, errors = await compact_under_puts(c, scale, True, scale.put_window_s)
    out["compact s"] = bounds[1] - bounds[0]
    out["puts sent while compacting"] = sum(1 for t, _ in during if t <= bounds[1])
    out |= latency_ms("put", (lat for _, lat in during), with_max=True)
    # Default (not physical): both servers answer at once and free the records afterwards (etcd in
    # the background, petcd a step per Raft entry); the Puts run DEFAULT_COMPACT_TAIL_S after it.
    out["overwrite again s"] = await c.load("overwrite", scale.keys, scale.val_size)
    bounds, during_default, default_errors = await compact_under_puts(c, scale, False, DEFAULT_COMPACT_TAIL_S)
    out["default compact reply s"] = bounds[1] - bounds[0]
    out |= latency_ms(f"put in the {DEFAULT_COMPACT_TAIL_S:g} s after a default compact", (lat for _, lat in during_default), with_max=True)
    out["put errors"] = errors + base_errors + default_errors
    return out


# -- watch
class Watchers:
    """Watchers spread over WATCH_STREAMS streams on the client's channels; events' arrival times by value."""

    def __init__(self, c: Client) -> None:
        self.c = c
        self.streams: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.created = 0
        self.arrivals: list[tuple[bytes, float]] = []
        self.canceled: list[str] = []

    async def create(self, requests: list[pb.WatchCreateRequest]) -> float:
        """Create the watchers (pipelined on each stream); the seconds until every one is confirmed."""
        t0 = time.monotonic()
        n = min(WATCH_STREAMS, len(requests))
        self.streams = [pb_grpc.WatchStub(self.c.channels[s % CHANNELS]).Watch() for s in range(n)]
        self.readers = [asyncio.create_task(self._read(s)) for s in self.streams]
        for s, stream in enumerate(self.streams):
            for req in requests[s::n]:
                await stream.write(pb.WatchRequest(create_request=req))
        await until(lambda: self.created + len(self.canceled) >= len(requests), RPC_TIMEOUT_S, "watchers created")
        if self.canceled:
            raise ChaosError(f"{len(self.canceled)} watchers refused: {self.canceled[0]}")
        return time.monotonic() - t0

    async def _read(self, stream: Any) -> None:
        while (resp := await stream.read()) is not grpc.aio.EOF:
            now = time.monotonic()
            self.created += resp.created
            if resp.canceled:
                self.canceled.append(resp.cancel_reason)
            self.arrivals.extend((ev.kv.value, now) for ev in resp.events)

    async def close(self) -> None:
        for s in self.streams:
            s.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise ChaosError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def fan_out(c: Client, name: str, creates: list[pb.WatchCreateRequest], put_keys: list[bytes], per_put: int, val_size: int) -> Figures:
    """Create the watchers, put each of put_keys once (each reaching per_put watchers); delivery figures."""
    w = Watchers(c)
    try:
        out = {f"{name} create s": await w.create(creates)}
        sent: dict[bytes, float] = {}
        pad = b"x" * max(0, val_size - 8)

        def put(i: int, k: bytes) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                value = b"%08d" % i + pad  # distinct: an event names its put
                sent[value] = time.monotonic()
                await c.kv[i % CHANNELS].Put(pb.PutRequest(key=k, value=value), timeout=RPC_TIMEOUT_S)
            return job

        expected = len(put_keys) * per_put
        t0, cpu0 = time.monotonic(), time.process_time()
        await bounded(put(i, k) for i, k in enumerate(put_keys))
        await until(lambda: len(w.arrivals) >= expected, RPC_TIMEOUT_S + expected / 1000, f"{name} events")
        elapsed = max(at for _, at in w.arrivals) - t0
        out[f"{name} events"] = len(w.arrivals)
        out |= latency_ms(name, (at - sent[v] for v, at in w.arrivals))
        out[f"{name} events/s"] = len(w.arrivals) / elapsed
        out[f"{name} client cpu %"] = 100 * (time.process_time() - cpu0) / elapsed  # near 100: the client is the limit
        return out
    finally:
        await w.close()


async def watch_scenario(c: Client, scale: Scale) -> Figures:
    n = scale.watchers
    keys = [b"w/key/%07d" % i for i in range(n)]
    out = await fan_out(c, "distinct keys", [pb.WatchCreateRequest(key=k) for k in keys], keys, 1, scale.val_size)
    prefix = b"w/prefix/"
    creates = [pb.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix))] * n
    puts = [prefix + b"%04d" % i for i in range(scale.prefix_puts)]
    return out | await fan_out(c, "one prefix", creates, puts, n, scale.val_size)


# -- leases
async def lease_scenario(c: Client, scale: Scale) -> Figures:
    leases = [pb_grpc.LeaseStub(ch) for ch in c.channels]
    granted: list[tuple[int, int, float]] = []  # (id, TTL, reply at)

    def grant(i: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            r = await leases[i % CHANNELS].LeaseGrant(pb.LeaseGrantRequest(TTL=scale.lease_ttl), timeout=RPC_TIMEOUT_S)
            granted.append((r.ID, r.TTL, time.monotonic()))
        return job

    t0 = time.monotonic()
    await bounded(grant(i) for i in range(scale.leases))
    out: Figures = {"grant s": time.monotonic() - t0}
    out["attach s"] = await c.put_many("attach", len(granted), lambda i: pb.RequestOp(
        request_put=pb.PutRequest(key=b"l/%07d" % i, value=b"x", lease=granted[i][0])))
    attached = await c.count(b"l/")
    first_expiry, last_expiry = (f(at + ttl for _, ttl, at in granted) for f in (min, max))
    first_gone, last_gone, left = await watch_count(c, b"l/", attached, last_expiry + RPC_TIMEOUT_S + scale.leases / 100)
    out |= {"keys attached": attached, "keys removed": attached - left,
            "first key gone after first expiry s": first_gone - first_expiry,
            "last key gone after last expiry s": last_gone - last_expiry, "spread s": last_gone - first_gone}
    return out


async def watch_count(c: Client, prefix: bytes, start: int, deadline: float) -> tuple[float, float, int]:
    """Poll the count of keys under prefix until 0 or the deadline: (first drop below start at, zero at, count left)."""
    first = math.nan
    while True:
        now = time.monotonic()
        n = await c.count(prefix)
        if n < start and math.isnan(first):
            first = now
        if n == 0 or now > deadline:
            return first, now, n
        await asyncio.sleep(LEASE_POLL_S)


# -- running
async def run_scenarios(endpoint: str, data_dir: str, scale: Scale, only: list[str], log: Log) -> dict[str, Figures]:
    c = Client(endpoint, log)
    out: dict[str, Figures] = {}
    try:
        if "keys" in only or "compaction" in only:
            load_s = await c.load("load", scale.keys, scale.val_size)
            log(f"loaded {scale.keys} keys in {load_s:.1f}s")
            if "keys" in only:
                out["keys"] = await keys_scenario(c, scale, data_dir, load_s)
        if "compaction" in only:
            out["compaction"] = await compaction_scenario(c, scale)
        if "watch" in only:
            log(f"watch: {scale.watchers} watchers, twice")
            out["watch"] = await watch_scenario(c, scale)
        if "leases" in only:
            log(f"leases: {scale.leases}")
            out["leases"] = await lease_scenario(c, scale)
    finally:
        await c.close()
    return out


def on_server(server: str, root: str, scale: Scale, only: list[str]) -> dict[str, Figures]:
    """A fresh single member of `server`, the scenarios on it, then it is stopped."""
    log = Log(server)
    cluster = LocalCluster.create(os.path.join(root, server), 1, server=server, extra=SERVER_FLAGS)
    try:
        cluster.start()
        log(f"started at {cluster.endpoints()[0]}")
        return asyncio.run(run_scenarios(cluster.endpoints()[0], cluster.members[0].data_dir, scale, only, log))
    finally:
        cluster.stop()


def table(results: dict[str, dict[str, Figures]]) -> str:
    """scenario | figure | petcd | etcd | ratio (petcd/etcd)."""
    rows = [("scenario", "figure", "petcd", "etcd", "ratio")]
    first = next(iter(results.values()))
    for scenario, figures in first.items():
        for figure in figures:
            p, e = (results.get(s, {}).get(scenario, {}).get(figure) for s in SERVERS)
            ratio = f"{p / e:.2f}" if p is not None and e else "-"
            rows.append((scenario, figure, fmt(p), fmt(e), ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows)


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if float(v).is_integer() and abs(v) >= 1:
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m petcd.sim.bench_scale", description=__doc__.split("\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000, help="keys loaded (default 1,000,000)")
    p.add_argument("--val-size", type=int, default=100, help="value bytes (default 100)")
    p.add_argument("--watchers", type=int, default=10_000, help="watchers of each kind (default 10,000)")
    p.add_argument("--leases", type=int, default=10_000, help="leases expiring together (default 10,000)")
    p.add_argument("--lease-ttl", type=int, default=5, help="their TTL, seconds (default 5)")
    p.add_argument("--reads", type=int, default=1000, help="Ranges of one key, per consistency (default 1000)")
    p.add_argument("--wide-reads", type=int, default=50, help="Ranges of 10,000 keys (default 50)")
    p.add_argument("--put-rate", type=float, default=200.0, help="Puts/s during the compaction (default 200)")
    p.add_argument("--put-window", type=float, default=2.0, help="seconds: the no-compaction Put stream, and Puts after the compaction (default 2)")
    p.add_argument("--prefix-puts", type=int, default=10, help="Puts under the watched prefix (default 10)")
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})")
    p.add_argument("--server", choices=(*SERVERS, "both"), default="both")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def check(args: argparse.Namespace, only: list[str]) -> str | None:
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        return f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})"
    for name in ("keys", "watchers", "leases", "lease_ttl", "reads", "wide_reads", "prefix_puts"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    if args.val_size < 8 or args.put_rate <= 0 or args.put_window <= 0:
        return "--val-size must be at least 8, --put-rate and --put-window positive"
    return None


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    problem = check(args, only)
    if problem:
        print(f"bench_scale: {problem}", file=sys.stderr)
        return 2
    scale = Scale(args.keys, args.val_size, args.watchers, args.leases, args.lease_ttl, args.reads, args.wide_reads,
                  args.put_rate, args.put_window, args.prefix_puts)
    servers = SERVERS if args.server == "both" else (args.server,)
    try:
        with tempfile.TemporaryDirectory(prefix="petcd-bench-scale-") as root:
            results = {s: on_server(s, root, scale, only) for s in servers}
    except (ChaosError, grpc.RpcError) as e:
        print(f"bench_scale: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"scale": asdict(scale), "server_flags": SERVER_FLAGS, "figures": results}, indent=2))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
