"""etcdserverpb.Cluster: membership as configured (changes come with replicated Raft)."""

from __future__ import annotations

import grpc

from petcd.rpc.gateway_state import GatewayState
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc


class ClusterService(pb_grpc.ClusterServicer):
    def __init__(self, state: GatewayState) -> None:
        self._s = state

    async def MemberList(self, request: pb.MemberListRequest, context: grpc.aio.ServicerContext) -> pb.MemberListResponse:
        members = [
            pb.Member(ID=m.id, name=m.name, peerURLs=list(m.peer_urls), clientURLs=list(m.client_urls)) for m in self._s.members
        ]
        return pb.MemberListResponse(header=self._s.header(self._s.store.current_revision(), self._s.link.term), members=members)
