"""etcd's gRPC errors: one name per error, with etcd's status code and exact message.

Actors report errors by name ({"error": "no_leader"}); store errors travel
with their code and message ({"error": ..., "code": ..., "message": ...}).
The gateway turns either into the status etcd would send.
"""

from __future__ import annotations

import grpc

from petcd.store.errors import AUTH_ERRORS

_C = grpc.StatusCode


class Aborted(Exception):
    """What a servicer's `context.abort(code, details)` raises, for the server running it (the
    built-in gRPC server, the HTTP gateway) to answer with that status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details

ERRORS: dict[str, tuple[grpc.StatusCode, str]] = {
    # request validation (gateway)
    "empty_key": (_C.INVALID_ARGUMENT, "etcdserver: key is not provided"),
    "value_provided": (_C.INVALID_ARGUMENT, "etcdserver: value is provided"),
    "lease_provided": (_C.INVALID_ARGUMENT, "etcdserver: lease is provided"),
    "too_many_ops": (_C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"),
    "duplicate_key": (_C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
    "invalid_sort_option": (_C.INVALID_ARGUMENT, "etcdserver: invalid sort option"),
    "request_too_large": (_C.INVALID_ARGUMENT, "etcdserver: request is too large"),
    # store (apply time)
    "key_not_found": (_C.INVALID_ARGUMENT, "etcdserver: key not found"),
    "compacted": (_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
    "future_rev": (_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"),
    "lease_not_found": (_C.NOT_FOUND, "etcdserver: requested lease not found"),
    "lease_ttl_too_large": (_C.OUT_OF_RANGE, "etcdserver: too large lease TTL"),
    # cluster state
    "no_leader": (_C.UNAVAILABLE, "etcdserver: no leader"),
    "timeout": (_C.UNAVAILABLE, "etcdserver: request timed out"),
    "too_many_requests": (_C.RESOURCE_EXHAUSTED, "etcdserver: too many requests"),
    "no_space": (_C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"),
    "stopped": (_C.UNAVAILABLE, "etcdserver: server stopped"),
    "leader_changed": (_C.UNAVAILABLE, "etcdserver: leader changed"),
    "not_leader": (_C.FAILED_PRECONDITION, "etcdserver: not leader"),
    "bad_transferee": (_C.FAILED_PRECONDITION, "etcdserver: bad leader transferee"),
    "leader_transfer_timeout": (_C.UNAVAILABLE, "etcdserver: request timed out, leader transfer took too long"),
    # membership
    "invalid_peer_urls": (_C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid"),
    "member_id_exists": (_C.FAILED_PRECONDITION, "etcdserver: member ID already exist"),
    "peer_urls_exist": (_C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists"),
    "member_not_found": (_C.NOT_FOUND, "etcdserver: member not found"),
    # etcd 3.4.23 answers this one with code Unknown (its error is missing from v3rpc's error map)
    "not_enough_started": (_C.UNKNOWN, "etcdserver: re-configuration failed due to not enough started members"),
    "not_learner": (_C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member"),
    "learner_not_ready": (_C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member which is in sync with leader"),
    "too_many_learners": (_C.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster"),
    "unhealthy_cluster": (_C.UNAVAILABLE, "etcdserver: unhealthy cluster"),
    # one membership change at a time: etcd's Raft drops the second, and the client times out
    "conf_change_pending": (_C.UNAVAILABLE, "etcdserver: request timed out"),
    "learner_rpc": (_C.UNAVAILABLE, "etcdserver: rpc not supported for learner"),
}
# auth (e.g. "auth_not_enabled": Authenticate while auth is disabled; clientv3 then carries on
# without a token, so etcdctl --user works against a cluster without auth)
ERRORS.update({name: (getattr(_C, code), message) for name, (message, code) in AUTH_ERRORS.items()})


def status_of(name: str, code: str | None = None, message: str | None = None) -> tuple[grpc.StatusCode, str]:
    """The (code, message) for an error; errors the store defines carry their own code and message."""
    if code is not None and message is not None:
        return getattr(_C, code), message
    found = ERRORS.get(name)
    assert found is not None, f"unknown error name {name!r}"
    return found
