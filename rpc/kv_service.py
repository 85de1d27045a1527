"""etcdserverpb.KV: validate, send through the member's actors, answer in etcd's shape.

Writes and linearizable reads go to the Raft actor (a proposal, or a read at a
ReadIndex); serializable reads are served here, from the store opened read-only.
"""

from __future__ import annotations

from typing import Any

import grpc

from petcd.rpc import validate
from petcd.rpc.convert import from_dict, to_dict
from petcd.rpc.errors import status_of
from petcd.rpc.gateway_state import GatewayState
from petcd.rpc.link import LinkError
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.store.errors import StoreError


async def abort(context: grpc.aio.ServicerContext, name: str, code: str | None = None, message: str | None = None) -> None:
    status, text = status_of(name, code, message)
    await context.abort(status, text)


async def refuse_on_learner(state: GatewayState, context: grpc.aio.ServicerContext) -> None:
    """A learner serves only Status and serializable Range, as etcd's learners do."""
    if state.is_learner:
        await abort(context, "learner_rpc")


class KVService(pb_grpc.KVServicer):
    def __init__(self, state: GatewayState) -> None:
        self._s = state

    async def Range(self, request: pb.RangeRequest, context: grpc.aio.ServicerContext) -> pb.RangeResponse:
        req = to_dict(request)
        err = validate.check_range(req)
        if err:
            await abort(context, err)
        if not req.get("serializable"):
            await refuse_on_learner(self._s, context)
        if req.get("serializable"):
            try:
                resp = self._s.store.range(req)
            except StoreError as e:
                await abort(context, e.name, e.grpc_code, e.message)
            return self._answer(pb.RangeResponse, resp, self._s.link.term)
        return await self._call(context, pb.RangeResponse, "read", {**req, "op": "range"})

    async def Put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> pb.PutResponse:
        req = to_dict(request)
        err = validate.check_put(req) or self._size_error(request)
        if err:
            await abort(context, err)
        return await self._call(context, pb.PutResponse, "propose", {**req, "op": "put"})

    async def DeleteRange(self, request: pb.DeleteRangeRequest, context: grpc.aio.ServicerContext) -> pb.DeleteRangeResponse:
        req = to_dict(request)
        err = validate.check_delete(req) or self._size_error(request)
        if err:
            await abort(context, err)
        return await self._call(context, pb.DeleteRangeResponse, "propose", {**req, "op": "delete_range"})

    async def Txn(self, request: pb.TxnRequest, context: grpc.aio.ServicerContext) -> pb.TxnResponse:
        req = to_dict(request)
        err = validate.check_txn(req, self._s.max_txn_ops) or self._size_error(request)
        if err:
            await abort(context, err)
        return await self._call(context, pb.TxnResponse, "propose", {**req, "op": "txn"})

    async def Compact(self, request: pb.CompactionRequest, context: grpc.aio.ServicerContext) -> pb.CompactionResponse:
        req = to_dict(request)
        return await self._call(context, pb.CompactionResponse, "propose", {**req, "op": "compact"})

    # ------------------------------------------------------------------
    def _size_error(self, request: Any) -> str | None:
        return "request_too_large" if request.ByteSize() > self._s.max_request_bytes else None

    async def _call(self, context: grpc.aio.ServicerContext, cls: type, kind: str, req: dict[str, Any]) -> Any:
        await refuse_on_learner(self._s, context)
        try:
            answer = await self._s.link.call(self._s.raft_address, {"t": kind, "req": req}, self._s.request_timeout_s)
        except LinkError as e:
            await abort(context, e.name, e.code, e.message)
        return self._answer(cls, answer["resp"], answer.get("term", self._s.link.term))

    def _answer(self, cls: type, resp: dict[str, Any], term: int) -> Any:
        msg = from_dict(cls, resp)
        msg.header.CopyFrom(self._s.header(resp["revision"], term))
        return msg
