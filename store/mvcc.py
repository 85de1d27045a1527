"""The MVCC key-value store: one writer (the apply actor), any number of read-only processes.

Known differences from etcd:
- keys longer than LMDB's max key size (511 bytes) are rejected (StoreError "key_too_long");
- compaction sets the compact revision at once and drops its records COMPACT_STEP_RECORDS per
  empty entry applied after it (the leader appends them while it lasts), physical or not (the apply
  actor answers a physical one once they are gone);
- hash_kv is zlib crc32 over petcd's own encoding, comparable between petcd members only;
- sorting ties keep key order (stable sort); etcd's Go sort.Sort does so for <= 12 results.
"""

import os
import shutil
import zlib


import lmdb

from . import auth
from . import txn as txns
from . import writes
from .errors import StoreError, compacted, corrupt, future_rev, lease_exists, lease_not_found, no_space
from .fsync import fsync_dir
from .history import events
from .reads import range_response
from .records import CorruptRecord, hashed_bytes
from .records import check as check_record
from .tables import DB_COUNT, StoreTxn, open_databases
from .writes import WriteTxn


# How far back (in log entries) a duplicated proposal is recognised.
DEDUP_WINDOW_ENTRIES = 100_000

# etcd's AlarmType and AlarmRequest.AlarmAction values.
ALARM_NONE, ALARM_NOSPACE, ALARM_CORRUPT = 0, 1, 2
# Records a compaction examines per empty entry applied (see StoreTxn.compact_step): what it adds to
# one batch's apply, so a compaction of a million revisions never holds up writes for long. With
# 200,000 revisions under 200 Puts/s, 1000 then 500 per step: Put p99 10.1 then 6.1 ms, the
# compaction 1.75 then 2.0 s (etcd 3.4: 3.8 ms, 4.7 s; README, Scale).
COMPACT_STEP_RECORDS = 500
ALARM_GET, ALARM_ACTIVATE, ALARM_DEACTIVATE = 0, 1, 2
# etcd's quota cost estimates (etcdserver/quota.go): per put and per lease.
KV_OVERHEAD_BYTES = 256
LEASE_OVERHEAD_BYTES = 64
DEFAULT_QUOTA_BYTES = 2 << 30  # etcd's DefaultQuotaBytes


def map_size_for_quota(quota_bytes: int) -> int:
    """The LMDB map for a member with this space quota (0: etcd's default, < 0: none).

    The apply actor refuses a write once the store's logical size (see StoreTxn.logical_bytes)
    would pass the quota; LMDB pages hold that at most about twice over (half-full B-tree pages,
    overflow pages rounded up), so four times the quota plus 64 MiB leaves room for whatever
    must always fit afterwards: deletes, compactions, alarms, lease revocations."""
    if quota_bytes < 0:
        return 8 << 30
    return 4 * (quota_bytes or DEFAULT_QUOTA_BYTES) + (64 << 20)


def request_cost(req: dict) -> int:
    """etcd's quota cost of a request: puts (top-level txn puts: the larger branch) and lease
    grants weigh something, everything else (reads, deletes, compactions, revocations) nothing."""
    op = req.get("op")
    if op == "put":
        return _put_cost(req)
    if op == "lease_grant":
        return LEASE_OVERHEAD_BYTES
    if op == "txn":
        return max(sum(_put_cost(o["request_put"]) for o in req.get(branch, []) if "request_put" in o)
                   for branch in ("success", "failure"))
    return 0


# What etcd 3.4's applierV3Corrupt refuses: Put, Range (through Raft), DeleteRange, Txn (a read-only
# txn never reaches it: etcd serves those outside Raft, from applyV3Base), Compaction, LeaseGrant,
# LeaseRevoke.
_REFUSED_WHILE_CORRUPT = frozenset({"put", "range", "delete_range", "txn", "compact", "lease_grant", "lease_revoke"})


def is_refused_while_corrupt(req: dict) -> bool:
    op = req.get("op")
    if op == "txn":
        return not _txn_read_only(req)
    return op in _REFUSED_WHILE_CORRUPT


def _txn_read_only(req: dict) -> bool:
    """etcd's isTxnReadonly: every op of both branches is a Range (a nested txn is not)."""
    return all("request_range" in op for branch in ("success", "failure") for op in req.get(branch, []))


def _put_cost(put: dict) -> int:
    return KV_OVERHEAD_BYTES + len(put.get("key", b"")) + len(put.get("value", b"")) + 16


class MapFull(RuntimeError):
    """The LMDB map cannot take the batch: the member must stop (see MvccStore.apply)."""


class MvccStore:
    """An LMDB environment (a directory) holding etcd's MVCC key space.

    Durability: a commit syncs its pages, not its meta page (LMDB's MDB_NOMETASYNC: one fdatasync
    per commit, not two). That meta page reaches the disk with the next commit's sync, so a power
    loss may undo the last commit, never corrupt the store; the Raft log still holds what it undoes,
    as the Raft actor compacts it only below durable_applied_index(). What is acknowledged is durable
    in the Raft log first. The simulator's disk (sim/disk.py) plays that undo on a power loss.
    """

    def __init__(
        self, path: str, *, readonly: bool = False, map_size_bytes: int = 8 << 30,
        sync: bool = True,
    ) -> None:
        """readonly=True reads a store another process writes; it must exist.

        Readers should use the writer's map_size_bytes.
        """
        self._readonly = readonly
        self._dir = path
        self._map_size = map_size_bytes
        self._sync = sync
        self._data_path = os.path.join(path, "data.mdb")
        self._retired: lmdb.Environment | None = None  # a reader's previous env, after a defragmentation
        if not readonly:
            _finish_defragment(path)
        self._open()
        if not readonly:
            # What a crashed process left (its last meta page may be in the page cache only) is made
            # durable before anything is counted durable.
            self._sync_meta()

    def _open(self) -> None:
        env = lmdb.open(
            self._dir, subdir=True, readonly=self._readonly, create=not self._readonly, map_size=self._map_size,
            max_dbs=DB_COUNT, sync=self._sync, metasync=False,
        )
        try:
            dbs = open_databases(env, create=not self._readonly)
            inode = os.stat(self._data_path).st_ino
        except BaseException:
            env.close()
            raise
        self._env, self._dbs, self._inode = env, dbs, inode

    def _follow_writer(self) -> None:
        """A read-only store follows its writer's defragmentation (a new file under the same path):
        the writer marks the old file superseded once the new one is in place (see defragment), and
        until a reader sees that mark, it reads the old copy, which is still whole. Checking the mark
        costs a reader one lookup in a transaction it opens anyway, where a stat of the path cost a
        system call per read."""
        try:
            inode = os.stat(self._data_path).st_ino
        except FileNotFoundError:
            return
        if inode == self._inode:
            return
        old = self._env
        try:
            self._open()
        except lmdb.Error:
            return
        if self._retired is not None:
            self._retired.close()
        self._retired = old  # a backup thread may still be copying from it

    @property
    def env(self) -> lmdb.Environment:
        return self._env

    def _begin(self) -> lmdb.Transaction:
        txn = self._env.begin()
        if self._readonly and StoreTxn(txn, self._dbs).superseded():
            txn.abort()
            self._follow_writer()
            txn = self._env.begin()
        return txn

    def _write(self):
        """A write transaction (commits on leaving the `with` block, aborts on an exception): every
        commit of the store goes through here, so a simulated disk can model it (sim/disk.py)."""
        return self._env.begin(write=True)

    def _applied_before_batch(self, tables: StoreTxn) -> int:
        """The applied index an apply batch starts from (a seam tests use to plant a bug)."""
        return tables.applied_index()

    def _sync_meta(self) -> None:
        """Make every commit durable now, the last one's meta page included (a seam: the simulator's disk records it)."""
        if self._sync:
            self._env.sync(True)
        self._durable_applied = self._committed_applied = self.applied_index()

    def durable_applied_index(self) -> int:
        """The applied index no power loss can take back: the one of the commit before the last,
        whose meta page the last commit's sync carried to the disk (see the class docstring)."""
        return self._durable_applied

    def close(self) -> None:
        # No sync: the next open makes the last commit durable (as after a crash, which closes nothing).
        self._env.close()
        if self._retired is not None:
            self._retired.close()
            self._retired = None

    @property
    def path(self) -> str:
        """The store's directory."""
        return self._dir

    def defragment(self) -> None:
        """etcd's Defragment: the store rewritten compactly (LMDB's compacting copy) into a new
        file that replaces the old one, so the file shrinks to what the data needs. The copy is
        durable before it replaces the store; _finish_defragment completes a swap a crash cut short."""
        if self._readonly:
            raise RuntimeError("defragment: a read-only store cannot be defragmented")
        new_dir, old_dir = self._dir + ".defrag", self._dir + ".old"
        shutil.rmtree(new_dir, ignore_errors=True)
        os.makedirs(new_dir)
        with open(os.path.join(new_dir, "data.mdb"), "wb") as f:
            self._env.copyfd(f.fileno(), compact=True)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(new_dir)
        os.rename(self._dir, old_dir)
        os.rename(new_dir, self._dir)
        fsync_dir(os.path.dirname(os.path.abspath(self._dir)))
        # Readers still on the old file learn from it that it is gone (see _follow_writer). Straight
        # on the environment, not through _write: the file is dropped next, durable or not.
        with self._env.begin(write=True) as txn:
            StoreTxn(txn, self._dbs).mark_superseded()
        self._env.close()
        shutil.rmtree(old_dir, ignore_errors=True)
        self._open()

    # --- writer side
    def apply(self, entries: list[tuple[int, dict]] | list[tuple[int, dict, bytes | None]], *,
              compact_step_records: int | None = None, events: list[list] | None = None) -> list[dict | None]:
        """Applies committed log entries (raft_index, request[, request_key]) in one LMDB write txn.

        `events`, if given, receives the watch events of the revisions the batch made, as
        events() reads them back ([[revision, [event, ...]], ...]), once the batch is committed.

        Entries at or below the applied index are skipped (None). So is an entry
        whose request_key was applied within the last DEDUP_WINDOW_ENTRIES entries:
        the network delivered its proposal twice (None). A request failing
        with StoreError changes nothing and yields {"error": name, "code": grpc_code,
        "message": message}. {"op": "noop"} (an empty raft entry) only advances the
        applied index. Unknown ops raise ValueError and nothing of the batch is applied.

        Corruption (etcd's applierV3Corrupt): while a CORRUPT alarm is raised, the requests etcd's
        corrupt applier refuses (see is_refused_while_corrupt) fail with "etcdserver: corrupt
        cluster" (DATA_LOSS) and change nothing; alarms, auth changes and empty entries still apply.

        Space (etcd's quota): while a NOSPACE alarm is raised, requests that cost space (see
        request_cost) fail with no_space; so does one carrying "quota" that would take the store's
        logical size past it, and it raises the alarm for "alarm_member" -- both decided from the
        store alone, so every member decides alike. Should the LMDB map still fill up (which one
        member's disk decides, not the log), apply raises MapFull and nothing of the batch is
        applied: the member must stop, as etcd's does when its backend cannot commit, and applies
        the batch after a restart with a larger map. (Recording the entry as failed on this member
        alone made members differ: found by the simulator's disk-full fault, seed 8.)
        """
        assert not self._readonly
        try:
            responses = self._apply_batch(entries, COMPACT_STEP_RECORDS if compact_step_records is None else compact_step_records, events)
        except lmdb.MapFullError:
            raise MapFull(
                f"apply: the LMDB map of {self.path} is full at entries {entries[0][0]}..{entries[-1][0]}; "
                "restart the member with a larger --quota-backend-bytes") from None
        if entries and entries[-1][0] > self._committed_applied:
            # The batch moved the applied index, so it committed and synced, carrying the previous
            # commit's meta page with it. (A batch of entries all applied before commits nothing.)
            self._durable_applied, self._committed_applied = self._committed_applied, entries[-1][0]
        return responses

    def _apply_batch(self, entries: list, compact_step_records: int, events: list[list] | None) -> list[dict | None]:
        responses: list[dict | None] = []
        batch_events: list[list] | None = None if events is None else []
        with self._write() as parent:
            tables = StoreTxn(parent, self._dbs)
            applied_index = self._applied_before_batch(tables)
            for raft_index, request, *key in entries:
                if raft_index <= applied_index:
                    responses.append(None)
                    continue
                if raft_index != applied_index + 1:
                    # Applying past a hole would silently lose a committed entry on this member.
                    raise RuntimeError(f"apply: entry {raft_index} follows applied index {applied_index}: a committed entry is missing")
                # A compaction in progress goes one step further per empty entry (the leader appends one
                # at a time while it lasts): at the same log positions on every member, so their stores
                # (and logical sizes, which the quota reads) stay alike. Not per write: a batch of
                # many writes took as many steps, and each write in it waited for all of them.
                if request.get("op") == "noop":
                    tables.compact_step(compact_step_records)
                request_key = key[0] if key else None
                if request_key is not None and not tables.remember_request(request_key, raft_index):
                    responses.append(None)
                    applied_index = raft_index
                    continue
                applied_index = raft_index
                if is_refused_while_corrupt(request) and tables.has_alarm(ALARM_CORRUPT):
                    responses.append(_error(corrupt()))
                    continue
                cost = request_cost(request)
                if cost and tables.has_alarm(ALARM_NOSPACE):
                    responses.append(_error(no_space()))
                    continue
                if cost and "quota" in request and tables.logical_bytes() + cost > request["quota"]:
                    tables.activate_alarm(request.get("alarm_member", 0), ALARM_NOSPACE)
                    responses.append(_error(no_space()))
                    continue
                request_events: list[list] | None = None if batch_events is None else []
                try:
                    with self._env.begin(write=True, parent=parent) as child:
                        responses.append(_apply_request(StoreTxn(child, self._dbs, request_events), request))
                except StoreError as err:
                    responses.append(_error(err))
                else:
                    if request_events:
                        batch_events.extend(request_events)  # type: ignore[union-attr]
            if applied_index > tables.applied_index():
                tables.set_applied_index(applied_index)
                tables.forget_requests_before(applied_index - DEDUP_WINDOW_ENTRIES)
        if len(responses) != len(entries):
            raise RuntimeError(f"apply: {len(responses)} responses for {len(entries)} entries")
        if events is not None and batch_events:
            events.extend(batch_events)
        return responses

    def alarms(self) -> list[tuple[int, int]]:
        """(member id, alarm type) of every raised alarm."""
        with self._begin() as txn:
            return StoreTxn(txn, self._dbs).alarms()

    # --- both sides
    def applied_index(self) -> int:
        with self._begin() as txn:
            return StoreTxn(txn, self._dbs).applied_index()

    def current_revision(self) -> int:
        with self._begin() as txn:
            return StoreTxn(txn, self._dbs).current_revision()

    def compaction_pending(self) -> bool:
        """Is a compaction still dropping records (a step per empty entry applied)?"""
        with self._begin() as txn:
            return StoreTxn(txn, self._dbs).compaction_pending()

    def compact_revision(self) -> int:
        """0 if never compacted."""
        with self._begin() as txn:
            return max(StoreTxn(txn, self._dbs).compact_revision(), 0)

    def range(self, req: dict) -> dict:
        """A RangeResponse; raises StoreError (compacted, future_rev, the auth errors when the
        request carries "auth" and its user may not read the range, and corrupt when a record it
        reads fails its checksum)."""
        with self._begin() as txn:
            tables = StoreTxn(txn, self._dbs)
            if "auth" in req:
                auth.check_op(tables.auth(), req["auth"], req.get("key", b""), req.get("range_end", b""), auth.READ)
            try:
                return range_response(tables, req, tables.current_revision())
            except CorruptRecord:
                raise corrupt() from None  # never served; the periodic check raises the alarm

    # --- auth (read side, for the gateway)
    def auth_state(self) -> tuple[bool, int, bytes]:
        """(enabled, auth revision, token secret)."""
        with self._begin() as txn:
            t = StoreTxn(txn, self._dbs).auth()
            return t.enabled(), t.revision(), t.secret()

    def auth_user(self, name: str) -> tuple[auth.User | None, int]:
        """The user (None if there is none) and the auth revision, read together."""
        with self._begin() as txn:
            t = StoreTxn(txn, self._dbs).auth()
            return t.user(name), t.revision()

    def check_permission(self, who: list, key: bytes, range_end: bytes, perm: int) -> None:
        """Raises the auth StoreError etcd gives if `who` ([user, auth revision]) may not."""
        with self._begin() as txn:
            auth.check_op(StoreTxn(txn, self._dbs).auth(), who, key, range_end, perm)

    def check_admin(self, who: list) -> None:
        """Raises the auth StoreError etcd gives if `who` is not root (auth enabled)."""
        with self._begin() as txn:
            auth.check_admin(StoreTxn(txn, self._dbs).auth(), who)

    def hash_kv(self, revision: int) -> tuple[int, int, int]:
        """(hash, compact_revision, current_revision) as etcd's HashKV; revision 0 = current.

        The hash is zlib crc32 (IEEE, not etcd's Castagnoli) over every stored
        revision <= `revision`: equal on members that applied the same log.
        """
        with self._begin() as txn:
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
        with self._begin() as txn:
            crc, entries = 0, 0
            for name, db in self._dbs._asdict().items():
                if not isinstance(db, lmdb._Database):
                    continue  # not a table (e.g. max_key_bytes)
                crc = zlib.crc32(name.encode(), crc)
                for key, value in txn.cursor(db=db).iternext(keys=True, values=True):
                    crc = zlib.crc32(hashed_bytes(value) if name == "revs" else value, zlib.crc32(key, crc))
                    entries += 1
            return crc, StoreTxn(txn, self._dbs).current_revision(), entries

    def bulk_load(self, fill) -> None:
        """Fill a new, empty store in one LMDB write transaction: fill(StoreTxn) writes the tables
        directly (an import, see store/etcd_import.py), not through apply; an exception commits nothing."""
        assert not self._readonly
        with self._write() as txn:
            tables = StoreTxn(txn, self._dbs)
            if tables.applied_index() or tables.current_revision() != 1 or txn.stat(self._dbs.revs)["entries"]:
                raise RuntimeError(f"bulk_load: the store {self._dir} is not empty")
            fill(tables)
        self._sync_meta()

    def forget_raft_position(self) -> None:
        """For a store restored from a backup into a new cluster: its entries count from 0 again
        (the applied index) and the proposals it remembers belong to the old log."""
        assert not self._readonly
        with self._write() as txn:
            StoreTxn(txn, self._dbs).forget_raft_position()
        self._sync_meta()

    def copy_to(self, path: str) -> None:
        """A compacted, consistent copy of the store (one read transaction) in the file `path`;
        works on a read-only store too, so the gateway can take backups."""
        self._begin().abort()  # a reader first follows a defragmentation (see _follow_writer)
        with open(path, "wb") as f:
            self._env.copyfd(f.fileno(), compact=True)
            f.flush()
            os.fsync(f.fileno())

    def file_size_bytes(self) -> int:
        """The database file's size (etcd's backend Size, which its space quota is checked against):
        the file at the store's path, the writer's current one."""
        return os.path.getsize(self._data_path)

    def db_size_bytes(self) -> tuple[int, int]:
        """(file size, bytes in pages holding data), for etcd Status's dbSize and dbSizeInUse."""
        with self._begin() as txn:
            used_pages = StoreTxn(txn, self._dbs).used_pages(self._env.stat())
        size_bytes = os.path.getsize(self._data_path)
        return size_bytes, used_pages * self._env.stat()["psize"]

    # --- watch history and leases
    def events(self, from_rev: int, to_rev: int, max_revisions: int = 1000) -> list[list]:
        """Watch events of revisions [from_rev, to_rev] (see history.events); raises compacted."""
        with self._begin() as txn:
            tables = StoreTxn(txn, self._dbs)
            if from_rev < tables.compact_revision():  # the compaction revision itself is whole
                raise compacted()
            return events(tables, from_rev, min(to_rev, tables.current_revision()), max_revisions)

    def leases(self) -> list[tuple[int, int]]:
        """(lease id, granted TTL seconds) of every lease."""
        with self._begin() as txn:
            return StoreTxn(txn, self._dbs).leases()

    def lease_info(self, lease_id: int) -> tuple[int, list[bytes]] | None:
        """(granted TTL, attached keys) of a lease, or None."""
        with self._begin() as txn:
            tables = StoreTxn(txn, self._dbs)
            ttl = tables.lease_ttl(lease_id)
            return None if ttl is None else (ttl, tables.lease_keys(lease_id))

    # --- snapshots (a follower too far behind gets the whole store)
    def create_snapshot(self, path: str) -> int:
        """Write a consistent copy of the store to the file `path`; returns its applied index.
        Raises CorruptRecord, and copies nothing, if a revision record fails its checksum: a
        corrupt store is never handed to another member."""
        assert not self._readonly
        with self._begin() as txn:
            applied = StoreTxn(txn, self._dbs).applied_index()
            for _, data in txn.cursor(db=self._dbs.revs).iternext(keys=True, values=True):
                check_record(data)
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
            with self._write() as dst, src_env.begin() as src:
                for name in src_dbs._fields:
                    src_db, dst_db = getattr(src_dbs, name), getattr(self._dbs, name)
                    if not isinstance(src_db, lmdb._Database):
                        continue  # not a table (e.g. max_key_bytes)
                    dst.drop(dst_db, delete=False)
                    cursor = src.cursor(db=src_db)
                    dst.cursor(db=dst_db).putmulti(cursor.iternext(keys=True, values=True), dupdata=True, append=False)
        finally:
            src_env.close()
        self._sync_meta()  # the Raft actor drops its log up to the snapshot next


def _finish_defragment(path: str) -> None:
    """After a crash during MvccStore.defragment: the durable copy replaces the store if the
    store had already been moved aside; otherwise the store is whole and the copy is dropped."""
    new_dir, old_dir = path + ".defrag", path + ".old"
    if not os.path.exists(path) and os.path.exists(os.path.join(new_dir, "data.mdb")):
        os.rename(new_dir, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    shutil.rmtree(new_dir, ignore_errors=True)
    shutil.rmtree(old_dir, ignore_errors=True)



def _apply_request(tables: StoreTxn, req: dict) -> dict:
    op = req.get("op")
    auth.check_request(tables.auth(), req, tables.lease_keys)
    if op in auth.AUTH_OPS:
        return auth.apply(tables.auth(), req, tables.current_revision())
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
    if op == "alarm":
        return _alarm(tables, req)
    if op == "noop":  # an empty Raft entry (a new leader's first): only the applied index moves
        return {"revision": tables.current_revision()}
    raise ValueError(f"not a KV request: {op!r}")


def _error(err: StoreError) -> dict:
    return {"error": err.name, "code": err.grpc_code, "message": err.message}


def _alarm(tables: StoreTxn, req: dict) -> dict:
    """etcd's applierV3 Alarm: GET lists every alarm; ACTIVATE and DEACTIVATE answer the alarm they
    changed (none if it was already in that state)."""
    action, member, alarm = req.get("action", ALARM_GET), req.get("memberID", 0), req.get("alarm", ALARM_NONE)
    if action == ALARM_GET:
        changed = tables.alarms()
    elif action == ALARM_ACTIVATE:
        changed = [(member, alarm)] if tables.activate_alarm(member, alarm) else []
    elif action == ALARM_DEACTIVATE:
        changed = [(member, alarm)] if tables.deactivate_alarm(member, alarm) else []
    else:
        raise ValueError(f"not an alarm action: {action!r}")
    return {"revision": tables.current_revision(), "alarms": [{"memberID": m, "alarm": a} for m, a in changed]}


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
    # Its records go COMPACT_STEP_RECORDS per empty entry applied after it, physical or not: dropping a
    # million at once would hold up every write behind one transaction longer than the request
    # timeout. etcd answers a physical compaction once its records are gone: the apply actor waits
    # for that (its compaction_wait), the store applies both kinds alike.
    tables.start_compaction(revision)
    return {"revision": tables.current_revision()}
