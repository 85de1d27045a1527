"""Errors a KV request can fail with, carrying what the gRPC layer sends.

`message` is the text etcd puts on the wire (clientv3 recognises errors by it),
which for mvcc errors carries the "etcdserver: " prefix.
"""


class StoreError(Exception):
    """A request-level failure: the request changes nothing."""

    def __init__(self, name: str, message: str, grpc_code: str) -> None:
        assert name and message and grpc_code
        super().__init__(message)
        self.name = name
        self.message = message
        self.grpc_code = grpc_code


def compacted() -> StoreError:
    return StoreError(
        "compacted", "etcdserver: mvcc: required revision has been compacted", "OUT_OF_RANGE"
    )


def future_rev() -> StoreError:
    return StoreError(
        "future_rev", "etcdserver: mvcc: required revision is a future revision", "OUT_OF_RANGE"
    )


def key_not_found() -> StoreError:
    return StoreError("key_not_found", "etcdserver: key not found", "INVALID_ARGUMENT")


def lease_not_found() -> StoreError:
    return StoreError("lease_not_found", "etcdserver: requested lease not found", "NOT_FOUND")


def key_too_long(max_key_bytes: int) -> StoreError:
    """petcd-only: LMDB keys are bounded, etcd keys are not (known difference)."""
    return StoreError(
        "key_too_long",
        f"etcdserver: key is too long for petcd (max {max_key_bytes} bytes)",
        "INVALID_ARGUMENT",
    )


def lease_exists() -> StoreError:
    return StoreError("lease_exists", "etcdserver: lease already exists", "FAILED_PRECONDITION")


def no_space() -> StoreError:
    """etcd's ErrNoSpace: the NOSPACE alarm is raised (or this write does not fit)."""
    return StoreError("no_space", "etcdserver: mvcc: database space exceeded", "RESOURCE_EXHAUSTED")
