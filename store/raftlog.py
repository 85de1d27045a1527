"""The Raft log, hard state and membership, durable in their own LMDB environment.

Only the Raft actor writes here. `save` is one synced LMDB transaction: when it
returns, the entries and the hard state are on disk, so the Raft actor may
acknowledge them (vote, append response, commit) -- never before.

The log holds entries (snapshot_index, last_index]; entries up to
snapshot_index were folded into the state machine and dropped (`compact`), or
replaced wholesale by a snapshot from the leader (`reset_to_snapshot`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

_INDEX = struct.Struct(">Q")
_MAP_SIZE_BYTES = 4 << 30
_HARD_STATE_KEY = b"hard_state"
_SNAPSHOT_KEY = b"snapshot"  # (index, term) of the last entry folded into the state machine
_CONF_KEY = b"conf"  # the membership in force: (voters, learners)
_MEMBERS_KEY = b"members"  # id -> {name, peer_urls, client_urls}: where members are and what they are called
_CLUSTER_KEY = b"cluster_id"

ENTRY_NORMAL = 0
ENTRY_CONF = 1  # a membership change; its data is for the state machine and the Raft actor


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


class RaftLog:
    """Entries (snapshot_index, last_index] plus hard state and membership, on LMDB."""

    def __init__(self, path: str, *, sync: bool = True) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self._env = lmdb.open(path, map_size=_MAP_SIZE_BYTES, max_dbs=4, sync=sync, metasync=sync)
        if sync:
            self._env.sync(True)  # what a crashed process left in the page cache is durable before it counts
        self._log = self._env.open_db(b"log")
        self._meta = self._env.open_db(b"meta")
        # Membership history: index -> (voters, learners, members) as of that entry, so that a
        # snapshot at some applied index ships the membership as of that index.
        self._confs = self._env.open_db(b"confs")
        with self._env.begin() as txn:
            raw = txn.get(_HARD_STATE_KEY, db=self._meta)
            self._hard_state = HardState(*msgpack.unpackb(raw)) if raw else HardState()
            raw = txn.get(_SNAPSHOT_KEY, db=self._meta)
            self._snap_index, self._snap_term = msgpack.unpackb(raw) if raw else (0, 0)
            raw = txn.get(_CONF_KEY, db=self._meta)
            self._conf = ConfState(*(tuple(x) for x in msgpack.unpackb(raw))) if raw else None
            raw = txn.get(_MEMBERS_KEY, db=self._meta)
            self._members: dict[str, dict] = msgpack.unpackb(raw) if raw else {}
            raw = txn.get(_CLUSTER_KEY, db=self._meta)
            self._cluster_id = msgpack.unpackb(raw) if raw else 0
            cursor = txn.cursor(db=self._log)
            self._last_index = _INDEX.unpack(cursor.key())[0] if cursor.last() else self._snap_index
            # The tail's term is read on every append and vote: keep it at hand.
            self._last_term = self._read_term(txn, self._last_index)

    def close(self) -> None:
        self._env.close()

    @property
    def env(self) -> lmdb.Environment:
        return self._env

    def _write(self) -> Any:
        """A write transaction (`with log._write() as txn`); the simulator's disk judges its commit (sim/disk.py)."""
        return self._env.begin(write=True)

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
        return self._last_index

    @property
    def last_term(self) -> int:
        return self._last_term

    @property
    def snapshot_index(self) -> int:
        return self._snap_index

    @property
    def snapshot_term(self) -> int:
        return self._snap_term

    def term(self, index: int) -> int:
        """Term of the entry at `index` (snapshot_index included); raises IndexError outside the log."""
        if index == self._last_index:
            return self._last_term
        with self._env.begin() as txn:
            return self._read_term(txn, index)

    def entries(self, lo: int, hi: int, max_bytes: int = 1 << 30) -> list[Entry]:
        """Entries with lo <= index < hi: all of them, or a prefix of at least one holding about max_bytes."""
        assert self.first_index <= lo <= hi <= self._last_index + 1, (lo, hi, self.first_index, self._last_index)
        out: list[Entry] = []
        size = 0
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._log)
            if lo < hi and cursor.set_key(_INDEX.pack(lo)):
                for key, raw in cursor:
                    index = _INDEX.unpack(key)[0]
                    if index >= hi:
                        break
                    term, data, kind = msgpack.unpackb(raw)
                    size += len(data)
                    if out and size > max_bytes:
                        break
                    out.append(Entry(index, term, data, kind))
        assert not out or out[0].index == lo
        return out

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
        """Durably store entries (replacing any conflicting suffix), hard state and membership, in one synced txn.

        `conf_index`: the log index the membership change took effect at (kept in the history `conf_at` reads).
        """
        if hard_state is None and not entries and conf is None and members is None and cluster_id is None:
            return
        with self._write() as txn:
            if entries:
                first = entries[0].index
                assert self._snap_index < first <= self._last_index + 1, (first, self._snap_index, self._last_index)
                # Entries from `first` on belong to a log that lost: drop them.
                for index in range(first, self._last_index + 1):
                    txn.delete(_INDEX.pack(index), db=self._log)
                for prev, entry in zip([None, *entries], entries):
                    assert prev is None or entry.index == prev.index + 1
                    txn.put(_INDEX.pack(entry.index), msgpack.packb((entry.term, entry.data, entry.kind)), db=self._log)
            if hard_state is not None:
                txn.put(_HARD_STATE_KEY, msgpack.packb((hard_state.term, hard_state.vote, hard_state.commit)), db=self._meta)
            if conf is not None:
                txn.put(_CONF_KEY, msgpack.packb((conf.voters, conf.learners)), db=self._meta)
            if members is not None:
                txn.put(_MEMBERS_KEY, msgpack.packb(members), db=self._meta)
            if cluster_id is not None:
                txn.put(_CLUSTER_KEY, msgpack.packb(cluster_id), db=self._meta)
            if conf_index is not None and (conf is not None or members is not None):
                c = conf if conf is not None else (self._conf or ConfState(()))
                m = members if members is not None else self._members
                txn.put(_INDEX.pack(conf_index), msgpack.packb((c.voters, c.learners, m)), db=self._confs)
        if entries:
            self._last_index = entries[-1].index
            self._last_term = entries[-1].term
        if hard_state is not None:
            self._hard_state = hard_state
        if conf is not None:
            self._conf = conf
        if members is not None:
            self._members = members
        if cluster_id is not None:
            self._cluster_id = cluster_id

    def compact(self, index: int) -> None:
        """Drop entries up to `index` (the state machine holds them durably)."""
        if index <= self._snap_index:
            return
        assert index <= self._last_index, (index, self._last_index)
        term = self.term(index)
        with self._write() as txn:
            for i in range(self._snap_index + 1, index + 1):
                txn.delete(_INDEX.pack(i), db=self._log)
            txn.put(_SNAPSHOT_KEY, msgpack.packb((index, term)), db=self._meta)
            # Membership history before the last change at or below `index` is no longer needed.
            cursor = txn.cursor(db=self._confs)
            found = cursor.prev() if cursor.set_range(_INDEX.pack(index + 1)) else cursor.last()
            keep = cursor.key() if found else None
            if keep is not None:
                stale = [k for k, _ in txn.cursor(db=self._confs) if k < keep]
                for k in stale:
                    txn.delete(k, db=self._confs)
        self._snap_index, self._snap_term = index, term

    def reset_to_snapshot(self, index: int, term: int, conf: ConfState, members: dict[str, dict], hard_state: HardState) -> None:
        """The state machine was replaced by a leader's snapshot at (index, term): the log starts after it."""
        with self._write() as txn:
            txn.put(_MEMBERS_KEY, msgpack.packb(members), db=self._meta)
            for i in range(self._snap_index + 1, self._last_index + 1):
                txn.delete(_INDEX.pack(i), db=self._log)
            txn.put(_SNAPSHOT_KEY, msgpack.packb((index, term)), db=self._meta)
            txn.put(_CONF_KEY, msgpack.packb((conf.voters, conf.learners)), db=self._meta)
            txn.put(_HARD_STATE_KEY, msgpack.packb((hard_state.term, hard_state.vote, hard_state.commit)), db=self._meta)
            txn.drop(self._confs, delete=False)
            txn.put(_INDEX.pack(index), msgpack.packb((conf.voters, conf.learners, members)), db=self._confs)
        self._snap_index, self._snap_term = index, term
        self._last_index, self._last_term = index, term
        self._conf = conf
        self._members = members
        self._hard_state = hard_state

    def conf_at(self, index: int) -> tuple[ConfState, dict[str, dict]] | None:
        """The membership (conf state, member table) as of log index `index`; None if no history reaches back there."""
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._confs)
            if cursor.set_range(_INDEX.pack(index + 1)):
                found = cursor.prev()
            else:
                found = cursor.last()
            if not found:
                return None
            voters, learners, members = msgpack.unpackb(cursor.value())
            return ConfState(tuple(voters), tuple(learners)), members

    # -- helpers
    def _read_term(self, txn: lmdb.Transaction, index: int) -> int:
        if index == self._snap_index:
            return self._snap_term
        raw = txn.get(_INDEX.pack(index), db=self._log)
        if raw is None:
            raise IndexError(f"raft log has no entry {index} (first {self.first_index}, last {self._last_index})")
        return msgpack.unpackb(raw)[0]
