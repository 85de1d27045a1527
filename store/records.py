"""The MVCC record stored per revision, and the kv dicts responses carry."""

from dataclasses import dataclass

import msgpack


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
    return msgpack.packb(
        [record.key, record.tombstone, record.value, record.create_revision, record.version,
         record.lease],
        use_bin_type=True,
    )


def unpack(data: bytes) -> Record:
    key, is_tombstone, value, create_revision, version, lease = msgpack.unpackb(data, raw=False)
    return Record(key, is_tombstone, value, create_revision, version, lease)


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
