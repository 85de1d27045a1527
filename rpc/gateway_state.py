"""What every service of one gateway process shares: identity, limits, the link, the store,
and the one way to ask the member's actors and answer a failure with etcd's status."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from petcd.rpc.auth_tokens import JwtTokens, SimpleTokens
from petcd.rpc.errors import status_of
from petcd.rpc.link import LinkError, MemberLink
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.store.errors import StoreError, auth_error
from petcd.store.mvcc import ALARM_ACTIVATE, ALARM_NOSPACE, MvccStore


# The quota check reads the store file's size at most this often (a stat per write cost the gateway
# 3 us of its 55 us per Put). etcd's is older still: its backend's size moves at each batch commit,
# every 100 ms.
FILE_SIZE_TTL_S = 0.01


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
    # --client-cert-auth: a request without a token acts as the user its verified client
    # certificate names (etcd's AuthInfoFromTLS). `common_name_of(context.peer())` gives that
    # Common Name, or None (no TLS, or no verified certificate); set by the front (rpc/front.py).
    client_cert_auth: bool = False
    common_name_of: Callable[[str], str | None] | None = None
    tokens: SimpleTokens | JwtTokens = field(default_factory=lambda: SimpleTokens(300))
    bcrypt_cost: int = 10
    # For /metrics (rpc/metrics.py): the leader as last seen by the status poll, how often a new
    # leader was seen (etcd's leader_changes_seen), proposals this gateway waits on, and those failed.
    leader: str = ""
    leader_changes: int = 0
    file_size_read: tuple[float, int] = (float("-inf"), 0)  # (when, bytes): see file_size_bytes
    proposals_pending: int = 0
    proposals_failed: int = 0

    def file_size_bytes(self) -> int:
        """The store file's size, for the quota check: read at most every FILE_SIZE_TTL_S, and
        afresh after this gateway's Defragment (forget_file_size)."""
        now = time.monotonic()
        read_at, size_bytes = self.file_size_read
        if now - read_at >= FILE_SIZE_TTL_S:
            size_bytes = self.store.file_size_bytes()
            self.file_size_read = (now, size_bytes)
        return size_bytes

    def forget_file_size(self) -> None:
        self.file_size_read = (float("-inf"), 0)

    def header(self, revision: int, term: int) -> pb.ResponseHeader:
        return pb.ResponseHeader(cluster_id=self.cluster_id, member_id=self.member_id, revision=revision, raft_term=term)

    @property
    def apply_address(self) -> str:
        return self.raft_address.replace("/raft", "/apply")

    async def call(self, context: grpc.aio.ServicerContext, msg: dict[str, Any], to: str | None = None,
                   timeout_s: float | None = None) -> dict[str, Any]:
        """Ask an actor of this member (the Raft actor unless `to`), waiting at most `timeout_s`
        (the request timeout unless given); a failure ends the RPC with etcd's status.

        A proposal or a read made for the client carries who the client is ("auth", see
        store/auth.py), for the store to check when it applies or serves it."""
        if msg.get("t") in ("propose", "read") and "req" in msg:
            msg["req"]["auth"] = await self.who(context)
        proposal = msg.get("t") == "propose"
        self.proposals_pending += proposal
        try:
            return await self.link.call(to or self.raft_address, msg, self.request_timeout_s if timeout_s is None else timeout_s)
        except LinkError as e:
            # etcd counts a proposal failed when Raft did not commit it in time (not when it was
            # applied as a failure, e.g. a compare that did not hold)
            self.proposals_failed += proposal and e.code is None
            await abort(context, e.name, e.code, e.message)
        finally:
            self.proposals_pending -= proposal

    def saw_leader(self, leader: str) -> None:
        """The status poll's view of the leader; a new one counts as etcd's leader change seen."""
        if leader and leader != self.leader:
            self.leader_changes += 1
        self.leader = leader


    async def barrier(self, context: grpc.aio.ServicerContext) -> None:
        """Wait until this member's store has applied everything committed when called (etcd's
        linearizableReadNotify): a linearizable read of nothing, made by the member itself."""
        req = {"op": "range", "key": b"\x00", "count_only": True}
        try:
            await self.link.call(self.raft_address, {"t": "read", "req": req}, self.request_timeout_s)
        except LinkError as e:
            await abort(context, e.name, e.code, e.message)

    def identify(self, context: grpc.aio.ServicerContext) -> list[Any]:
        """[user, auth revision] of the client making this call (etcd's AuthInfoFromCtx): from its
        token, else with --client-cert-auth from its certificate, else ["", 0] (nobody). Raises
        StoreError "invalid auth token" for a token that does not verify while auth is enabled."""
        enabled, revision, secret = self.store.auth_state()
        token = token_of(context)
        if not enabled:
            # etcd's simple-token provider is off then: any simple token is refused.
            if token and isinstance(self.tokens, SimpleTokens):
                raise auth_error("invalid_auth_token")
            return ["", 0]
        if token:
            found = self.tokens.verify(secret, token)
            if found is None:
                raise auth_error("invalid_auth_token")
            name, token_revision = found
            if not isinstance(self.tokens, SimpleTokens):
                return [name, token_revision]  # a JWT's revision is its own (and may be old)
            # etcd's simple tokens stand for their user at the current auth revision, until the
            # user is deleted or given a new password (etcd's invalidateUser).
            user, revision = self.store.auth_user(name)
            if user is None or token_revision < user.password_revision:
                raise auth_error("invalid_auth_token")
            return [name, revision]
        if self.client_cert_auth and self.common_name_of is not None:
            common_name = self.common_name_of(context.peer())
            if common_name:
                return [common_name, revision]
        return ["", 0]

    async def who(self, context: grpc.aio.ServicerContext) -> list[Any]:
        """identify(), ending the call with etcd's status if the token does not verify."""
        try:
            return self.identify(context)
        except StoreError as e:
            await abort(context, e.name, e.grpc_code, e.message)

    async def check_admin(self, context: grpc.aio.ServicerContext) -> None:
        """etcd's authMaintenanceServer check (Snapshot, Defragment, Hash, HashKV, MoveLeader).
        etcd 3.4 returns the auth store's own error there, untranslated: code Unknown and
        "auth: ..." in place of "etcdserver: ..."; clients see exactly that."""
        try:
            self.store.check_admin(self.identify(context))
        except StoreError as e:
            await abort(context, e.name, "UNKNOWN", "auth: " + e.message.removeprefix("etcdserver: "))


def token_of(context: grpc.aio.ServicerContext) -> str:
    """The client's token: gRPC metadata "token" (clientv3), or "authorization" (the HTTP gateway)."""
    for key, value in context.invocation_metadata() or ():
        if key in ("token", "authorization"):
            return value
    return ""


async def check_quota(state: GatewayState, context: grpc.aio.ServicerContext, req: dict[str, Any], cost: int) -> None:
    """etcd's quotaKVServer/quotaLeaseServer check before proposing: a write that costs space is
    refused with NOSPACE once this member's database file plus its cost reaches the quota, and
    the NOSPACE alarm is raised through Raft for this member. A write that passes carries the
    quota and this member's id, for the apply actor's own check (store.mvcc.MvccStore.apply)."""
    if not state.quota_bytes or not cost:
        return
    if state.file_size_bytes() + cost >= state.quota_bytes:
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
