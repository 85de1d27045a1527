"""Lock and Election services (rpc/lock_service.py, rpc/election_service.py) against etcd.

The server under test is the `endpoint` fixture: it must serve KV, Lease, Watch, Lock and
Election. For each `backend` (a real etcd 3.4, and a petcd member) it is a grpc.aio server
of this module hosting the two services over a channel to the backend, plus a transparent
pass-through of KV, Lease and Watch to it; once petcd's gateway hosts the services itself,
the petcd member is the server under test directly.
`reference` is real etcd's own endpoint: its Lock and Election are the expected answers.

etcdctl's `lock` and `elect` are client-side recipes over KV, Lease and Watch (they never
call the Lock or Election services), so the etcdctl tests check that they and the services
interoperate: same keys, same order, same output as against etcd alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from petcd.rpc.election_service import ElectionService
from petcd.rpc.lock_service import LockService
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.rpc.pb import v3election_pb2 as epb
from petcd.rpc.pb import v3election_pb2_grpc as epb_grpc
from petcd.rpc.pb import v3lock_pb2 as lpb
from petcd.rpc.pb import v3lock_pb2_grpc as lpb_grpc
from tests.servers import Server, free_port, start_etcd, start_petcd

WAIT_S = 10.0  # any single wait in these tests
QUIET_S = 0.3  # how long something that must block is watched not to finish
PROXIED_SERVICES = ("KV", "Lease", "Watch")
UNKNOWN = grpc.StatusCode.UNKNOWN


# --------------------------------------------------------------------------- server under test
def _proxy_handlers(channel: grpc.aio.Channel) -> list[grpc.GenericRpcHandler]:
    """KV, Lease and Watch of the backend, forwarded as raw bytes (methods read from rpc.proto)."""
    handlers = []
    for name in PROXIED_SERVICES:
        service = pb.DESCRIPTOR.services_by_name[name]
        methods = {m.name: _forward(channel, f"/{service.full_name}/{m.name}", m.client_streaming)
                   for m in service.methods}
        handlers.append(grpc.method_handlers_generic_handler(service.full_name, methods))
    return handlers


def _forward(channel: grpc.aio.Channel, path: str, streaming: bool) -> grpc.RpcMethodHandler:
    if not streaming:
        call = channel.unary_unary(path)

        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                return await call(request)
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "")
            raise AssertionError("unreachable")

        return grpc.unary_unary_rpc_method_handler(unary)

    async def stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        call = channel.stream_stream(path)(requests)
        try:
            async for resp in call:
                yield resp
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")
        finally:
            call.cancel()

    return grpc.stream_stream_rpc_method_handler(stream)


class ServiceHost:
    """The Lock and Election services (and the KV/Lease/Watch pass-through) in a thread of their own."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.endpoint = f"127.0.0.1:{free_port()}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    def start(self) -> ServiceHost:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(WAIT_S)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)

    async def _start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.backend)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers(_proxy_handlers(self._channel))
        lpb_grpc.add_LockServicer_to_server(LockService(self._channel), self._server)
        epb_grpc.add_ElectionServicer_to_server(ElectionService(self._channel), self._server)
        assert self._server.add_insecure_port(self.endpoint)
        await self._server.start()

    async def _stop(self) -> None:
        assert self._server and self._channel
        await self._server.stop(grace=0.5)
        await self._channel.close()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_etcd(str(tmp_path_factory.mktemp("lock-election") / "etcd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reference(etcd: Server) -> str:
    """Real etcd: its own Lock and Election answer what ours must."""
    return etcd.endpoint


@dataclass
class Backend:
    kind: str  # "etcd" or "petcd"
    endpoint: str


@pytest.fixture(scope="module", params=["etcd", "petcd"])
def backend(request: pytest.FixtureRequest, etcd: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """The KV, Lease and Watch the services run on: real etcd, and a petcd member."""
    if request.param == "etcd":
        yield Backend("etcd", etcd.endpoint)
        return
    member = start_petcd(str(tmp_path_factory.mktemp("lock-election") / "petcd"))
    yield Backend("petcd", member.endpoint)
    member.stop()


def serves_election(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            epb_grpc.ElectionStub(channel).Leader(epb.LeaderRequest(name=b"probe"), timeout=WAIT_S)
        except grpc.RpcError as e:
            return e.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


@pytest.fixture(scope="module")
def endpoint(backend: Backend) -> Iterator[str]:
    """The server under test (serves KV, Lease, Watch, Lock and Election): a petcd member once its
    gateway hosts the two services, else the services hosted here over the backend."""
    if backend.kind == "petcd" and serves_election(backend.endpoint):
        yield backend.endpoint
        return
    host = ServiceHost(backend.endpoint).start()
    yield host.endpoint
    host.stop()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> bytes:
    """A lock or election name of this test's own."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name).encode()


# --------------------------------------------------------------------------- clients
@dataclass
class Stubs:
    kv: pb_grpc.KVStub
    lease: pb_grpc.LeaseStub
    lock: lpb_grpc.LockStub
    election: epb_grpc.ElectionStub

    @staticmethod
    def over(channel: Any) -> Stubs:
        return Stubs(pb_grpc.KVStub(channel), pb_grpc.LeaseStub(channel),
                     lpb_grpc.LockStub(channel), epb_grpc.ElectionStub(channel))


@asynccontextmanager
async def connect(endpoint: str) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        yield Stubs.over(channel)


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(*args), 6 * WAIT_S))


async def grant(s: Stubs, ttl: int = 30) -> int:
    return (await s.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl))).ID


async def status_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


async def keys_under(s: Stubs, prefix: bytes) -> list[bytes]:
    resp = await s.kv.Range(pb.RangeRequest(key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1])))
    return [kv.key for kv in sorted(resp.kvs, key=lambda kv: kv.create_revision)]


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def until_keys(s: Stubs, prefix: bytes, n: int) -> None:
    async def enough() -> bool:
        return len(await keys_under(s, prefix)) == n
    await until(enough, f"{n} keys under {prefix!r}")


async def still_waiting(*tasks: asyncio.Task[Any]) -> bool:
    await asyncio.sleep(QUIET_S)
    return not any(t.done() for t in tasks)


def lease_hex(lease: int) -> bytes:
    return b"%x" % lease


# --------------------------------------------------------------------------- Lock
def test_lock_mutual_exclusion(endpoint: str, name: bytes) -> None:
    """10 lockers each do 3 read-modify-write increments under the lock: none is lost."""
    workers, rounds = 10, 3
    counter = name + b"-counter"

    async def scenario() -> None:
        async with connect(endpoint) as s:
            inside = 0

            async def worker() -> None:
                nonlocal inside
                lease = await grant(s)
                for _ in range(rounds):
                    locked = await s.lock.Lock(lpb.LockRequest(name=name, lease=lease))
                    inside += 1
                    assert inside == 1, "two lock holders at once"
                    got = await s.kv.Range(pb.RangeRequest(key=counter))
                    value = int(got.kvs[0].value) if got.kvs else 0
                    await asyncio.sleep(0.001)  # let the others run while holding the lock
                    await s.kv.Put(pb.PutRequest(key=counter, value=b"%d" % (value + 1)))
                    inside -= 1
                    await s.lock.Unlock(lpb.UnlockRequest(key=locked.key))
                await s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease))

            await asyncio.gather(*(worker() for _ in range(workers)))
            got = await s.kv.Range(pb.RangeRequest(key=counter))
            assert int(got.kvs[0].value) == workers * rounds
            assert await keys_under(s, name + b"/") == []

    run(scenario)


def test_lock_waiters_served_in_revision_order(endpoint: str, name: bytes) -> None:
    async def scenario() -> None:
        async with connect(endpoint) as s:
            holder = await s.lock.Lock(lpb.LockRequest(name=name, lease=await grant(s)))
            assert holder.key == name + b"/" + lease_hex((await s.kv.Range(pb.RangeRequest(key=holder.key))).kvs[0].lease)
            served: list[int] = []

            async def waiter(i: int, lease: int) -> None:
                locked = await s.lock.Lock(lpb.LockRequest(name=name, lease=lease))
                served.append(i)
                await s.lock.Unlock(lpb.UnlockRequest(key=locked.key))

            tasks = []
            for i in range(5):
                tasks.append(asyncio.create_task(waiter(i, await grant(s))))
                await until_keys(s, name + b"/", i + 2)  # queued in this order
            assert await still_waiting(*tasks)
            await s.lock.Unlock(lpb.UnlockRequest(key=holder.key))
            await asyncio.gather(*tasks)
            assert served == [0, 1, 2, 3, 4]

    run(scenario)


def test_lock_holder_whose_lease_is_revoked_loses_the_lock(endpoint: str, name: bytes) -> None:
    async def scenario() -> None:
        async with connect(endpoint) as s:
            lease_a, lease_b = await grant(s), await grant(s)
            a = await s.lock.Lock(lpb.LockRequest(name=name, lease=lease_a))
            b = asyncio.ensure_future(s.lock.Lock(lpb.LockRequest(name=name, lease=lease_b)))
            await until_keys(s, name + b"/", 2)
            assert await still_waiting(b)
            await s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease_a))
            got = await asyncio.wait_for(b, WAIT_S)
            assert got.key == name + b"/" + lease_hex(lease_b) != a.key
            assert await keys_under(s, name + b"/") == [got.key]
            assert got.header.revision >= (await s.kv.Range(pb.RangeRequest(key=got.key))).kvs[0].create_revision
            await s.lock.Unlock(lpb.UnlockRequest(key=got.key))

    run(scenario)


def test_waiter_whose_lease_dies_is_refused_and_the_next_gets_the_lock(endpoint: str, name: bytes) -> None:
    """The re-check after waiting (etcd 3.4 would answer the dead waiter's Lock as granted)."""
    async def scenario() -> None:
        async with connect(endpoint) as s:
            lease_a, lease_b, lease_c = await grant(s), await grant(s), await grant(s)
            a = await s.lock.Lock(lpb.LockRequest(name=name, lease=lease_a))
            b = asyncio.create_task(status_of(s.lock.Lock(lpb.LockRequest(name=name, lease=lease_b))))
            await until_keys(s, name + b"/", 2)
            c = asyncio.ensure_future(s.lock.Lock(lpb.LockRequest(name=name, lease=lease_c)))
            await until_keys(s, name + b"/", 3)
            await s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease_b))
            assert await still_waiting(b, c)
            await s.lock.Unlock(lpb.UnlockRequest(key=a.key))
            assert await asyncio.wait_for(b, WAIT_S) == (UNKNOWN, "mutex: session is expired")
            got = await asyncio.wait_for(c, WAIT_S)
            assert await keys_under(s, name + b"/") == [got.key] == [name + b"/" + lease_hex(lease_c)]

    run(scenario)


def test_lock_errors_like_etcd(endpoint: str, reference: str, name: bytes) -> None:
    async def answers(target: str) -> list[tuple[grpc.StatusCode, str]]:
        async with connect(target) as s:
            return [
                await status_of(s.lock.Lock(lpb.LockRequest(name=name, lease=0x1234567))),  # no such lease
                await status_of(s.lock.Unlock(lpb.UnlockRequest(key=b""))),
                await status_of(s.lock.Unlock(lpb.UnlockRequest(key=name + b"/none"))),
            ]

    ours, etcds = run(answers, endpoint), run(answers, reference)
    assert ours == etcds == [(UNKNOWN, "etcdserver: requested lease not found"),
                             (UNKNOWN, "etcdserver: key is not provided"),
                             (grpc.StatusCode.OK, "")]


def test_lock_without_lease_uses_a_new_session_lease_like_etcd(endpoint: str, reference: str, name: bytes) -> None:
    async def lock_lease_zero(target: str, lock_name: bytes) -> tuple[int, bool]:
        async with connect(target) as s:
            locked = await s.lock.Lock(lpb.LockRequest(name=lock_name))
            lease = (await s.kv.Range(pb.RangeRequest(key=locked.key))).kvs[0].lease
            ttl = await s.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lease))
            await s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease))
            return ttl.grantedTTL, locked.key == lock_name + b"/" + lease_hex(lease)

    assert run(lock_lease_zero, endpoint, name) == run(lock_lease_zero, reference, name + b"-ref") == (60, True)


def test_lock_again_with_the_same_lease_reuses_the_key(endpoint: str, name: bytes) -> None:
    async def scenario() -> None:
        async with connect(endpoint) as s:
            lease = await grant(s)
            first = await s.lock.Lock(lpb.LockRequest(name=name, lease=lease))
            again = await s.lock.Lock(lpb.LockRequest(name=name, lease=lease))
            assert again.key == first.key and await keys_under(s, name + b"/") == [first.key]

    run(scenario)


def test_cancelled_lock_and_campaign_remove_their_keys_like_etcd(endpoint: str, reference: str, name: bytes) -> None:
    async def scenario(target: str, lock_name: bytes) -> list[Any]:
        async with connect(target) as s:
            holder = await s.lock.Lock(lpb.LockRequest(name=lock_name, lease=await grant(s)))
            leader = await s.election.Campaign(epb.CampaignRequest(name=lock_name + b"-e", lease=await grant(s), value=b"x"))
            lock_call = s.lock.Lock(lpb.LockRequest(name=lock_name, lease=await grant(s)), timeout=0.5)
            campaign_call = s.election.Campaign(
                epb.CampaignRequest(name=lock_name + b"-e", lease=await grant(s), value=b"y"), timeout=0.5)
            # the client's deadline, or etcd's "context deadline exceeded" (UNKNOWN) if that comes first
            codes = [(await status_of(lock_call))[0] != grpc.StatusCode.OK,
                     (await status_of(campaign_call))[0] != grpc.StatusCode.OK]
            await until_keys(s, lock_name + b"/", 1)
            await until_keys(s, lock_name + b"-e/", 1)
            return [codes, await keys_under(s, lock_name + b"/") == [holder.key],
                    await keys_under(s, lock_name + b"-e/") == [leader.leader.key]]

    expected = [[True, True], True, True]
    assert run(scenario, endpoint, name) == run(scenario, reference, name + b"-ref") == expected


# --------------------------------------------------------------------------- Election
def test_election_errors_like_etcd(endpoint: str, reference: str, name: bytes) -> None:
    async def answers(target: str, election: bytes) -> list[tuple[grpc.StatusCode, str]]:
        async with connect(target) as s:
            no_leader = await status_of(s.election.Leader(epb.LeaderRequest(name=election)))
            leader = (await s.election.Campaign(epb.CampaignRequest(name=election, lease=await grant(s), value=b"v"))).leader
            stale = epb.LeaderKey(name=election, key=leader.key, rev=leader.rev + 1, lease=leader.lease)
            other = epb.LeaderKey(name=election, key=election + b"/abc", rev=leader.rev, lease=leader.lease)
            return [
                no_leader,
                await status_of(s.election.Proclaim(epb.ProclaimRequest(leader=stale, value=b"w"))),
                await status_of(s.election.Proclaim(epb.ProclaimRequest(leader=other, value=b"w"))),
                await status_of(s.election.Proclaim(epb.ProclaimRequest(value=b"w"))),
                await status_of(s.election.Resign(epb.ResignRequest())),
                await status_of(s.election.Resign(epb.ResignRequest(leader=stale))),
                await status_of(s.election.Campaign(epb.CampaignRequest(name=election, lease=0x1234567))),
            ]

    ours, etcds = run(answers, endpoint, name), run(answers, reference, name + b"-ref")
    assert ours == etcds == [
        (UNKNOWN, "election: no leader"),
        (UNKNOWN, "election: not leader"),
        (UNKNOWN, "election: not leader"),
        (UNKNOWN, '"leader" field must be provided'),
        (UNKNOWN, '"leader" field must be provided'),
        (grpc.StatusCode.OK, ""),
        (UNKNOWN, "etcdserver: requested lease not found"),
    ]


def test_campaign_leader_proclaim_resign_like_etcd(endpoint: str, reference: str, name: bytes) -> None:
    async def transcript(target: str, election: bytes) -> list[Any]:
        async with connect(target) as s:
            lease_1, lease_2 = await grant(s), await grant(s)
            first = await s.election.Campaign(epb.CampaignRequest(name=election, lease=lease_1, value=b"one"))
            out: list[Any] = [first.leader.key == election + b"/" + lease_hex(lease_1),
                              first.leader.rev == first.header.revision, first.leader.lease == lease_1]
            again = await s.election.Campaign(epb.CampaignRequest(name=election, lease=lease_1, value=b"uno"))
            out += [again.leader == first.leader, again.header.revision == first.header.revision]
            second = asyncio.ensure_future(s.election.Campaign(epb.CampaignRequest(name=election, lease=lease_2, value=b"two")))
            await until_keys(s, election + b"/", 2)
            out.append(await still_waiting(second))
            leader = await s.election.Leader(epb.LeaderRequest(name=election))
            out += [leader.kv.value, leader.kv.version]
            proclaimed = await s.election.Proclaim(epb.ProclaimRequest(leader=first.leader, value=b"eins"))
            out.append(proclaimed.header.revision == first.leader.rev + 3)
            resigned = await s.election.Resign(epb.ResignRequest(leader=first.leader))
            won = await asyncio.wait_for(second, WAIT_S)
            out += [resigned.header.revision == first.leader.rev + 4, won.leader.rev == first.leader.rev + 2,
                    won.header.revision == won.leader.rev,
                    (await s.election.Leader(epb.LeaderRequest(name=election))).kv.value]
            return out

    ours, etcds = run(transcript, endpoint, name), run(transcript, reference, name + b"-ref")
    assert ours == etcds == [True, True, True, True, True, True, b"uno", 2, True, True, True, True, b"two"]


def test_observe_sees_every_leader_in_order_like_etcd(endpoint: str, reference: str, name: bytes) -> None:
    async def observed(target: str, election: bytes) -> list[tuple[bytes, int]]:
        async with connect(target) as s:
            seen: list[epb.LeaderResponse] = []

            async def observe() -> None:
                async for resp in s.election.Observe(epb.LeaderRequest(name=election)):
                    seen.append(resp)

            async def until_seen(n: int) -> None:
                async def enough() -> bool:
                    return len(seen) >= n
                await until(enough, f"{n} observed leaders")

            observer = asyncio.create_task(observe())
            await asyncio.sleep(QUIET_S)  # observing an election that has no candidate yet
            lease_1, lease_2, lease_3 = await grant(s), await grant(s), await grant(s)
            one = await s.election.Campaign(epb.CampaignRequest(name=election, lease=lease_1, value=b"one"))
            await until_seen(1)
            two = asyncio.ensure_future(s.election.Campaign(epb.CampaignRequest(name=election, lease=lease_2, value=b"two")))
            await until_keys(s, election + b"/", 2)
            three = asyncio.ensure_future(s.election.Campaign(epb.CampaignRequest(name=election, lease=lease_3, value=b"three")))
            await until_keys(s, election + b"/", 3)
            await s.election.Proclaim(epb.ProclaimRequest(leader=one.leader, value=b"one-b"))
            await until_seen(2)
            await s.election.Resign(epb.ResignRequest(leader=one.leader))
            await asyncio.wait_for(two, WAIT_S)
            await until_seen(3)
            await s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease_2))
            won = await asyncio.wait_for(three, WAIT_S)
            await until_seen(4)
            await s.election.Proclaim(epb.ProclaimRequest(leader=won.leader, value=b"three-b"))
            await until_seen(5)
            await asyncio.sleep(QUIET_S)  # and nothing more
            observer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await observer
            assert all(r.header.revision >= r.kv.mod_revision for r in seen)
            return [(r.kv.value, r.kv.version) for r in seen]

    ours, etcds = run(observed, endpoint, name), run(observed, reference, name + b"-ref")
    assert ours == etcds == [(b"one", 1), (b"one-b", 2), (b"two", 1), (b"three", 1), (b"three-b", 2)]


def test_campaign_refused_when_its_lease_died_while_waiting(endpoint: str, name: bytes) -> None:
    """The re-check after waiting (etcd 3.4 would answer the dead candidate as elected)."""
    async def scenario() -> None:
        async with connect(endpoint) as s:
            lease_1, lease_2 = await grant(s), await grant(s)
            first = await s.election.Campaign(epb.CampaignRequest(name=name, lease=lease_1, value=b"one"))
            second = asyncio.create_task(status_of(s.election.Campaign(epb.CampaignRequest(name=name, lease=lease_2, value=b"two"))))
            await until_keys(s, name + b"/", 2)
            await s.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease_2))
            await s.election.Resign(epb.ResignRequest(leader=first.leader))
            assert await asyncio.wait_for(second, WAIT_S) == (UNKNOWN, "election: not leader")

    run(scenario)


# --------------------------------------------------------------------------- etcdctl
class Etcdctl:
    """A long-running etcdctl command whose output lines are read as they come."""

    def __init__(self, target: str, *args: str) -> None:
        env = {"PATH": os.environ.get("PATH", ""), "ETCDCTL_API": "3"}
        binary = shutil.which("etcdctl")
        assert binary, "etcdctl not on PATH (add .cache/etcd/usr/bin)"
        self.proc = subprocess.Popen([binary, f"--endpoints={target}", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for raw in self.proc.stdout:
            self._lines.put(raw.decode().rstrip("\n"))
        self._lines.put(None)

    def lines(self, n: int, timeout: float = WAIT_S) -> list[str]:
        got = []
        for _ in range(n):
            line = self._lines.get(timeout=timeout)
            assert line is not None, f"etcdctl ended early: {self.stop()}"
            got.append(line)
        return got

    def silent(self) -> bool:
        """No output (and no exit) for a while: the command is blocked."""
        try:
            self._lines.get(timeout=QUIET_S)
        except queue.Empty:
            return True
        return False

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(WAIT_S)
        self._reader.join(WAIT_S)
        assert self.proc.stdout and self.proc.stderr
        with self.proc.stdout, self.proc.stderr:
            return rc, self.proc.stderr.read().decode()


def masked(lines: list[str], name: bytes) -> list[str]:
    """Lease IDs in keys differ from run to run."""
    return [re.sub(r"/[0-9a-f]+$", "/<lease>", line).replace(name.decode(), "<name>") for line in lines]


def test_etcdctl_lock_interoperates_with_lock_service_like_etcd(endpoint: str, reference: str, name: bytes) -> None:
    async def transcript(target: str, lock_name: bytes) -> list[Any]:
        out: list[Any] = []
        # etcdctl holds the lock: a Lock through the service waits for it
        ctl = Etcdctl(target, "lock", lock_name.decode())
        out += masked(ctl.lines(2), lock_name)
        async with connect(target) as s:
            waiting = asyncio.ensure_future(s.lock.Lock(lpb.LockRequest(name=lock_name, lease=await grant(s))))
            await until_keys(s, lock_name + b"/", 2)
            out.append(await still_waiting(waiting))
            out.append(ctl.stop())  # etcdctl unlocks on SIGTERM
            held = await asyncio.wait_for(waiting, WAIT_S)
            # the service holds the lock: etcdctl lock waits for it
            ctl = Etcdctl(target, "lock", lock_name.decode())
            await until_keys(s, lock_name + b"/", 2)
            out.append(ctl.silent())
            await s.lock.Unlock(lpb.UnlockRequest(key=held.key))
            out += masked(ctl.lines(2), lock_name)
            out.append(ctl.stop())
        return out

    ours, etcds = run(transcript, endpoint, name), run(transcript, reference, name + b"-ref")
    assert ours == etcds == ["<name>/<lease>", "", True, (0, ""), True, "<name>/<lease>", "", (0, "")]


def test_etcdctl_elect_interoperates_with_election_service_like_etcd(endpoint: str, reference: str, name: bytes) -> None:
    async def transcript(target: str, election: bytes) -> list[Any]:
        out: list[Any] = []
        listener = Etcdctl(target, "elect", "-l", election.decode())
        async with connect(target) as s:
            first = await s.election.Campaign(epb.CampaignRequest(name=election, lease=await grant(s), value=b"a"))
            out += masked(listener.lines(2), election)
            await s.election.Proclaim(epb.ProclaimRequest(leader=first.leader, value=b"b"))
            out += masked(listener.lines(2), election)
            # an etcdctl candidate queues behind the service's leader
            candidate = Etcdctl(target, "elect", election.decode(), "c")
            await until_keys(s, election + b"/", 2)
            out.append(candidate.silent())
            await s.election.Resign(epb.ResignRequest(leader=first.leader))
            out += masked(candidate.lines(2), election)
            out += masked(listener.lines(2), election)
            leader = await s.election.Leader(epb.LeaderRequest(name=election))
            out.append(leader.kv.value)
            out.append(candidate.stop())  # etcdctl resigns on SIGTERM
            await until_keys(s, election + b"/", 0)
            out.append(await status_of(s.election.Leader(epb.LeaderRequest(name=election))))
        out.append(listener.stop())
        return out

    ours, etcds = run(transcript, endpoint, name), run(transcript, reference, name + b"-ref")
    assert ours == etcds == [
        "<name>/<lease>", "a", "<name>/<lease>", "b", True, "<name>/<lease>", "c", "<name>/<lease>", "c",
        b"c", (0, ""), (UNKNOWN, "election: no leader"), (0, ""),
    ]
