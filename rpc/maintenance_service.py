"""etcdserverpb.Maintenance: alarms, status, hashes and leader transfer (the rest answers UNIMPLEMENTED until built)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import grpc

from petcd.rpc.corrupt import HASHKV_METADATA_KEY, valid_hashkv_token
from petcd.rpc.gateway_state import GatewayState, abort, refuse_on_learner
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.store import backup
from petcd.store.errors import StoreError

# The etcd API level petcd serves (the protos are etcd 3.5's).
SERVER_VERSION = "3.5.0"


class MaintenanceService(pb_grpc.MaintenanceServicer):
    def __init__(self, state: GatewayState) -> None:
        self._s = state

    async def Alarm(self, request: pb.AlarmRequest, context: grpc.aio.ServicerContext) -> pb.AlarmResponse:
        """Through Raft, every action (GET too), as etcd: alarms live in the applied state."""
        await refuse_on_learner(self._s, context)
        req = {"op": "alarm", "action": request.action, "memberID": request.memberID, "alarm": request.alarm}
        answer = await self._s.call(context, {"t": "propose", "req": req})
        resp = answer["resp"]
        return pb.AlarmResponse(header=self._s.header(resp["revision"], answer.get("term", self._s.link.term)),
                                alarms=[pb.AlarmMember(memberID=a["memberID"], alarm=a["alarm"]) for a in resp["alarms"]])

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        raft = (await self._s.call(context, {"t": "status"}))["resp"]
        store = self._s.store
        db_size, db_in_use = store.db_size_bytes()
        return pb.StatusResponse(
            header=self._s.header(store.current_revision(), raft["raft_term"]),
            version=SERVER_VERSION,
            dbSize=db_size,
            leader=int(raft["leader"], 16) if raft["leader"] else 0,
            raftIndex=raft["raft_index"],
            raftTerm=raft["raft_term"],
            raftAppliedIndex=store.applied_index(),
            dbSizeInUse=db_in_use,
            isLearner=raft["is_learner"],
            errors=[f"memberID:{m} alarm:{pb.AlarmType.Name(a)} " for m, a in store.alarms()],
        )

    async def Defragment(self, request: pb.DefragmentRequest, context: grpc.aio.ServicerContext) -> pb.DefragmentResponse:
        """This member only (no Raft round, as etcd): the apply actor rewrites its store compactly."""
        await self._s.check_admin(context)
        await self._s.call(context, {"t": "defrag"}, self._s.apply_address)
        self._s.forget_file_size()  # the quota check sees the smaller file at once
        return pb.DefragmentResponse(header=self._s.header(self._s.store.current_revision(), self._s.link.term))

    async def HashKV(self, request: pb.HashKVRequest, context: grpc.aio.ServicerContext) -> pb.HashKVResponse:
        """This member's hash of its MVCC history up to a revision (no Raft round, as etcd). A peer's
        corruption check shows its token in place of root (rpc/corrupt.py), as etcd's peer endpoint
        /members/hashkv needs no user."""
        if not self._peer_check(request.revision, context):
            await self._s.check_admin(context)
        try:
            hash_value, compact_rev, current_rev = self._s.store.hash_kv(request.revision)
        except StoreError as e:
            await abort(context, e.name, e.grpc_code, e.message)
        return pb.HashKVResponse(header=self._s.header(current_rev, self._s.link.term), hash=hash_value, compact_revision=compact_rev)

    def _peer_check(self, revision: int, context: grpc.aio.ServicerContext) -> bool:
        token = next((v for k, v in context.invocation_metadata() or () if k == HASHKV_METADATA_KEY), "")
        return bool(token) and valid_hashkv_token(self._s.store.auth_state()[2], revision, token)

    async def Hash(self, request: pb.HashRequest, context: grpc.aio.ServicerContext) -> pb.HashResponse:
        await self._s.check_admin(context)
        hash_value, current_rev, _ = self._s.store.digest()
        return pb.HashResponse(header=self._s.header(current_rev, self._s.link.term), hash=hash_value)

    async def Snapshot(self, request: pb.SnapshotRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SnapshotResponse]:
        """The whole store at one revision, then its sha256, as etcd streams it (no header)."""
        await self._s.check_admin(context)
        work_dir = os.path.dirname(self._s.store.path)
        _, chunks = await asyncio.to_thread(backup.stream, self._s.store, work_dir)
        try:
            for blob, remaining in chunks:
                yield pb.SnapshotResponse(remaining_bytes=remaining, blob=blob)  # waits on flow control
        finally:
            chunks.close()  # a client that went away: the copy is removed

    async def Downgrade(self, request: pb.DowngradeRequest, context: grpc.aio.ServicerContext) -> pb.DowngradeResponse:
        """etcd 3.4, the reference, has no Downgrade (3.5 added it): answered as 3.4 answers it.
        petcd has one storage format, so there is nothing to downgrade to."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method Downgrade for service etcdserverpb.Maintenance")

    async def MoveLeader(self, request: pb.MoveLeaderRequest, context: grpc.aio.ServicerContext) -> pb.MoveLeaderResponse:
        await self._s.check_admin(context)
        await refuse_on_learner(self._s, context)
        await self._s.call(context, {"t": "transfer", "target": f"{request.targetID:x}"})
        return pb.MoveLeaderResponse(header=self._s.header(self._s.store.current_revision(), self._s.link.term))
