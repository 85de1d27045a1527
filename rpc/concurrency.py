"""etcd's clientv3/concurrency recipes, over the member's own KV, Lease and Watch API.

etcd serves v3lockpb.Lock and v3electionpb.Election with an in-process client
(server/etcdserver/api/v3lock, v3election on clientv3/concurrency); the Lock and
Election services here do the same through a gRPC channel to the member's client
URL. This module holds what both share: the session lease, the first/last-create
ranges, waiting for a key's deletion (etcd's waitDelete/waitDeletes) and the
mapping of errors to the status etcd's services answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc

from petcd.rpc.pb import kv_pb2
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc

# concurrency.NewSession grants a lease of this TTL when the request names lease 0.
DEFAULT_SESSION_TTL = 60

ERR_NOT_LEADER = "election: not leader"
ERR_NO_LEADER = "election: no leader"
ERR_MISSING_LEADER = '"leader" field must be provided'
ERR_SESSION_EXPIRED = "mutex: session is expired"
ERR_LOST_WATCHER = "lost watcher waiting for delete"
ERR_COMPACTED = "etcdserver: mvcc: required revision has been compacted"

_SERVER_ERROR_PREFIX = "etcdserver: "

T = TypeVar("T")


class ConcurrencyError(Exception):
    """An error of the recipes themselves (etcd's errors.New in clientv3/concurrency)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def backend_status(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """The status etcd's services answer for an error of their in-process client.

    That client turns every etcd server error into a plain error (rpctypes.EtcdError),
    which gRPC then sends as UNKNOWN with the same message; other errors keep their code.
    """
    details = error.details() or ""
    if details.startswith(_SERVER_ERROR_PREFIX):
        return grpc.StatusCode.UNKNOWN, details
    return error.code(), details


def etcd_errors(method: Callable[..., Awaitable[T]]) -> Callable[..., Coroutine[Any, Any, T]]:
    """Answer ConcurrencyError and backend errors of a unary servicer method as etcd does."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except ConcurrencyError as e:
            await context.abort(grpc.StatusCode.UNKNOWN, e.message)
        except grpc.aio.AioRpcError as e:
            await context.abort(*backend_status(e))
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with prefix (clientv3's WithPrefix)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def session_key(prefix: bytes, lease: int) -> bytes:
    """A session's key under a lock or election prefix: prefix + lease ID in hex (Go's %x)."""
    return prefix + ("%x" % lease).encode()


def first_create(prefix: bytes) -> pb.RangeRequest:
    """The oldest key under prefix (clientv3's WithFirstCreate)."""
    return pb.RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_order=pb.RangeRequest.ASCEND,
        sort_target=pb.RangeRequest.CREATE,
        limit=1,
    )


def last_create(prefix: bytes, max_create_revision: int) -> pb.RangeRequest:
    """The newest key under prefix created at or before max_create_revision."""
    return pb.RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_order=pb.RangeRequest.DESCEND,
        sort_target=pb.RangeRequest.CREATE,
        limit=1,
        max_create_revision=max_create_revision,
    )


def create_revision_is(key: bytes, revision: int) -> pb.Compare:
    return pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.CREATE, key=key, create_revision=revision)


class Watcher:
    """One watch on its own Watch stream; `async with` cancels it on exit."""

    def __init__(self, stub: Any, key: bytes, start_revision: int, range_end: bytes = b"") -> None:
        self._stub = stub
        self._create = pb.WatchCreateRequest(key=key, range_end=range_end, start_revision=start_revision)
        self._call: Any = None

    async def __aenter__(self) -> Watcher:
        self._call = self._stub.Watch()
        await self._call.write(pb.WatchRequest(create_request=self._create))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._call.cancel()

    async def next(self) -> pb.WatchResponse:
        """The next response that carries events; ConcurrencyError if the watch ends or is canceled."""
        while True:  # skips the created notice (and any progress notice)
            resp = await self._call.read()
            if resp is grpc.aio.EOF:
                raise ConcurrencyError(ERR_LOST_WATCHER)
            if resp.canceled:
                raise ConcurrencyError(ERR_COMPACTED if resp.compact_revision else resp.cancel_reason or ERR_LOST_WATCHER)
            if resp.events:
                return resp


def caller_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The caller's token, to send along: the recipes act as the caller, and its permissions apply
    (etcd's v3lock and v3election servers use a client carrying the caller's token too)."""
    return tuple((k, v) for k, v in context.invocation_metadata() or () if k in ("token", "authorization"))


class _WithMetadata:
    """A stub whose every call carries the given metadata."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        return functools.partial(getattr(self._stub, name), metadata=self._metadata)


class Client:
    """The KV, Lease and Watch calls the recipes make, over one channel to the member, for one caller."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.kv = _WithMetadata(pb_grpc.KVStub(channel), metadata)
        self.lease = _WithMetadata(pb_grpc.LeaseStub(channel), metadata)
        self.watch = _WithMetadata(pb_grpc.WatchStub(channel), metadata)
        self._detached: set[asyncio.Task[Any]] = set()

    async def session_lease(self, lease: int) -> int:
        """concurrency.NewSession(WithLease(lease)): lease 0 means a new lease of the default TTL."""
        if lease != 0:
            return lease
        granted = await self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=DEFAULT_SESSION_TTL))
        return granted.ID

    def watching(self, key: bytes, start_revision: int, range_end: bytes = b"") -> Watcher:
        return Watcher(self.watch, key, start_revision, range_end)

    async def wait_delete(self, key: bytes, revision: int) -> None:
        """Until key is deleted at or after revision (etcd's waitDelete)."""
        async with self.watching(key, revision) as watcher:
            while True:  # one iteration per update of key, until its deletion
                resp = await watcher.next()
                if any(ev.type == kv_pb2.Event.DELETE for ev in resp.events):
                    return

    async def wait_deletes(self, prefix: bytes, max_create_revision: int) -> tuple[pb.ResponseHeader, bool]:
        """Until no key under prefix was created at or before max_create_revision (etcd's waitDeletes):
        the header of the last read, and whether there was any key to wait for.

        Each round waits for the newest such key to go. No key can be created at an old
        revision, so the rounds are at most the keys under prefix at the first read, plus one.
        """
        resp = await self.kv.Range(last_create(prefix, max_create_revision))
        for round_ in range(resp.count + 1):
            if not resp.kvs:
                return resp.header, round_ > 0
            await self.wait_delete(resp.kvs[0].key, resp.header.revision)
            resp = await self.kv.Range(last_create(prefix, max_create_revision))
        raise AssertionError("a key was created under an old revision")

    async def delete_if_created_at(self, key: bytes, revision: int) -> pb.TxnResponse:
        """Delete key only if it is still the incarnation created at revision."""
        request = pb.TxnRequest(
            compare=[create_revision_is(key, revision)],
            success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))],
        )
        return await self.kv.Txn(request)

    async def detached(self, cleanup: Awaitable[Any]) -> None:
        """Run a cleanup that the caller's cancellation does not interrupt; its errors are dropped,
        as etcd drops those of its own cleanups."""
        task = asyncio.ensure_future(cleanup)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        with contextlib.suppress(Exception):
            await asyncio.shield(task)
