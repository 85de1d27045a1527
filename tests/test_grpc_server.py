"""The built-in gRPC server (rpc/grpc_server.py) under grpcio's own client: the generated
servicer registration, unary and streaming calls, status codes and messages, metadata, deadlines,
cancellation, flow control of large answers, the request size bound."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest

from petcd.rpc import hpack, http2
from petcd.rpc.grpc_server import BuiltinGrpcServer
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import kv_pb2
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc

MAX_REQUEST_BYTES = 1 << 20
DEADLINE_S = 10.0  # what a condition gets before the test fails


class KV(pb_grpc.KVServicer):
    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.ended = asyncio.Event()

    async def Range(self, request, context):
        if request.key == b"boom":
            raise RuntimeError("bad handler")
        if request.key == b"abort":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: ünïcode 100% \n done")
        if request.key == b"hang":
            try:
                await asyncio.Event().wait()
            finally:
                self.seen.append(("hang ended", context.done(), context.time_remaining()))
                self.ended.set()
        if request.key == b"big":
            return pb.RangeResponse(kvs=[kv_pb2.KeyValue(key=b"k%d" % i, value=b"v" * 100_000) for i in range(80)])
        self.seen.append((dict(context.invocation_metadata()), context.peer(), context.time_remaining()))
        return pb.RangeResponse(count=len(request.key))


class Maintenance(pb_grpc.MaintenanceServicer):
    async def Snapshot(self, request, context):
        """A streaming method written as a plain coroutine that aborts (petcd's _unimplemented is one)."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "petcd: Maintenance.Snapshot is not implemented yet")


class Watch(pb_grpc.WatchServicer):
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def Watch(self, request_iterator, context):
        try:
            async for req in request_iterator:
                yield pb.WatchResponse(watch_id=req.create_request.watch_id, created=True)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture
def served():
    """(event loop runner, channel factory, servicers, handled tally) around a live server."""
    loop = asyncio.new_event_loop()
    handled: collections.Counter = collections.Counter()
    kv, watch = KV(), Watch()

    async def start():
        server = BuiltinGrpcServer(MAX_REQUEST_BYTES, handled)
        pb_grpc.add_KVServicer_to_server(kv, server)
        pb_grpc.add_WatchServicer_to_server(watch, server)
        pb_grpc.add_MaintenanceServicer_to_server(Maintenance(), server)
        return await asyncio.get_running_loop().create_server(lambda: server.protocol("peer-1", lambda: None), "127.0.0.1", 0)

    listener = loop.run_until_complete(start())
    port = listener.sockets[0].getsockname()[1]
    channels = []

    def channel():
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)])
        channels.append(ch)
        return ch

    channel.port = port
    yield loop.run_until_complete, channel, kv, watch, handled
    for ch in channels:
        loop.run_until_complete(ch.close())
    listener.close()
    loop.run_until_complete(listener.wait_closed())
    loop.close()


async def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details()


def test_a_unary_call_gets_its_answer_metadata_peer_and_deadline(served):
    run, channel, kv, _, handled = served

    async def go():
        stub = pb_grpc.KVStub(channel())
        resp = await stub.Range(pb.RangeRequest(key=b"abc"), metadata=(("token", "t1"), ("blob-bin", b"\x00\xff")), timeout=30)
        assert resp.count == 3
        resp = await stub.Range(pb.RangeRequest(key=b"ab"))
        assert resp.count == 2

    run(go())
    (meta, peer, remaining), (_, _, no_deadline) = kv.seen
    assert meta["token"] == "t1" and meta["blob-bin"] == b"\x00\xff" and peer == "peer-1"
    # grpc's client sends the time left rounded up to three significant figures: a deadline 30 s away
    # can arrive as "30100m" (30001 ms left when the header was written), so up to 30.1 s.
    assert 0 < remaining <= 30.1 and no_deadline is None
    assert handled[("unary", "etcdserverpb.KV", "Range", "OK")] == 2


def test_errors_reach_the_client_with_their_code_and_exact_message(served):
    run, channel, _, _, handled = served

    async def go():
        stub = pb_grpc.KVStub(channel())
        assert await _status(stub.Range(pb.RangeRequest(key=b"abort"))) == (
            grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: ünïcode 100% \n done")
        code, details = await _status(stub.Range(pb.RangeRequest(key=b"boom")))
        assert (code, details) == (grpc.StatusCode.UNKNOWN, "Unexpected RuntimeError: bad handler")
        assert await _status(stub.Put(pb.PutRequest(key=b"k"))) == (grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        snapshot = pb_grpc.MaintenanceStub(channel()).Snapshot(pb.SnapshotRequest())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in snapshot:
                pass
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNIMPLEMENTED, "petcd: Maintenance.Snapshot is not implemented yet")
        unknown_method = channel().unary_unary("/etcdserverpb.KV/Nope")(b"")
        assert await _status(unknown_method) == (grpc.StatusCode.UNIMPLEMENTED, "unknown method Nope for service etcdserverpb.KV")
        unknown_service = channel().unary_unary("/etcdserverpb.Nope/Range")(b"")
        assert await _status(unknown_service) == (grpc.StatusCode.UNIMPLEMENTED, "unknown service etcdserverpb.Nope")

    run(go())
    assert handled[("unary", "etcdserverpb.KV", "Range", "FAILED_PRECONDITION")] == 1
    assert handled[("unary", "etcdserverpb.KV", "Range", "UNKNOWN")] == 1


def test_a_deadline_ends_the_handler(served):
    run, channel, kv, _, handled = served

    async def go():
        code, _ = await _status(pb_grpc.KVStub(channel()).Range(pb.RangeRequest(key=b"hang"), timeout=0.2))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(kv.ended.wait(), DEADLINE_S)

    run(go())
    ((what, done, remaining_s),) = kv.seen
    assert what == "hang ended" and not done and remaining_s < 0.2


def test_an_answer_larger_than_every_window_arrives_whole(served):
    """8 MB: far past the client's initial windows (64 KiB), so it goes as they open."""
    run, channel, _, _, _ = served

    async def go():
        resp = await pb_grpc.KVStub(channel()).Range(pb.RangeRequest(key=b"big"), timeout=DEADLINE_S)
        assert len(resp.kvs) == 80 and all(kv.value == b"v" * 100_000 for kv in resp.kvs)

    run(go())


def test_a_request_over_the_size_bound_is_refused_as_grpc_go_does(served):
    run, channel, _, _, handled = served

    async def go():
        request = pb.RangeRequest(key=b"x" * (MAX_REQUEST_BYTES + 10))
        code, details = await _status(pb_grpc.KVStub(channel()).Range(request, timeout=DEADLINE_S))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details == f"grpc: received message larger than max ({request.ByteSize()} vs. {MAX_REQUEST_BYTES})"

    run(go())
    assert handled == collections.Counter({("unary", "etcdserverpb.KV", "Range", "RESOURCE_EXHAUSTED"): 1}), "counted once"


def test_a_bidi_stream_answers_each_request_and_its_handler_ends_when_the_client_cancels(served):
    run, channel, _, watch, handled = served

    async def go():
        call = pb_grpc.WatchStub(channel()).Watch()
        for watch_id in (7, 8):
            await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k", watch_id=watch_id)))
            resp = await asyncio.wait_for(call.read(), DEADLINE_S)
            assert (resp.watch_id, resp.created) == (watch_id, True)
        call.cancel()
        await asyncio.wait_for(watch.cancelled.wait(), DEADLINE_S)

    run(go())
    assert handled[("bidi_stream", "etcdserverpb.Watch", "Watch", "CANCELLED")] == 1


def test_a_call_with_malformed_binary_metadata_gets_a_trailers_only_error(served):
    """What no grpcio client sends, written by hand: a "-bin" value that is not base64."""
    run, channel, _, _, handled = served
    headers = hpack.encode([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/etcdserverpb.KV/Range"),
                            (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"x-bin", b"!!")])

    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", channel.port)
        writer.write(http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0)
                     + http2.frame(http2.HEADERS, http2.FLAG_END_HEADERS, 1, headers)
                     + http2.frame(http2.DATA, http2.FLAG_END_STREAM, 1, b"\0\0\0\0\0"))
        decoder = hpack.Decoder()
        while True:
            head = await asyncio.wait_for(reader.readexactly(9), DEADLINE_S)
            payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
            if head[3] == http2.HEADERS:
                writer.close()
                return head[4] & http2.FLAG_END_STREAM, dict(decoder.decode(payload))

    end_stream, trailers = run(go())
    assert end_stream and trailers[b":status"] == b"200"
    assert (trailers[b"grpc-status"], trailers[b"grpc-message"]) == (b"13", b"malformed binary metadata x-bin")
    assert handled == collections.Counter(), "refused before any handler: nothing counted"
