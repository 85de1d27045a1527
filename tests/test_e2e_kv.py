"""A real petcd member, started as a user would, driven by the real etcdctl 3.4 and by gRPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import grpc
import pytest

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.store.mvcc import COMPACT_STEP_RECORDS, MvccStore, map_size_for_quota
from tests.servers import etcd_binary, free_port, petcd_command, start_petcd


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    server = start_petcd(str(tmp_path_factory.mktemp("e2e") / "data"))
    yield server
    assert server.stop() == 0, server.log()


def etcdctl(member, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ETCDCTL_API": "3"}
    return subprocess.run(
        [etcd_binary("etcdctl"), "--endpoints", member.endpoint, *args], input=stdin, capture_output=True, text=True, env=env, timeout=30
    )


def test_put_get_del_with_the_real_etcdctl(member):
    assert etcdctl(member, "put", "e2e/a", "1").stdout == "OK\n"
    assert etcdctl(member, "put", "e2e/b", "2").stdout == "OK\n"
    assert etcdctl(member, "get", "e2e/", "--prefix").stdout == "e2e/a\n1\ne2e/b\n2\n"
    assert etcdctl(member, "get", "e2e/a", "--print-value-only").stdout == "1\n"
    assert etcdctl(member, "del", "e2e/", "--prefix").stdout == "2\n"
    assert etcdctl(member, "get", "e2e/", "--prefix").stdout == ""


def test_txn_from_stdin_with_the_real_etcdctl(member):
    etcdctl(member, "put", "txn/k", "v1")
    script = 'value("txn/k") = "v1"\n\nput txn/k v2\n\nput txn/other x\n\n'
    out = etcdctl(member, "txn", stdin=script)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "SUCCESS\n\nOK\n"
    assert etcdctl(member, "get", "txn/k", "--print-value-only").stdout == "v2\n"


def test_grpcios_server_still_serves_when_asked_for(tmp_path):
    """--experimental-grpc-server grpcio: the front splices gRPC to grpcio's server, as before
    petcd had its own; unary calls and a server stream (snapshot) both go through."""
    server = start_petcd(str(tmp_path / "data"), "--experimental-grpc-server", "grpcio")
    try:
        assert etcdctl(server, "put", "g/a", "1").stdout == "OK\n"
        assert etcdctl(server, "get", "g/", "--prefix").stdout == "g/a\n1\n"
        saved = etcdctl(server, "snapshot", "save", str(tmp_path / "snap.db"))
        assert saved.returncode == 0 and saved.stdout == f"Snapshot saved at {tmp_path / 'snap.db'}\n", saved.stderr
    finally:
        assert server.stop() == 0, server.log()


def test_errors_reach_etcdctl_as_etcd_sends_them(member):
    out = etcdctl(member, "get", "")
    assert out.returncode == 1 and "etcdserver: key is not provided" in out.stderr
    out = etcdctl(member, "get", "nope", "--rev", "1000000")
    assert out.returncode == 1 and "etcdserver: mvcc: required revision is a future revision" in out.stderr
    out = etcdctl(member, "put", "missing-key", "--ignore-value")
    assert out.returncode == 1 and "etcdserver: key not found" in out.stderr


def test_endpoint_health_and_status(member):
    out = etcdctl(member, "endpoint", "health")
    assert out.returncode == 0, out.stderr
    # etcdctl 3.4 prints health on stderr
    assert out.stderr.startswith(f"{member.endpoint} is healthy: successfully committed proposal: took = ")
    out = etcdctl(member, "endpoint", "status", "-w", "json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)[0]["Status"]
    assert status["leader"] == status["header"]["member_id"]
    assert status["raftTerm"] >= 1 and status["raftIndex"] >= status["raftAppliedIndex"] >= 1


def test_history_compaction_through_grpc(member):
    stub = pb_grpc.KVStub(grpc.insecure_channel(member.endpoint))
    r1 = stub.Put(pb.PutRequest(key=b"hist", value=b"1")).header.revision
    r2 = stub.Put(pb.PutRequest(key=b"hist", value=b"2")).header.revision
    assert r2 == r1 + 1
    assert stub.Range(pb.RangeRequest(key=b"hist", revision=r1)).kvs[0].value == b"1"
    stub.Compact(pb.CompactionRequest(revision=r2, physical=True))
    with pytest.raises(grpc.RpcError) as err:
        stub.Range(pb.RangeRequest(key=b"hist", revision=r1))
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert err.value.details() == "etcdserver: mvcc: required revision has been compacted"
    assert stub.Range(pb.RangeRequest(key=b"hist", revision=r2)).kvs[0].value == b"2"


def test_a_physical_compaction_answers_once_its_records_are_gone(member):
    """Its records go a step (COMPACT_STEP_RECORDS) per Raft entry, as a default compaction's do,
    so none of them holds up writes; the answer waits for the last step, as etcd's does."""
    stub = pb_grpc.KVStub(grpc.insecure_channel(member.endpoint))
    ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"phys/%03d" % i, value=b"v")) for i in range(128)]
    txns = 3 * COMPACT_STEP_RECORDS // len(ops)  # the same keys again and again: several steps' worth superseded
    for _ in range(txns):
        revision = stub.Txn(pb.TxnRequest(success=ops)).header.revision
    store = MvccStore(os.path.join(member.data_dir, "member", "mvcc"), readonly=True, map_size_bytes=map_size_for_quota(0))
    try:
        records_before = store.digest()[2]
        stub.Compact(pb.CompactionRequest(revision=revision, physical=True), timeout=60)
        assert not store.compaction_pending()
        assert records_before - store.digest()[2] >= (txns - 1) * len(ops)
    finally:
        store.close()
    assert len(stub.Range(pb.RangeRequest(key=b"phys/", range_end=b"phys0")).kvs) == len(ops)


def test_unimplemented_services_say_so(member):
    stub = pb_grpc.AuthStub(grpc.insecure_channel(member.endpoint))
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.MaintenanceStub(grpc.insecure_channel(member.endpoint)).Downgrade(pb.DowngradeRequest())
    # etcd 3.4 has no Downgrade RPC: its answer, word for word
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNIMPLEMENTED, "unknown method Downgrade for service etcdserverpb.Maintenance")
    with pytest.raises(grpc.RpcError) as err:
        stub.Authenticate(pb.AuthenticateRequest(name="root", password="x"))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")


def test_a_second_member_on_a_busy_port_fails_clearly(member, tmp_path):
    port = int(member.endpoint.rsplit(":", 1)[1])
    peer = free_port()
    out = subprocess.run(
        [*petcd_command(), "--data-dir", str(tmp_path / "other"), "--listen-client-urls", f"http://127.0.0.1:{port}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode != 0
    assert f"listen tcp 127.0.0.1:{port}: bind: address already in use" in out.stderr


def test_bad_flags_and_unwritable_data_dir_fail_with_one_line(tmp_path):
    out = subprocess.run([*petcd_command(), "--no-such-flag"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stderr == "petcd: flag provided but not defined: -no-such-flag\n"
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    port, peer = free_port(), free_port()
    out = subprocess.run(
        [*petcd_command(), "--data-dir", str(blocker / "data"), "--listen-client-urls", f"http://127.0.0.1:{port}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode != 0
    assert "cannot access data directory" in out.stderr


def test_sigterm_stops_every_process_cleanly(tmp_path):
    server = start_petcd(str(tmp_path / "data"))
    children = subprocess.run(["pgrep", "-s", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 4, "supervisor, raft, apply and gateway processes"
    assert server.stop(signal.SIGTERM) == 0
    left = subprocess.run(["pgrep", "-s", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    assert left == []


def test_a_dead_child_takes_the_member_down(tmp_path):
    server = start_petcd(str(tmp_path / "data"))
    pids = subprocess.run(["pgrep", "-f", "petcd.actors.proc_runtime apply", "-s", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(pids) == 1
    os.kill(int(pids[0]), signal.SIGKILL)
    assert server.proc.wait(timeout=20) == 1
    assert "member process exited; stopping the member" in server.log()


def test_petcd_refuses_python_optimised_mode(tmp_path):
    """`python -O` strips assertions, petcd's safety checks: the member refuses to start, and so
    does the simulator (the same actor code)."""
    port, peer = free_port(), free_port()
    member = [sys.executable, "-O", "-m", "petcd.rpc.server_cli", "--data-dir", str(tmp_path / "data"),
              "--listen-client-urls", f"http://127.0.0.1:{port}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
              "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", "--initial-cluster", f"default=http://127.0.0.1:{peer}"]
    env = {**os.environ, "PYTHONOPTIMIZE": "1"}
    for command, environ in ((member, None), ([*petcd_command(), "sim", "run", "--seed", "1"], env)):
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, env=environ)
        assert out.returncode != 0
        assert "petcd: refusing to run under python -O" in out.stderr
    assert not (tmp_path / "data").exists(), "nothing was written before refusing"
