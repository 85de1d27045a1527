"""Watchers one member holds, and put-to-event latency, for petcd next to real etcd: `python -m tests.bench_watch`.

Opens W watches (spread over S gRPC streams, all on one key prefix), then does
P puts one at a time and measures, for each, the time until the first watcher
sees the event, and until all W have. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import grpc

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from tests.servers import start_etcd, start_petcd


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watchers", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--puts", type=int, default=20)
    args = parser.parse_args()
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
