"""The MVCC record stored per revision, and the kv dicts responses carry.

A stored record is its msgpack body followed by the body's CRC-32 (4 bytes, little-endian), checked
on every read: a flipped byte on disk (the simulator's `corrupt` fault) raises CorruptRecord instead
of being served or applied. bbolt, etcd's store, has no such checksum.
"""

import zlib
from dataclasses import dataclass

import msgpack

_CRC_BYTES = 4


class CorruptRecord(Exception):
    """A stored record fails its checksum: the store is corrupt. Never a request's error: a member
    that meets one stops (actors/apply_actor.py), and a read answers "etcdserver: corrupt cluster"."""


@dataclass(frozen=True, slots=True)
class Record:
    """One revision of a key. A tombstone ends the key's generation and has no value."""

    key: bytes
    tombstone: bool
    value: bytes
    create_revision: int
    version: int
    lease: int

    def __post_init__(self) -> None:
        assert self.key
        if self.tombstone:
            assert (self.value, self.create_revision, self.version, self.lease) == (b"", 0, 0, 0)
        else:
            assert self.create_revision >= 2 and self.version >= 1


def tombstone(key: bytes) -> Record:
    return Record(key, True, b"", 0, 0, 0)


def pack(record: Record) -> bytes:
    body = msgpack.packb(
        [record.key, record.tombstone, record.value, record.create_revision, record.version,
         record.lease],
        use_bin_type=True,
    )
    return body + zlib.crc32(body).to_bytes(_CRC_BYTES, "little")


def check(data: bytes) -> bytes:
    """The record's body, if its checksum holds; raises CorruptRecord if not."""
    body = data[:-_CRC_BYTES]
    if len(data) <= _CRC_BYTES or zlib.crc32(body) != int.from_bytes(data[-_CRC_BYTES:], "little"):
        raise CorruptRecord(f"a stored record ({len(data)} bytes) fails its checksum")
    return body


def hashed_bytes(data: bytes) -> bytes:
    """What a store hash takes of a stored record: its body, not the stored bytes. A CRC run over a
    message followed by that message's CRC no longer depends on the message (its contribution
    cancels out), which would hide every record's content from the hash. A record whose checksum
    fails gives a marker and its bytes instead, so a flip in the checksum shows too."""
    try:
        return check(data)
    except CorruptRecord:
        return b"corrupt record:" + data


def unpack(data: bytes) -> Record:
    """The record; raises CorruptRecord if its bytes are not the ones written."""
    body = check(data)
    try:
        key, is_tombstone, value, create_revision, version, lease = msgpack.unpackb(body, raw=False)
        return Record(key, is_tombstone, value, create_revision, version, lease)
    except (ValueError, TypeError, AssertionError) as err:  # a record that was written wrong
        raise CorruptRecord(f"a stored record does not decode: {err!r}") from err


def kv_dict(record: Record, mod_revision: int) -> dict:
    """etcd's mvccpb.KeyValue as a dict."""
    assert not record.tombstone and mod_revision >= record.create_revision
    return {
        "key": record.key,
        "create_revision": record.create_revision,
        "mod_revision": mod_revision,
        "version": record.version,
        "value": record.value,
        "lease": record.lease,
    }
