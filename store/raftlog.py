"""The Raft log, hard state and membership: a write-ahead log of segment files.

Only the Raft actor writes here. `save` appends one record and fdatasyncs its
segment once: when it returns, the entries and the hard state are on disk, so
the Raft actor may acknowledge them (vote, append response, commit) -- never
before. One write and one fdatasync, as etcd's WAL does; an LMDB commit cost
two fdatasyncs and twice the time (README, "How it is built").

The log holds entries (snapshot_index, last_index]; entries up to
snapshot_index were folded into the state machine and dropped (`compact`), or
replaced wholesale by a snapshot from the leader (`reset_to_snapshot`). Every
entry since the last compaction is also held in memory, as etcd's raft keeps
its log in a MemoryStorage: reads never touch the disk.

On disk, directory `path` holds segments `<seq>-<first index>.wal` (hex).
A segment is preallocated, then filled with records `<u32 length><u32 crc32>
<msgpack map>`; a zero length ends it. Each record is a change (`_apply` reads
one): entries replacing the log from their first index on, a hard state,
membership, a compaction point, a reset to a snapshot. A new segment starts
with a record of the whole state but the entries, so that a segment whose
entries are all compacted can be deleted. Opening replays every segment in
order. A record torn by a power loss is in the last segment and was never synced,
so never acknowledged: it is cut off, with whatever follows it (`_torn` says
what a torn record looks like). Any other record that fails its checksum
stops the open with an error: an acknowledged record is never dropped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from .fsync import fsync_dir

ENTRY_NORMAL = 0
ENTRY_CONF = 1  # a membership change; its data is for the state machine and the Raft actor

SEGMENT_BYTES = 16 << 20  # a segment is preallocated to this; the next starts once it is full
_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
_SUFFIX = ".wal"
_SECTOR_BYTES = 512  # what a disk writes whole
_LEGACY_LMDB_FILE = "data.mdb"  # the Raft log of petcd before the WAL (one LMDB environment)


class RaftLogError(RuntimeError):
    """The log cannot be opened: it is damaged somewhere a power loss cannot have torn it, or another
    process has it open. The member must not start."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `data` is an opaque msgpack blob for the state machine."""

    index: int
    term: int
    data: bytes
    kind: int = ENTRY_NORMAL


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: str = ""
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """Who votes and who only learns."""

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert not set(self.voters) & set(self.learners), "a member is a voter or a learner, not both"

    @property
    def members(self) -> tuple[str, ...]:
        return self.voters + self.learners


# Membership history: (log index, voters, learners, members) as of that entry, oldest first, so that a
# snapshot at some applied index ships the membership as of that index.
_Conf = tuple[int, tuple[str, ...], tuple[str, ...], dict[str, dict]]


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016x}-{first_index:016x}{_SUFFIX}"


def _parse_name(name: str) -> tuple[int, int] | None:
    stem, dash, rest = name.partition("-")
    if not name.endswith(_SUFFIX) or not dash:
        return None
    try:
        return int(stem, 16), int(rest[: -len(_SUFFIX)], 16)
    except ValueError:
        return None


def _hs_fields(hs: HardState) -> list[Any]:
    return [hs.term, hs.vote, hs.commit]


def _conf_fields(conf: ConfState) -> list[list[str]]:
    return [list(conf.voters), list(conf.learners)]


def has_raft_log(path: str) -> bool:
    """Does directory `path` hold a Raft log (segments, or an older petcd's LMDB one)?"""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return False
    return _LEGACY_LMDB_FILE in names or any(_parse_name(n) for n in names)


def encode_record(record: dict[str, Any]) -> bytes:
    payload = msgpack.packb(record)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(data: bytes, name: str, last: bool) -> tuple[list[dict[str, Any]], int]:
    """The records of one segment's bytes and where the valid ones end. A damaged record ends them
    if it is in the last segment and looks torn (`_torn`); otherwise it raises RaftLogError."""
    out: list[dict[str, Any]] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        if length == 0:
            break  # the preallocated rest
        end = offset + _HEADER.size + length
        payload = data[offset + _HEADER.size:end]
        if end <= len(data) and zlib.crc32(payload) == crc:
            out.append(msgpack.unpackb(payload))
            offset = end
            continue
        if last and _torn(data, offset, end):
            break  # torn by a power loss mid-write: the record was never acknowledged
        raise RaftLogError(f"raft log segment {name} is damaged at offset {offset} (a record fails its checksum "
                             "and is not the last one written); restore this member from a snapshot or remove and re-add it")
    return out, offset


def _torn(data: bytes, offset: int, end: int) -> bool:
    """Can the damaged record at `offset` (claiming to end at `end`) be one a power loss tore? Yes if
    it runs past the file, if only zeros follow it, or if one of its sectors is all zeros (a write
    that reached the disk in part: etcd's rule)."""
    if end > len(data) or not any(data[end:]):
        return True
    first_sector = -(-offset // _SECTOR_BYTES)
    return any(not any(data[s * _SECTOR_BYTES:(s + 1) * _SECTOR_BYTES]) for s in range(first_sector, end // _SECTOR_BYTES))


class RaftLog:
    """Entries (snapshot_index, last_index] plus hard state and membership, in a write-ahead log."""

    def __init__(self, path: str, *, sync: bool = True, segment_bytes: int = SEGMENT_BYTES) -> None:
        if not os.path.isdir(path):
            os.makedirs(path)
            if sync:
                fsync_dir(os.path.dirname(os.path.abspath(path)))
        self.path = path
        self._sync = sync
        self._segment_bytes = segment_bytes
        self._hard_state = HardState()
        self._snap_index = self._snap_term = 0
        self._conf: ConfState | None = None
        self._members: dict[str, dict] = {}
        self._cluster_id = 0
        self._history: list[_Conf] = []
        self._entries: list[Entry] = []  # contiguous; entries[0].index == snapshot_index + 1 once opened
        self._fd = -1
        self._segment_path = ""
        self._offset = 0  # where the next record goes in the current segment
        self._segments: list[tuple[int, int, str]] = []  # (seq, first index, path), oldest first
        self._lock_fd = self._lock() if sync else -1
        if os.path.exists(os.path.join(path, _LEGACY_LMDB_FILE)):
            convert_legacy_lmdb(path, sync)
        self._replay()

    def close(self) -> None:
        self._close_segment()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # and with it the lock
            self._lock_fd = -1

    def _lock(self) -> int:
        """One process at a time: a second writer would interleave records (etcd flocks its WAL)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RaftLogError(f"raft log {self.path} is in use by another process (another petcd on this data dir?)") from None
        return fd

    def _close_segment(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- reads
    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def conf_state(self) -> ConfState | None:
        """The membership last saved; None for a log that never had one (a new member)."""
        return self._conf

    @property
    def members(self) -> dict[str, dict]:
        """Member id -> {name, peer_urls, client_urls}, as last saved."""
        return self._members

    @property
    def cluster_id(self) -> int:
        """0 until known (a member joining an existing cluster learns it from the leader)."""
        return self._cluster_id

    @property
    def first_index(self) -> int:
        return self._snap_index + 1

    @property
    def last_index(self) -> int:
        return self._entries[-1].index if self._entries else self._snap_index

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._snap_term

    @property
    def snapshot_index(self) -> int:
        return self._snap_index

    @property
    def snapshot_term(self) -> int:
        return self._snap_term

    def term(self, index: int) -> int:
        """Term of the entry at `index` (snapshot_index included); raises IndexError outside the log."""
        if index == self._snap_index:
            return self._snap_term
        if not self._snap_index < index <= self.last_index:
            raise IndexError(f"raft log has no entry {index} (first {self.first_index}, last {self.last_index})")
        return self._entries[index - self._snap_index - 1].term

    def entries(self, lo: int, hi: int, max_bytes: int = 1 << 30) -> list[Entry]:
        """Entries with lo <= index < hi: all of them, or a prefix of at least one holding about max_bytes."""
        if not self.first_index <= lo <= hi <= self.last_index + 1:
            raise IndexError(f"raft log entries [{lo}, {hi}) outside [{self.first_index}, {self.last_index + 1})")
        base = self._snap_index + 1
        out = self._entries[lo - base:hi - base]
        size = 0
        for count, entry in enumerate(out):
            size += len(entry.data)
            if count and size > max_bytes:
                return out[:count]
        return out

    def conf_at(self, index: int) -> tuple[ConfState, dict[str, dict]] | None:
        """The membership (conf state, member table) as of log index `index`; None if no history reaches back there."""
        found = None
        for at, voters, learners, members in self._history:
            if at > index:
                break
            found = ConfState(voters, learners), members
        return found

    # -- writes
    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        conf: ConfState | None = None,
        members: dict[str, dict] | None = None,
        cluster_id: int | None = None,
        conf_index: int | None = None,
    ) -> None:
        """Durably store entries (replacing any conflicting suffix), hard state and membership, in one synced record.

        `conf_index`: the log index the membership change took effect at (kept in the history `conf_at` reads).
        """
        record: dict[str, Any] = {}
        if entries:
            first = entries[0].index
            if not self._snap_index < first <= self.last_index + 1:
                raise ValueError(f"entries from {first} do not attach to the log ({self._snap_index}, {self.last_index}]")
            for prev, entry in zip(entries, entries[1:]):
                if entry.index != prev.index + 1:
                    raise ValueError(f"entries not contiguous: {prev.index} then {entry.index}")
            record["e"] = [[e.index, e.term, e.data, e.kind] for e in entries]
        if hard_state is not None:
            record["hs"] = _hs_fields(hard_state)
        if conf is not None:
            record["conf"] = _conf_fields(conf)
        if members is not None:
            record["mem"] = members
        if cluster_id is not None:
            record["cid"] = cluster_id
        if conf_index is not None and (conf is not None or members is not None):
            record["ci"] = conf_index
        if record:
            self._write(record, entries or None)

    def compact(self, index: int) -> None:
        """Drop entries up to `index` (the state machine holds them durably), then the segments that
        hold nothing else."""
        if index <= self._snap_index:
            return
        if index > self.last_index:
            raise ValueError(f"compacting to {index} past the last entry {self.last_index}")
        self._write({"snap": [index, self.term(index)]})
        # A segment may go once the next one starts at or below the compaction point: the record
        # just synced says everything up to there is compacted, and the next segment's first record
        # holds the state the older segments' records built.
        while len(self._segments) > 1 and self._segments[1][1] - 1 <= self._snap_index:
            self._remove_segment(self._segments.pop(0)[2])

    def reset_to_snapshot(self, index: int, term: int, conf: ConfState, members: dict[str, dict], hard_state: HardState) -> None:
        """The state machine was replaced by a leader's snapshot at (index, term): the log starts after it."""
        self._write({"reset": [index, term], "hist": [[index, *_conf_fields(conf), members]],
                     "conf": _conf_fields(conf), "mem": members, "hs": _hs_fields(hard_state)})
        while len(self._segments) > 1:  # the segment holding the reset starts at or before it
            self._remove_segment(self._segments.pop(0)[2])

    # -- the record format's meaning: one function for saving and for replaying
    def _apply(self, record: dict[str, Any], entries: list[Entry] | None = None) -> None:
        """Take in one record, saved or replayed; `entries`, if given, are its "e" already as Entry
        objects (a save has them: no need to build them again)."""
        if "reset" in record:
            self._snap_index, self._snap_term = record["reset"]
            self._entries = []
        if "snap" in record:
            index, term = record["snap"]
            if index > self._snap_index:
                base = self._entries[0].index if self._entries else index + 1
                del self._entries[:max(0, index - base + 1)]
                self._snap_index, self._snap_term = index, term
                keep = max((i for i, c in enumerate(self._history) if c[0] <= index), default=0)
                del self._history[:keep]  # the change in force at the compaction point stays
        if "hist" in record:
            self._history = [(at, tuple(v), tuple(lr), m) for at, v, lr, m in record["hist"]]
        if "conf" in record:
            voters, learners = record["conf"]
            self._conf = ConfState(tuple(voters), tuple(learners))
        if "mem" in record:
            self._members = record["mem"]
        if "cid" in record:
            self._cluster_id = record["cid"]
        if "ci" in record:
            at, c = record["ci"], self._conf or ConfState(())
            self._history = sorted([h for h in self._history if h[0] != at] + [(at, c.voters, c.learners, self._members)],
                                   key=lambda h: h[0])
        if "hs" in record:
            self._hard_state = HardState(*record["hs"])
        if "e" in record:
            first = record["e"][0][0]
            if self._entries:
                if first > self._entries[-1].index + 1:
                    raise RaftLogError(f"raft log in {self.path} misses entries {self._entries[-1].index + 1} to {first - 1}")
                # Entries from `first` on belong to a log that lost: drop them.
                del self._entries[max(0, first - self._entries[0].index):]
            self._entries += entries if entries is not None else [Entry(*fields) for fields in record["e"]]

    def _state_record(self) -> dict[str, Any]:
        """Everything but the entries: the first record of a new segment."""
        record: dict[str, Any] = {"snap": [self._snap_index, self._snap_term], "mem": self._members, "cid": self._cluster_id,
                                  "hs": _hs_fields(self._hard_state),
                                  "hist": [[at, list(v), list(lr), m] for at, v, lr, m in self._history]}
        if self._conf is not None:
            record["conf"] = _conf_fields(self._conf)
        return record

    # -- the files
    def _write(self, record: dict[str, Any], entries: list[Entry] | None = None) -> None:
        """Append one record, durably if synced, then take it in (`entries`: its "e" as Entry objects)."""
        data = encode_record(record)
        if self._offset + len(data) > self._segment_bytes and self._offset > 0:
            self._start_segment()
        try:
            self._append(data)
        except OSError:
            self._forget_failed_append()
            raise
        self._offset += len(data)
        self._apply(record, entries)

    def _replay(self) -> None:
        found = sorted(p for p in (_parse_name(n) for n in os.listdir(self.path)) if p is not None)
        if not found:
            self._start_segment()
            return
        data = b""
        for position, (seq, first) in enumerate(found):
            path = os.path.join(self.path, segment_name(seq, first))
            with open(path, "rb") as f:
                data = f.read()
            records, end = read_records(data, path, last=position == len(found) - 1)
            for record in records:
                self._apply(record)
            self._segments.append((seq, first, path))
        if self._entries and self._entries[0].index != self._snap_index + 1:
            raise RaftLogError(f"raft log in {self.path} misses entries {self._snap_index + 1} to {self._entries[0].index - 1}")
        path = self._segments[-1][2]
        self._fd = os.open(path, os.O_RDWR)
        self._segment_path, self._offset = path, end
        if any(data[end:]):
            # A torn record, or stray bytes of records written after it and never synced: zero them,
            # so that no remnant can ever follow the next record and pass for one.
            self._repair_tail()
        elif self._sync:
            self._sync_file()  # what a crashed process left in the page cache is durable before it counts
        self._sync_dir()  # and the names of the segments a crashed process made

    def _start_segment(self) -> None:
        """Start the next segment with the state record, durable (file and directory) before it is used."""
        seq = self._segments[-1][0] + 1 if self._segments else 0
        first = self.last_index + 1
        path = os.path.join(self.path, segment_name(seq, first))
        data = encode_record(self._state_record())
        fd = self._create_segment(path, data)
        self._close_segment()
        self._fd, self._segment_path, self._offset = fd, path, len(data)
        self._segments.append((seq, first, path))

    # -- IO, one method per kind of write (the simulator's disk judges each: sim/disk.py)
    def _create_segment(self, path: str, data: bytes) -> int:
        """A new segment file holding `data`, preallocated, durable (file and name) if synced; its fd."""
        return create_segment(path, data, self._sync, self._segment_bytes if self._sync else 0)

    def _append(self, data: bytes) -> None:
        """Write `data` at the end of the current segment; durable when it returns, if synced."""
        os.pwrite(self._fd, data, self._offset)
        if self._sync:
            os.fdatasync(self._fd)

    def _forget_failed_append(self) -> None:
        """After a failed write or fdatasync: cut the record off the file. Linux may have marked its
        pages clean though they never reached the disk; left in place, a restart would read it back
        from the page cache, call it durable and act on it, and a power loss later would take it
        back from under records acknowledged after it. Best effort: the member stops anyway."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._offset)
            self._preallocate(self._fd)

    def _repair_tail(self) -> None:
        """Cut the current segment at the end of its valid records; the rest is zeros again."""
        os.ftruncate(self._fd, self._offset)
        self._preallocate(self._fd)
        self._sync_file()

    def _remove_segment(self, path: str) -> None:
        os.remove(path)
        self._sync_dir()

    def _preallocate(self, fd: int) -> None:
        """Only for a synced log: unsynced ones (tests, the simulator) stay small."""
        if self._sync:
            _preallocate(fd, self._segment_bytes)

    def _sync_file(self) -> None:
        if self._sync:
            os.fsync(self._fd)

    def _sync_dir(self) -> None:
        if self._sync:
            fsync_dir(self.path)


def convert_legacy_lmdb(path: str, sync: bool) -> None:
    """A Raft log petcd kept in LMDB before the WAL (`data.mdb` in `path`): rewrite it as the first
    segment, durably, then remove the LMDB files."""
    if not any(_parse_name(n) for n in os.listdir(path)):
        _write_converted(path, sync)
    # A segment is renamed into place only once written and synced: with one there, the conversion
    # got that far before a crash, and only the LMDB files are left to remove.
    for name in (_LEGACY_LMDB_FILE, "lock.mdb"):
        if os.path.exists(os.path.join(path, name)):
            os.remove(os.path.join(path, name))
    if sync:
        fsync_dir(path)


def _write_converted(path: str, sync: bool) -> None:
    env = lmdb.open(path, max_dbs=4, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            meta, log, confs = (env.open_db(name, txn=txn, create=False) for name in (b"meta", b"log", b"confs"))

            def get(key: bytes, default: Any) -> Any:
                raw = txn.get(key, db=meta)
                return msgpack.unpackb(raw) if raw else default

            state: dict[str, Any] = {"snap": get(b"snapshot", [0, 0]), "hs": get(b"hard_state", [0, "", 0]),
                                     "mem": get(b"members", {}), "cid": get(b"cluster_id", 0),
                                     "hist": [[int.from_bytes(k, "big"), *msgpack.unpackb(v)] for k, v in txn.cursor(db=confs)]}
            if (conf := get(b"conf", None)) is not None:
                state["conf"] = conf
            entries = [[int.from_bytes(k, "big"), *msgpack.unpackb(v)] for k, v in txn.cursor(db=log)]
    finally:
        env.close()
    records = encode_record(state) + (encode_record({"e": entries}) if entries else b"")
    # Its name is durable before the LMDB files go.
    os.close(create_segment(os.path.join(path, segment_name(0, state["snap"][0] + 1)), records, sync, 0))


def create_segment(path: str, data: bytes, sync: bool, preallocate_bytes: int) -> int:
    """A new segment file holding `data`, durable (file and name) if `sync`: written under a temporary
    name, synced, then renamed, so a segment is whole once it has its name. Returns its fd."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if preallocate_bytes:
            _preallocate(fd, preallocate_bytes)
        if sync:
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        raise
    if sync:
        fsync_dir(os.path.dirname(path))
    return fd


def _preallocate(fd: int, size_bytes: int) -> None:
    """Reserve the segment's blocks (zeros) so that an append's fdatasync need not grow the file."""
    try:
        os.posix_fallocate(fd, 0, size_bytes)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise  # a full disk, say; a filesystem without fallocate just grows the file per write
