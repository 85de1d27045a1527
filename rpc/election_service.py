"""v3electionpb.Election: etcd's leader election (clientv3/concurrency/election.go) as a service.

An election is the prefix name + "/"; each candidate owns the key prefix + lease ID in
hex, attached to its lease, holding its proposal. The oldest key is the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from petcd.rpc.concurrency import (
    ERR_MISSING_LEADER,
    ERR_NO_LEADER,
    ERR_NOT_LEADER,
    Client,
    caller_metadata,
    ConcurrencyError,
    create_revision_is,
    etcd_errors,
    first_create,
    prefix_end,
    session_key,
)
from petcd.rpc.pb import kv_pb2
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import v3election_pb2 as epb
from petcd.rpc.pb import v3election_pb2_grpc as epb_grpc


def _leader_of(request: epb.ProclaimRequest | epb.ResignRequest) -> epb.LeaderKey:
    if not request.HasField("leader"):
        raise ConcurrencyError(ERR_MISSING_LEADER)
    return request.leader


class ElectionService(epb_grpc.ElectionServicer):
    """Campaign, Proclaim, Leader, Observe and Resign over the member's own KV, Lease and Watch."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    @etcd_errors
    async def Campaign(self, request: epb.CampaignRequest, context: grpc.aio.ServicerContext) -> epb.CampaignResponse:
        c = Client(self._channel, caller_metadata(context))
        lease = await c.session_lease(request.lease)
        prefix = request.name + b"/"
        key = session_key(prefix, lease)
        resp = await c.kv.Txn(pb.TxnRequest(
            compare=[create_revision_is(key, 0)],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=request.value, lease=lease))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key))],
        ))
        rev = resp.header.revision
        if not resp.succeeded:
            kv = resp.responses[0].response_range.kvs[0]
            rev = kv.create_revision
            if kv.value != request.value:
                await self._proclaim_or_resign(c, key, rev, lease, request.value)
        try:
            _, waited = await c.wait_deletes(prefix, rev - 1)
        except asyncio.CancelledError:
            await c.detached(c.delete_if_created_at(key, rev))  # etcd resigns on cancel
            raise
        if waited:
            await self._check_still_candidate(c, key, rev)
        leader = epb.LeaderKey(name=request.name, key=key, rev=rev, lease=lease)
        return epb.CampaignResponse(header=resp.header, leader=leader)

    @etcd_errors
    async def Proclaim(self, request: epb.ProclaimRequest, context: grpc.aio.ServicerContext) -> epb.ProclaimResponse:
        c = Client(self._channel, caller_metadata(context))
        leader = _leader_of(request)
        lease = await c.session_lease(leader.lease)
        resp = await self._proclaim(c, leader.key, leader.rev, lease, request.value)
        return epb.ProclaimResponse(header=resp.header)

    @etcd_errors
    async def Leader(self, request: epb.LeaderRequest, context: grpc.aio.ServicerContext) -> epb.LeaderResponse:
        c = Client(self._channel, caller_metadata(context))
        resp = await c.kv.Range(first_create(request.name + b"/"))
        if not resp.kvs:
            raise ConcurrencyError(ERR_NO_LEADER)
        return epb.LeaderResponse(header=resp.header, kv=resp.kvs[0])

    @etcd_errors
    async def Resign(self, request: epb.ResignRequest, context: grpc.aio.ServicerContext) -> epb.ResignResponse:
        c = Client(self._channel, caller_metadata(context))
        leader = _leader_of(request)
        await c.session_lease(leader.lease)  # as etcd's session: lease 0 grants one, unused
        resp = await c.delete_if_created_at(leader.key, leader.rev)
        return epb.ResignResponse(header=resp.header)

    async def Observe(self, request: epb.LeaderRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[epb.LeaderResponse]:
        """Every leader in turn, and each change of its value, until the client goes (etcd's observe).

        Like etcd, the stream ends with OK when a read or watch of the member fails.
        """
        c = Client(self._channel, caller_metadata(context))
        prefix = request.name + b"/"
        try:
            while True:  # one round per leader, for as long as the client observes
                header, kv = await self._current_leader(c, prefix)
                yield epb.LeaderResponse(header=header, kv=kv)
                async with contextlib.aclosing(self._updates(c, kv.key, header.revision + 1)) as updates:
                    async for update in updates:
                        yield update
        except (ConcurrencyError, grpc.aio.AioRpcError):
            return

    async def _updates(self, c: Client, key: bytes, revision: int) -> AsyncIterator[epb.LeaderResponse]:
        """The leader key's new values from revision on, until its deletion."""
        async with c.watching(key, revision) as watcher:
            while True:  # one round per watch response, until the deletion
                resp = await watcher.next()
                for ev in resp.events:
                    if ev.type == kv_pb2.Event.DELETE:
                        return
                    yield epb.LeaderResponse(header=resp.header, kv=ev.kv)

    async def _current_leader(self, c: Client, prefix: bytes) -> tuple[pb.ResponseHeader, kv_pb2.KeyValue]:
        """The leader now, or else the first key put under prefix from now on."""
        resp = await c.kv.Range(first_create(prefix))
        if resp.kvs:
            return resp.header, resp.kvs[0]
        async with c.watching(prefix, resp.header.revision, prefix_end(prefix)) as watcher:
            while True:  # deletes under an empty prefix are skipped
                wresp = await watcher.next()
                for ev in wresp.events:
                    if ev.type == kv_pb2.Event.PUT:
                        header = pb.ResponseHeader()
                        header.CopyFrom(wresp.header)
                        header.revision = ev.kv.mod_revision  # the batch may hold later puts
                        return header, ev.kv

    async def _proclaim(self, c: Client, key: bytes, rev: int, lease: int, value: bytes) -> pb.TxnResponse:
        resp = await c.kv.Txn(pb.TxnRequest(
            compare=[create_revision_is(key, rev)],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))],
        ))
        if not resp.succeeded:
            raise ConcurrencyError(ERR_NOT_LEADER)
        return resp

    async def _proclaim_or_resign(self, c: Client, key: bytes, rev: int, lease: int, value: bytes) -> None:
        """A re-Campaign with a new value proclaims it; if that fails, etcd resigns."""
        try:
            await self._proclaim(c, key, rev, lease, value)
        except (ConcurrencyError, grpc.aio.AioRpcError):
            await c.detached(c.delete_if_created_at(key, rev))
            raise

    async def _check_still_candidate(self, c: Client, key: bytes, rev: int) -> None:
        """After waiting, the candidate's lease may have expired and taken its key (Jepsen's finding
        for locks): refuse leadership then (etcd 3.4 does not check; "not leader" as proposed upstream)."""
        got = await c.kv.Range(pb.RangeRequest(key=key))
        if not got.kvs or got.kvs[0].create_revision != rev:
            raise ConcurrencyError(ERR_NOT_LEADER)
