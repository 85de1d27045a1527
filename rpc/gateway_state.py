"""What every service of one gateway process shares: identity, limits, the link, the store,
and the one way to ask the member's actors and answer a failure with etcd's status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from petcd.rpc.errors import status_of
from petcd.rpc.link import LinkError, MemberLink
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.store.mvcc import MvccStore


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


async def abort(context: grpc.aio.ServicerContext, name: str, code: str | None = None, message: str | None = None) -> NoReturn:
    status, text = status_of(name, code, message)
    await context.abort(status, text)
    raise AssertionError("context.abort raises")


async def refuse_on_learner(state: GatewayState, context: grpc.aio.ServicerContext) -> None:
    """A learner serves only Status and serializable Range, as etcd's learners do."""
    if state.is_learner:
        await abort(context, "learner_rpc")
