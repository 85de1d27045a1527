"""The MVCC key-value store: one writer (the apply actor), any number of read-only processes.

Known differences from etcd:
- keys longer than LMDB's max key size (511 bytes) are rejected (StoreError "key_too_long");
- compaction is physical and done inside the apply transaction;
- hash_kv is zlib crc32 over petcd's own encoding, comparable between petcd members only;
- sorting ties keep key order (stable sort); etcd's Go sort.Sort does so for <= 12 results.
"""

import os
import zlib


import lmdb

from . import txn as txns
from . import writes
from .errors import StoreError, compacted, future_rev, lease_exists, lease_not_found
from .history import events
from .reads import range_response
from .tables import DB_COUNT, StoreTxn, open_databases
from .writes import WriteTxn


# How far back (in log entries) a duplicated proposal is recognised.
DEDUP_WINDOW_ENTRIES = 100_000


class MvccStore:
    """An LMDB environment (a directory) holding etcd's MVCC key space."""

    def __init__(
        self, path: str, *, readonly: bool = False, map_size_bytes: int = 8 << 30,
        sync: bool = True,
    ) -> None:
        """readonly=True reads a store another process writes; it must exist.

        Readers should use the writer's map_size_bytes.
        """
        self._readonly = readonly
        self._env = lmdb.open(
            path, subdir=True, readonly=readonly, create=not readonly, map_size=map_size_bytes,
            max_dbs=DB_COUNT, sync=sync,
        )
        self._dbs = open_databases(self._env, create=not readonly)

    def close(self) -> None:
        self._env.close()

    @property
    def path(self) -> str:
        """The store's directory."""
        return self._env.path()

    # --- writer side
    def apply(self, entries: list[tuple[int, dict]] | list[tuple[int, dict, bytes | None]]) -> list[dict | None]:
        """Applies committed log entries (raft_index, request[, request_key]) in one LMDB write txn.

        Entries at or below the applied index are skipped (None). So is an entry
        whose request_key was applied within the last DEDUP_WINDOW_ENTRIES entries:
        the network delivered its proposal twice (None). A request failing
        with StoreError changes nothing and yields {"error": name, "code": grpc_code,
        "message": message}. {"op": "noop"} (an empty raft entry) only advances the
        applied index. Unknown ops raise ValueError and nothing of the batch is applied.
        """
        assert not self._readonly
        responses: list[dict | None] = []
        with self._env.begin(write=True) as parent:
            applied_index = StoreTxn(parent, self._dbs).applied_index()
            tables = StoreTxn(parent, self._dbs)
            for raft_index, request, *key in entries:
                if raft_index <= applied_index:
                    responses.append(None)
                    continue
                if raft_index != applied_index + 1:
                    # Applying past a hole would silently lose a committed entry on this member.
                    raise RuntimeError(f"apply: entry {raft_index} follows applied index {applied_index}: a committed entry is missing")
                request_key = key[0] if key else None
                if request_key is not None and not tables.remember_request(request_key, raft_index):
                    responses.append(None)
                    applied_index = raft_index
                    continue
                try:
                    with self._env.begin(write=True, parent=parent) as child:
                        responses.append(_apply_request(StoreTxn(child, self._dbs), request))
                except StoreError as err:
                    responses.append(
                        {"error": err.name, "code": err.grpc_code, "message": err.message}
                    )
                applied_index = raft_index
            if applied_index > tables.applied_index():
                tables.set_applied_index(applied_index)
                tables.forget_requests_before(applied_index - DEDUP_WINDOW_ENTRIES)
        assert len(responses) == len(entries)
        return responses

    # --- both sides
    def applied_index(self) -> int:
        with self._env.begin() as txn:
            return StoreTxn(txn, self._dbs).applied_index()

    def current_revision(self) -> int:
        with self._env.begin() as txn:
            return StoreTxn(txn, self._dbs).current_revision()

    def compact_revision(self) -> int:
        """0 if never compacted."""
        with self._env.begin() as txn:
            return max(StoreTxn(txn, self._dbs).compact_revision(), 0)

    def range(self, req: dict) -> dict:
        """A RangeResponse; raises StoreError (compacted, future_rev)."""
        with self._env.begin() as txn:
            tables = StoreTxn(txn, self._dbs)
            return range_response(tables, req, tables.current_revision())

    def hash_kv(self, revision: int) -> tuple[int, int, int]:
        """(hash, compact_revision, current_revision) as etcd's HashKV; revision 0 = current.

        The hash is zlib crc32 (IEEE, not etcd's Castagnoli) over every stored
        revision <= `revision`: equal on members that applied the same log.
        """
        with self._env.begin() as txn:
            tables = StoreTxn(txn, self._dbs)
            current_rev, compact_rev = tables.current_revision(), tables.compact_revision()
            if 0 < revision <= compact_rev:
                raise compacted()
            if revision > current_rev:
                raise future_rev()
            return tables.hash(revision or current_rev), max(compact_rev, 0), current_rev

    def digest(self) -> tuple[int, int, int]:
        """(hash, current_revision, entries) for etcd's Hash and `snapshot status`: crc32 over every
        table of the store, the bookkeeping (applied index) included, so members agree only at the
        same log position; entries counts the records of all tables."""
        with self._env.begin() as txn:
            crc, entries = 0, 0
            for name, db in self._dbs._asdict().items():
                if not isinstance(db, lmdb._Database):
                    continue  # not a table (e.g. max_key_bytes)
                crc = zlib.crc32(name.encode(), crc)
                for key, value in txn.cursor(db=db).iternext(keys=True, values=True):
                    crc = zlib.crc32(value, zlib.crc32(key, crc))
                    entries += 1
            return crc, StoreTxn(txn, self._dbs).current_revision(), entries

    def forget_raft_position(self) -> None:
        """For a store restored from a backup into a new cluster: its entries count from 0 again
        (the applied index) and the proposals it remembers belong to the old log."""
        assert not self._readonly
        with self._env.begin(write=True) as txn:
            StoreTxn(txn, self._dbs).forget_raft_position()

    def copy_to(self, path: str) -> None:
        """A compacted, consistent copy of the store (one read transaction) in the file `path`;
        works on a read-only store too, so the gateway can take backups."""
        with open(path, "wb") as f:
            self._env.copyfd(f.fileno(), compact=True)
            f.flush()
            os.fsync(f.fileno())

    def db_size_bytes(self) -> tuple[int, int]:
        """(file size, bytes in pages holding data), for etcd Status's dbSize and dbSizeInUse."""
        with self._env.begin() as txn:
            used_pages = StoreTxn(txn, self._dbs).used_pages(self._env.stat())
        size_bytes = os.path.getsize(os.path.join(self._env.path(), "data.mdb"))
        return size_bytes, used_pages * self._env.stat()["psize"]

    # --- watch history and leases
    def events(self, from_rev: int, to_rev: int, max_revisions: int = 1000) -> list[list]:
        """Watch events of revisions [from_rev, to_rev] (see history.events); raises compacted."""
        with self._env.begin() as txn:
            tables = StoreTxn(txn, self._dbs)
            if from_rev < tables.compact_revision():  # the compaction revision itself is whole
                raise compacted()
            return events(tables, from_rev, min(to_rev, tables.current_revision()), max_revisions)

    def leases(self) -> list[tuple[int, int]]:
        """(lease id, granted TTL seconds) of every lease."""
        with self._env.begin() as txn:
            return StoreTxn(txn, self._dbs).leases()

    def lease_info(self, lease_id: int) -> tuple[int, list[bytes]] | None:
        """(granted TTL, attached keys) of a lease, or None."""
        with self._env.begin() as txn:
            tables = StoreTxn(txn, self._dbs)
            ttl = tables.lease_ttl(lease_id)
            return None if ttl is None else (ttl, tables.lease_keys(lease_id))

    # --- snapshots (a follower too far behind gets the whole store)
    def create_snapshot(self, path: str) -> int:
        """Write a consistent copy of the store to the file `path`; returns its applied index."""
        assert not self._readonly
        with self._env.begin() as txn:
            applied = StoreTxn(txn, self._dbs).applied_index()
        # Only this (single-writer) process writes, and not while copying: the copy is at `applied`.
        with open(path, "wb") as f:
            self._env.copyfd(f.fileno(), compact=True)
        return applied

    def install_snapshot(self, path: str) -> None:
        """Replace every table with the snapshot file's, in one write transaction (readers see old or new)."""
        assert not self._readonly
        src_env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=DB_COUNT)
        try:
            src_dbs = open_databases(src_env, create=False)
            with self._env.begin(write=True) as dst, src_env.begin() as src:
                for name in src_dbs._fields:
                    src_db, dst_db = getattr(src_dbs, name), getattr(self._dbs, name)
                    if not isinstance(src_db, lmdb._Database):
                        continue  # not a table (e.g. max_key_bytes)
                    dst.drop(dst_db, delete=False)
                    cursor = src.cursor(db=src_db)
                    dst.cursor(db=dst_db).putmulti(cursor.iternext(keys=True, values=True), dupdata=True, append=False)
        finally:
            src_env.close()


def _apply_request(tables: StoreTxn, req: dict) -> dict:
    op = req.get("op")
    if op == "put":
        return _put(tables, req)
    if op == "delete_range":
        txn = WriteTxn(tables)
        response = writes.delete_range(txn, req)
        return {"revision": txn.end(), **response}
    if op == "txn":
        return _txn(tables, req)
    if op == "compact":
        return _compact(tables, req)
    if op == "range":
        return range_response(tables, req, tables.current_revision())
    if op == "lease_grant":
        if tables.lease_exists(req["ID"]):
            raise lease_exists()
        tables.put_lease(req["ID"], req["TTL"])
        return {"revision": tables.current_revision(), "ID": req["ID"], "TTL": req["TTL"]}
    if op == "lease_revoke":
        return _lease_revoke(tables, req["ID"])
    if op == "noop":  # an empty Raft entry (a new leader's first): only the applied index moves
        return {"revision": tables.current_revision()}
    raise ValueError(f"not a KV request: {op!r}")


def _lease_revoke(tables: StoreTxn, lease_id: int) -> dict:
    """Delete the lease and every key attached to it, in one revision."""
    if not tables.lease_exists(lease_id):
        raise lease_not_found()
    txn = WriteTxn(tables)
    for key in tables.lease_keys(lease_id):
        txn.delete_range(key, b"")
    tables.delete_lease(lease_id)
    return {"revision": txn.end()}


def _put(tables: StoreTxn, req: dict) -> dict:
    writes.check_key_length(tables, req.get("key", b""))
    writes.check_lease(tables, req.get("lease", 0))
    txn = WriteTxn(tables)
    response = writes.put(txn, req)
    return {"revision": txn.end(), **response}


def _txn(tables: StoreTxn, req: dict) -> dict:
    current_rev = tables.current_revision()
    path = txns.choose_path(tables, req, current_rev)
    txns.check_path(tables, path, current_rev, tables.compact_revision())
    txn = WriteTxn(tables)
    response = txns.execute_path(txn, path)
    return {"revision": txn.end(), **response}


def _compact(tables: StoreTxn, req: dict) -> dict:
    """etcd's compactMainRev starts at -1, so a fresh store can compact revision 0."""
    revision = req.get("revision", 0)
    if revision <= tables.compact_revision():
        raise compacted()
    if revision > tables.current_revision():
        raise future_rev()
    tables.compact(revision)
    tables.set_compact_revision(revision)
    return {"revision": tables.current_revision()}
