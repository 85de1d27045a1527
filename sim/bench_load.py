"""The load side of `petcd bench`: worker processes that drive etcd's gRPC API and time every request.

A run is split over `procs` worker processes (one Python process cannot keep a fast server busy);
each runs `clients / procs` concurrent requesters on asyncio over its share of `conns` channels.
Every requester loops: wait for its turn under the rate limit, send one request, record the
latency. Workers count completions in a shared counter (the progress bar reads it) and return
their latencies as packed doubles.
"""

from __future__ import annotations

import array
import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import grpc

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc

KINDS = ("put", "range", "txn-put", "txn-mixed", "lease-keepalive", "watch")
# Every requester gives up on one request after this long; a failure is counted, not retried.
REQUEST_TIMEOUT_S = 10.0
PROGRESS_EVERY = 50  # completions between updates of the shared counter


@dataclass(frozen=True)
class LoadSpec:
    kind: str
    endpoints: tuple[str, ...]
    clients: int
    conns: int
    total: int  # requests in all (0: run for duration_s)
    duration_s: float
    rate: float  # requests/s in all (0: as fast as possible)
    key_size: int
    val_size: int
    key_space_size: int
    sequential_keys: bool
    consistency: str  # "l" | "s", for range and txn-mixed reads
    range_key: str
    range_end: str
    txn_ops: int
    rw_ratio: float  # reads per write in txn-mixed
    watch_keys: int  # distinct keys the watchers watch (watch bench)


@dataclass
class WorkerResult:
    latencies: bytes  # array('d') of seconds
    errors: dict[str, int]
    elapsed_s: float
    cpu_s: float  # this worker process's CPU (user + system, all its threads) over elapsed_s


def worker_main(spec: LoadSpec, index: int, procs: int, counter: Any, start_at: float, out: Any) -> None:
    """Entry point of one worker process; puts its WorkerResult on `out`."""
    out.put(asyncio.run(_worker(spec, index, procs, counter, start_at)))


def _share(n: int, index: int, procs: int) -> int:
    return n // procs + (1 if index < n % procs else 0)


async def _worker(spec: LoadSpec, index: int, procs: int, counter: Any, start_at: float) -> WorkerResult:
    clients = max(1, _share(spec.clients, index, procs))
    conns = max(1, _share(spec.conns, index, procs))
    channels = [grpc.aio.insecure_channel(spec.endpoints[(index * conns + c) % len(spec.endpoints)]) for c in range(conns)]
    quota = _share(spec.total, index, procs) if spec.total else None
    rate = spec.rate / procs if spec.rate else 0.0
    state = _Shared(quota, counter, rate)
    latencies = array.array("d")
    errors: dict[str, int] = {}
    rng = random.Random(index)
    request = _make_request(spec, rng, index)
    # Start together: the parent picks a moment after every worker has had time to import and connect.
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.monotonic()
    cpu_began = time.process_time()
    deadline = began + spec.duration_s if not spec.total else float("inf")
    if spec.kind == "lease-keepalive":
        tasks = [_keepalive_loop(channels[c % conns], state, deadline, latencies, errors) for c in range(clients)]
    elif spec.kind == "watch":
        tasks = [_watch_run(spec, channels, clients, state, deadline, latencies, errors, index)]
    else:
        tasks = [_request_loop(request(channels[c % conns]), state, deadline, latencies, errors) for c in range(clients)]
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    cpu_s = time.process_time() - cpu_began
    state.flush()
    for ch in channels:
        await ch.close()
    return WorkerResult(latencies.tobytes(), errors, elapsed, cpu_s)


class _Shared:
    """A worker's budget (requests left, rate) and its progress, shared by its requesters."""

    def __init__(self, quota: int | None, counter: Any, rate: float) -> None:
        self.left = quota
        self._counter = counter
        self._unreported = 0
        self._interval_s = 1.0 / rate if rate else 0.0
        self._next_s = time.monotonic()

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    async def pace(self) -> None:
        if not self._interval_s:
            return
        now = time.monotonic()
        self._next_s = max(self._next_s + self._interval_s, now)
        await asyncio.sleep(self._next_s - now)

    def done(self) -> None:
        self._unreported += 1
        if self._unreported >= PROGRESS_EVERY:
            self.flush()

    def flush(self) -> None:
        with self._counter.get_lock():
            self._counter.value += self._unreported
        self._unreported = 0


def _key_maker(spec: LoadSpec, rng: random.Random, index: int) -> Callable[[], bytes]:
    seq = [index * 1_000_003]

    def key() -> bytes:
        if spec.sequential_keys:
            seq[0] += 1
            n = seq[0] % spec.key_space_size
        else:
            n = rng.randrange(spec.key_space_size)
        return str(n).zfill(spec.key_size).encode()[-spec.key_size:]

    return key


def _make_request(spec: LoadSpec, rng: random.Random, index: int) -> Callable[[grpc.aio.Channel], Callable[[], Awaitable[Any]]]:
    """For a channel, a function sending one request of the benchmark's kind."""
    key = _key_maker(spec, rng, index)
    value = b"x" * spec.val_size
    serializable = spec.consistency == "s"
    range_req = pb.RangeRequest(key=spec.range_key.encode(), range_end=spec.range_end.encode(), serializable=serializable)

    def bind(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
        kv = pb_grpc.KVStub(channel)
        if spec.kind == "put":
            return lambda: kv.Put(pb.PutRequest(key=key(), value=value), timeout=REQUEST_TIMEOUT_S)
        if spec.kind == "range":
            return lambda: kv.Range(range_req, timeout=REQUEST_TIMEOUT_S)

        def txn_put() -> Awaitable[Any]:
            # Distinct keys in one txn (etcd refuses duplicates): consecutive ones from a drawn start.
            first = int(key())
            keys = [str((first + j) % spec.key_space_size).zfill(spec.key_size).encode()[-spec.key_size:] for j in range(spec.txn_ops)]
            ops = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=value)) for k in keys]
            return kv.Txn(pb.TxnRequest(success=ops), timeout=REQUEST_TIMEOUT_S)

        if spec.kind == "txn-put":
            return txn_put
        assert spec.kind == "txn-mixed", spec.kind
        read_share = spec.rw_ratio / (spec.rw_ratio + 1)

        def mixed() -> Awaitable[Any]:
            if rng.random() < read_share:
                op = pb.RequestOp(request_range=pb.RangeRequest(key=key(), serializable=serializable))
                return kv.Txn(pb.TxnRequest(success=[op]), timeout=REQUEST_TIMEOUT_S)
            return txn_put()

        return mixed

    return bind


def _error_name(e: grpc.RpcError) -> str:
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    return f"{code.name if code else 'ERROR'}: {details}"


async def _request_loop(send: Callable[[], Awaitable[Any]], state: _Shared, deadline: float,
                        latencies: array.array, errors: dict[str, int]) -> None:
    while time.monotonic() < deadline and state.take():
        await state.pace()
        t0 = time.monotonic()
        try:
            await send()
        except grpc.RpcError as e:
            name = _error_name(e)
            errors[name] = errors.get(name, 0) + 1
            continue
        latencies.append(time.monotonic() - t0)
        state.done()


async def _keepalive_loop(channel: grpc.aio.Channel, state: _Shared, deadline: float,
                          latencies: array.array, errors: dict[str, int]) -> None:
    """One lease, renewed over one LeaseKeepAlive stream: each round trip is one request."""
    lease = pb_grpc.LeaseStub(channel)
    try:
        granted = await lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60), timeout=REQUEST_TIMEOUT_S)
    except grpc.RpcError as e:
        errors[_error_name(e)] = errors.get(_error_name(e), 0) + 1
        return
    stream = lease.LeaseKeepAlive()
    try:
        while time.monotonic() < deadline and state.take():
            await state.pace()
            t0 = time.monotonic()
            await stream.write(pb.LeaseKeepAliveRequest(ID=granted.ID))
            await asyncio.wait_for(stream.read(), REQUEST_TIMEOUT_S)
            latencies.append(time.monotonic() - t0)
            state.done()
    except (grpc.RpcError, TimeoutError) as e:
        name = _error_name(e) if isinstance(e, grpc.RpcError) else "keep-alive timed out"
        errors[name] = errors.get(name, 0) + 1
    finally:
        stream.cancel()
        try:
            await lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=granted.ID), timeout=REQUEST_TIMEOUT_S)
        except grpc.RpcError:
            pass  # it expires anyway


async def _watch_run(spec: LoadSpec, channels: list[grpc.aio.Channel], watchers: int, state: _Shared, deadline: float,
                     latencies: array.array, errors: dict[str, int], index: int) -> None:
    """`watchers` watchers spread over `watch_keys` keys; Puts to those keys; each delivered event is
    one sample: the time from sending the Put to the watcher receiving its event."""
    prefix = f"bench-watch/{index}/"
    keys = [f"{prefix}{k}".encode() for k in range(max(1, spec.watch_keys))]
    sent_at: dict[bytes, float] = {}
    streams = []
    for w in range(watchers):
        stream = pb_grpc.WatchStub(channels[w % len(channels)]).Watch()
        await stream.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=keys[w % len(keys)])))
        created = await asyncio.wait_for(stream.read(), REQUEST_TIMEOUT_S)
        if not created.created:
            errors["watch not created"] = errors.get("watch not created", 0) + 1
            return
        streams.append(stream)
    value = b"x" * spec.val_size

    async def receive(stream: Any) -> None:
        while True:
            resp = await stream.read()
            if resp is grpc.aio.EOF:
                return
            now = time.monotonic()
            for ev in resp.events:
                t0 = sent_at.get(ev.kv.value)
                if t0 is not None:
                    latencies.append(now - t0)
                    state.done()

    readers = [asyncio.get_running_loop().create_task(receive(s)) for s in streams]
    kv = pb_grpc.KVStub(channels[0])
    n = 0
    while time.monotonic() < deadline and state.take():
        await state.pace()
        n += 1
        tag = str(n).encode() + b":" + value  # values are distinct, so an event names its put
        sent_at[tag] = time.monotonic()
        try:
            await kv.Put(pb.PutRequest(key=keys[n % len(keys)], value=tag), timeout=REQUEST_TIMEOUT_S)
        except grpc.RpcError as e:
            errors[_error_name(e)] = errors.get(_error_name(e), 0) + 1
    # Events of the last puts are still in flight: give them a moment (bounded), then stop.
    settle = time.monotonic() + 2.0
    expected = n * max(1, watchers // len(keys))
    while len(latencies) < expected and time.monotonic() < settle:
        await asyncio.sleep(0.01)
    for s in streams:
        s.cancel()
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
