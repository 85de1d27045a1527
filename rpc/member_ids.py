"""etcd's member and cluster ids, computed the way etcd computes them (so defaults match etcd's)."""

from __future__ import annotations

import hashlib
import struct


def member_id(peer_urls: list[str], cluster_token: str) -> int:
    """The first 8 bytes of sha1(sorted peer URLs + cluster token).

    etcd adds the time for members added at run time; petcd does not, so that a
    joining member computes its own id from its flags (see README).
    """
    digest = hashlib.sha1(("".join(sorted(peer_urls)) + cluster_token).encode()).digest()
    return struct.unpack(">Q", digest[:8])[0]


def cluster_id(member_ids: list[int]) -> int:
    """The first 8 bytes of sha1 over the sorted member ids."""
    digest = hashlib.sha1(b"".join(struct.pack(">Q", m) for m in sorted(member_ids))).digest()
    return struct.unpack(">Q", digest[:8])[0]
