"""What every service of one gateway process shares: identity, limits, the link, the store,
and the one way to ask the member's actors and answer a failure with etcd's status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from petcd.rpc.errors import status_of
from petcd.rpc.link import LinkError, MemberLink
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.store.mvcc import ALARM_ACTIVATE, ALARM_NOSPACE, MvccStore


@dataclass(slots=True)
class GatewayState:
    member_id: int
    cluster_token: str
    link: MemberLink
    store: MvccStore  # opened read-only
    raft_address: str
    max_txn_ops: int = 128
    max_request_bytes: int = 1536 * 1024
    request_timeout_s: float = 7.0
    # The space quota in bytes (etcd's --quota-backend-bytes, 0 resolved to its default); 0: none.
    quota_bytes: int = 0
    # Refreshed from the Raft actor's status (a joining member learns its cluster id from the leader).
    cluster_id: int = 0
    is_learner: bool = False

    def header(self, revision: int, term: int) -> pb.ResponseHeader:
        return pb.ResponseHeader(cluster_id=self.cluster_id, member_id=self.member_id, revision=revision, raft_term=term)

    async def call(self, context: grpc.aio.ServicerContext, msg: dict[str, Any], to: str | None = None) -> dict[str, Any]:
        """Ask an actor of this member (the Raft actor unless `to`); a failure ends the RPC with etcd's status."""
        try:
            return await self.link.call(to or self.raft_address, msg, self.request_timeout_s)
        except LinkError as e:
            await abort(context, e.name, e.code, e.message)


async def check_quota(state: GatewayState, context: grpc.aio.ServicerContext, req: dict[str, Any], cost: int) -> None:
    """etcd's quotaKVServer/quotaLeaseServer check before proposing: a write that costs space is
    refused with NOSPACE once this member's database file plus its cost reaches the quota, and
    the NOSPACE alarm is raised through Raft for this member. A write that passes carries the
    quota and this member's id, for the apply actor's own check (store.mvcc.MvccStore.apply)."""
    if not state.quota_bytes or not cost:
        return
    if state.store.file_size_bytes() + cost >= state.quota_bytes:
        alarm = {"op": "alarm", "action": ALARM_ACTIVATE, "memberID": state.member_id, "alarm": ALARM_NOSPACE}
        await state.call(context, {"t": "propose", "req": alarm})
        await abort(context, "no_space")
    req["quota"] = state.quota_bytes
    req["alarm_member"] = state.member_id


async def abort(context: grpc.aio.ServicerContext, name: str, code: str | None = None, message: str | None = None) -> NoReturn:
    status, text = status_of(name, code, message)
    await context.abort(status, text)
    raise AssertionError("context.abort raises")


async def refuse_on_learner(state: GatewayState, context: grpc.aio.ServicerContext) -> None:
    """A learner serves only Status and serializable Range, as etcd's learners do."""
    if state.is_learner:
        await abort(context, "learner_rpc")
