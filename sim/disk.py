"""The simulator's disk: real LMDB and real files underneath, with the durability contract on top.

Each member has one `SimDisk` (it outlives the member's crashes). The stores
it hands out (the apply actor's MVCC store on LMDB, the Raft actor's
write-ahead log) write without syncing (fast), and the disk keeps, for each
MVCC store whose state got ahead of its last durable (synced) commit, a copy of
that durable state; for each Raft log segment, its durable length; likewise
the durable content of each file written without sync. Production syncs every
write, so in a correct petcd no copy is ever taken.

The faults it plays (sim/faults.py draws them from the seed):
- power loss (`disk-crash`): armed to strike after the next k writes (a store
  commit or a file write, synced ones included), it raises `PowerLoss` out of
  that write, mid-turn; the runtime crashes the member there (nothing of the
  turn is sent) and `power_loss` puts every store and file back to its durable
  state: each write not synced is lost (an LMDB commit is atomic, so a lost
  one is lost whole; of a Raft log segment's unsynced appends, the seed keeps
  none, all, or each 512-byte sector or not: torn writes the log must cut off). A crash (`crash`) is a process crash: the OS keeps what
  was written, synced or not.
- fsync failure (`fsync-fail`): the next synced write is made but not durable
  and raises (lmdb.Error, or OSError EIO for a file); the member must stop.
- full disk (`disk-full`): store commits fail with LMDB's MapFullError (the
  apply actor then stops its member: see MvccStore.apply) and file writes with
  ENOSPC, until it ends.
- a flipped byte (`corrupt`): one byte of one revision record of the MVCC store
  changes, durably, behind the store's back (`flip_record_byte`); `unflip` is
  the operator's repair. Every record carries a checksum (store/records.py).
- the MVCC store's deferred meta page: its commits sync their pages but not their meta page
  (MDB_NOMETASYNC, see store.mvcc.MvccStore), which the next commit's sync carries. So a power
  loss also undoes the last commit of an MVCC store whose meta page was not synced since: the file
  opens at the commit before, as LMDB's older meta page describes it (`undo_last_commit`).
- slow disk (`disk-slow`): each synced write costs `slow_ms` of virtual time
  and each read transaction of the MVCC store a tenth of it; the runtime makes
  the turn that did them last that long (sim/runtime.py). The Raft log's reads
  are not slowed (its entries are in memory, as etcd's are).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

import lmdb

from petcd.store.disk import read_file
from petcd.store.mvcc import MvccStore
from petcd.store.raftlog import RaftLog
from petcd.store.tables import DB_COUNT, open_databases


# LMDB's file starts with two meta pages (pages 0 and 1); each holds, after the 16-byte page header,
# an MDB_meta: magic, version, map address, map size, the free and main trees' roots (the free one's
# pad is the page size), the last page used, and the transaction id (64-bit builds). LMDB opens at the
# meta page with the higher transaction id; the other describes the commit before, whose pages LMDB
# keeps until the next commit.
_META_OFFSET = 16
_META = struct.Struct("<IIQQ")  # magic, version, address, map size
_META_BYTES = 136
_META_PSIZE_OFFSET = _META_OFFSET + 24  # mm_dbs[FREE_DBI].md_pad
_META_TXNID_OFFSET = _META_OFFSET + 128
_LMDB_MAGIC = 0xBEEFC0DE


def undo_last_commit(data_path: str) -> None:
    """The LMDB file `data_path` as a power loss leaves it when its last commit's meta page never
    reached the disk: that page holds the commit before again, so the file opens there."""
    with open(data_path, "r+b") as f:
        first = f.read(_META_OFFSET + _META_BYTES)
        magic = _META.unpack_from(first, _META_OFFSET)[0]
        if magic != _LMDB_MAGIC:
            raise RuntimeError(f"{data_path}: not an LMDB file this model knows (meta magic {magic:#x})")
        page_bytes = struct.unpack_from("<I", first, _META_PSIZE_OFFSET)[0]
        f.seek(page_bytes)
        second = f.read(_META_OFFSET + _META_BYTES)
        if _META.unpack_from(second, _META_OFFSET)[0] != _LMDB_MAGIC:
            raise RuntimeError(f"{data_path}: its second meta page is not LMDB's (page size {page_bytes}?)")
        txnids = [struct.unpack_from("<Q", page, _META_TXNID_OFFSET)[0] for page in (first, second)]
        newest = 0 if txnids[0] > txnids[1] else 1
        older = (first, second)[1 - newest]
        f.seek(newest * page_bytes + _META_OFFSET)
        f.write(older[_META_OFFSET:_META_OFFSET + _META_BYTES])


_SECTOR_BYTES = 512  # what a disk writes whole


def _lose_segment_writes(path: str, durable_bytes: int | None, rng: random.Random) -> None:
    """A Raft log segment as a power loss leaves it; a segment not durably created is gone. Of what
    was written after its durable part and not synced, the seed picks: none of it (nor the file's
    new size), all of it, or each 512-byte sector whole or not at all, the others reading as zeros
    (as in a preallocated file). The log must open on any of them (store.raftlog: a torn record is
    cut off, and whatever follows it)."""
    if durable_bytes is None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    with open(path, "r+b") as f:
        f.seek(durable_bytes)
        written = bytearray(f.read())
        shape = rng.choice(("none", "all", "sectors"))
        if shape == "none":
            f.truncate(durable_bytes)
            return
        if shape == "all":
            return
        end = durable_bytes + len(written)
        for start in range(durable_bytes // _SECTOR_BYTES * _SECTOR_BYTES, end, _SECTOR_BYTES):
            if rng.random() < 0.5:
                lo, hi = max(start, durable_bytes), min(start + _SECTOR_BYTES, end)
                written[lo - durable_bytes:hi - durable_bytes] = bytes(hi - lo)  # the sector's old content
        f.seek(durable_bytes)
        f.write(written)


def _drop_lock_file(store_dir: str) -> None:
    """LMDB's reader table does not outlive a power loss (it is rebuilt on the next open)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(store_dir, "lock.mdb"))


class PowerLoss(BaseException):
    """Raised out of a write the power went out after; only the simulation runtime catches it.

    A BaseException, so no `except Exception` in an actor can carry on past it."""


class SimMvccStore(MvccStore):
    """An MvccStore on a `SimDisk`: its commits go through the disk, which keeps what they made
    durable; its reads cost a slow disk's time too."""

    sync_wanted: bool  # whether each commit must be durable when it returns (what LMDB's sync would do)

    def __init__(self, disk: SimDisk, path: str, *, map_size_bytes: int, sync: bool) -> None:
        self._disk, self.sync_wanted = disk, sync
        super().__init__(path, sync=False, map_size_bytes=map_size_bytes)
        disk.opened(self)

    def _write(self) -> Any:
        return _SimWriteTxn(self._disk, self)

    def close(self) -> None:
        super().close()
        self._disk.closed(self)

    def _begin(self) -> lmdb.Transaction:
        self._disk.busy_ms += self._disk.slow_ms // 10
        return super()._begin()

    def defragment(self) -> None:
        super().defragment()  # copies, fsyncs and swaps the file itself: durable when it returns
        self._disk.made_durable(self)

    def _sync_meta(self) -> None:
        if self.sync_wanted:
            self._disk.made_durable(self)  # an explicit sync: the last commit's meta page too
        super()._sync_meta()

    @property
    def revs_table(self) -> Any:
        return self._dbs.revs


class SimRaftLog(RaftLog):
    """A RaftLog on a `SimDisk`: it writes its segments unsynced, and the disk keeps, for each
    segment holding writes not synced, the length of it that is durable. Its segments are small,
    so that runs start new ones and remove compacted ones under the faults."""

    SEGMENT_BYTES = 8 << 10

    def __init__(self, disk: SimDisk, path: str, *, sync: bool) -> None:
        self._disk, self.sync_wanted = disk, sync
        super().__init__(path, sync=False, segment_bytes=self.SEGMENT_BYTES)
        disk.opened(self)

    def close(self) -> None:
        super().close()
        self._disk.closed(self)

    def _create_segment(self, path: str, data: bytes) -> int:
        durable = self._judge_write(path, None)
        fd = super()._create_segment(path, data)
        try:
            self._judged(path, durable)
        except BaseException:  # a failed fsync or a power loss: the log never takes the segment up
            os.close(fd)
            raise
        return fd

    def _append(self, data: bytes) -> None:
        durable = self._judge_write(self._segment_path, self._offset)
        super()._append(data)
        self._judged(self._segment_path, durable)

    def _remove_segment(self, path: str) -> None:
        super()._remove_segment(path)
        self._disk.file_synced(path)  # the directory is synced after a removal: it stays removed

    def _judge_write(self, path: str, durable_bytes: int | None) -> bool:
        """Before a write to `path`: whether it will be durable; if not, remember what is
        (`durable_bytes` of the file, None: the file does not exist durably)."""
        disk = self._disk
        if disk.full:
            disk.counts["enospc"] += 1
            raise OSError(errno.ENOSPC, f"simulated disk full writing {path}")
        durable = self.sync_wanted and not disk.fail_next_sync
        if not durable:
            disk.keep_durable_length(path, durable_bytes)
        return durable

    def _judged(self, path: str, durable: bool) -> None:
        disk = self._disk
        if durable:
            disk.file_synced(path)
        elif self.sync_wanted:  # the fsync failed: the write is in the page cache only
            disk.fail_next_sync = False
            disk.counts["fsync_failed"] += 1
            raise OSError(errno.EIO, f"simulated fsync failure writing {path}")
        disk.wrote()


class _SimWriteTxn:
    """`with store._write() as txn`: a write transaction whose commit the disk judges."""

    def __init__(self, disk: SimDisk, store: SimMvccStore) -> None:
        self._disk, self._store = disk, store
        self._txn: lmdb.Transaction | None = None
        self._txnid_before = 0
        self._durable = False

    def __enter__(self) -> lmdb.Transaction:
        disk, store = self._disk, self._store
        if disk.full:
            disk.counts["map_full"] += 1
            raise lmdb.MapFullError("simulated disk full: mdb_put: MDB_MAP_FULL")
        self._durable = store.sync_wanted and not disk.fail_next_sync
        if not self._durable:
            disk.keep_durable_state(store)
        self._txn = store.env.begin(write=True)
        self._txnid_before = store.env.info()["last_txnid"]
        return self._txn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        txn, self._txn = self._txn, None
        assert txn is not None
        if exc_type is not None:
            txn.abort()
            return False
        txn.commit()
        disk, store = self._disk, self._store
        if store.env.info()["last_txnid"] == self._txnid_before:
            # LMDB commits nothing for a transaction that changed nothing: no page, no meta page, no
            # sync, so it neither makes earlier commits durable nor can its sync fail.
            disk.wrote()
            return False
        if self._durable:
            disk.made_durable(store)
            if isinstance(store, SimMvccStore):
                disk.meta_pending.add(store.path)  # its pages are synced, its meta page is not
        elif store.sync_wanted:  # the fsync failed: the commit is in the page cache only
            disk.fail_next_sync = False
            disk.counts["fsync_failed"] += 1
            raise lmdb.DiskError(f"simulated fsync failure committing to {store.path}: Input/output error")
        disk.wrote()
        return False


@dataclass(frozen=True, slots=True)
class Flip:
    """A byte flipped in one revision record of a member's MVCC store (the `corrupt` fault)."""

    path: str  # the store's directory
    rev_key: bytes  # the record's key in the revs table
    offset: int
    mask: int  # XORed into the byte at `offset`
    corrupted: bytes  # the record as the flip left it


def _xor_record(env: lmdb.Environment, revs: Any, flip: Flip) -> bool:
    """Undo `flip` in one environment, if the record is still as the flip left it."""
    with env.begin(write=True) as txn:
        data = txn.get(flip.rev_key, db=revs)
        if data != flip.corrupted:
            return False
        fixed = bytearray(data)
        fixed[flip.offset] ^= flip.mask
        txn.put(flip.rev_key, bytes(fixed), db=revs)
        return True


def _get(env: lmdb.Environment, revs: Any, key: bytes) -> bytes | None:
    with env.begin() as txn:
        return txn.get(key, db=revs)


class SimDisk:
    """One member's disk (see the module docstring)."""

    # What open_mvcc and open_raftlog hand out; a test plants a bug by putting a subclass here (tests/test_sim_disk.py).
    mvcc_class: type[SimMvccStore] = SimMvccStore
    raftlog_class: type[SimRaftLog] = SimRaftLog

    def __init__(self, member: str, rng: random.Random | None = None) -> None:
        self.member = member
        self._rng = rng or random.Random(f"disk/{member}")  # what a power loss keeps of unsynced appends
        self._durable_copies: dict[str, str] = {}  # store dir -> dir holding a copy of its durable state
        self._durable_files: dict[str, bytes | None] = {}  # file -> its durable content (None: absent)
        self._durable_lengths: dict[str, int | None] = {}  # Raft log segment -> its durable length (None: absent)
        self.meta_pending: set[str] = set()  # MVCC store dirs whose last commit's meta page is not durable
        self._open: list[SimMvccStore | SimRaftLog] = []
        self.power_loss_after: int | None = None  # writes until the power goes out (None: not armed)
        self.fail_next_sync = False
        self.full = False
        self.slow_ms = 0  # what a synced write costs (a tenth of it, a read); 0: a fast disk
        self.busy_ms = 0  # what the current turn's disk work cost (the runtime takes it after the turn)
        self.counts: Counter[str] = Counter()  # "writes", "map_full", "fsync_failed", "power_losses", "lost_commits"...

    # -- Disk (store/disk.py)
    def open_mvcc(self, path: str, *, map_size_bytes: int, sync: bool = True) -> MvccStore:
        store = self.mvcc_class(self, path, map_size_bytes=map_size_bytes, sync=sync)
        if sync:
            self.made_durable(store)  # synced as it opens (store/disk.py `Disk`)
        return store

    def open_raftlog(self, path: str, *, sync: bool = True) -> RaftLog:
        log = self.raftlog_class(self, path, sync=sync)
        if sync:  # synced as it opens (store/disk.py `Disk`)
            for segment in [p for p in self._durable_lengths if os.path.dirname(p) == path]:
                self.file_synced(segment)
        return log

    def write_file(self, path: str, data: bytes, *, sync: bool = True) -> None:
        if self.full:
            self.counts["enospc"] += 1
            raise OSError(errno.ENOSPC, f"simulated disk full writing {path}")
        durable = sync and not self.fail_next_sync
        if not durable and path not in self._durable_files:
            self._durable_files[path] = self.read_file(path)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        if durable:
            self._durable_files.pop(path, None)
            self.busy_ms += self.slow_ms
        elif sync:
            self.fail_next_sync = False
            self.counts["fsync_failed"] += 1
            raise OSError(errno.EIO, f"simulated fsync failure writing {path}")
        self.wrote()

    def read_file(self, path: str) -> bytes | None:
        return read_file(path)

    # -- used by SimMvccStore and SimRaftLog
    def opened(self, store: SimMvccStore | SimRaftLog) -> None:
        self._open.append(store)

    def closed(self, store: SimMvccStore | SimRaftLog) -> None:
        self._open = [s for s in self._open if s is not store]

    def keep_durable_length(self, path: str, durable_bytes: int | None) -> None:
        """Before a write to a Raft log segment that will not be durable: what of it is, unless known already."""
        self._durable_lengths.setdefault(path, durable_bytes)

    def file_synced(self, path: str) -> None:
        """A Raft log segment synced (or removed for good): all of it is durable."""
        self._durable_lengths.pop(path, None)
        self.counts["synced"] += 1
        self.busy_ms += self.slow_ms

    def keep_durable_state(self, store: SimMvccStore) -> None:
        """Before a commit that will not be durable: copy the store's durable state, unless held already."""
        if store.path in self._durable_copies:
            return
        copy_dir = store.path + ".durable"
        shutil.rmtree(copy_dir, ignore_errors=True)
        os.makedirs(copy_dir)
        if store.path in self.meta_pending:
            # The file as it is, less its last commit (whose meta page is not durable).
            shutil.copyfile(os.path.join(store.path, "data.mdb"), os.path.join(copy_dir, "data.mdb"))
            undo_last_commit(os.path.join(copy_dir, "data.mdb"))
            self.meta_pending.discard(store.path)
        else:
            store.env.copy(copy_dir)
        self._durable_copies[store.path] = copy_dir

    def made_durable(self, store: SimMvccStore) -> None:
        """A synced commit: everything the store holds is durable (the copy is no longer needed)."""
        self.meta_pending.discard(store.path)
        copy_dir = self._durable_copies.pop(store.path, None)
        if copy_dir is not None:
            shutil.rmtree(copy_dir, ignore_errors=True)
        self.counts["synced"] += 1
        self.busy_ms += self.slow_ms

    def take_busy_ms(self) -> int:
        """What the disk work since the last call cost (the runtime asks after each turn)."""
        busy, self.busy_ms = self.busy_ms, 0
        return busy

    def wrote(self) -> None:
        """After each write: strike if the power loss is due."""
        self.counts["writes"] += 1
        if self.power_loss_after is None:
            return
        self.power_loss_after -= 1
        if self.power_loss_after <= 0:
            self.power_loss_after = None
            raise PowerLoss(self.member)

    # -- used by the nemesis
    def flip_record_byte(self, rng: random.Random) -> Flip | None:
        """Flip a byte of a random revision record of the open MVCC store, durably (it is the
        medium that changed); None if there is no open store, no record, or unsynced commits (whose
        durable copy the flip would have to reach too)."""
        store = next((s for s in self._open if isinstance(s, SimMvccStore)), None)
        if store is None or store.path in self._durable_copies:
            return None
        # The flip is a write of its own, durable: the last commit's meta page went to the disk before it.
        self.meta_pending.discard(store.path)
        with store.env.begin(write=True) as txn:
            revs = store.revs_table
            count = txn.stat(revs)["entries"]
            if count == 0:
                return None
            cursor = txn.cursor(db=revs)
            cursor.first()
            for _ in range(rng.randrange(count)):
                cursor.next()
            key, data = cursor.key(), bytearray(cursor.value())
            offset, mask = rng.randrange(len(data)), rng.randint(1, 255)
            data[offset] ^= mask
            txn.put(key, bytes(data), db=revs)
        self.counts["flipped"] += 1
        return Flip(store.path, key, offset, mask, bytes(data))

    def still_flipped(self, flip: Flip) -> bool:
        """Is the record still as the flip left it (not compacted away, not repaired)?"""
        store = next((s for s in self._open if isinstance(s, SimMvccStore) and s.path == flip.path), None)
        if store is None:
            return self._with_closed_store(flip.path, lambda env, revs: _get(env, revs, flip.rev_key)) == flip.corrupted
        with store.env.begin() as txn:
            return txn.get(flip.rev_key, db=store.revs_table) == flip.corrupted

    def unflip(self, flip: Flip) -> bool:
        """The operator's repair, the member down: put the byte back, in the store and in the copy
        of its durable state if one is held; False if the record had changed since."""
        assert not any(s.path == flip.path for s in self._open), f"repairing {flip.path} while it is open"
        self.meta_pending.discard(flip.path)  # the repair is a durable write of its own
        fixed = self._with_closed_store(flip.path, lambda env, revs: _xor_record(env, revs, flip))
        copy_dir = self._durable_copies.get(flip.path)
        if copy_dir is not None:
            self._with_closed_store(copy_dir, lambda env, revs: _xor_record(env, revs, flip))
        return bool(fixed)

    @staticmethod
    def _with_closed_store(path: str, use: Any) -> Any:
        env = lmdb.open(path, subdir=True, max_dbs=DB_COUNT, map_size=1 << 30, sync=False)
        try:
            return use(env, open_databases(env, create=False).revs)
        finally:
            env.close()

    # -- used by the runtime
    def power_loss(self) -> list[str]:
        """Every store and file back to its durable state (the member's stores are closed); returns what was lost."""
        assert not self._open, f"power loss on {self.member} with stores still open: {[s.path for s in self._open]}"
        self.power_loss_after = None
        self.fail_next_sync = False
        self.counts["power_losses"] += 1
        lost = []
        for path, copy_dir in sorted(self._durable_copies.items()):
            os.replace(os.path.join(copy_dir, "data.mdb"), os.path.join(path, "data.mdb"))
            _drop_lock_file(path)
            shutil.rmtree(copy_dir, ignore_errors=True)
            lost.append(path)
        for path in sorted(self.meta_pending):
            undo_last_commit(os.path.join(path, "data.mdb"))
            _drop_lock_file(path)
            lost.append(path)
        self.meta_pending.clear()
        for path, content in sorted(self._durable_files.items()):
            if content is None:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
            else:
                with open(path, "wb") as f:
                    f.write(content)
            lost.append(path)
        for path, durable_bytes in sorted(self._durable_lengths.items()):
            _lose_segment_writes(path, durable_bytes, self._rng)
            lost.append(path)
        self._durable_copies.clear()
        self._durable_files.clear()
        self._durable_lengths.clear()
        self.counts["lost_unsynced"] += len(lost)
        return lost
