"""etcdserverpb.Auth: authentication is not built yet, and is never enabled.

Clients that try to log in get etcd's answer for a cluster without auth
(`etcdctl --user` warns and goes on, as against etcd); every other Auth RPC
answers UNIMPLEMENTED.
"""

from __future__ import annotations

import grpc

from petcd.rpc.gateway_state import GatewayState, abort
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc


class AuthService(pb_grpc.AuthServicer):
    def __init__(self, state: GatewayState) -> None:
        self._s = state

    async def Authenticate(self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext) -> pb.AuthenticateResponse:
        await abort(context, "auth_not_enabled")

    async def AuthStatus(self, request: pb.AuthStatusRequest, context: grpc.aio.ServicerContext) -> pb.AuthStatusResponse:
        return pb.AuthStatusResponse(header=self._s.header(self._s.store.current_revision(), self._s.link.term), enabled=False)
