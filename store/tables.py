"""Typed access to the store's LMDB databases inside one LMDB transaction.

Everything lives on disk (no in-memory index) so read-only processes see it all.
"""

import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import lmdb
import msgpack

from . import keys
from .auth import AuthTables
from .records import CorruptRecord, Record, hashed_bytes, pack, unpack

DB_COUNT = 9
_APPLIED_INDEX = b"applied_index"
# Bytes the stored revisions take, as the store counts them (record + key + RECORD_OVERHEAD_BYTES
# each): the same on every member that applied the same log, unlike the LMDB file's size.
_LOGICAL_BYTES = b"logical_bytes"
RECORD_OVERHEAD_BYTES = 256  # etcd's kvOverhead
_CURRENT_REVISION = b"current_revision"
_COMPACT_REVISION = b"compact_revision"
# A compaction in progress (see compact_step): the revision key of the next record it examines.
_COMPACT_CURSOR = b"compact_cursor"
# Written into a store file once a defragmented copy has replaced it (MvccStore.defragment): its
# readers then reopen the store's path. Never present in a live store.
_SUPERSEDED = b"superseded"


_ALARM = struct.Struct(">QI")


class Databases(NamedTuple):
    revs: "lmdb._Database"  # revision -> record
    keys: "lmdb._Database"  # user key -> index values (dupsort), see keys.py
    meta: "lmdb._Database"  # applied index, current and compact revisions
    leases: "lmdb._Database"  # lease id -> msgpack [ttl seconds]
    lease_keys: "lmdb._Database"  # lease id + user key -> b"": the keys attached to each lease
    requests: "lmdb._Database"  # request key -> raft index: proposals applied lately (duplicates are skipped)
    request_log: "lmdb._Database"  # raft index -> request key, to forget old ones in order
    alarms: "lmdb._Database"  # member id (u64) + alarm type (u32), big-endian -> b"": the raised alarms
    auth: "lmdb._Database"  # users, roles, the enabled flag and the auth revision (see auth.py)
    max_key_bytes: int


def open_databases(env: lmdb.Environment, *, create: bool) -> Databases:
    return Databases(
        revs=env.open_db(b"revs", create=create),
        keys=env.open_db(b"keys", dupsort=True, dupfixed=True, create=create),
        meta=env.open_db(b"meta", create=create),
        leases=env.open_db(b"leases", create=create),
        lease_keys=env.open_db(b"lease_keys", create=create),
        requests=env.open_db(b"requests", create=create),
        request_log=env.open_db(b"request_log", create=create),
        alarms=env.open_db(b"alarms", create=create),
        auth=env.open_db(b"auth", create=create),
        max_key_bytes=env.max_key_size(),
    )


class StoreTxn:
    """The MVCC tables as seen by one LMDB transaction (read or write)."""

    def __init__(self, txn: lmdb.Transaction, dbs: Databases, events: list[list] | None = None) -> None:
        self._txn = txn
        self._dbs = dbs
        # Where a write records the watch events of the revisions it makes (see writes.WriteTxn), if anywhere.
        self.events = events

    @property
    def max_key_bytes(self) -> int:
        return self._dbs.max_key_bytes

    # --- meta
    def superseded(self) -> bool:
        """Whether this file has been replaced by a defragmented copy (see _SUPERSEDED)."""
        return self._txn.get(_SUPERSEDED, db=self._dbs.meta) is not None

    def mark_superseded(self) -> None:
        self._txn.put(_SUPERSEDED, b"", db=self._dbs.meta)

    def applied_index(self) -> int:
        return self._meta(_APPLIED_INDEX, 0)

    def current_revision(self) -> int:
        """1 for an empty store, as etcd."""
        return self._meta(_CURRENT_REVISION, 1)

    def compact_revision(self) -> int:
        """-1 if never compacted, as etcd's compactMainRev."""
        return self._meta(_COMPACT_REVISION, -1)

    def forget_raft_position(self) -> None:
        """The applied index back to 0 and no remembered proposals (see MvccStore.forget_raft_position)."""
        self._set_meta(_APPLIED_INDEX, 0)
        self._txn.drop(self._dbs.requests, delete=False)
        self._txn.drop(self._dbs.request_log, delete=False)

    def set_applied_index(self, index: int) -> None:
        assert index > self.applied_index()
        self._set_meta(_APPLIED_INDEX, index)

    def set_current_revision(self, revision: int) -> None:
        assert revision == self.current_revision() + 1
        self._set_meta(_CURRENT_REVISION, revision)

    def set_compact_revision(self, revision: int) -> None:
        assert self.compact_revision() < revision <= self.current_revision()
        self._set_meta(_COMPACT_REVISION, revision)

    def set_imported_revisions(self, current_revision: int, compact_revision: int) -> None:
        """For a new store filled by an import (store/etcd_import.py, through MvccStore.bulk_load):
        the current and compact revisions the source had (compact -1: never compacted)."""
        assert self.current_revision() == 1 and self.compact_revision() == -1
        assert current_revision >= 1 and -1 <= compact_revision <= current_revision
        self._set_meta(_CURRENT_REVISION, current_revision)
        if compact_revision >= 0:
            self._set_meta(_COMPACT_REVISION, compact_revision)

    def logical_bytes(self) -> int:
        """What the stored revisions weigh (see _LOGICAL_BYTES); deterministic across members."""
        return self._meta(_LOGICAL_BYTES, 0)

    def _add_logical_bytes(self, delta: int) -> None:
        self._set_meta(_LOGICAL_BYTES, max(0, self.logical_bytes() + delta))

    def auth(self) -> AuthTables:
        """The auth store's table in this transaction."""
        return AuthTables(self._txn, self._dbs.auth)

    # --- alarms (etcd's alarm bucket)
    def alarms(self) -> list[tuple[int, int]]:
        """(member id, alarm type) of every raised alarm, in (member, type) order."""
        return [_ALARM.unpack(k) for k in self._txn.cursor(self._dbs.alarms).iternext(keys=True, values=False)]

    def has_alarm(self, alarm: int) -> bool:
        return any(a == alarm for _, a in self.alarms())

    def activate_alarm(self, member: int, alarm: int) -> bool:
        """Raise an alarm; False if it was raised already."""
        return self._txn.put(_ALARM.pack(member, alarm), b"", db=self._dbs.alarms, overwrite=False)

    def deactivate_alarm(self, member: int, alarm: int) -> bool:
        """Disarm an alarm; False if it was not raised."""
        return self._txn.delete(_ALARM.pack(member, alarm), db=self._dbs.alarms)

    def _meta(self, name: bytes, default: int) -> int:
        data = self._txn.get(name, db=self._dbs.meta)
        return default if data is None else keys.i64_from_bytes(data)

    def _set_meta(self, name: bytes, value: int) -> None:
        self._txn.put(name, keys.i64_to_bytes(value), db=self._dbs.meta)

    # --- leases
    def lease_exists(self, lease_id: int) -> bool:
        return self._txn.get(keys.lease_key(lease_id), db=self._dbs.leases) is not None

    def lease_ttl(self, lease_id: int) -> int | None:
        """The granted TTL in seconds, or None for a lease that does not exist."""
        data = self._txn.get(keys.lease_key(lease_id), db=self._dbs.leases)
        return None if data is None else msgpack.unpackb(data)[0]

    def leases(self) -> list[tuple[int, int]]:
        """(lease id, granted TTL) of every lease."""
        return [(keys.i64_from_bytes(k), msgpack.unpackb(v)[0]) for k, v in self._txn.cursor(self._dbs.leases)]

    def lease_keys(self, lease_id: int) -> list[bytes]:
        prefix = keys.lease_key(lease_id)
        cursor = self._txn.cursor(self._dbs.lease_keys)
        out: list[bytes] = []
        if cursor.set_range(prefix):
            for k in cursor.iternext(keys=True, values=False):
                if not k.startswith(prefix):
                    break
                out.append(k[len(prefix):])
        return out

    def put_lease(self, lease_id: int, ttl: int) -> None:
        self._txn.put(keys.lease_key(lease_id), msgpack.packb([ttl]), db=self._dbs.leases)

    def delete_lease(self, lease_id: int) -> None:
        assert self.lease_keys(lease_id) == [], "a lease's keys go before the lease"
        self._txn.delete(keys.lease_key(lease_id), db=self._dbs.leases)

    def any_key_attached(self) -> bool:
        """Is any key attached to a lease? (If not, a delete need not look up each key's lease.)"""
        return self._txn.stat(self._dbs.lease_keys)["entries"] > 0

    def attach(self, lease_id: int, key: bytes) -> None:
        self._txn.put(keys.lease_key(lease_id) + key, b"", db=self._dbs.lease_keys)

    def detach(self, lease_id: int, key: bytes) -> None:
        self._txn.delete(keys.lease_key(lease_id) + key, db=self._dbs.lease_keys)

    # --- duplicate proposals
    def remember_request(self, request_key: bytes, raft_index: int) -> bool:
        """Record a request as applied at raft_index; False if it was applied already."""
        if self._txn.get(request_key, db=self._dbs.requests) is not None:
            return False
        index = keys.rev_to_bytes(raft_index, 0)
        self._txn.put(request_key, index, db=self._dbs.requests)
        self._txn.put(index, request_key, db=self._dbs.request_log)
        return True

    def forget_requests_before(self, raft_index: int) -> None:
        cursor = self._txn.cursor(self._dbs.request_log)
        if not cursor.first():
            return
        for _ in range(self._txn.stat(self._dbs.request_log)["entries"]):
            index_bytes, request_key = cursor.item()
            if keys.rev_from_bytes(index_bytes)[0] >= raft_index:
                return
            self._txn.delete(request_key, db=self._dbs.requests)
            if not cursor.delete():
                return

    # --- history
    def revisions(self, from_rev: int, to_rev: int) -> Iterator[tuple[int, int, Record]]:
        """(main, sub, record) of every stored revision with from_rev <= main <= to_rev, in order."""
        cursor = self._txn.cursor(self._dbs.revs)
        if not cursor.set_range(keys.rev_to_bytes(from_rev, 0)):
            return
        for rev_bytes, data in cursor.iternext(keys=True, values=True):
            main, sub = keys.rev_from_bytes(rev_bytes)
            if main > to_rev:
                return
            yield main, sub, unpack(data)

    # --- reads
    def latest(self, key: bytes, at_rev: int) -> tuple[int, int] | None:
        """The revision (main, sub) holding the key's live value at at_rev, if any."""
        newest = self._newest(key, at_rev, self._txn.cursor(self._dbs.keys))
        if newest is None or newest[2]:
            return None
        return newest[0], newest[1]

    def scan(
        self, start: bytes, end: bytes | None, at_rev: int
    ) -> Iterator[tuple[bytes, int, int]]:
        """(key, main, sub) of the live keys at at_rev in key order; bounds as keys.key_bounds."""
        if end is None:
            found = self.latest(start, at_rev)
            if found is not None:
                yield start, *found
            return
        cursor = self._txn.cursor(self._dbs.keys)
        probe = self._txn.cursor(self._dbs.keys)
        if not cursor.set_range(start):
            return
        for key, newest_value in cursor.iternext_nodup(keys=True, values=True):
            if end and key >= end:
                return
            newest = keys.index_value_decode(newest_value)
            if newest[0] > at_rev:
                newest = self._newest(key, at_rev, probe)
            if newest is not None and not newest[2]:
                yield key, newest[0], newest[1]

    def record(self, main: int, sub: int) -> Record:
        data = self._txn.get(keys.rev_to_bytes(main, sub), db=self._dbs.revs)
        assert data is not None, (main, sub)
        return unpack(data)

    def _newest(
        self, key: bytes, at_rev: int, cursor: lmdb.Cursor
    ) -> tuple[int, int, bool] | None:
        """(main, sub, tombstone) of the key's newest revision with main <= at_rev."""
        if not 0 < len(key) <= self._dbs.max_key_bytes:
            return None  # LMDB cannot hold such a key, so it was never written
        if not cursor.set_range_dup(key, keys.index_seek(at_rev)):
            return None
        newest = keys.index_value_decode(cursor.value())
        assert newest[0] <= at_rev
        return newest

    # --- writes
    def add(self, main: int, sub: int, record: Record) -> None:
        """Writes a new revision; revisions only grow."""
        assert 0 < len(record.key) <= self._dbs.max_key_bytes
        packed = pack(record)
        appended = self._txn.put(
            keys.rev_to_bytes(main, sub), packed, db=self._dbs.revs, append=True
        )
        self._add_logical_bytes(len(packed) + len(record.key) + RECORD_OVERHEAD_BYTES)
        assert appended, (main, sub)
        indexed = self._txn.put(  # dupdata=False: MDB_NODUPDATA, fails on an equal value
            record.key, keys.index_value(main, sub, record.tombstone), db=self._dbs.keys,
            dupdata=False,
        )
        assert indexed, (main, sub)

    def compact(self, at_rev: int) -> int:
        """Drops every revision <= at_rev except each key's newest one unless a tombstone, at once.

        Returns the number of revisions dropped."""
        dropped, rest = self._compact_from(keys.rev_to_bytes(0, 0), at_rev, self._txn.stat(self._dbs.revs)["entries"] + 1)
        if rest is not None:
            raise RuntimeError("compaction visited more revisions than exist")
        return dropped

    # A compaction done a bounded step at a time (etcd compacts in the background, in batches):
    # the compact revision is set at once, so reads, watches and hashes treat the revisions it drops
    # as gone (see is_compacted_away) while the records still wait in the table.
    def start_compaction(self, revision: int) -> None:
        """Compact to `revision`, from the first record on, a step at a time (compact_step)."""
        self.set_compact_revision(revision)
        self._txn.put(_COMPACT_CURSOR, keys.rev_to_bytes(0, 0), db=self._dbs.meta)

    def compaction_pending(self) -> bool:
        return self._txn.get(_COMPACT_CURSOR, db=self._dbs.meta) is not None

    def compact_step(self, limit: int) -> int:
        """Examine up to `limit` more records of the compaction in progress; returns how many were dropped."""
        cursor = self._txn.get(_COMPACT_CURSOR, db=self._dbs.meta)
        if cursor is None:
            return 0
        dropped, next_key = self._compact_from(bytes(cursor), self.compact_revision(), limit)
        if next_key is None:
            self._txn.delete(_COMPACT_CURSOR, db=self._dbs.meta)
        else:
            self._txn.put(_COMPACT_CURSOR, next_key, db=self._dbs.meta)
        return dropped

    def is_compacted_away(self, main: int, sub: int, record: Record, compact_rev: int) -> bool:
        """Would the compaction to `compact_rev` drop this record (one <= it, not the key's newest
        there, or a tombstone)? While a compaction is in progress, such records may still be stored."""
        if main > compact_rev:
            return False
        return self._newest(record.key, compact_rev, self._txn.cursor(self._dbs.keys)) != (main, sub, False)

    def _compact_from(self, start: bytes, at_rev: int, limit: int) -> tuple[int, bytes | None]:
        """Drop what the compaction to at_rev drops among at most `limit` records from the revision key
        `start` on; returns (dropped, the key to go on from, or None once past at_rev)."""
        cursor = self._txn.cursor(self._dbs.revs)
        probe = self._txn.cursor(self._dbs.keys)
        dropped = 0
        freed = 0
        next_key: bytes | None = None
        if cursor.set_range(start):
            for _ in range(limit):
                main, sub = keys.rev_from_bytes(cursor.key())
                if main > at_rev:
                    break
                packed = cursor.value()
                record = unpack(packed)
                if self._newest(record.key, at_rev, probe) == (main, sub, False):
                    moved = cursor.next()
                else:
                    freed += len(packed) + len(record.key) + RECORD_OVERHEAD_BYTES
                    unindexed = self._txn.delete(
                        record.key, keys.index_value(main, sub, record.tombstone), db=self._dbs.keys
                    )
                    assert unindexed, (main, sub)
                    moved = cursor.delete()  # moves to the next revision
                    dropped += 1
                if not moved or not cursor.key():
                    break
            else:
                next_key = bytes(cursor.key())
        self._add_logical_bytes(-freed)
        return dropped, next_key

    def used_pages(self, main_db_stat: dict) -> int:
        """Pages of the meta pages, the main db (env.stat()) and the named dbs."""
        stats = [main_db_stat] + [self._txn.stat(db) for db in
                                  (self._dbs.revs, self._dbs.keys, self._dbs.meta, self._dbs.leases,
                                   self._dbs.lease_keys)]
        return 2 + sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)

    def hash(self, at_rev: int) -> int:
        """zlib crc32 (IEEE) over (revision bytes, record body) of revisions <= at_rev (records.hashed_bytes)."""
        crc = 0
        # While a compaction is in progress the records it will drop are skipped, so that a member
        # hashes the same before, during and after it (members compare hashes at one revision, not
        # at one log position; etcd's HashByRev likewise keeps only what its compaction keeps).
        compact_rev = self.compact_revision() if self.compaction_pending() else 0
        for rev_bytes, data in self._txn.cursor(self._dbs.revs).iternext(keys=True, values=True):
            main, sub = keys.rev_from_bytes(rev_bytes)
            if main > at_rev:
                break
            if main <= compact_rev:
                try:
                    if self.is_compacted_away(main, sub, unpack(data), compact_rev):
                        continue
                except CorruptRecord:
                    pass  # hashed (as corrupt) below
            crc = zlib.crc32(hashed_bytes(data), zlib.crc32(rev_bytes, crc))
        return crc
