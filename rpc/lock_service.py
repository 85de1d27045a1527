"""v3lockpb.Lock: etcd's distributed mutex (clientv3/concurrency/mutex.go) as a service.

A lock is the prefix name + "/"; each holder or waiter owns the key prefix + lease ID
in hex, attached to its lease. The oldest key (smallest create revision) holds the lock.
"""

from __future__ import annotations

import asyncio

import grpc

from petcd.rpc.concurrency import (
    ERR_SESSION_EXPIRED,
    Client,
    caller_metadata,
    ConcurrencyError,
    create_revision_is,
    etcd_errors,
    first_create,
    session_key,
)
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import v3lock_pb2, v3lock_pb2_grpc


class LockService(v3lock_pb2_grpc.LockServicer):
    """Lock and Unlock over the member's own KV, Lease and Watch (a channel to its client URL)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    @etcd_errors
    async def Lock(self, request: v3lock_pb2.LockRequest, context: grpc.aio.ServicerContext) -> v3lock_pb2.LockResponse:
        c = Client(self._channel, caller_metadata(context))
        lease = await c.session_lease(request.lease)
        prefix = request.name + b"/"
        key = session_key(prefix, lease)
        header = await self._lock(c, prefix, key, lease)
        return v3lock_pb2.LockResponse(header=header, key=key)

    @etcd_errors
    async def Unlock(self, request: v3lock_pb2.UnlockRequest, context: grpc.aio.ServicerContext) -> v3lock_pb2.UnlockResponse:
        c = Client(self._channel, caller_metadata(context))
        resp = await c.kv.DeleteRange(pb.DeleteRangeRequest(key=request.key))
        return v3lock_pb2.UnlockResponse(header=resp.header)

    async def _lock(self, c: Client, prefix: bytes, key: bytes, lease: int) -> pb.ResponseHeader:
        """Mutex.Lock: queue up (or find our key), wait for older keys to go, then check we still hold it."""
        resp = await c.kv.Txn(pb.TxnRequest(
            compare=[create_revision_is(key, 0)],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=key, lease=lease)),
                     pb.RequestOp(request_range=first_create(prefix))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key)),
                     pb.RequestOp(request_range=first_create(prefix))],
        ))
        my_rev = resp.header.revision if resp.succeeded else resp.responses[0].response_range.kvs[0].create_revision
        owner = resp.responses[1].response_range.kvs
        if not owner or owner[0].create_revision == my_rev:
            return resp.header
        try:
            await c.wait_deletes(prefix, my_rev - 1)
        except (Exception, asyncio.CancelledError):
            # etcd releases the key when the wait fails, the client's cancel included
            await c.detached(c.kv.DeleteRange(pb.DeleteRangeRequest(key=key)))
            raise
        return await self._still_held(c, key, lease, my_rev)

    async def _still_held(self, c: Client, key: bytes, lease: int, my_rev: int) -> pb.ResponseHeader:
        """After waiting, the lease may have expired and taken the key with it (Jepsen's finding).
        etcd 3.4 answers such a Lock as granted; later etcd (issue 16221) checks that the key is
        still there. Here: the lease must be alive and the key still our incarnation, else our key
        (if left) is released and the Lock fails as later etcd's does."""
        ttl = await c.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lease))
        got = await c.kv.Range(pb.RangeRequest(key=key))
        if ttl.TTL > 0 and got.kvs and got.kvs[0].create_revision == my_rev:
            return got.header
        await c.detached(c.delete_if_created_at(key, my_rev))
        raise ConcurrencyError(ERR_SESSION_EXPIRED)
