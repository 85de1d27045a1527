"""petcdctl's ``alarm`` and ``defrag`` against etcdctl 3.4, each against its own real etcd whose
space quota was exhausted the same way (so both hold a NOSPACE alarm), byte for byte after
normalisation (see test_ctl_harness)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc

from petcd.rpc.pb import rpc_pb2, rpc_pb2_grpc
from tests.etcd_fixture import EtcdServer, closed_port
from tests.test_ctl_harness import ETCDCTL, PETCDCTL, Step, diff_runs, run_script

QUOTA_BYTES = 1 << 20
# 200 kB each. etcd checks the quota against its file size, which grows only when its backend
# commits (every 100 ms), so a fast client gets many puts past the quota before the first refusal.
MAX_FILL_PUTS = 1000


def _fill_until_nospace(endpoint: str) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for i in range(MAX_FILL_PUTS):
            try:
                kv.Put(rpc_pb2.PutRequest(key=b"fill/%d" % i, value=b"x" * 200_000), timeout=10)
            except grpc.RpcError as e:
                assert (e.code(), e.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
                return
    raise AssertionError(f"{MAX_FILL_PUTS} puts of 200 kB did not exhaust a {QUOTA_BYTES}-byte quota")


SCRIPT = [
    Step(["alarm", "list"]),
    Step(["-w", "json", "alarm", "list"]),
    Step(["-w", "protobuf", "alarm", "list"], pb="AlarmResponse"),
    Step(["-w", "table", "alarm", "list"]),
    Step(["alarm", "list", "extra"]),
    Step(["alarm", "disarm", "extra"]),
    Step(["put", "small", "v"]),
    Step(["del", "fill/0"]),
    Step(["defrag"]),
    Step(["defrag", "--cluster"]),
    Step(["--endpoints", "{ep},{dead}", "--dial-timeout=300ms", "--command-timeout=1s", "defrag"], endpoint=False),
    Step(["-w", "json", "alarm", "disarm"]),
    Step(["-w", "json", "alarm", "list"]),
    Step(["alarm", "disarm"]),
    Step(["alarm", "list"]),
]


def _run(tool: list, dead: str):
    server = EtcdServer(["--quota-backend-bytes", str(QUOTA_BYTES)]).start()
    try:
        _fill_until_nospace(server.endpoint)
        return run_script(SCRIPT, tool, server.endpoint, dead), server.endpoint
    finally:
        server.stop()


def test_petcdctl_alarm_and_defrag_match_etcdctl():
    dead = "127.0.0.1:%d" % closed_port()
    with ThreadPoolExecutor(2) as pool:
        fa, fb = pool.submit(_run, ETCDCTL, dead), pool.submit(_run, PETCDCTL, dead)
        (expected, expected_ep), (actual, actual_ep) = fa.result(), fb.result()
    assert b"alarm:NOSPACE" in expected[0].stdout, "the reference etcd holds the alarm"
    problems = diff_runs(SCRIPT, expected, actual, expected_ep, actual_ep)
    assert not problems, "%d differing steps:\n%s" % (len(problems), "\n".join(problems))
