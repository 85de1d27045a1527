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


def corrupt() -> StoreError:
    """etcd's ErrCorrupt (applierV3Corrupt): the CORRUPT alarm is raised."""
    return StoreError("corrupt", "etcdserver: corrupt cluster", "DATA_LOSS")


# etcd's auth errors (auth/store.go, mapped to gRPC by api/v3rpc/rpctypes): name -> (message, code).
AUTH_ERRORS = {
    "user_empty": ("etcdserver: user name is empty", "INVALID_ARGUMENT"),
    "role_empty": ("etcdserver: role name is empty", "INVALID_ARGUMENT"),
    "auth_failed": ("etcdserver: authentication failed, invalid user ID or password", "INVALID_ARGUMENT"),
    "permission_not_given": ("etcdserver: permission not given", "INVALID_ARGUMENT"),
    "invalid_auth_mgmt": ("etcdserver: invalid auth management", "INVALID_ARGUMENT"),
    "auth_old_revision": ("etcdserver: revision of auth store is old", "INVALID_ARGUMENT"),
    "root_user_not_exist": ("etcdserver: root user does not exist", "FAILED_PRECONDITION"),
    "root_role_not_exist": ("etcdserver: root user does not have root role", "FAILED_PRECONDITION"),
    "user_already_exist": ("etcdserver: user name already exists", "FAILED_PRECONDITION"),
    "user_not_found": ("etcdserver: user name not found", "FAILED_PRECONDITION"),
    "role_already_exist": ("etcdserver: role name already exists", "FAILED_PRECONDITION"),
    "role_not_found": ("etcdserver: role name not found", "FAILED_PRECONDITION"),
    "role_not_granted": ("etcdserver: role is not granted to the user", "FAILED_PRECONDITION"),
    "permission_not_granted": ("etcdserver: permission is not granted to the role", "FAILED_PRECONDITION"),
    "auth_not_enabled": ("etcdserver: authentication is not enabled", "FAILED_PRECONDITION"),
    "permission_denied": ("etcdserver: permission denied", "PERMISSION_DENIED"),
    "invalid_auth_token": ("etcdserver: invalid auth token", "UNAUTHENTICATED"),
}


def auth_error(name: str) -> StoreError:
    message, code = AUTH_ERRORS[name]
    return StoreError(name, message, code)
