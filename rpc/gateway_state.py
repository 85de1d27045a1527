"""What every service of one gateway process shares: identity, limits, the link and the store."""

from __future__ import annotations

from dataclasses import dataclass

from petcd.rpc.link import MemberLink
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
