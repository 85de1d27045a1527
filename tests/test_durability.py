"""kill -9 a whole member during a write load: every acknowledged write survives, no txn is half applied."""

from __future__ import annotations

import os
import signal
import threading

import grpc

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from tests.servers import start_petcd
from tests.waiting import wait_until

WRITERS = 8
LOAD_TXNS = 50  # acknowledged before the kill, with the writers still going


def _writer(endpoint: str, wid: int, acked: list[int], stop: threading.Event) -> None:
    stub = pb_grpc.KVStub(grpc.insecure_channel(endpoint))
    i = 0
    while not stop.is_set():
        i += 1
        # Two keys in one txn: after the crash both exist or neither does.
        txn = pb.TxnRequest(
            success=[
                pb.RequestOp(request_put=pb.PutRequest(key=f"a/{wid}/{i}".encode(), value=b"x" * 100)),
                pb.RequestOp(request_put=pb.PutRequest(key=f"b/{wid}/{i}".encode(), value=b"y")),
            ]
        )
        try:
            stub.Txn(txn, timeout=2.0)
        except grpc.RpcError:
            return  # the member is gone
        acked.append(i)


def _keys(stub: pb_grpc.KVStub, prefix: bytes) -> set[bytes]:
    resp = stub.Range(pb.RangeRequest(key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1]), keys_only=True))
    return {kv.key[len(prefix):] for kv in resp.kvs}


def test_kill_9_of_every_process_loses_no_acknowledged_write(tmp_path):
    data_dir = str(tmp_path / "member")
    server = start_petcd(data_dir)
    acked: list[list[int]] = [[] for _ in range(WRITERS)]
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(server.endpoint, w, acked[w], stop)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(len(a) for a in acked) > LOAD_TXNS, 60, f"{LOAD_TXNS} transactions are acknowledged")
    # The whole process group: supervisor, Raft actor, apply actor, gateway, all at once.
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    total_acked = sum(len(a) for a in acked)
    assert total_acked > LOAD_TXNS, f"the load did not get going ({total_acked} acknowledged writes)"

    restarted = start_petcd(data_dir)
    try:
        stub = restarted.stub()
        a_keys, b_keys = _keys(stub, b"a/"), _keys(stub, b"b/")
        assert a_keys == b_keys, "a txn was half applied"
        for w in range(WRITERS):
            for i in acked[w]:
                assert f"{w}/{i}".encode() in a_keys, f"acknowledged write {w}/{i} lost"
        # Revisions continue from where they were: one per txn, nothing applied twice.
        rev = stub.Range(pb.RangeRequest(key=b"a/", range_end=b"a0", count_only=True)).header.revision
        assert rev == 1 + len(a_keys)
        print(f"\n{total_acked} acknowledged txns before kill -9, {len(a_keys)} present after restart")
    finally:
        restarted.stop()
