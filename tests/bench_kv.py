"""Put throughput of petcd next to real etcd, in the same run: `python -m tests.bench_kv`.

Starts a fresh single member of each, then drives Puts over gRPC from N
concurrent clients (asyncio tasks, each with its own channel) for a fixed time.
Prints puts/s and latency percentiles. Figures, not asserts: this machine's
speed is not a test.
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
from tests.servers import start_cluster, start_etcd, start_petcd


async def _client(endpoint: str, cid: int, deadline: float, latencies: list[float]) -> None:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = pb_grpc.KVStub(channel)
        i = 0
        while time.monotonic() < deadline:
            i += 1
            t0 = time.monotonic()
            await stub.Put(pb.PutRequest(key=f"bench/{cid}/{i % 1000}".encode(), value=b"v" * 256))
            latencies.append(time.monotonic() - t0)


async def _load(endpoints: list[str], clients: int, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(*(_client(endpoints[c % len(endpoints)], c, deadline, latencies) for c in range(clients)))
    return len(latencies) / (time.monotonic() - start), latencies


def measure(endpoints: list[str], clients: int, seconds: float) -> str:
    rate, lat = asyncio.run(_load(endpoints, clients, seconds))
    q = statistics.quantiles(lat, n=100)
    return f"{rate:8.0f} puts/s  p50 {q[49] * 1000:6.2f} ms  p99 {q[98] * 1000:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--members", type=int, default=1, help="cluster size; clients spread over the members")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("petcd", "etcd"):
            if args.members == 1:
                server = (start_petcd if name == "petcd" else start_etcd)(f"{tmp}/{name}")
                endpoints, stop = [server.endpoint], server.stop
            else:
                cluster = start_cluster(f"{tmp}/{name}", args.members, server=name)
                endpoints, stop = [m.endpoint for m in cluster.members], cluster.stop
            try:
                for n in args.clients:
                    print(f"{name:6} {args.members} members {n:3} clients: {measure(endpoints, n, args.seconds)}", flush=True)
            finally:
                stop()


if __name__ == "__main__":
    main()
