"""etcdserverpb.Cluster: membership changes go through the Raft log, one at a time."""

from __future__ import annotations

from typing import Any

import grpc

from petcd.rpc.gateway_state import GatewayState, abort, refuse_on_learner
from petcd.rpc.member_ids import member_id
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc


def _member_pb(m: dict[str, Any]) -> pb.Member:
    return pb.Member(
        ID=int(m["id"], 16), name=m["name"], peerURLs=m["peer_urls"], clientURLs=m["client_urls"], isLearner=m["is_learner"]
    )


class ClusterService(pb_grpc.ClusterServicer):
    def __init__(self, state: GatewayState) -> None:
        self._s = state

    async def MemberList(self, request: pb.MemberListRequest, context: grpc.aio.ServicerContext) -> pb.MemberListResponse:
        members = await self._members(context)
        return pb.MemberListResponse(header=self._header(), members=[_member_pb(m) for m in members])

    async def MemberAdd(self, request: pb.MemberAddRequest, context: grpc.aio.ServicerContext) -> pb.MemberAddResponse:
        urls = list(request.peerURLs)
        if not urls or not all(_valid_url(u) for u in urls):
            await abort(context, "invalid_peer_urls")
        mid = f"{member_id(urls, self._s.cluster_token):x}"
        op = "add_learner" if request.isLearner else "add_voter"
        await self._change(context, {"op": op, "id": mid, "name": "", "peer_urls": urls, "client_urls": []})
        members = await self._members(context)
        added = next(m for m in members if m["id"] == mid)
        return pb.MemberAddResponse(header=self._header(), member=_member_pb(added), members=[_member_pb(m) for m in members])

    async def MemberRemove(self, request: pb.MemberRemoveRequest, context: grpc.aio.ServicerContext) -> pb.MemberRemoveResponse:
        await self._change(context, {"op": "remove", "id": f"{request.ID:x}"})
        members = await self._members(context)
        return pb.MemberRemoveResponse(header=self._header(), members=[_member_pb(m) for m in members])

    async def MemberUpdate(self, request: pb.MemberUpdateRequest, context: grpc.aio.ServicerContext) -> pb.MemberUpdateResponse:
        urls = list(request.peerURLs)
        if not urls or not all(_valid_url(u) for u in urls):
            await abort(context, "invalid_peer_urls")
        await self._change(context, {"op": "update", "id": f"{request.ID:x}", "peer_urls": urls})
        members = await self._members(context)
        return pb.MemberUpdateResponse(header=self._header(), members=[_member_pb(m) for m in members])

    async def MemberPromote(self, request: pb.MemberPromoteRequest, context: grpc.aio.ServicerContext) -> pb.MemberPromoteResponse:
        await self._change(context, {"op": "promote", "id": f"{request.ID:x}"})
        members = await self._members(context)
        return pb.MemberPromoteResponse(header=self._header(), members=[_member_pb(m) for m in members])

    # ------------------------------------------------------------------
    async def _change(self, context: grpc.aio.ServicerContext, change: dict[str, Any]) -> None:
        await refuse_on_learner(self._s, context)
        await self._s.call(context, {"t": "conf", "change": change})

    async def _members(self, context: grpc.aio.ServicerContext) -> list[dict[str, Any]]:
        answer = await self._s.call(context, {"t": "members"})
        # etcd lists members in the order of their (numeric) ids
        return sorted(answer["resp"]["members"], key=lambda m: int(m["id"], 16))

    def _header(self) -> pb.ResponseHeader:
        # etcd's Cluster answers carry no revision (v3rpc/member.go: cluster id, member id, term)
        return self._s.header(0, self._s.link.term)


def _valid_url(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port is not None
