"""etcdserverpb.KV: validate, send through the member's actors, answer in etcd's shape.

Writes and linearizable reads go to the Raft actor (a proposal, or a read at a
ReadIndex); serializable reads are served here, from the store opened read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from petcd.rpc import validate
from petcd.rpc.convert import from_dict, to_dict
from petcd.rpc.gateway_state import GatewayState, abort, check_quota, refuse_on_learner
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.store.errors import StoreError
from petcd.store.mvcc import request_cost


# The longest a physical Compact waits for its records to go, once applied (a million revisions
# take seconds: see COMPACT_STEP_RECORDS in store/mvcc.py).
PHYSICAL_COMPACTION_WAIT_S = 600.0


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
            req["auth"] = await self._s.who(context)
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
        req = {**req, "op": "put"}
        await refuse_on_learner(self._s, context)
        await check_quota(self._s, context, req, request_cost(req))
        return await self._call(context, pb.PutResponse, "propose", req)

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
        req = {**req, "op": "txn"}
        await refuse_on_learner(self._s, context)
        await check_quota(self._s, context, req, request_cost(req))
        return await self._call(context, pb.TxnResponse, "propose", req, inner_headers)

    async def Compact(self, request: pb.CompactionRequest, context: grpc.aio.ServicerContext) -> pb.CompactionResponse:
        """A physical one is answered once its records are gone, as etcd does: the request timeout
        covers its commit, not that wait (etcd bounds it by the client's deadline alone; here also
        by PHYSICAL_COMPACTION_WAIT_S, past which the client gets "request timed out")."""
        req = to_dict(request)
        answer = await self._call(context, pb.CompactionResponse, "propose", {**req, "op": "compact"})
        if request.physical:
            remaining_s = context.time_remaining()
            wait_s = PHYSICAL_COMPACTION_WAIT_S if remaining_s is None else min(remaining_s, PHYSICAL_COMPACTION_WAIT_S)
            await self._s.call(context, {"t": "compaction_wait"}, self._s.apply_address, timeout_s=max(wait_s, 0.001))
        return answer

    # ------------------------------------------------------------------
    def _size_error(self, request: Any) -> str | None:
        return "request_too_large" if request.ByteSize() > self._s.max_request_bytes else None

    async def _call(self, context: grpc.aio.ServicerContext, cls: type, kind: str, req: dict[str, Any],
                    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Any:
        await refuse_on_learner(self._s, context)
        answer = await self._s.call(context, {"t": kind, "req": req})
        resp = answer["resp"]
        return self._answer(cls, shape(resp) if shape else resp, answer.get("term", self._s.link.term))

    def _answer(self, cls: type, resp: dict[str, Any], term: int) -> Any:
        msg = from_dict(cls, resp)
        msg.header.CopyFrom(self._s.header(resp["revision"], term))
        return msg


def inner_headers(txn_resp: dict[str, Any]) -> dict[str, Any]:
    """The TxnResponse with the headers etcd gives the responses inside it.

    etcd's applyTxn fills each op's response header with what its storeTxnWrite
    returns at that point of the txn (mvcc/kvstore_txn.go): a put, begin + 1; a
    range, the txn's read revision (begin + 1 once something changed, else begin);
    a delete, begin + 1 if it or an earlier op changed something, else begin. A
    nested TxnResponse gets an empty header (newTxnResp), only the outer one a
    revision. `txn_resp["revision"]` is begin + 1 if the txn changed anything, so
    begin and the running "changed" follow from the responses in execution order.
    """
    revision = txn_resp["revision"]
    begin = revision - 1 if _changes(txn_resp) else revision
    changed = False

    def walk(resp: dict[str, Any]) -> dict[str, Any]:
        nonlocal changed
        responses = []
        for op in resp.get("responses", []):
            ((kind, r),) = op.items()
            if kind == "response_put":
                changed = True
                r = {**r, "header": {"revision": begin + 1}}
            elif kind == "response_range":
                r = {**r, "header": {"revision": begin + int(changed)}}
            elif kind == "response_delete_range":
                changed = changed or r.get("deleted", 0) > 0
                r = {**r, "header": {"revision": begin + int(changed)}}
            elif kind == "response_txn":
                r = {**walk(r), "header": {}}
            responses.append({kind: r})
        return {**resp, "responses": responses}

    return walk(txn_resp)


def _changes(resp: dict[str, Any]) -> bool:
    """Whether any op of a TxnResponse (nested ones included) wrote a revision."""
    for op in resp.get("responses", []):
        ((kind, r),) = op.items()
        if kind == "response_put" or (kind == "response_delete_range" and r.get("deleted", 0) > 0):
            return True
        if kind == "response_txn" and _changes(r):
            return True
    return False
