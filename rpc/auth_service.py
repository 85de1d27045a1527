"""etcdserverpb.Auth: users, roles and permissions, as etcd 3.4 has them.

Every change (and UserGet/UserList/RoleGet/RoleList, which etcd also puts through Raft) is
proposed and applied by the store (store/auth.py), which checks there that the caller may.
Passwords are hashed here with bcrypt, off the event loop, before proposing: the log never
holds a password. Authenticate checks the password against this member's store after a
linearizable barrier (etcd's linearizableReadNotify) and gives a token (rpc/auth_tokens.py).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import bcrypt
import grpc

from petcd.rpc.convert import from_dict, to_dict
from petcd.rpc.gateway_state import GatewayState, abort
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc

# A failed login answers after this long: guessing costs the guesser time (the wait holds no
# thread and no CPU here).
AUTH_FAILURE_DELAY_S = 1.0
# bcrypt runs in worker threads, at most this many at once; at most MAX_WAITING_HASHES wait for
# one, past that a request gets "too many requests".
HASH_THREADS = 2
MAX_WAITING_HASHES = 64
TOKEN_SECRET_BYTES = 32


class AuthService(pb_grpc.AuthServicer):
    def __init__(self, state: GatewayState) -> None:
        self._s = state
        self._hashing = asyncio.Semaphore(HASH_THREADS)
        self._waiting_hashes = 0

    # ------------------------------------------------------------------ auth on/off, login
    async def AuthEnable(self, request: pb.AuthEnableRequest, context: grpc.aio.ServicerContext) -> pb.AuthEnableResponse:
        # The key simple tokens are signed with from now on (store/auth.py keeps it).
        return await self._propose(context, pb.AuthEnableResponse, {"op": "auth_enable", "secret": os.urandom(TOKEN_SECRET_BYTES)})

    async def AuthDisable(self, request: pb.AuthDisableRequest, context: grpc.aio.ServicerContext) -> pb.AuthDisableResponse:
        return await self._propose(context, pb.AuthDisableResponse, {"op": "auth_disable"})

    async def AuthStatus(self, request: pb.AuthStatusRequest, context: grpc.aio.ServicerContext) -> pb.AuthStatusResponse:
        await self._s.barrier(context)
        enabled, revision, _ = self._s.store.auth_state()
        return pb.AuthStatusResponse(header=self._header(), enabled=enabled, authRevision=revision)

    async def Authenticate(self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext) -> pb.AuthenticateResponse:
        await self._s.barrier(context)
        enabled, _, secret = self._s.store.auth_state()
        if not enabled:
            await abort(context, "auth_not_enabled")
        user, revision = self._s.store.auth_user(request.name)
        ok = user is not None and not user.no_password and await self._in_thread(
            context, bcrypt.checkpw, request.password.encode(), user.password)
        if not ok:
            await asyncio.sleep(AUTH_FAILURE_DELAY_S)
            await abort(context, "auth_failed")
        token = self._s.tokens.mint(secret, request.name, revision)
        return pb.AuthenticateResponse(header=self._header(), token=token)

    # ------------------------------------------------------------------ users
    async def UserAdd(self, request: pb.AuthUserAddRequest, context: grpc.aio.ServicerContext) -> pb.AuthUserAddResponse:
        req: dict[str, Any] = {"op": "user_add", "name": request.name}
        if request.options.no_password:
            req["options"] = {"no_password": True}
        else:
            req["hashed"] = await self._hash(context, request.password)
        return await self._propose(context, pb.AuthUserAddResponse, req)

    async def UserGet(self, request: pb.AuthUserGetRequest, context: grpc.aio.ServicerContext) -> pb.AuthUserGetResponse:
        return await self._propose(context, pb.AuthUserGetResponse, {"op": "user_get", "name": request.name})

    async def UserList(self, request: pb.AuthUserListRequest, context: grpc.aio.ServicerContext) -> pb.AuthUserListResponse:
        return await self._propose(context, pb.AuthUserListResponse, {"op": "user_list"})

    async def UserDelete(self, request: pb.AuthUserDeleteRequest, context: grpc.aio.ServicerContext) -> pb.AuthUserDeleteResponse:
        return await self._propose(context, pb.AuthUserDeleteResponse, {"op": "user_delete", "name": request.name})

    async def UserChangePassword(self, request: pb.AuthUserChangePasswordRequest,
                                 context: grpc.aio.ServicerContext) -> pb.AuthUserChangePasswordResponse:
        hashed = await self._hash(context, request.password)
        return await self._propose(context, pb.AuthUserChangePasswordResponse,
                                   {"op": "user_change_password", "name": request.name, "hashed": hashed})

    async def UserGrantRole(self, request: pb.AuthUserGrantRoleRequest, context: grpc.aio.ServicerContext) -> pb.AuthUserGrantRoleResponse:
        return await self._propose(context, pb.AuthUserGrantRoleResponse, {"op": "user_grant_role", **to_dict(request)})

    async def UserRevokeRole(self, request: pb.AuthUserRevokeRoleRequest,
                             context: grpc.aio.ServicerContext) -> pb.AuthUserRevokeRoleResponse:
        return await self._propose(context, pb.AuthUserRevokeRoleResponse, {"op": "user_revoke_role", **to_dict(request)})

    # ------------------------------------------------------------------ roles
    async def RoleAdd(self, request: pb.AuthRoleAddRequest, context: grpc.aio.ServicerContext) -> pb.AuthRoleAddResponse:
        return await self._propose(context, pb.AuthRoleAddResponse, {"op": "role_add", "name": request.name})

    async def RoleGet(self, request: pb.AuthRoleGetRequest, context: grpc.aio.ServicerContext) -> pb.AuthRoleGetResponse:
        return await self._propose(context, pb.AuthRoleGetResponse, {"op": "role_get", "role": request.role})

    async def RoleList(self, request: pb.AuthRoleListRequest, context: grpc.aio.ServicerContext) -> pb.AuthRoleListResponse:
        return await self._propose(context, pb.AuthRoleListResponse, {"op": "role_list"})

    async def RoleDelete(self, request: pb.AuthRoleDeleteRequest, context: grpc.aio.ServicerContext) -> pb.AuthRoleDeleteResponse:
        return await self._propose(context, pb.AuthRoleDeleteResponse, {"op": "role_delete", "role": request.role})

    async def RoleGrantPermission(self, request: pb.AuthRoleGrantPermissionRequest,
                                  context: grpc.aio.ServicerContext) -> pb.AuthRoleGrantPermissionResponse:
        if not request.HasField("perm"):
            await abort(context, "permission_not_given")
        return await self._propose(context, pb.AuthRoleGrantPermissionResponse, {"op": "role_grant_permission", **to_dict(request)})

    async def RoleRevokePermission(self, request: pb.AuthRoleRevokePermissionRequest,
                                   context: grpc.aio.ServicerContext) -> pb.AuthRoleRevokePermissionResponse:
        return await self._propose(context, pb.AuthRoleRevokePermissionResponse, {"op": "role_revoke_permission", **to_dict(request)})

    # ------------------------------------------------------------------
    def _header(self) -> pb.ResponseHeader:
        return self._s.header(self._s.store.current_revision(), self._s.link.term)

    async def _propose(self, context: grpc.aio.ServicerContext, cls: type, req: dict[str, Any]) -> Any:
        answer = await self._s.call(context, {"t": "propose", "req": req})
        resp = answer["resp"]
        msg = from_dict(cls, resp)
        msg.header.CopyFrom(self._s.header(resp["revision"], answer.get("term", self._s.link.term)))
        return msg

    async def _hash(self, context: grpc.aio.ServicerContext, password: str) -> bytes:
        return await self._in_thread(context, bcrypt.hashpw, password.encode(), bcrypt.gensalt(self._s.bcrypt_cost))

    async def _in_thread(self, context: grpc.aio.ServicerContext, fn: Any, *args: Any) -> Any:
        """bcrypt in a worker thread (it releases the GIL), bounded (see HASH_THREADS)."""
        if self._waiting_hashes >= MAX_WAITING_HASHES:
            await abort(context, "too_many_requests")
        self._waiting_hashes += 1
        try:
            async with self._hashing:
                return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        finally:
            self._waiting_hashes -= 1
