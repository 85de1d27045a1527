"""Backups: the store copied into one file with a sha256 trailer, and what can be read back from one.

Layout, after etcd's snapshot file: a compacted LMDB copy of the store (a whole number of pages),
then the sha256 of those bytes (32 bytes). etcd appends the sha256 to its bbolt file the same
way, so the real `etcdctl snapshot save` accepts what petcd's Maintenance.Snapshot streams (it
checks that the size is a multiple of 512 plus 32).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import lmdb

from .bbolt import BboltError, BboltFile, looks_like_bbolt
from .etcd_import import EtcdImportError, ImportResult, import_bbolt, snapshot_status
from .mvcc import MvccStore

SHA256_BYTES = 32
# etcd's snapshotSendBufferSize: what one SnapshotResponse carries.
CHUNK_BYTES = 32 * 1024
_DB_FILE = "data.mdb"  # LMDB's data file in a store directory


class BackupError(Exception):
    """A backup file that cannot be used; the message says why."""


@dataclass(frozen=True)
class BackupStatus:
    """What `snapshot status` prints: etcd's hash, revision, total keys and total size."""

    hash: int
    revision: int
    total_keys: int
    total_size: int


def stream(store: MvccStore, work_dir: str) -> tuple[int, Iterator[tuple[bytes, int]]]:
    """Copy `store` to a file in `work_dir` and stream it: (size, chunks of (blob, bytes remaining)).

    The last chunk is the sha256 of everything before it (remaining 0), as etcd sends it. The copy
    lives on disk, so a large store never sits whole in memory; it is removed once streamed.
    """
    fd, path = tempfile.mkstemp(prefix="backup-", dir=work_dir)
    os.close(fd)
    try:
        store.copy_to(path)
    except BaseException:
        os.remove(path)
        raise
    size = os.path.getsize(path)

    def chunks() -> Iterator[tuple[bytes, int]]:
        digest = hashlib.sha256()
        sent = 0
        try:
            with open(path, "rb") as f:
                while sent < size:
                    blob = f.read(CHUNK_BYTES)
                    if not blob:
                        raise BackupError(f"backup copy {path} shrank while it was sent")
                    sent += len(blob)
                    digest.update(blob)
                    yield blob, size - sent
        finally:
            os.remove(path)
        yield digest.digest(), 0

    return size, chunks()


def verify(path: str) -> int:
    """The size of the store part of a backup file; raises BackupError if the file is not whole."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise BackupError(f"cannot read snapshot file {path}: {e.strerror}") from None
    if size < SHA256_BYTES or (size - SHA256_BYTES) % 512 != 0:
        raise BackupError(f"snapshot file {path} has no sha256 checksum [bytes: {size}] (truncated?)")
    db_size = size - SHA256_BYTES
    computed, trailer = _sha256_and_trailer(path, db_size)
    if trailer != computed:
        raise BackupError(f"snapshot file {path} is corrupt: its sha256 checksum does not match its contents")
    return db_size


def _sha256_and_trailer(path: str, db_size: int) -> tuple[bytes, bytes]:
    """The sha256 of the first `db_size` bytes of the file, and the checksum stored after them."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = db_size
        while left:
            blob = f.read(min(CHUNK_BYTES * 32, left))
            if not blob:
                raise BackupError(f"snapshot file {path} is shorter than it says")
            digest.update(blob)
            left -= len(blob)
        return digest.digest(), f.read(SHA256_BYTES)


def _open(path: str, store_dir: str) -> MvccStore:
    try:
        return MvccStore(store_dir)
    except lmdb.Error:
        raise BackupError(f"snapshot file {path} does not hold a petcd store (an etcd snapshot is a bbolt file)") from None


def extract(path: str, store_dir: str) -> None:
    """Write the store held in a verified backup file as the store directory `store_dir` (new)."""
    db_size = verify(path)
    os.makedirs(store_dir, mode=0o700)
    with open(path, "rb") as src, open(os.path.join(store_dir, _DB_FILE), "wb") as dst:
        left = db_size
        while left:
            blob = src.read(min(CHUNK_BYTES * 32, left))
            dst.write(blob)
            left -= len(blob)
        dst.flush()
        os.fsync(dst.fileno())


def restore(path: str, store_dir: str) -> int:
    """A new member's store directory from a backup file: the keys, their history and the leases,
    ready to be the first state of a new cluster (its log starts again at 1). Returns the revision."""
    extract(path, store_dir)
    store = _open(path, store_dir)
    try:
        store.forget_raft_position()
        return store.current_revision()
    finally:
        store.close()


def is_etcd_snapshot(path: str) -> bool:
    """True if the file is etcd's bbolt database (by content: bbolt's magic in a meta page), as
    `etcdctl snapshot save` writes it or as `member/snap/db` of a stopped etcd member."""
    return looks_like_bbolt(path)


def _etcd_db_size(path: str, skip_hash_check: bool) -> int:
    """The database part of an etcd snapshot file, its sha256 trailer checked as etcd's restore
    does (a file whose size is a multiple of 512 plus 32 has one; one without is refused unless
    skip_hash_check, as for a `member/snap/db` copied from a data dir)."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise BackupError(f"cannot read snapshot file {path}: {e.strerror}") from None
    has_hash = size % 512 == SHA256_BYTES
    if not has_hash:
        if not skip_hash_check:
            raise BackupError("snapshot missing hash but --skip-hash-check=false")
        return size
    db_size = size - SHA256_BYTES
    if skip_hash_check:
        return db_size
    computed, trailer = _sha256_and_trailer(path, db_size)
    if trailer != computed:
        go = lambda b: "[" + " ".join(str(x) for x in b) + "]"  # Go's %v of a []byte
        raise BackupError(f"expected sha256 {go(trailer)}, got {go(computed)}")
    return db_size


def restore_etcd(path: str, store_dir: str, *, skip_hash_check: bool = False) -> ImportResult:
    """A new member's store directory from etcd's bbolt database: every key with its revisions,
    the history that was not compacted, and the leases (see store/etcd_import.py), written in one
    transaction; its applied index is 0, ready to be the first state of a new cluster."""
    db_size = _etcd_db_size(path, skip_hash_check)
    try:
        with BboltFile(path, db_size) as db:
            os.makedirs(store_dir, mode=0o700)
            store = MvccStore(store_dir)
            try:
                result = import_bbolt(db, store)
                store.forget_raft_position()
            finally:
                store.close()
    except (BboltError, EtcdImportError, lmdb.Error) as e:
        raise BackupError(f"cannot restore etcd snapshot {path}: {e}") from None
    return result


def etcd_status(path: str) -> BackupStatus:
    """What `etcdctl snapshot status` (etcd 3.4) reports for etcd's bbolt file, saved by `snapshot
    save` or a stopped member's `member/snap/db` (see etcd_import.snapshot_status). As etcdctl's,
    it does not check the sha256 trailer (`snapshot restore` does); unlike etcdctl, it refuses a file
    shorter than its meta page's high-water mark says (truncated) instead of reading past its end."""
    try:
        with BboltFile(path) as db:
            return BackupStatus(*snapshot_status(db))
    except BboltError as e:
        raise BackupError(str(e)) from None


def status(path: str) -> BackupStatus:
    """Hash, revision, total keys and size of a backup file (verified first), or of etcd's bbolt
    file (told apart by content, see is_etcd_snapshot)."""
    if is_etcd_snapshot(path):
        return etcd_status(path)
    db_size = verify(path)
    work = tempfile.mkdtemp(prefix="petcd-snapshot-status-")
    try:
        store_dir = os.path.join(work, "store")
        extract(path, store_dir)
        store = _open(path, store_dir)
        try:
            crc, revision, entries = store.digest()
        finally:
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BackupStatus(crc, revision, entries, db_size)
