"""etcd's auth store: users, roles, their key permissions, the enabled flag and the auth revision.

It lives in the member's MVCC LMDB environment (one table, `auth`), so a change is applied in
the same LMDB transaction as the applied index, and every member enforces the same rules at the
same point of the log. The rules are etcd 3.4's (auth/store.go, etcdserver/apply_auth.go):

- `root` must exist with the `root` role before auth can be enabled; a user with the root role
  may do everything; other users may do what their roles' permissions cover.
- A permission is READ, WRITE or READWRITE on a key, on a range [key, range_end), or, with
  range_end "\\0", on every key from `key` on.
- Every change of users or roles (and disabling auth) moves the auth revision; a request whose
  token carries an older revision fails with "revision of auth store is old".

Requests carry who sent them as `req["auth"] = [user, auth_revision]` (set by the gateway from the
token; revision 0 without one). Requests the member makes itself (a lease expiring, an automatic
compaction) carry no "auth" and are not checked.

Passwords are stored as bcrypt hashes, made by the gateway before proposing (so applying is
deterministic and the log never holds a password); this module never sees a password.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import lmdb
import msgpack

from .errors import StoreError, auth_error

READ, WRITE, READWRITE = 0, 1, 2  # authpb.Permission.Type
ROOT = "root"  # the root user's and the root role's name
FROM_KEY = b"\x00"  # a range_end meaning "every key from `key` on"

_ENABLED = b"m:enabled"
_REVISION = b"m:revision"
_SECRET = b"m:secret"
_USER = b"u:"
_ROLE = b"r:"


@dataclass(slots=True)
class User:
    name: str
    password: bytes  # a bcrypt hash; b"" for a --no-password user
    roles: list[str] = field(default_factory=list)  # sorted, as etcd keeps them
    no_password: bool = False
    # The auth revision at which the user was added or last given a password: simple tokens
    # given before it no longer stand for the user (etcd's invalidateUser).
    password_revision: int = 0


@dataclass(frozen=True, slots=True)
class Permission:
    perm_type: int
    key: bytes
    range_end: bytes

    def as_dict(self) -> dict:
        """authpb.Permission's fields, for responses."""
        return {"permType": self.perm_type, "key": self.key, "range_end": self.range_end}


class AuthTables:
    """The auth table as seen by one LMDB transaction."""

    def __init__(self, txn: lmdb.Transaction, db: lmdb._Database) -> None:
        self._txn = txn
        self._db = db

    # --- state
    def enabled(self) -> bool:
        return self._txn.get(_ENABLED, db=self._db) == b"\x01"

    def revision(self) -> int:
        """etcd's auth revision: 1 for a store that never changed its users or roles."""
        data = self._txn.get(_REVISION, db=self._db)
        return 1 if data is None else int.from_bytes(data, "big")

    def secret(self) -> bytes:
        """The key simple tokens are signed with; drawn anew each time auth is enabled."""
        return self._txn.get(_SECRET, db=self._db) or b""

    def user(self, name: str) -> User | None:
        data = self._txn.get(_USER + name.encode(), db=self._db)
        if data is None:
            return None
        password, roles, no_password, password_revision = msgpack.unpackb(data)
        return User(name, password, roles, no_password, password_revision)

    def users(self) -> list[User]:
        return [u for u in (self.user(k[len(_USER):].decode()) for k in self._keys(_USER)) if u is not None]

    def role(self, name: str) -> list[Permission] | None:
        data = self._txn.get(_ROLE + name.encode(), db=self._db)
        return None if data is None else [Permission(*p) for p in msgpack.unpackb(data)]

    def role_names(self) -> list[str]:
        return [k[len(_ROLE):].decode() for k in self._keys(_ROLE)]

    def _keys(self, prefix: bytes) -> Iterator[bytes]:
        cursor = self._txn.cursor(db=self._db)
        if not cursor.set_range(prefix):
            return
        for key in cursor.iternext(keys=True, values=False):
            if not key.startswith(prefix):
                return
            yield key

    # --- changes (the writer's transaction only)
    def put_user(self, user: User) -> None:
        self._txn.put(_USER + user.name.encode(), msgpack.packb([user.password, sorted(user.roles), user.no_password, user.password_revision]), db=self._db)

    def delete_user(self, name: str) -> None:
        self._txn.delete(_USER + name.encode(), db=self._db)

    def put_role(self, name: str, perms: list[Permission]) -> None:
        ordered = sorted(perms, key=lambda p: p.key)  # etcd keeps them sorted by key
        self._txn.put(_ROLE + name.encode(), msgpack.packb([[p.perm_type, p.key, p.range_end] for p in ordered]), db=self._db)

    def delete_role(self, name: str) -> None:
        self._txn.delete(_ROLE + name.encode(), db=self._db)

    def set_enabled(self, enabled: bool, secret: bytes = b"") -> None:
        self._txn.put(_ENABLED, b"\x01" if enabled else b"\x00", db=self._db)
        if enabled:
            self._txn.put(_SECRET, secret, db=self._db)

    def bump_revision(self) -> None:
        self._txn.put(_REVISION, (self.revision() + 1).to_bytes(8, "big"), db=self._db)


# ---------------------------------------------------------------- permission checks
def check_op(tables: AuthTables, auth: list, key: bytes, range_end: bytes, perm: int) -> None:
    """etcd's isOpPermitted: raises user_empty, auth_old_revision or permission_denied."""
    if not tables.enabled():
        return
    user_name, revision = auth
    if revision == 0:
        raise auth_error("user_empty")
    if revision < tables.revision():
        raise auth_error("auth_old_revision")
    user = tables.user(user_name)
    if user is None:
        raise auth_error("permission_denied")
    if ROOT in user.roles:
        return
    if not _permitted(_intervals(tables, user, perm), key, range_end):
        raise auth_error("permission_denied")


def check_admin(tables: AuthTables, auth: list) -> None:
    """etcd's IsAdminPermitted: only a user with the root role (no revision check, as etcd)."""
    if not tables.enabled():
        return
    user_name = auth[0]
    if not user_name:
        raise auth_error("user_empty")
    user = tables.user(user_name)
    if user is None:
        raise auth_error("user_not_found")
    if ROOT not in user.roles:
        raise auth_error("permission_denied")


def check_request(tables: AuthTables, req: dict, lease_keys: Callable[[int], list[bytes]]) -> None:
    """etcd's authApplierV3 checks for a request about to be applied; no "auth": not checked."""
    auth = req.get("auth")
    if auth is None or not tables.enabled():
        return
    op = req.get("op")
    if op in ADMIN_OPS:
        check_admin(tables, auth)
    elif op == "user_get":
        _admin_or(tables, auth, lambda user: req.get("name", "") == user)
    elif op == "role_get":
        _admin_or(tables, auth, lambda user: _has_role(tables, user, req.get("role", "")))
    elif op == "range":
        check_op(tables, auth, req.get("key", b""), req.get("range_end", b""), READ)
    elif op == "put":
        _check_put(tables, auth, req, lease_keys)
    elif op == "delete_range":
        _check_delete(tables, auth, req)
    elif op == "txn":
        _check_txn(tables, auth, req, lease_keys)
    elif op == "lease_revoke":
        for key in lease_keys(req["ID"]):
            check_op(tables, auth, key, b"", WRITE)


ADMIN_OPS = frozenset({
    "auth_enable", "auth_disable", "user_add", "user_delete", "user_change_password", "user_grant_role",
    "user_revoke_role", "role_add", "role_grant_permission", "role_revoke_permission", "role_delete",
    "user_list", "role_list",
})


def _admin_or(tables: AuthTables, auth: list, allowed: Callable[[str], bool]) -> None:
    """UserGet of oneself and RoleGet of one's own role need no root (etcd's UserGet/RoleGet)."""
    try:
        check_admin(tables, auth)
    except StoreError:
        if not allowed(auth[0]):
            raise


def _has_role(tables: AuthTables, user_name: str, role: str) -> bool:
    user = tables.user(user_name)
    return user is not None and role in user.roles


def _check_put(tables: AuthTables, auth: list, req: dict, lease_keys: Callable[[int], list[bytes]]) -> None:
    check_op(tables, auth, req.get("key", b""), b"", WRITE)
    # A lease whose keys this user could not write could then not be revoked by them: etcd
    # refuses to attach it to another key.
    if req.get("lease"):
        for key in lease_keys(req["lease"]):
            check_op(tables, auth, key, b"", WRITE)
    if req.get("prev_kv"):
        check_op(tables, auth, req.get("key", b""), b"", READ)


def _check_delete(tables: AuthTables, auth: list, req: dict) -> None:
    check_op(tables, auth, req.get("key", b""), req.get("range_end", b""), WRITE)
    if req.get("prev_kv"):
        check_op(tables, auth, req.get("key", b""), req.get("range_end", b""), READ)


def _check_txn(tables: AuthTables, auth: list, req: dict, lease_keys: Callable[[int], list[bytes]]) -> None:
    """Every compare and every op of both branches, nested txns included (etcd 3.4 skips nested
    txns; checking them is stricter and closes that hole)."""
    for compare in req.get("compare", []):
        check_op(tables, auth, compare.get("key", b""), compare.get("range_end", b""), READ)
    for branch in ("success", "failure"):
        for op in req.get(branch, []):
            ((kind, op_req),) = op.items()
            if kind == "request_range":
                check_op(tables, auth, op_req.get("key", b""), op_req.get("range_end", b""), READ)
            elif kind == "request_put":
                # etcd's checkTxnReqsPermission checks the key only (no lease or prev_kv check).
                check_op(tables, auth, op_req.get("key", b""), b"", WRITE)
            elif kind == "request_delete_range":
                _check_delete(tables, auth, op_req)
            elif kind == "request_txn":
                _check_txn(tables, auth, op_req, lease_keys)


def _intervals(tables: AuthTables, user: User, perm: int) -> list[tuple[bytes, bytes | None]]:
    """[begin, end) of every key range the user's roles grant `perm` on; end None: no end."""
    out = []
    for role_name in user.roles:
        for p in tables.role(role_name) or []:
            if p.perm_type != READWRITE and p.perm_type != perm:
                continue
            if not p.range_end:
                out.append((p.key, p.key + b"\x00"))  # one key
            elif p.range_end == FROM_KEY:
                out.append((p.key, None))
            else:
                out.append((p.key, p.range_end))
    return out


def _permitted(intervals: list[tuple[bytes, bytes | None]], key: bytes, range_end: bytes) -> bool:
    """Whether the union of `intervals` covers the key (range_end empty) or [key, range_end)."""
    if not range_end:
        return any(begin <= key and (end is None or key < end) for begin, end in intervals)
    want_end = None if range_end == FROM_KEY else range_end
    covered_to = key  # [key, covered_to) is covered so far
    for begin, end in sorted(intervals, key=lambda iv: iv[0]):
        if begin > covered_to:
            break
        if end is None:
            return True
        covered_to = max(covered_to, end)
        if want_end is not None and covered_to >= want_end:
            return True
    return False


# ---------------------------------------------------------------- applying changes
def apply(tables: AuthTables, req: dict, header_revision: int) -> dict:
    """Apply one auth request (its permission already checked); returns the response fields."""
    op = req["op"]
    handler = _APPLY.get(op)
    if handler is None:
        raise ValueError(f"not an auth request: {op!r}")
    return {"revision": header_revision, **handler(tables, req)}


def _auth_enable(t: AuthTables, req: dict) -> dict:
    if t.enabled():
        return {}
    root = t.user(ROOT)
    if root is None:
        raise auth_error("root_user_not_exist")
    if ROOT not in root.roles:
        raise auth_error("root_role_not_exist")
    t.set_enabled(True, req["secret"])
    return {}


def _auth_disable(t: AuthTables, req: dict) -> dict:
    if t.enabled():
        t.set_enabled(False)
        t.bump_revision()
    return {}


def _user_add(t: AuthTables, req: dict) -> dict:
    name = req.get("name", "")
    if not name:
        raise auth_error("user_empty")
    if t.user(name) is not None:
        raise auth_error("user_already_exist")
    no_password = bool(req.get("options", {}).get("no_password"))
    t.bump_revision()
    t.put_user(User(name, b"" if no_password else req["hashed"], [], no_password, t.revision()))
    return {}


def _user_delete(t: AuthTables, req: dict) -> dict:
    name = req.get("name", "")
    if t.enabled() and name == ROOT:
        raise auth_error("invalid_auth_mgmt")
    if t.user(name) is None:
        raise auth_error("user_not_found")
    t.delete_user(name)
    t.bump_revision()
    return {}


def _user_change_password(t: AuthTables, req: dict) -> dict:
    user = _existing_user(t, req.get("name", ""))
    t.bump_revision()
    t.put_user(User(user.name, req["hashed"], user.roles, user.no_password, t.revision()))
    return {}


def _user_grant_role(t: AuthTables, req: dict) -> dict:
    user = _existing_user(t, req.get("user", ""))
    role = req.get("role", "")
    if role != ROOT and t.role(role) is None:
        raise auth_error("role_not_found")
    if role in user.roles:
        return {}
    t.put_user(User(user.name, user.password, sorted([*user.roles, role]), user.no_password, user.password_revision))
    t.bump_revision()
    return {}


def _user_revoke_role(t: AuthTables, req: dict) -> dict:
    name, role = req.get("name", ""), req.get("role", "")
    if t.enabled() and name == ROOT and role == ROOT:
        raise auth_error("invalid_auth_mgmt")
    user = _existing_user(t, name)
    if role not in user.roles:
        raise auth_error("role_not_granted")
    t.put_user(User(user.name, user.password, [r for r in user.roles if r != role], user.no_password, user.password_revision))
    t.bump_revision()
    return {}


def _user_get(t: AuthTables, req: dict) -> dict:
    return {"roles": list(_existing_user(t, req.get("name", "")).roles)}


def _user_list(t: AuthTables, req: dict) -> dict:
    return {"users": [u.name for u in t.users()]}


def _role_add(t: AuthTables, req: dict) -> dict:
    name = req.get("name", "")
    if not name:
        raise auth_error("role_empty")
    if t.role(name) is not None:
        raise auth_error("role_already_exist")
    t.put_role(name, [])
    t.bump_revision()
    return {}


def _role_get(t: AuthTables, req: dict) -> dict:
    return {"perm": [p.as_dict() for p in _existing_role(t, req.get("role", ""))]}


def _role_list(t: AuthTables, req: dict) -> dict:
    return {"roles": t.role_names()}


def _role_delete(t: AuthTables, req: dict) -> dict:
    name = req.get("role", "")
    if t.enabled() and name == ROOT:
        raise auth_error("invalid_auth_mgmt")
    _existing_role(t, name)
    t.delete_role(name)
    for user in t.users():
        if name in user.roles:
            t.put_user(User(user.name, user.password, [r for r in user.roles if r != name], user.no_password, user.password_revision))
    t.bump_revision()
    return {}


def _role_grant_permission(t: AuthTables, req: dict) -> dict:
    name = req.get("name", "")
    perms = _existing_role(t, name)
    p = req.get("perm", {})
    new = Permission(p.get("permType", READ), p.get("key", b""), p.get("range_end", b""))
    # Same key and range_end: the type is updated in place (etcd's RoleGrantPermission).
    kept = [q for q in perms if (q.key, q.range_end) != (new.key, new.range_end)]
    t.put_role(name, [*kept, new])
    t.bump_revision()
    return {}


def _role_revoke_permission(t: AuthTables, req: dict) -> dict:
    name = req.get("role", "")
    perms = _existing_role(t, name)
    target = (req.get("key", b""), req.get("range_end", b""))
    kept = [p for p in perms if (p.key, p.range_end) != target]
    if len(kept) == len(perms):
        raise auth_error("permission_not_granted")
    t.put_role(name, kept)
    t.bump_revision()
    return {}


def _existing_user(t: AuthTables, name: str) -> User:
    user = t.user(name)
    if user is None:
        raise auth_error("user_not_found")
    return user


def _existing_role(t: AuthTables, name: str) -> list[Permission]:
    perms = t.role(name)
    if perms is None:
        raise auth_error("role_not_found")
    return perms


_APPLY = {
    "auth_enable": _auth_enable, "auth_disable": _auth_disable,
    "user_add": _user_add, "user_delete": _user_delete, "user_change_password": _user_change_password,
    "user_grant_role": _user_grant_role, "user_revoke_role": _user_revoke_role,
    "user_get": _user_get, "user_list": _user_list,
    "role_add": _role_add, "role_get": _role_get, "role_list": _role_list, "role_delete": _role_delete,
    "role_grant_permission": _role_grant_permission, "role_revoke_permission": _role_revoke_permission,
}
AUTH_OPS = frozenset(_APPLY)


def restore(tables: AuthTables, users: Iterable[User], roles: dict[str, list[Permission]], enabled: bool,
            revision: int, secret: bytes) -> None:
    """Fill an empty auth table (an import from etcd, see store/etcd_import.py)."""
    for user in users:
        tables.put_user(user)
    for name, perms in roles.items():
        tables.put_role(name, perms)
    tables.set_enabled(enabled, secret)
    tables._txn.put(_REVISION, max(revision, 1).to_bytes(8, "big"), db=tables._db)
