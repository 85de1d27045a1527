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
from tests.servers import Server, start_etcd, start_petcd


async def _client(endpoint: str, cid: int, deadline: float, latencies: list[float]) -> None:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = pb_grpc.KVStub(channel)
        i = 0
        while time.monotonic() < deadline:
            i += 1
            t0 = time.monotonic()
            await stub.Put(pb.PutRequest(key=f"bench/{cid}/{i % 1000}".encode(), value=b"v" * 256))
            latencies.append(time.monotonic() - t0)


async def _load(endpoint: str, clients: int, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(*(_client(endpoint, c, deadline, latencies) for c in range(clients)))
    return len(latencies) / (time.monotonic() - start), latencies


def measure(server: Server, clients: int, seconds: float) -> str:
    rate, lat = asyncio.run(_load(server.endpoint, clients, seconds))
    q = statistics.quantiles(lat, n=100)
    return f"{rate:8.0f} puts/s  p50 {q[49] * 1000:6.2f} ms  p99 {q[98] * 1000:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, start in (("petcd", start_petcd), ("etcd", start_etcd)):
            server = start(f"{tmp}/{name}")
            try:
                for n in args.clients:
                    print(f"{name:6} {n:3} clients: {measure(server, n, args.seconds)}", flush=True)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
