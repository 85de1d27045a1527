"""Watchers one member holds, and put-to-event latency, for petcd next to real etcd: `python -m tests.bench_watch`.

Opens W watches (spread over S gRPC streams, all on one key prefix), then does
P puts one at a time and measures, for each, the time until the first watcher
sees the event, and until all W have. Figures, not asserts.

`--fanout` instead drives petcd's watch actor in-process, no servers: W watchers
each on its own key, then batches of puts on some of those keys; it prints the
time the actor takes per batch (the cost of finding the watchers an event matches).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import random
import time
from typing import Any

import grpc

from petcd.actors.watch_actor import WatchActor, WatchConfig
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from tests.servers import start_etcd, start_petcd
from tests.test_raft_core import FakeCtx


async def _run(endpoint: str, watchers: int, streams: int, puts: int) -> str:
    seen: dict[int, list[float]] = {}
    created = 0
    all_created = asyncio.Event()
    channels = [grpc.aio.insecure_channel(endpoint) for _ in range(streams)]
    queues: list[asyncio.Queue] = [asyncio.Queue() for _ in range(streams)]

    async def stream(i: int) -> None:
        nonlocal created
        async def requests():
            while True:
                req = await queues[i].get()
                if req is None:
                    return
                yield req
        call = pb_grpc.WatchStub(channels[i]).Watch(requests())
        async for resp in call:
            if resp.created:
                created += 1
                if created == watchers:
                    all_created.set()
            for ev in resp.events:
                seen.setdefault(int(ev.kv.value), []).append(time.monotonic())

    tasks = [asyncio.create_task(stream(i)) for i in range(streams)]
    t0 = time.monotonic()
    for w in range(watchers):
        queues[w % streams].put_nowait(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"bw/", range_end=b"bw0")))
    await asyncio.wait_for(all_created.wait(), 300)
    setup_s = time.monotonic() - t0
    kv = pb_grpc.KVStub(channels[0])
    first, last = [], []
    for p in range(puts):
        t = time.monotonic()
        await kv.Put(pb.PutRequest(key=b"bw/k", value=str(p).encode()))
        deadline = time.monotonic() + 30
        while len(seen.get(p, [])) < watchers and time.monotonic() < deadline:
            await asyncio.sleep(0.0005)
        times = seen.get(p, [])
        if len(times) == watchers:
            first.append(min(times) - t)
            last.append(max(times) - t)
    for q in queues:
        q.put_nowait(None)
    for task in tasks:
        task.cancel()
    for ch in channels:
        await ch.close()
    ms = lambda xs: f"{statistics.median(xs) * 1000:7.2f} ms" if xs else "   n/a"
    return (f"{watchers:6} watchers: created in {setup_s:6.2f}s; put->first event p50 {ms(first)}, "
            f"put->all {watchers} p50 {ms(last)} ({len(last)}/{puts} puts fully delivered)")


def fanout(watchers: int, batches: int = 200, puts: int = 10, actor_class: Any = WatchActor,
           config_class: Any = WatchConfig) -> float:
    """Seconds the watch actor takes per batch of `puts` events, with `watchers` watchers on distinct keys."""
    actor, ctx = actor_class(config_class(member_id="m1")), FakeCtx("m1/watch")
    actor.start(ctx)
    actor.receive(ctx, [("m1/apply", {"t": "history", "from": 0, "current": 0})])
    actor.receive(ctx, [("gw", {"t": "watch_create", "stream": 0, "watch_id": i, "key": b"k%d" % i}) for i in range(watchers)])
    rng, rev, elapsed = random.Random(0), 0, 0.0
    for _ in range(batches):
        revs = []
        for _ in range(puts):
            rev += 1
            revs.append([rev, [{"type": 0, "kv": {"key": b"k%d" % rng.randrange(watchers), "mod_revision": rev}}]])
        ctx.sent.clear()
        t = time.perf_counter()
        actor.receive(ctx, [("m1/apply", {"t": "events", "revs": revs, "current": rev})])
        elapsed += time.perf_counter() - t
    return elapsed / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watchers", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--puts", type=int, default=20)
    parser.add_argument("--fanout", action="store_true", help="the in-process watch actor, watchers on distinct keys")
    args = parser.parse_args()
    if args.fanout:
        for w in args.watchers:
            print(f"watch actor, {w:6} watchers on distinct keys: {fanout(w, puts=args.puts) * 1e6:9.1f} us per batch of {args.puts} puts")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name, start in (("petcd", start_petcd), ("etcd", start_etcd)):
            server = start(f"{tmp}/{name}")
            try:
                for w in args.watchers:
                    print(f"{name:6} {asyncio.run(_run(server.endpoint, w, args.streams, args.puts))}", flush=True)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
