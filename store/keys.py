"""Byte encodings of the store's LMDB keys and values.

- revs db key: revision (main, sub) as two big-endian u64, so LMDB orders by revision.
- keys db (dupsort, dupfixed): user key -> one 17-byte value per revision of the key:
  (U64_MAX - main, U64_MAX - sub) big-endian + tombstone byte. The complement puts the
  newest revision first, so "latest revision <= R" is a single seek (MDB_GET_BOTH_RANGE).
- meta db: name -> signed big-endian i64.
- leases db: lease id as signed big-endian i64 -> lease record (owned by lease code).
"""

import struct

U64_MAX = (1 << 64) - 1
REV_BYTES = 16
INDEX_VALUE_BYTES = 17

_REV = struct.Struct(">QQ")
_INDEX_VALUE = struct.Struct(">QQB")
_I64 = struct.Struct(">q")


def rev_to_bytes(main: int, sub: int) -> bytes:
    assert 0 <= main <= U64_MAX and 0 <= sub <= U64_MAX
    return _REV.pack(main, sub)


def rev_from_bytes(data: bytes) -> tuple[int, int]:
    assert len(data) == REV_BYTES
    return _REV.unpack(data)


def index_value(main: int, sub: int, tombstone: bool) -> bytes:
    assert 0 <= main <= U64_MAX and 0 <= sub <= U64_MAX
    return _INDEX_VALUE.pack(U64_MAX - main, U64_MAX - sub, int(tombstone))


def index_value_decode(data: bytes) -> tuple[int, int, bool]:
    """Returns (main, sub, tombstone)."""
    assert len(data) == INDEX_VALUE_BYTES
    main_inv, sub_inv, tombstone = _INDEX_VALUE.unpack(data)
    assert tombstone in (0, 1)
    return U64_MAX - main_inv, U64_MAX - sub_inv, bool(tombstone)


def index_seek(at_rev: int) -> bytes:
    """The smallest index value whose revision has main <= at_rev (the newest such first)."""
    return index_value(at_rev, U64_MAX, False)


def i64_to_bytes(value: int) -> bytes:
    return _I64.pack(value)


def i64_from_bytes(data: bytes) -> int:
    return _I64.unpack(data)[0]


def lease_key(lease_id: int) -> bytes:
    return i64_to_bytes(lease_id)


def key_bounds(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    """etcd's key/range_end convention as (start, end).

    end None: the single key `start`; end b"": every key >= start (range_end b"\\0");
    otherwise [start, end).
    """
    if not range_end:
        return key, None
    if range_end == b"\0":
        return key, b""
    return key, range_end
