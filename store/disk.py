"""The disk an actor reaches through its context (`Context.disk`): the one seam for its durable state.

An actor never opens LMDB or writes a durable file itself (the apply actor's MVCC
store, the Raft actor's write-ahead log, snapshot records); it asks its context's disk, so the
runtime decides what a disk is. The process runtime hands out
`LocalDisk` (real LMDB, real files, synced as asked); the simulator hands out
a model with the durability contract (sim/disk.py): a power loss loses every
write that was not synced, an fsync can fail, the disk can fill up.

Failure contract for the actor: a write that raises `lmdb.Error`, `OSError` or the
store's MapFull means the disk could not make it durable, or had no room; the actor
must stop its member (`ctx.stop_member`), never carry on.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

from .fsync import fsync_dir
from .histogram import Histogram, exponential_bounds
from .mvcc import MvccStore
from .raftlog import RaftLog


class Disk(Protocol):
    """Stores open synced: what a store holds is made durable as it opens, before its owner acts on
    it. A member that stopped because an fsync failed, and was restarted, reads its last writes from
    the page cache, where they may never have reached the disk; voting or acknowledging from them and
    losing them to a power loss later would take back a vote or an entry (found by the simulator:
    fsync-fail then disk-crash, seed 1048 of `--faults all`: a member's term went from 2 back to 1)."""

    def open_mvcc(self, path: str, *, map_size_bytes: int, sync: bool = True) -> MvccStore:
        """The MVCC store in directory `path`, created if missing; `sync`: every commit is durable when it
        returns, and what it holds on opening is made durable first."""
        ...

    def open_raftlog(self, path: str, *, sync: bool = True) -> RaftLog:
        """The Raft log in directory `path`, created if missing; `sync`: every save is durable when it
        returns, and what it holds on opening is made durable first. Raises RaftLogError if the
        log is damaged beyond a torn last write, or another process has it open."""
        ...

    def write_file(self, path: str, data: bytes, *, sync: bool = True) -> None:
        """Replace the file `path` with `data` atomically (old or new content, never a mix);
        `sync`: durable (file and directory) when it returns."""
        ...

    def read_file(self, path: str) -> bytes | None:
        """The file's content, or None if there is none."""
        ...


# etcd's buckets for its disk histograms (prometheus.ExponentialBuckets(0.001, 2, 14)): 1 ms to 8 s.
COMMIT_BUCKETS_S = exponential_bounds(0.001, 2, 14)


class _TimedCommit:
    """A write transaction whose commit (LMDB's write and fsync, on leaving the block) is timed."""

    def __init__(self, txn: Any, times: Histogram) -> None:
        self._txn, self._times = txn, times

    def __enter__(self) -> Any:
        return self._txn.__enter__()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        started = time.perf_counter()
        result = self._txn.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self._times.observe(time.perf_counter() - started)
        return result


class _TimedMvccStore(MvccStore):
    """An MvccStore whose commits are timed into `commit_times`."""

    commit_times: Histogram | None = None  # set by LocalDisk once opened

    def _write(self) -> Any:
        txn = super()._write()
        return txn if self.commit_times is None else _TimedCommit(txn, self.commit_times)


class _TimedRaftLog(RaftLog):
    """A RaftLog whose appends (write and fdatasync) are timed into `commit_times`."""

    commit_times: Histogram | None = None  # set by LocalDisk once opened

    def _append(self, data: bytes) -> None:
        started = time.perf_counter()
        super()._append(data)
        if self.commit_times is not None:
            self.commit_times.observe(time.perf_counter() - started)


class LocalDisk:
    """The machine's own disk: real LMDB environments and files. It times the synced writes of the
    stores it opens (`metrics`: etcd_disk_wal_fsync_duration_seconds for the Raft log's appends,
    etcd_disk_backend_commit_duration_seconds for the MVCC store's commits)."""

    def __init__(self) -> None:
        self.commit_times: dict[str, Histogram] = {}  # "raft_log" | "mvcc" -> its synced writes

    def metrics(self) -> dict[str, Any]:
        return {name: times.report() for name, times in self.commit_times.items()}

    def open_mvcc(self, path: str, *, map_size_bytes: int, sync: bool = True) -> MvccStore:
        return self._opened(_TimedMvccStore(path, sync=sync, map_size_bytes=map_size_bytes), "mvcc")

    def open_raftlog(self, path: str, *, sync: bool = True) -> RaftLog:
        return self._opened(_TimedRaftLog(path, sync=sync), "raft_log")

    def _opened(self, store: Any, name: str) -> Any:
        store.commit_times = self.commit_times.setdefault(name, Histogram(COMMIT_BUCKETS_S))
        return store  # each store syncs what it holds as it opens (see `Disk`)

    def write_file(self, path: str, data: bytes, *, sync: bool = True) -> None:
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync:  # the rename is durable only once the directory is
            fsync_dir(os.path.dirname(os.path.abspath(path)))

    def read_file(self, path: str) -> bytes | None:
        return read_file(path)


def read_file(path: str) -> bytes | None:
    """A file's content, or None if there is none (reading is the same on every disk)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
