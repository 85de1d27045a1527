"""Client processes for `petcd chaos`: random KV operations over gRPC, each one recorded.

A client is one OS process (multiprocessing, spawn). Before every operation it
picks a member at random, writes an invoke record to its own file, calls, and
writes a completion record: `ok`, `fail` (a definite error: the operation did
not take effect) or `info` (timeout, Unavailable, a lost connection: it may or
may not have taken effect). Records are msgpack, flushed one by one, so a
client killed in the middle of a call still leaves its open operation behind
(read back as `info`).

With --net netns a client process first moves into its own network namespace
(`cfg["netns"]`, a /run/netns path), so the nemesis can cut it off from members.

Operations are in `petcd.sim.check.history`'s format: put, get (linearizable
Range), cas (Txn: compare VALUE == expect, then put), delete, and txn (read two
keys, write both, in one Txn). Values are unique per run ("c3-17").
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import grpc
import msgpack

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc

CHANNEL_OPTIONS = [
    # Reconnect quickly to a member that comes back from a kill -9.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_retries", 0),  # a retried write would be applied twice, unknown to the history
]

# gRPC codes that mean the server refused the request before acting on it.
DEFINITE_FAILURES = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED,
}


def classify(err: grpc.RpcError) -> tuple[str, str]:
    """(outcome, reason) for a failed call: "fail" only when the request certainly did not take effect."""
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else "") or ""
    reason = f"{code.name if code else 'UNKNOWN'}: {details}"[:200]
    if code in DEFINITE_FAILURES:
        return "fail", reason
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect to all addresses" in details:
        # The channel had no connection (member down): gRPC failed the call without sending it.
        return "fail", reason
    return "info", reason


def _value(kvs: Any) -> bytes | None:
    return bytes(kvs[0].value) if kvs else None


class Recorder:
    def __init__(self, path: str) -> None:
        self._f = open(path, "ab")

    def write(self, record: list[Any]) -> None:
        self._f.write(msgpack.packb(record, use_bin_type=True))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_records(path: str) -> list[dict[str, Any]]:
    """One client's file back into history ops; an operation without a completion is `info`."""
    ops: dict[int, dict[str, Any]] = {}
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
        try:
            for rec in unpacker:
                if rec[0] == "i":
                    op = rec[1]
                    ops[op["id"]] = op
                elif rec[0] == "c":
                    _, op_id, outcome, complete_ms, result, error = rec
                    op = ops[op_id]
                    op["outcome"] = outcome
                    op["complete_ms"] = complete_ms if outcome != "info" else None
                    op["result"] = result if outcome == "ok" else {}
                    if error:
                        op["error"] = error
        except (msgpack.ExtraData, msgpack.FormatError, ValueError):
            pass  # a torn last record: the operations before it stand
    return list(ops.values())


def run_client(cfg: dict[str, Any]) -> None:
    """The body of one client process (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (Ctrl-C reaches the whole terminal group)
    if cfg.get("netns"):
        # --net netns: this client's own namespace, entered before any socket or gRPC thread exists
        # (threads made later inherit it), so its links to the members can be cut.
        from petcd.sim.netns import enter

        enter(cfg["netns"])
    stop_event = cfg["stop_event"]
    rng = random.Random(f"{cfg['seed']}/client/{cfg['index']}")
    process = f"c{cfg['index']}"
    timeout_s: float = cfg["op_timeout_s"]
    keys = [k.encode() for k in cfg["keys"]]
    channels = [grpc.insecure_channel(ep, options=CHANNEL_OPTIONS) for ep in cfg["endpoints"]]
    kv = [pb_grpc.KVStub(ch) for ch in channels]
    rec = Recorder(cfg["out_path"])
    # Every client is up (grpc imported, channels made) before the clock starts: the parent then
    # sets the shared start and stop times and `go`.
    cfg["ready"].put(cfg["index"])
    if not cfg["go"].wait(cfg.get("ready_timeout_s", 120)) or stop_event.is_set():
        rec.close()
        return
    start_ns: int = cfg["start_ns"].value
    stop_at_ns: int = cfg["stop_at_ns"].value
    known: dict[bytes, bytes | None] = {}  # the last value this client saw for each key

    def now_ms() -> int:
        return (time.monotonic_ns() - start_ns) // 1_000_000

    n = 0
    try:
        while time.monotonic_ns() < stop_at_ns and not stop_event.is_set():
            n += 1
            stub = kv[rng.randrange(len(kv))]
            key = rng.choice(keys)
            value = f"{process}-{n}".encode()
            roll = rng.random()
            op: dict[str, Any] = {"process": process, "id": n, "invoke_ms": 0, "complete_ms": None, "outcome": "info", "key": key, "result": {}}
            if roll < 0.30:
                op["kind"] = "get"
                call = lambda: stub.Range(pb.RangeRequest(key=key), timeout=timeout_s)  # noqa: E731
            elif roll < 0.55:
                op.update(kind="put", value=value)
                call = lambda: stub.Put(pb.PutRequest(key=key, value=value), timeout=timeout_s)  # noqa: E731
            elif roll < 0.75:
                expect = known.get(key) or b""
                op.update(kind="cas", expect=expect, value=value)
                txn = pb.TxnRequest(compare=[pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.VALUE, key=key, value=expect)],
                                    success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=value))])
                call = lambda: stub.Txn(txn, timeout=timeout_s)  # noqa: E731
            elif roll < 0.85:
                op["kind"] = "delete"
                call = lambda: stub.DeleteRange(pb.DeleteRangeRequest(key=key), timeout=timeout_s)  # noqa: E731
            else:
                other = rng.choice([k for k in keys if k != key])
                pair = [key, other]
                del op["key"]
                op.update(kind="txn", reads=pair, writes={k: value for k in pair}, guard={})
                txn = pb.TxnRequest(success=[*(pb.RequestOp(request_range=pb.RangeRequest(key=k)) for k in pair),
                                             *(pb.RequestOp(request_put=pb.PutRequest(key=k, value=value)) for k in pair)])
                call = lambda: stub.Txn(txn, timeout=timeout_s)  # noqa: E731
            op["invoke_ms"] = now_ms()
            rec.write(["i", op])
            try:
                resp = call()
            except grpc.RpcError as e:
                outcome, reason = classify(e)
                rec.write(["c", n, outcome, now_ms(), {}, reason])
                time.sleep(0.1 if outcome == "fail" else 0.0)  # do not spin on a dead member
                continue
            done = now_ms()
            result = _result(op, resp)
            rec.write(["c", n, "ok", done, result, None])
            _learn(known, op, result)
            time.sleep(rng.random() * 0.005)
    finally:
        rec.close()
        for ch in channels:
            ch.close()


def _result(op: dict[str, Any], resp: Any) -> dict[str, Any]:
    rev = resp.header.revision
    kind = op["kind"]
    if kind == "get":
        return {"value": _value(resp.kvs), "revision": rev}
    if kind == "put":
        return {"revision": rev}
    if kind == "cas":
        return {"succeeded": bool(resp.succeeded), "revision": rev}
    if kind == "delete":
        return {"deleted": resp.deleted, "revision": rev}
    reads = [r.response_range for r in resp.responses[:2]]
    return {"succeeded": True, "values": {k: _value(rr.kvs) for k, rr in zip(op["reads"], reads)}, "revision": rev}


def _learn(known: dict[bytes, bytes | None], op: dict[str, Any], result: dict[str, Any]) -> None:
    kind = op["kind"]
    if kind == "get":
        known[op["key"]] = result["value"]
    elif kind == "put" or (kind == "cas" and result["succeeded"]):
        known[op["key"]] = op["value"]
    elif kind == "delete":
        known[op["key"]] = None
    elif kind == "txn":
        known.update(op["writes"])


def merge_histories(paths: list[str]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for path in paths:
        if os.path.exists(path):
            ops.extend(read_records(path))
    ops.sort(key=lambda o: (o["invoke_ms"], o["process"], o["id"]))
    return ops
