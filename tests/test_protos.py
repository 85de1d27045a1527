"""The etcd v3 API protos in petcd.rpc.pb: generated code, wire facts, interop.

* The committed *_pb2*.py files must match what rpc/pb/generate.py produces
  from the .proto files.
* A handful of service names, RPC names and field numbers are pinned here;
  they are the wire contract with etcd clients and must never change.
* The generated stubs are exercised against a real etcd server
  (etcd 3.4 from PATH, as `make test` sets it up), proving the messages decode as etcd encodes them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time

import grpc
import pytest

from petcd.rpc.pb import (
    auth_pb2,
    generate,
    kv_pb2,
    rpc_pb2,
    rpc_pb2_grpc,
    v3election_pb2,
    v3election_pb2_grpc,
    v3lock_pb2,
    v3lock_pb2_grpc,
)

from tests.etcd_fixture import ETCD, ETCDCTL, free_port  # the reference binaries, found on PATH


# --------------------------------------------------------------------------
# (a) generated code is in step with the .proto sources


def test_generated_code_matches_protos():
    problems = generate.check()
    assert not problems, (
        "generated code is out of date; run `python -m petcd.rpc.pb.generate`:\n"
        + "\n".join(problems)
    )


# --------------------------------------------------------------------------
# (b) wire facts

SERVICES = {
    (rpc_pb2, "etcdserverpb.KV"): ["Range", "Put", "DeleteRange", "Txn", "Compact"],
    (rpc_pb2, "etcdserverpb.Watch"): ["Watch"],
    (rpc_pb2, "etcdserverpb.Lease"): [
        "LeaseGrant",
        "LeaseRevoke",
        "LeaseKeepAlive",
        "LeaseTimeToLive",
        "LeaseLeases",
    ],
    (rpc_pb2, "etcdserverpb.Cluster"): [
        "MemberAdd",
        "MemberRemove",
        "MemberUpdate",
        "MemberList",
        "MemberPromote",
    ],
    (rpc_pb2, "etcdserverpb.Maintenance"): [
        "Alarm",
        "Status",
        "Defragment",
        "Hash",
        "HashKV",
        "Snapshot",
        "MoveLeader",
        "Downgrade",
    ],
    (rpc_pb2, "etcdserverpb.Auth"): [
        "AuthEnable",
        "AuthDisable",
        "AuthStatus",
        "Authenticate",
        "UserAdd",
        "UserGet",
        "UserList",
        "UserDelete",
        "UserChangePassword",
        "UserGrantRole",
        "UserRevokeRole",
        "RoleAdd",
        "RoleGet",
        "RoleList",
        "RoleDelete",
        "RoleGrantPermission",
        "RoleRevokePermission",
    ],
    (v3lock_pb2, "v3lockpb.Lock"): ["Lock", "Unlock"],
    (v3election_pb2, "v3electionpb.Election"): [
        "Campaign",
        "Proclaim",
        "Leader",
        "Observe",
        "Resign",
    ],
}


@pytest.mark.parametrize(
    "module,full_name", list(SERVICES), ids=[name for _, name in SERVICES]
)
def test_service_names_and_methods(module, full_name):
    short = full_name.rsplit(".", 1)[1]
    service = module.DESCRIPTOR.services_by_name[short]
    assert service.full_name == full_name
    assert [m.name for m in service.methods] == SERVICES[(module, full_name)]


@pytest.mark.parametrize(
    "service,method,client_streaming,server_streaming",
    [
        ("Watch", "Watch", True, True),
        ("Lease", "LeaseKeepAlive", True, True),
        ("Maintenance", "Snapshot", False, True),
        ("KV", "Range", False, False),
    ],
)
def test_streaming_shapes(service, method, client_streaming, server_streaming):
    m = rpc_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    assert m.client_streaming is client_streaming
    assert m.server_streaming is server_streaming


def test_election_observe_is_server_streaming():
    m = v3election_pb2.DESCRIPTOR.services_by_name["Election"].methods_by_name[
        "Observe"
    ]
    assert (m.client_streaming, m.server_streaming) == (False, True)
    assert m.input_type.full_name == "v3electionpb.LeaderRequest"
    assert m.output_type.full_name == "v3electionpb.LeaderResponse"


@pytest.mark.parametrize(
    "message,field,number",
    [
        (rpc_pb2.ResponseHeader, "cluster_id", 1),
        (rpc_pb2.ResponseHeader, "member_id", 2),
        (rpc_pb2.ResponseHeader, "revision", 3),
        (rpc_pb2.ResponseHeader, "raft_term", 4),
        (rpc_pb2.RangeRequest, "sort_target", 6),
        (rpc_pb2.RangeRequest, "max_create_revision", 13),
        (rpc_pb2.PutRequest, "prev_kv", 4),
        (rpc_pb2.PutRequest, "ignore_lease", 6),
        (rpc_pb2.TxnRequest, "compare", 1),
        (rpc_pb2.TxnRequest, "failure", 3),
        (rpc_pb2.Compare, "lease", 8),
        (rpc_pb2.Compare, "range_end", 64),
        (rpc_pb2.RequestOp, "request_txn", 4),
        (rpc_pb2.WatchCreateRequest, "fragment", 8),
        (rpc_pb2.WatchRequest, "progress_request", 3),
        (rpc_pb2.WatchResponse, "fragment", 7),
        (rpc_pb2.WatchResponse, "events", 11),
        (rpc_pb2.LeaseTimeToLiveResponse, "grantedTTL", 4),
        (rpc_pb2.StatusResponse, "isLearner", 10),
        (rpc_pb2.MemberListRequest, "linearizable", 1),
        (rpc_pb2.AuthUserAddRequest, "hashedPassword", 4),
        (rpc_pb2.DowngradeRequest, "version", 2),
        (kv_pb2.KeyValue, "lease", 6),
        (kv_pb2.Event, "prev_kv", 3),
        (auth_pb2.Permission, "permType", 1),
        (v3election_pb2.LeaderKey, "lease", 4),
        (v3lock_pb2.LockResponse, "key", 2),
    ],
)
def test_field_numbers(message, field, number):
    assert message.DESCRIPTOR.fields_by_name[field].number == number


def test_message_package_names():
    assert kv_pb2.KeyValue.DESCRIPTOR.full_name == "mvccpb.KeyValue"
    assert kv_pb2.Event.DESCRIPTOR.full_name == "mvccpb.Event"
    assert auth_pb2.Role.DESCRIPTOR.full_name == "authpb.Role"
    assert (
        rpc_pb2.WatchProgressRequest.DESCRIPTOR.full_name
        == "etcdserverpb.WatchProgressRequest"
    )
    # Cross-file references resolve to the other packages' messages.
    kvs = rpc_pb2.RangeResponse.DESCRIPTOR.fields_by_name["kvs"]
    assert kvs.message_type.full_name == "mvccpb.KeyValue"
    perm = rpc_pb2.AuthRoleGrantPermissionRequest.DESCRIPTOR.fields_by_name["perm"]
    assert perm.message_type.full_name == "authpb.Permission"


def test_enum_values():
    assert kv_pb2.Event.DELETE == 1
    assert rpc_pb2.Compare.NOT_EQUAL == 3
    assert rpc_pb2.Compare.LEASE == 4
    assert rpc_pb2.RangeRequest.DESCEND == 2
    assert rpc_pb2.RangeRequest.VALUE == 4
    assert rpc_pb2.CORRUPT == 2  # top-level AlarmType
    assert rpc_pb2.AlarmRequest.DEACTIVATE == 2
    assert rpc_pb2.WatchCreateRequest.NODELETE == 1
    assert rpc_pb2.DowngradeRequest.CANCEL == 2
    assert auth_pb2.Permission.READWRITE == 2


def test_known_bytes_roundtrip():
    # Hand-encoded: field 1 (bytes) "k", field 6 (varint) lease 7.
    kv = kv_pb2.KeyValue.FromString(b"\x0a\x01k\x30\x07")
    assert (kv.key, kv.lease) == (b"k", 7)
    # Compare.range_end is tag 64: key (64 << 3 | 2) = 514 = varint 0x82 0x04.
    cmp = rpc_pb2.Compare(range_end=b"z")
    assert cmp.SerializeToString() == b"\x82\x04\x01z"


# --------------------------------------------------------------------------
# (c) interop with a real etcd server


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory):
    assert os.access(ETCD, os.X_OK), f"{ETCD} is required for the interop tests"
    tmp = tmp_path_factory.mktemp("etcd")
    client_port, peer_port = free_port(), free_port()
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    log_path = tmp / "etcd.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            ETCD,
            "--name", "default",
            "--data-dir", str(tmp / "data"),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"default={peer_url}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{client_port}")
    try:
        maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"etcd exited with {proc.returncode}:\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            try:
                status = maintenance.Status(rpc_pb2.StatusRequest(), timeout=1)
                if status.leader:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    "etcd did not become ready:\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.1)
        yield {"channel": channel, "client_url": client_url, "peer_url": peer_url}
    finally:
        channel.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_interop_put_and_range(etcd_server):
    kv = rpc_pb2_grpc.KVStub(etcd_server["channel"])
    put = kv.Put(rpc_pb2.PutRequest(key=b"/petcd/a", value=b"alpha"), timeout=5)
    assert put.header.revision >= 2
    assert put.header.cluster_id != 0 and put.header.member_id != 0
    assert put.header.raft_term >= 1

    put2 = kv.Put(
        rpc_pb2.PutRequest(key=b"/petcd/a", value=b"alpha2", prev_kv=True), timeout=5
    )
    assert put2.prev_kv.value == b"alpha"
    assert put2.header.revision == put.header.revision + 1

    kv.Put(rpc_pb2.PutRequest(key=b"/petcd/b", value=b"beta"), timeout=5)
    rng = kv.Range(
        rpc_pb2.RangeRequest(
            key=b"/petcd/",
            range_end=b"/petcd0",  # prefix end of "/petcd/"
            sort_order=rpc_pb2.RangeRequest.DESCEND,
            sort_target=rpc_pb2.RangeRequest.KEY,
        ),
        timeout=5,
    )
    assert rng.count == 2
    assert [(x.key, x.value) for x in rng.kvs] == [
        (b"/petcd/b", b"beta"),
        (b"/petcd/a", b"alpha2"),
    ]
    a = rng.kvs[1]
    assert a.create_revision == put.header.revision
    assert a.mod_revision == put2.header.revision
    assert a.version == 2
    assert a.lease == 0

    count = kv.Range(
        rpc_pb2.RangeRequest(key=b"/petcd/", range_end=b"/petcd0", count_only=True),
        timeout=5,
    )
    assert count.count == 2 and not count.kvs


def test_interop_lease_attached_to_key(etcd_server):
    lease = rpc_pb2_grpc.LeaseStub(etcd_server["channel"])
    kv = rpc_pb2_grpc.KVStub(etcd_server["channel"])
    grant = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=5)
    assert grant.ID != 0 and grant.TTL == 60 and grant.error == ""
    kv.Put(rpc_pb2.PutRequest(key=b"/petcd/leased", value=b"x", lease=grant.ID))
    got = kv.Range(rpc_pb2.RangeRequest(key=b"/petcd/leased"), timeout=5)
    assert got.kvs[0].lease == grant.ID
    ttl = lease.LeaseTimeToLive(
        rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID, keys=True), timeout=5
    )
    assert ttl.grantedTTL == 60 and list(ttl.keys) == [b"/petcd/leased"]


def test_interop_txn(etcd_server):
    kv = rpc_pb2_grpc.KVStub(etcd_server["channel"])
    kv.Put(rpc_pb2.PutRequest(key=b"/petcd/txn", value=b"v1"), timeout=5)

    def txn(expected: bytes) -> rpc_pb2.TxnResponse:
        return kv.Txn(
            rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(
                        key=b"/petcd/txn",
                        result=rpc_pb2.Compare.EQUAL,
                        target=rpc_pb2.Compare.VALUE,
                        value=expected,
                    )
                ],
                success=[
                    rpc_pb2.RequestOp(
                        request_put=rpc_pb2.PutRequest(key=b"/petcd/txn", value=b"v2")
                    ),
                    rpc_pb2.RequestOp(
                        request_range=rpc_pb2.RangeRequest(key=b"/petcd/txn")
                    ),
                ],
                failure=[
                    rpc_pb2.RequestOp(
                        request_range=rpc_pb2.RangeRequest(key=b"/petcd/txn")
                    )
                ],
            ),
            timeout=5,
        )

    ok = txn(b"v1")
    assert ok.succeeded is True
    assert [r.WhichOneof("response") for r in ok.responses] == [
        "response_put",
        "response_range",
    ]
    assert ok.responses[1].response_range.kvs[0].value == b"v2"

    bad = txn(b"v1")  # value is now v2
    assert bad.succeeded is False
    assert [r.WhichOneof("response") for r in bad.responses] == ["response_range"]
    assert bad.responses[0].response_range.kvs[0].value == b"v2"
    assert bad.header.revision == ok.header.revision


def test_interop_status(etcd_server):
    maintenance = rpc_pb2_grpc.MaintenanceStub(etcd_server["channel"])
    status = maintenance.Status(rpc_pb2.StatusRequest(), timeout=5)
    assert status.version.startswith("3.")
    assert status.leader == status.header.member_id  # single member leads
    assert status.raftTerm >= 1
    assert status.raftIndex >= 1
    assert status.raftAppliedIndex >= 1
    assert status.dbSize > 0
    assert status.dbSizeInUse > 0
    assert status.isLearner is False
    assert list(status.errors) == []


def test_interop_member_list(etcd_server):
    cluster = rpc_pb2_grpc.ClusterStub(etcd_server["channel"])
    resp = cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=5)
    assert len(resp.members) == 1
    member = resp.members[0]
    assert member.ID == resp.header.member_id
    assert member.name == "default"
    assert list(member.peerURLs) == [etcd_server["peer_url"]]
    assert list(member.clientURLs) == [etcd_server["client_url"]]
    assert member.isLearner is False


def test_interop_watch_stream(etcd_server):
    channel = etcd_server["channel"]
    kv = rpc_pb2_grpc.KVStub(channel)
    watch = rpc_pb2_grpc.WatchStub(channel)
    start = kv.Put(rpc_pb2.PutRequest(key=b"/petcd/w", value=b"1"), timeout=5)
    kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/petcd/w"), timeout=5)

    requests = iter(
        [
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=b"/petcd/w", start_revision=start.header.revision, prev_kv=True
                )
            )
        ]
    )
    stream = watch.Watch(requests, timeout=10)
    events = []
    try:
        for resp in stream:
            if resp.created:
                continue
            events.extend(resp.events)
            if len(events) >= 2:
                break
    finally:
        stream.cancel()
    assert [(e.type, e.kv.key) for e in events] == [
        (kv_pb2.Event.PUT, b"/petcd/w"),
        (kv_pb2.Event.DELETE, b"/petcd/w"),
    ]
    assert events[0].kv.value == b"1"
    assert events[1].prev_kv.value == b"1"


def test_interop_lock_and_election(etcd_server):
    channel = etcd_server["channel"]
    lease = rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(
        rpc_pb2.LeaseGrantRequest(TTL=30), timeout=5
    )
    lock = v3lock_pb2_grpc.LockStub(channel)
    held = lock.Lock(v3lock_pb2.LockRequest(name=b"petcd-lock", lease=lease.ID), timeout=5)
    assert held.key.startswith(b"petcd-lock/")
    lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=5)

    election = v3election_pb2_grpc.ElectionStub(channel)
    won = election.Campaign(
        v3election_pb2.CampaignRequest(name=b"petcd-elect", lease=lease.ID, value=b"me"),
        timeout=5,
    )
    assert won.leader.name == b"petcd-elect" and won.leader.lease == lease.ID
    leader = election.Leader(v3election_pb2.LeaderRequest(name=b"petcd-elect"), timeout=5)
    assert leader.kv.value == b"me" and leader.kv.key == won.leader.key
    election.Resign(v3election_pb2.ResignRequest(leader=won.leader), timeout=5)


def test_interop_etcdctl_reads_what_stubs_wrote(etcd_server):
    assert shutil.which(ETCDCTL), f"{ETCDCTL} is required"
    kv = rpc_pb2_grpc.KVStub(etcd_server["channel"])
    kv.Put(rpc_pb2.PutRequest(key=b"/petcd/ctl", value=b"from-python"), timeout=5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["ETCDCTL_API"] = "3"
    out = subprocess.run(
        [ETCDCTL, "--endpoints", etcd_server["client_url"], "get", "/petcd/ctl", "-w", "json"],
        capture_output=True,
        check=True,
        env=env,
        timeout=20,
    )
    doc = json.loads(out.stdout)
    assert base64.b64decode(doc["kvs"][0]["value"]) == b"from-python"
