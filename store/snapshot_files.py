"""A store snapshot as a file, sent and received in chunks (a follower too far behind gets the whole store)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import msgpack

from .mvcc import MvccStore

if TYPE_CHECKING:
    from .disk import Disk


class OutgoingSnapshot:
    """A copy of the store on its way to one peer, sent a window of chunks at a time: a chunk
    leaves only while fewer than `window` sent ones wait for the receiver's acknowledgement, so a
    large store never sits in memory or in a socket's queue whole. The file is removed on close."""

    def __init__(self, store: MvccStore, path: str, chunk_bytes: int, window: int) -> None:
        assert chunk_bytes > 0 and window > 0
        self.index = store.create_snapshot(path)
        self.path = path
        self.size = os.path.getsize(path)
        self._file = open(path, "rb")
        self._chunk_bytes = chunk_bytes
        self._window = window
        self.chunk_count = max(1, -(-self.size // chunk_bytes))
        self._next_seq = 0
        self._acked = -1  # the highest chunk the receiver wrote

    def due(self) -> list[tuple[int, bytes, bool]]:
        """(seq, data, last) of the chunks that may leave now."""
        out = []
        while self._next_seq < self.chunk_count and self._next_seq - self._acked <= self._window:
            data = self._file.read(self._chunk_bytes)
            out.append((self._next_seq, data, self._next_seq == self.chunk_count - 1))
            self._next_seq += 1
        return out

    def ack(self, seq: int) -> None:
        self._acked = max(self._acked, min(seq, self._next_seq - 1))

    @property
    def done(self) -> bool:
        return self._acked >= self.chunk_count - 1

    def close(self) -> None:
        self._file.close()
        os.remove(self.path)


class IncomingSnapshot:
    """Chunks written in order to a file; out-of-order chunks mean a lost start (the leader sends again)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "wb")
        self._next_seq = 0

    def write(self, seq: int, data: bytes) -> bool:
        """Append chunk `seq`; False if it is not the next one."""
        if seq != self._next_seq:
            return False
        self._file.write(data)
        self._next_seq += 1
        return True

    def install(self, store: MvccStore) -> None:
        """Replace the store's tables with the snapshot's (one transaction), then drop the file."""
        self._file.close()
        try:
            store.install_snapshot(self.path)
        finally:
            os.remove(self.path)

    def abandon(self) -> None:
        self._file.close()
        os.remove(self.path)


_INSTALLED_RECORD = "snapshot-installed.meta"


def record_installed_snapshot(disk: "Disk", data_dir: str, meta: dict[str, Any], sync: bool) -> None:
    """Durably note (before installing it) the snapshot a member installs: its index, term and
    membership. After a crash between the store install and the Raft log reset, the Raft actor
    learns from it where to reset its log. Written through the actor's disk (see store/disk.py)."""
    disk.write_file(os.path.join(data_dir, _INSTALLED_RECORD), msgpack.packb(meta), sync=sync)


def installed_snapshot(disk: "Disk", data_dir: str) -> dict[str, Any] | None:
    """The last snapshot record_installed_snapshot noted, or None."""
    data = disk.read_file(os.path.join(data_dir, _INSTALLED_RECORD))
    return None if data is None else msgpack.unpackb(data)
