"""A petcd store from etcd's backend database (a bbolt file: `etcdctl snapshot save` or `member/snap/db`).

What etcd keeps (etcd 3.4, mvcc/kvstore.go restore, lease/lessor.go) and where it goes:
- bucket `key`: revision bytes (main u64 BE, '_', sub u64 BE, 't' for a tombstone) -> a marshalled
  mvccpb.KeyValue; every revision becomes the same revision in petcd's revs/keys tables, so
  `get --rev=R` answers as etcd did;
- bucket `meta`: finishedCompactRev -> petcd's compact revision; a scheduledCompactRev past it is
  a compaction etcd had not finished, which etcd resumes on start: petcd does it now. The current
  revision is the highest main revision in `key` (at least the compact revision), as etcd's;
- bucket `lease`: lease id (i64 BE) -> leasepb.Lease{ID, TTL}; a key is attached to the lease its
  newest live revision names, if that lease exists (etcd logs and skips the others);
- buckets `authUsers`, `authRoles`, `auth`: users (bcrypt hashes as they are), roles, the enabled
  flag and the auth revision, into petcd's auth store (store/auth.py);
- bucket `alarm`: every raised alarm (see _alarms: kept, as etcd's own restore keeps them);
- buckets `members`, `members_removed`, `cluster`: not taken, the new cluster's are its own.

`snapshot_status` is what `etcdctl snapshot status` prints for such a file.

The store layer must not import the rpc layer, so KeyValue and Lease are read by the small
protobuf decoder below.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from . import auth, keys
from .bbolt import BboltError, BboltFile
from .crc32c import Crc32c
from .mvcc import MvccStore
from .records import Record, tombstone
from .tables import StoreTxn

_MAIN = struct.Struct(">Q")
_REV_BYTES = 17  # main, '_', sub
_MAX_I64 = (1 << 63) - 1


class EtcdImportError(Exception):
    """An etcd database whose contents petcd cannot take; the message says which record and why."""


@dataclass(frozen=True)
class ImportResult:
    revision: int
    compact_revision: int  # -1: never compacted
    revisions: int  # revisions written (tombstones included)
    keys: int  # live keys at the current revision
    leases: int
    attached: int  # keys attached to a lease
    users: int
    roles: int
    auth_enabled: bool
    alarms: int  # alarms raised in etcd, raised in petcd too


# --- protobuf (proto3 wire format), just enough for mvccpb.KeyValue and leasepb.Lease
def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise EtcdImportError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & ((1 << 64) - 1), pos
    raise EtcdImportError("varint longer than 10 bytes")


def _int64(u: int) -> int:
    return u - (1 << 64) if u > _MAX_I64 else u


def decode_fields(data: bytes) -> dict[int, int | bytes]:
    """Field number -> value (varints as int64, length-delimited as bytes; the last one wins, as
    proto3 has it for scalars). Fixed 32/64-bit fields are skipped; groups are refused."""
    return dict(field_list(data))


def field_list(data: bytes) -> list[tuple[int, int | bytes]]:
    """Every (field number, value) in wire order, repeated fields included (see decode_fields)."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    for _ in range(len(data) + 1):
        if pos >= len(data):
            return fields
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise EtcdImportError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            fields.append((number, _int64(value)))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise EtcdImportError(f"field {number} runs past the end of the message")
            fields.append((number, data[pos:pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise EtcdImportError(f"unsupported wire type {wire} (field {number})")
        if pos > len(data):
            raise EtcdImportError(f"field {number} runs past the end of the message")
    raise EtcdImportError("message does not end")  # unreachable: every field consumes a byte


def _int_field(fields: dict, number: int) -> int:
    value = fields.get(number, 0)
    if not isinstance(value, int):
        raise EtcdImportError(f"field {number} is not a varint")
    return value


def _bytes_field(fields: dict, number: int) -> bytes:
    value = fields.get(number, b"")
    if not isinstance(value, bytes):
        raise EtcdImportError(f"field {number} is not length-delimited")
    return value


def parse_revision(rev: bytes) -> tuple[int, int, bool]:
    """(main, sub, tombstone) of a `key` bucket key."""
    if len(rev) not in (_REV_BYTES, _REV_BYTES + 1) or rev[8:9] != b"_" or (len(rev) == _REV_BYTES + 1 and rev[-1:] != b"t"):
        raise EtcdImportError(f"revision key {rev.hex()} is not main_sub[t]")
    return _MAIN.unpack_from(rev, 0)[0], _MAIN.unpack_from(rev, 9)[0], len(rev) == _REV_BYTES + 1


def _record(main: int, sub: int, is_tombstone: bool, value: bytes, max_key_bytes: int) -> Record:
    where = f"revision {main}_{sub}"
    try:
        kv = decode_fields(value)
    except EtcdImportError as e:
        raise EtcdImportError(f"{where}: not a mvccpb.KeyValue: {e}") from None
    key = _bytes_field(kv, 1)
    if not key:
        raise EtcdImportError(f"{where}: empty key")
    if len(key) > max_key_bytes:
        raise EtcdImportError(f"{where}: key {key[:40]!r}... is {len(key)} bytes, longer than petcd's {max_key_bytes}")
    if not 1 <= main <= _MAX_I64:
        raise EtcdImportError(f"{where}: main revision out of range")
    if is_tombstone:
        return tombstone(key)
    create, mod, version, lease = (_int_field(kv, n) for n in (2, 3, 4, 6))
    if mod != main:
        raise EtcdImportError(f"{where}: mod_revision {mod} differs from the bucket key's revision")
    if not 2 <= create <= main or version < 1 or lease < 0:
        raise EtcdImportError(f"{where}: create_revision {create}, version {version}, lease {lease} are not valid")
    return Record(key, False, _bytes_field(kv, 5), create, version, lease)


def _compact_rev(db: BboltFile, name: bytes) -> int:
    for k, v in db.items(b"meta"):
        if k == name:
            if v is None or len(v) not in (8, _REV_BYTES):
                raise EtcdImportError(f"meta/{name.decode()} is not a revision")
            return _MAIN.unpack_from(v, 0)[0]
    return -1


def _auth_store(db: BboltFile) -> tuple[list[auth.User], dict[str, list[auth.Permission]], bool, int]:
    """etcd's auth buckets: users (authpb.User), roles (authpb.Role), the enabled flag and the
    auth revision. bcrypt hashes carry over as they are: passwords keep working."""
    users: list[auth.User] = []
    for name, value in db.items(b"authUsers") if db.has_bucket(b"authUsers") else ():
        fields = _message(value, f"user {name!r}", "authpb.User")
        roles = sorted(_text(v, "role name") for n, v in fields if n == 3)
        options = next((v for n, v in fields if n == 4), b"")
        no_password = bool(options) and _int_field(decode_fields(options), 1) == 1
        users.append(auth.User(_text(name, "user name"), _bytes_field(dict(fields), 2), roles, no_password))
    for user in users:  # etcd's simple tokens do not carry over: nothing to invalidate
        user.password_revision = 0
    roles: dict[str, list[auth.Permission]] = {}
    for name, value in db.items(b"authRoles") if db.has_bucket(b"authRoles") else ():
        fields = _message(value, f"role {name!r}", "authpb.Role")
        perms = []
        for number, perm in fields:
            if number == 2:
                p = decode_fields(_as_bytes(perm))
                perms.append(auth.Permission(_int_field(p, 1), _bytes_field(p, 2), _bytes_field(p, 3)))
        roles[_text(name, "role name")] = perms
    enabled, revision = False, 1
    for k, v in db.items(b"auth") if db.has_bucket(b"auth") else ():
        if k == b"authEnabled":
            enabled = v == b"\x01"
        elif k == b"authRevision" and v is not None and len(v) == 8:
            revision = _MAIN.unpack(v)[0]
    return users, roles, enabled, revision


def _message(value: bytes | None, where: str, kind: str) -> list[tuple[int, int | bytes]]:
    try:
        return field_list(_as_bytes(value))
    except EtcdImportError as e:
        raise EtcdImportError(f"{where}: not a {kind}: {e}") from None


def _as_bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise EtcdImportError("expected a length-delimited field or a bucket value")
    return value


def _text(value: object, what: str) -> str:
    try:
        return _as_bytes(value).decode()
    except UnicodeDecodeError:
        raise EtcdImportError(f"{what} {value!r} is not UTF-8") from None


_ALARM_TYPES = (0, 1, 2)  # etcdserverpb.AlarmType in etcd 3.4: NONE, NOSPACE, CORRUPT


def _alarms(db: BboltFile) -> list[tuple[int, int]]:
    """(member id, alarm type) of every alarm in etcd's `alarm` bucket, whose keys are marshalled
    etcdserverpb.AlarmMember{memberID uint64 = 1, alarm AlarmType = 2} (values empty; etcd 3.4
    etcdserver/api/v3alarm/alarms.go, Activate and restore).

    They are imported, because etcd's own restore keeps them: `etcdctl snapshot restore` (etcd 3.4
    clientv3/snapshot/v3_snapshot.go, v3Manager.saveDB) copies the whole database and then empties
    only the `members` and `members_removed` buckets; the `alarm` bucket stays, and the restored
    member's EtcdServer.restoreAlarms (etcdserver/server.go) loads it on start (NewAlarmStore), so
    `etcdctl alarm list` shows the old alarms, still under the old member's id, and a NOSPACE alarm
    keeps refusing writes (the capped applier) until `etcdctl alarm disarm`. petcd's alarms live in
    its store too (store/tables.py), so the imported ones act the same way."""
    if not db.has_bucket(b"alarm"):
        return []
    found = []
    for k, _ in db.items(b"alarm"):
        try:
            fields = decode_fields(k)
        except EtcdImportError as e:
            raise EtcdImportError(f"alarm {k.hex()}: not an etcdserverpb.AlarmMember: {e}") from None
        member, alarm = _int_field(fields, 1) & ((1 << 64) - 1), _int_field(fields, 2)
        if alarm not in _ALARM_TYPES:
            raise EtcdImportError(f"alarm {k.hex()}: alarm type {alarm} is not one etcd 3.4 knows (NONE, NOSPACE, CORRUPT)")
        found.append((member, alarm))
    return found


def snapshot_status(db: BboltFile) -> tuple[int, int, int, int]:
    """(hash, revision, total keys, total size) as `etcdctl snapshot status` reports them (etcd 3.4
    clientv3/snapshot/v3_snapshot.go, v3Manager.Status), for a bbolt file opened whole (a trailer
    after the high-water mark is not read):
    - bbolt's Tx.Check first: any problem refuses the file, in etcd's words;
    - hash: CRC-32C (Castagnoli) over, for every top-level bucket in order, its name, then every
      key and value of it in order (a nested bucket's value is empty); a top-level entry that is
      not a bucket is an error ("cannot get hash of bucket NAME");
    - revision: the main revision (the first 8 bytes, big-endian, as int64) of the last key of the
      `key` bucket, a tombstone's included; 0 if that bucket is empty or missing (meta is not read);
    - total keys: every key of every top-level bucket (nested buckets count as one key);
    - total size: bbolt's Tx.Size(), the high-water mark times the page size, not the file size."""
    problems = db.check()
    if problems:
        raise BboltError(f"snapshot file integrity check failed. {len(problems)} errors found.\n" + "\n".join(problems))
    h = Crc32c()
    revision, total = 0, 0
    for name, is_bucket in list(db.root_entries()):
        if not is_bucket:
            raise BboltError("cannot get hash of bucket %s" % name.decode(errors="replace"))
        h.write(name)
        is_key_bucket = name == b"key"
        for k, v in db.items(name):
            h.write(k)
            if v:
                h.write(v)
            if is_key_bucket:
                if len(k) < _REV_BYTES:
                    raise BboltError(f"the key bucket holds key {k.hex()}, not a revision")
                revision = _int64(_MAIN.unpack_from(k, 0)[0])
            total += 1
    return h.sum32(), revision, total, db.size


def import_bbolt(db: BboltFile, store: MvccStore) -> ImportResult:
    """Write etcd's keys, history, compaction, leases, auth store and alarms from `db` into the new,
    empty `store`, in one LMDB write transaction. Raises EtcdImportError (and BboltError) with nothing committed."""
    for bucket in (b"key", b"meta"):
        if not db.has_bucket(bucket):
            raise EtcdImportError(f"{db.path} is a bbolt database but not etcd's: it has no {bucket.decode()!r} bucket")
    finished = _compact_rev(db, b"finishedCompactRev")
    scheduled = _compact_rev(db, b"scheduledCompactRev")
    leases: list[tuple[int, int]] = []
    if db.has_bucket(b"lease"):
        for k, v in db.items(b"lease"):
            if v is None or len(k) != 8:
                raise EtcdImportError(f"lease bucket entry {k.hex()} is not a lease")
            try:
                fields = decode_fields(v)
            except EtcdImportError as e:
                raise EtcdImportError(f"lease {k.hex()}: not a leasepb.Lease: {e}") from None
            lease_id, ttl = _int_field(fields, 1), _int_field(fields, 2)
            if lease_id != keys.i64_from_bytes(k) or lease_id <= 0:
                raise EtcdImportError(f"lease {k.hex()}: its ID {lease_id} does not match its key")
            leases.append((lease_id, ttl))
    users, roles, auth_enabled, auth_revision = _auth_store(db)
    alarms = _alarms(db)

    counts: dict[str, int] = {}

    def fill(tables: StoreTxn) -> None:
        highest, written = 0, 0
        for rev, value in db.items(b"key"):
            if value is None:
                raise EtcdImportError("the key bucket holds a nested bucket")
            main, sub, is_tombstone = parse_revision(rev)
            if (main, sub) <= (highest, counts.get("sub", -1)):
                raise EtcdImportError(f"revision {main}_{sub} is out of order")
            tables.add(main, sub, _record(main, sub, is_tombstone, value, tables.max_key_bytes))
            highest, counts["sub"] = main, sub
            written += 1
        current = max(highest, finished, 1)
        if scheduled > current:
            raise EtcdImportError(f"meta/scheduledCompactRev {scheduled} is past the current revision {current}")
        tables.set_imported_revisions(current, finished)
        if scheduled > finished:
            written -= tables.compact(scheduled)
            tables.set_compact_revision(scheduled)
        for lease_id, ttl in leases:
            tables.put_lease(lease_id, ttl)
        for member, alarm in alarms:
            tables.activate_alarm(member, alarm)
        # Simple tokens of the new store are signed with a fresh secret: etcd's tokens do not carry over.
        auth.restore(tables.auth(), users, roles, auth_enabled, auth_revision, os.urandom(32))
        live, attached = 0, 0
        for key, main, sub in tables.scan(b"\0", b"", current):
            live += 1
            lease = tables.record(main, sub).lease
            if lease and tables.lease_exists(lease):
                tables.attach(lease, key)
                attached += 1
        counts.update(revision=current, compact=max(finished, scheduled), revisions=written, keys=live, attached=attached)

    store.bulk_load(fill)
    return ImportResult(
        revision=counts["revision"], compact_revision=counts["compact"], revisions=counts["revisions"],
        keys=counts["keys"], leases=len(leases), attached=counts["attached"],
        users=len(users), roles=len(roles), auth_enabled=auth_enabled,
        alarms=len(set(alarms)),
    )


__all__ = ["BboltError", "EtcdImportError", "ImportResult", "decode_fields", "import_bbolt", "parse_revision", "snapshot_status"]
