"""The Raft log and hard state, durable in their own LMDB environment.

Only the Raft actor writes here. `save` is one synced LMDB transaction: when it
returns, the entries and the hard state are on disk, so the Raft actor may
acknowledge them (vote, append response, commit) -- never before.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import lmdb
import msgpack

_INDEX = struct.Struct(">Q")
_MAP_SIZE_BYTES = 4 << 30
_HARD_STATE_KEY = b"hard_state"
_SNAPSHOT_KEY = b"snapshot"  # (index, term) of the last entry folded into the state machine


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `data` is an opaque msgpack blob for the state machine."""

    index: int
    term: int
    data: bytes


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: str = ""
    commit: int = 0


class RaftLog:
    """Entries [first_index, last_index] plus hard state, on LMDB."""

    def __init__(self, path: str, *, sync: bool = True) -> None:
        os.makedirs(path, exist_ok=True)
        self._env = lmdb.open(path, map_size=_MAP_SIZE_BYTES, max_dbs=4, sync=sync, metasync=sync)
        self._log = self._env.open_db(b"log")
        self._meta = self._env.open_db(b"meta")
        with self._env.begin() as txn:
            raw = txn.get(_HARD_STATE_KEY, db=self._meta)
            self._hard_state = HardState(*msgpack.unpackb(raw)) if raw else HardState()
            raw = txn.get(_SNAPSHOT_KEY, db=self._meta)
            self._snap_index, self._snap_term = msgpack.unpackb(raw) if raw else (0, 0)
            cursor = txn.cursor(db=self._log)
            self._last_index = _INDEX.unpack(cursor.key())[0] if cursor.last() else self._snap_index
            # Terms are read on every append and vote; cache the tail's terms.
            self._last_term = self._read_term(txn, self._last_index)

    def close(self) -> None:
        self._env.close()

    # -- reads
    @property
    def hard_state(self) -> HardState:
        return self._hard_state

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

    def term(self, index: int) -> int:
        """Term of the entry at `index`; 0 for index 0; raises for compacted or missing indexes."""
        if index == self._last_index:
            return self._last_term
        with self._env.begin() as txn:
            return self._read_term(txn, index)

    def entries(self, lo: int, hi: int, max_bytes: int = 1 << 30) -> list[Entry]:
        """Entries with lo <= index < hi, at least one, at most about max_bytes of data."""
        assert self.first_index <= lo <= hi <= self._last_index + 1, (lo, hi)
        out: list[Entry] = []
        size = 0
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._log)
            if lo < hi and cursor.set_key(_INDEX.pack(lo)):
                for key, raw in cursor:
                    index = _INDEX.unpack(key)[0]
                    if index >= hi:
                        break
                    term, data = msgpack.unpackb(raw)
                    size += len(data)
                    if out and size > max_bytes:
                        break
                    out.append(Entry(index, term, data))
        assert not out or out[0].index == lo
        return out

    # -- writes
    def save(self, hard_state: HardState | None, entries: list[Entry]) -> None:
        """Durably store entries (replacing any conflicting suffix) and the hard state, in one synced txn."""
        if hard_state is None and not entries:
            return
        with self._env.begin(write=True) as txn:
            if entries:
                first = entries[0].index
                assert self._snap_index < first <= self._last_index + 1, (first, self._last_index)
                # Entries after `first` belong to a log that lost: drop them.
                for index in range(first, self._last_index + 1):
                    txn.delete(_INDEX.pack(index), db=self._log)
                for prev, entry in zip([None, *entries], entries):
                    assert prev is None or entry.index == prev.index + 1
                    txn.put(_INDEX.pack(entry.index), msgpack.packb((entry.term, entry.data)), db=self._log)
            if hard_state is not None:
                txn.put(_HARD_STATE_KEY, msgpack.packb((hard_state.term, hard_state.vote, hard_state.commit)), db=self._meta)
        if entries:
            self._last_index = entries[-1].index
            self._last_term = entries[-1].term
        if hard_state is not None:
            self._hard_state = hard_state

    # -- helpers
    def _read_term(self, txn: lmdb.Transaction, index: int) -> int:
        if index == self._snap_index:
            return self._snap_term
        raw = txn.get(_INDEX.pack(index), db=self._log)
        if raw is None:
            raise IndexError(f"raft log has no entry {index} (first {self.first_index}, last {self._last_index})")
        return msgpack.unpackb(raw)[0]
