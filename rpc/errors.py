"""etcd's gRPC errors: one name per error, with etcd's status code and exact message.

Actors report errors by name ({"error": "no_leader"}); store errors travel
with their code and message ({"error": ..., "code": ..., "message": ...}).
The gateway turns either into the status etcd would send.
"""

from __future__ import annotations

import grpc

_C = grpc.StatusCode

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
    # cluster state
    "no_leader": (_C.UNAVAILABLE, "etcdserver: no leader"),
    "timeout": (_C.UNAVAILABLE, "etcdserver: request timed out"),
    "too_many_requests": (_C.RESOURCE_EXHAUSTED, "etcdserver: too many requests"),
    "stopped": (_C.UNAVAILABLE, "etcdserver: server stopped"),
}


def status_of(name: str, code: str | None = None, message: str | None = None) -> tuple[grpc.StatusCode, str]:
    """The (code, message) for an error; errors the store defines carry their own code and message."""
    if code is not None and message is not None:
        return getattr(_C, code), message
    found = ERRORS.get(name)
    assert found is not None, f"unknown error name {name!r}"
    return found
