"""etcdserverpb.Lease: grants and revocations go through Raft; renewals and remaining TTLs are the leader's lease reaper's."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from petcd.rpc.gateway_state import GatewayState, abort, check_quota, refuse_on_learner
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.store.mvcc import LEASE_OVERHEAD_BYTES

MAX_LEASE_TTL_S = 9_000_000_000  # etcd's MaxLeaseTTL


class LeaseService(pb_grpc.LeaseServicer):
    def __init__(self, state: GatewayState, min_ttl_s: int) -> None:
        self._s = state
        self._min_ttl_s = min_ttl_s
        self._lease_addr = state.raft_address.replace("/raft", "/lease")
        self._counter = itertools.count()

    async def LeaseGrant(self, request: pb.LeaseGrantRequest, context: grpc.aio.ServicerContext) -> pb.LeaseGrantResponse:
        await refuse_on_learner(self._s, context)
        if request.TTL > MAX_LEASE_TTL_S:
            await abort(context, "lease_ttl_too_large")
        # etcd raises a short TTL to its minimum (derived from the election timeout).
        ttl = max(request.TTL, self._min_ttl_s)
        lease_id = request.ID or self._new_id()
        req = {"op": "lease_grant", "ID": lease_id, "TTL": ttl}
        await check_quota(self._s, context, req, LEASE_OVERHEAD_BYTES)
        answer = await self._s.call(context, {"t": "propose", "req": req})
        resp = answer["resp"]
        return pb.LeaseGrantResponse(header=self._header(resp["revision"], answer), ID=resp["ID"], TTL=resp["TTL"])

    async def LeaseRevoke(self, request: pb.LeaseRevokeRequest, context: grpc.aio.ServicerContext) -> pb.LeaseRevokeResponse:
        await refuse_on_learner(self._s, context)
        answer = await self._s.call(context, {"t": "propose", "req": {"op": "lease_revoke", "ID": request.ID}})
        return pb.LeaseRevokeResponse(header=self._header(answer["resp"]["revision"], answer))

    async def LeaseKeepAlive(self, request_iterator: AsyncIterator[pb.LeaseKeepAliveRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        await refuse_on_learner(self._s, context)
        async for req in request_iterator:
            answer = await self._s.call(context, {"t": "keepalive", "id": req.ID}, self._lease_addr)
            yield pb.LeaseKeepAliveResponse(header=self._header(None, answer), ID=req.ID, TTL=answer["resp"]["TTL"])

    async def LeaseTimeToLive(self, request: pb.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext) -> pb.LeaseTimeToLiveResponse:
        await refuse_on_learner(self._s, context)
        answer = await self._s.call(context, {"t": "ttl", "id": request.ID}, self._lease_addr)
        resp = answer["resp"]
        out = pb.LeaseTimeToLiveResponse(header=self._header(None, answer), ID=request.ID, TTL=resp["TTL"], grantedTTL=resp["grantedTTL"])
        if request.keys and resp["TTL"] >= 0:
            info = self._s.store.lease_info(request.ID)
            if info is not None:
                out.keys.extend(info[1])
        return out

    async def LeaseLeases(self, request: pb.LeaseLeasesRequest, context: grpc.aio.ServicerContext) -> pb.LeaseLeasesResponse:
        await refuse_on_learner(self._s, context)
        leases = [pb.LeaseStatus(ID=lease_id) for lease_id, _ in self._s.store.leases()]
        return pb.LeaseLeasesResponse(header=self._header(None, None), leases=leases)

    # ------------------------------------------------------------------
    def _new_id(self) -> int:
        """Unique across members and restarts: member bits, milliseconds, a counter (positive int64)."""
        member_bits = self._s.member_id & 0x7FFF
        ms = int(time.time() * 1000) & ((1 << 40) - 1)
        return (member_bits << 48) | (ms << 8) | (next(self._counter) & 0xFF)

    def _header(self, revision: int | None, answer: dict[str, Any] | None) -> pb.ResponseHeader:
        rev = self._s.store.current_revision() if revision is None else revision
        return self._s.header(rev, (answer or {}).get("term", self._s.link.term))
