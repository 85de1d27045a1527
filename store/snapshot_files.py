"""A store snapshot as a file, sent and received in chunks (a follower too far behind gets the whole store)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgpack

from .mvcc import MvccStore

if TYPE_CHECKING:
    from .disk import Disk


def outgoing_chunks(store: MvccStore, path: str, chunk_bytes: int) -> tuple[int, int, Iterator[bytes]]:
    """Copy the store to `path`; returns (applied index, size, chunks). The file is removed once read."""
    index = store.create_snapshot(path)
    size = os.path.getsize(path)

    def chunks() -> Iterator[bytes]:
        try:
            with open(path, "rb") as f:
                for _ in range(size // chunk_bytes + 1):
                    data = f.read(chunk_bytes)
                    yield data
                    if f.tell() >= size:
                        return
        finally:
            os.remove(path)

    return index, size, chunks()


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
