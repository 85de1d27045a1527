"""Maintenance.Hash and HashKV: what etcd answers on one member, and equal hashes on every member
of a real 3-member petcd cluster (how an operator, or etcd's corruption check, finds a diverged one)."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from tests.servers import etcd_binary, start_cluster, start_etcd, start_petcd
from tests.waiting import wait_until


@pytest.fixture(scope="module", params=["etcd", "petcd"])
def member(request, tmp_path_factory):
    start = start_etcd if request.param == "etcd" else start_petcd
    server = start(str(tmp_path_factory.mktemp(request.param) / "data"))
    yield server
    server.stop()


def _call(endpoint: str, method: str, req):
    with grpc.insecure_channel(endpoint) as channel:
        return getattr(pb_grpc.MaintenanceStub(channel), method)(req, timeout=10)


def _error(endpoint: str, method: str, req) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        _call(endpoint, method, req)
    return err.value.code(), err.value.details()


def test_hash_kv_answers_as_etcd(member):
    with grpc.insecure_channel(member.endpoint) as channel:
        kv = pb_grpc.KVStub(channel)
        for i in range(5):
            kv.Put(pb.PutRequest(key=b"h/%d" % i, value=b"v%d" % i), timeout=10)
        current = kv.Range(pb.RangeRequest(key=b"h/0"), timeout=10).header.revision
        kv.Compact(pb.CompactionRequest(revision=current - 2, physical=True), timeout=10)
    resp = _call(member.endpoint, "HashKV", pb.HashKVRequest())
    assert (resp.header.revision, resp.compact_revision) == (current, current - 2)
    assert _call(member.endpoint, "HashKV", pb.HashKVRequest(revision=current)).hash == resp.hash
    assert _call(member.endpoint, "HashKV", pb.HashKVRequest(revision=current - 1)).hash != resp.hash
    assert _error(member.endpoint, "HashKV", pb.HashKVRequest(revision=current + 1)) == (
        grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
    assert _error(member.endpoint, "HashKV", pb.HashKVRequest(revision=current - 3)) == (
        grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
    whole = _call(member.endpoint, "Hash", pb.HashRequest())
    assert whole.header.revision == current and whole.hash != 0


def _hashkv_by_member(endpoints: str) -> dict[int, int]:
    out = subprocess.run([etcd_binary("etcdctl"), "--endpoints", endpoints, "-w", "json", "endpoint", "hashkv"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return {item["HashKV"]["header"]["member_id"]: item["HashKV"]["hash"] for item in json.loads(out.stdout)}


def test_every_member_of_a_cluster_has_the_same_hash(tmp_path):
    cluster = start_cluster(str(tmp_path), 3)
    try:
        with grpc.insecure_channel(cluster.members[0].endpoint) as channel:
            kv = pb_grpc.KVStub(channel)
            for i in range(50):
                kv.Put(pb.PutRequest(key=b"k/%d" % (i % 7), value=b"v%d" % i), timeout=10)
            kv.DeleteRange(pb.DeleteRangeRequest(key=b"k/3"), timeout=10)
            revision = kv.Range(pb.RangeRequest(key=b"k/0"), timeout=10).header.revision
        # The real etcdctl asks each member at the same revision; followers may lag a moment.
        def at_revision() -> list | None:
            statuses = [_call(m.endpoint, "HashKV", pb.HashKVRequest()) for m in cluster.members]
            return statuses if all(s.header.revision == revision for s in statuses) else None

        statuses = wait_until(at_revision, 30, f"every member at revision {revision}")
        assert [s.header.revision for s in statuses] == [revision] * 3
        hashes = _hashkv_by_member(cluster.endpoints())
        assert len(hashes) == 3 and len(set(hashes.values())) == 1, hashes
    finally:
        cluster.stop()
