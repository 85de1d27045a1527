"""The initial corruption check, as etcd 3.4 has it (etcdserver/corrupt.go); the periodic one is an
actor's (actors/corrupt_check.py).

`--experimental-initial-corrupt-check`: a restarted member (one whose data dir already holds a
Raft log; etcd's memberInitialized), before any of its processes starts, takes the HashKV of its
own store at its current revision and asks every other member for its HashKV at that revision. A
peer whose hash differs at the same compact revision is a mismatch, and the member stops with
etcd's error: "<member id> found data inconsistency with peers" (logged as etcd's fatal
"discovery failed"; exit status 1). A peer that cannot answer (down, behind, compacted past the
revision) is logged and skipped, as etcd does.

It runs in the supervisor (rpc/member.py, `initial_check`), before it starts the actor processes:
etcd runs CheckInitialHashKV before its Raft node, peer and client listeners start, so a diverged
member never votes, applies or serves. At that point no other process has the store or the Raft
log open, and the supervisor may do IO; it reads the membership (with the members' client URLs,
which they published through Raft) from the member's own Raft log. With no Raft actor of its own
running yet, it cannot ask its peers over the Raft transport, as the periodic check does.

Peers are asked through their client URLs, with the gRPC Maintenance.HashKV (etcd 3.4.0 to 3.4.21
did so with clientv3; etcd 3.4.23 asks its peers' peer URLs over HTTP at /members/hashkv, which
petcd's peer port, ZeroMQ, does not serve). An https client URL is dialed with the member's client
TLS files (--trusted-ca-file as the root, --cert-file/--key-file as the client certificate); a peer
whose certificate they do not verify is skipped with a warning. With auth enabled HashKV is root's
only, and etcd's peer endpoint needs no user: the checker sends, in the metadata key
`petcd-hashkv`, an HMAC of the revision under the auth store's token secret (replicated, so every
member holds it), which the peer's HashKV accepts in place of root.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

import grpc

from petcd.actors.membership import active
from petcd.actors.runtime_log import LogLine
from petcd.rpc.config import host_port
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.store.mvcc import MvccStore
from petcd.store.raftlog import RaftLog

HASHKV_METADATA_KEY = "petcd-hashkv"
COMPACTED = "etcdserver: mvcc: required revision has been compacted"
FUTURE_REV = "etcdserver: mvcc: required revision is a future revision"


class InconsistentData(Exception):
    """The initial check found a peer whose hash differs: the member must not start."""


@dataclass(frozen=True, slots=True)
class PeerTLS:
    """The client TLS files a member dials https client URLs with (empty: system roots, no certificate)."""

    trusted_ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(read(self.trusted_ca_file), read(self.key_file), read(self.cert_file))


@dataclass(slots=True)
class PeerHash:
    """One peer's answer (etcd's peerHashKVResp): `resp` (hash, compact revision, header revision,
    member id), or `err`: "compacted", "future_rev" or the last failure's text."""

    member_id: str
    endpoints: list[str]
    resp: tuple[int, int, int, int] | None = None
    err: str = ""


def hashkv_token(secret: bytes, revision: int) -> str:
    """What a corruption checker shows a peer's HashKV in place of root (see the module docstring)."""
    return hmac.new(secret, b"petcd-hashkv:%d" % revision, hashlib.sha256).hexdigest()


def valid_hashkv_token(secret: bytes, revision: int, token: str) -> bool:
    return bool(secret) and hmac.compare_digest(hashkv_token(secret, revision), token)


def _target(url: str) -> tuple[str, bool]:
    from urllib.parse import urlsplit

    return host_port(url), urlsplit(url).scheme == "https"


def _error_name(e: grpc.RpcError) -> str:
    details = e.details() or ""
    if COMPACTED in details:
        return "compacted"
    if FUTURE_REV in details:
        return "future_rev"
    return f"{e.code().name}: {details}"


def _request(revision: int, secret: bytes) -> tuple[pb.HashKVRequest, list[tuple[str, str]]]:
    metadata = [(HASHKV_METADATA_KEY, hashkv_token(secret, revision))] if secret else []
    return pb.HashKVRequest(revision=revision), metadata


# ---------------------------------------------------------------- the initial check (supervisor)
def peer_hashes_sync(peers: dict[str, list[str]], revision: int, secret: bytes, tls: PeerTLS, timeout_s: float,
                     log: LogLine, me: str) -> list[PeerHash]:
    """etcd's getPeerHashKVs, blocking: each peer's endpoints in turn until one answers."""
    out: list[PeerHash] = []
    for mid, urls in peers.items():
        if not urls:
            continue
        answer = PeerHash(mid, urls)
        for url in urls:
            target, secure = _target(url)
            try:
                channel = grpc.secure_channel(target, tls.credentials()) if secure else grpc.insecure_channel(target)
            except OSError as e:
                answer.err = str(e)
                continue
            with channel:
                request, metadata = _request(revision, secret)
                try:
                    r = pb_grpc.MaintenanceStub(channel).HashKV(request, timeout=timeout_s, metadata=metadata)
                except grpc.RpcError as e:
                    answer.err = _error_name(e)
                    log("warn", "failed hash kv request", local_member_id=me, requested_revision=revision,
                        remote_peer_endpoint=url, error=answer.err)
                    continue
            answer.resp, answer.err = (r.hash, r.compact_revision, r.header.revision, r.header.member_id), ""
            break
        out.append(answer)
    return out


def initial_check(member_dir: str, raft_dir: str, my_hex: str, map_size_bytes: int, tls: PeerTLS, timeout_s: float, log: LogLine) -> None:
    """etcd's CheckInitialHashKV for a restarted member whose processes are not running yet.
    Raises InconsistentData with etcd's message on a mismatch."""
    log("info", "starting initial corruption check", local_member_id=my_hex, timeout=f"{timeout_s}s")
    store = MvccStore(os.path.join(member_dir, "mvcc"), map_size_bytes=map_size_bytes)
    try:
        h, crev, rev = store.hash_kv(0)
        _, _, secret = store.auth_state()
    finally:
        store.close()
    raft_log = RaftLog(raft_dir)
    try:
        members = active(raft_log.members)
    finally:
        raft_log.close()
    peers = {mid: list(info.get("client_urls") or []) for mid, info in members.items() if mid != my_hex}
    mismatch = 0
    for p in peer_hashes_sync(peers, rev, secret, tls, timeout_s, log, my_hex):
        fields = {"local_member_id": my_hex, "local_member_revision": rev, "local_member_compact_revision": crev,
                  "local_member_hash": h, "remote_peer_id": p.member_id, "remote_peer_endpoints": p.endpoints}
        if p.resp is not None:
            peer_hash, peer_crev, peer_rev, _ = p.resp
            fields.update(remote_peer_revision=peer_rev, remote_peer_compact_revision=peer_crev, remote_peer_hash=peer_hash)
            if h != peer_hash:
                if crev == peer_crev:
                    log("warn", "found different hash values from remote peer", **fields)
                    mismatch += 1
                else:
                    log("warn", "found different compact revision values from remote peer", **fields)
        elif p.err == "future_rev":
            log("warn", "cannot fetch hash from slow remote peer", **fields)
        elif p.err == "compacted":
            log("warn", "cannot fetch hash from remote peer; local member is behind", **fields)
    if mismatch:
        raise InconsistentData(f"{my_hex} found data inconsistency with peers")
    log("info", "initial corruption checking passed; no corruption", local_member_id=my_hex)
