"""The built-in gRPC server: gRPC over rpc/http2.py on the front's own connections.

grpcio's server costs 150-177 µs of CPU per call before petcd's handler runs (README,
Benchmarks); this one reads the frames, decodes the headers and calls the very same servicers
(registered through the generated `add_*Servicer_to_server`, which hand us their method table),
with a context that offers what they use of grpc.aio's: abort, invocation_metadata, peer,
time_remaining, cancelled, done.

A call: HEADERS (`:path` names the method, `grpc-timeout` the deadline, other headers are the
metadata) then length-prefixed messages in DATA frames. The answer: HEADERS (`:status 200`),
a DATA frame per message, then trailers with `grpc-status` and `grpc-message`; an error before
any message is one trailers-only HEADERS frame. Compressed messages are refused (no gRPC client
of etcd's compresses unless asked). Bounds: MAX_QUEUED_MESSAGES unread per streaming call, and
rpc/http2.py's per connection.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc

from petcd.rpc import hpack, http2
from petcd.rpc.errors import Aborted

# Requests a streaming call may queue unread; past it the call ends with "too many requests".
MAX_QUEUED_MESSAGES = 1000
# grpc-timeout units, in seconds.
_TIMEOUT_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9}
# Headers that are gRPC's or HTTP's own, not the caller's metadata.
_NOT_METADATA = {b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding", b"user-agent"}
_RESPONSE_HEADERS = hpack.encode([(b":status", b"200"), (b"content-type", b"application/grpc")])
_OK_TRAILERS = hpack.encode([(b"grpc-status", b"0")])
_PREFIX_BYTES = 5  # a message: compressed flag (1 byte), length (4 bytes big-endian), body


class _Handler:
    """One method: its grpc.RpcMethodHandler and the labels /metrics counts it under."""

    __slots__ = ("handler", "labels")

    def __init__(self, service: str, method: str, handler: grpc.RpcMethodHandler) -> None:
        self.handler = handler
        kind = {(False, False): "unary", (False, True): "server_stream", (True, False): "client_stream",
                (True, True): "bidi_stream"}[(handler.request_streaming, handler.response_streaming)]
        self.labels = (kind, service, method)


class BuiltinGrpcServer:
    """Takes servicers as grpc.aio.server does (the generated add_*Servicer_to_server), and
    serves the HTTP/2 connections the front hands it (`protocol`)."""

    def __init__(self, max_receive_bytes: int, handled: Any = None) -> None:
        self._max_receive_bytes = max_receive_bytes
        self._methods: dict[bytes, _Handler] = {}
        self.handled = handled  # a Tally of (type, service, method, code) for /metrics, or None
        self._connections: set[GrpcProtocol] = set()

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The generated code registers each service twice; the registered form below suffices."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for method, handler in handlers.items():
            self._methods[f"/{service}/{method}".encode()] = _Handler(service, method, handler)

    def protocol(self, peer: str, on_lost: Callable[[], None]) -> GrpcProtocol:
        """A connection's protocol; its calls name `peer`, and `on_lost` runs when it ends."""
        def lost() -> None:
            self._connections.discard(protocol)
            on_lost()

        protocol = GrpcProtocol(self, peer, lost)
        self._connections.add(protocol)
        return protocol

    def close(self) -> None:
        """On shutdown: every connection gets a GOAWAY and closes; the calls in progress end."""
        for protocol in list(self._connections):
            protocol.close()

    def count(self, labels: tuple[str, str, str], code: grpc.StatusCode) -> None:
        if self.handled is not None:
            self.handled[(*labels, code.name)] += 1


class Context:
    """What the servicers use of grpc.aio.ServicerContext."""

    __slots__ = ("_metadata", "_peer", "_deadline", "_done", "_cancelled", "status")

    def __init__(self, metadata: tuple[tuple[str, Any], ...], peer: str, deadline: float | None) -> None:
        self._metadata = metadata
        self._peer = peer
        self._deadline = deadline
        self._done = False
        self._cancelled = False
        self.status: tuple[grpc.StatusCode, str] | None = None  # set_code / set_details (the generated base servicer's)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = None) -> NoReturn:
        raise Aborted(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return self._cancelled

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = (code, self.status[1] if self.status else "")

    def set_details(self, details: str) -> None:
        self.status = (self.status[0] if self.status else grpc.StatusCode.UNKNOWN, details)

    def done(self) -> bool:
        return self._done


class _Call:
    __slots__ = ("stream_id", "method", "context", "buffer", "requests", "task", "sent_headers", "timer", "expired")

    def __init__(self, stream_id: int, method: _Handler, context: Context) -> None:
        self.stream_id = stream_id
        self.method = method
        self.context = context
        self.buffer = bytearray()  # DATA not yet cut into messages
        self.requests: asyncio.Queue[Any] | None = asyncio.Queue() if method.handler.request_streaming else None
        self.task: asyncio.Task[None] | None = None
        self.sent_headers = False
        self.timer: asyncio.TimerHandle | None = None
        self.expired = False


_END = object()  # in a streaming call's request queue: the client half-closed


class GrpcProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: BuiltinGrpcServer, peer: str, on_lost: Callable[[], None]) -> None:
        self._server = server
        self._peer = peer
        self._on_lost = on_lost
        self._conn = http2.ServerConnection()
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, _Call] = {}
        self._room: dict[int, asyncio.Event] = {}  # streams whose writer waits for the window
        self._writable = asyncio.Event()
        self._writable.set()
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()

    # --- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._conn.receive(data)
        except http2.ConnectionError_:
            self._flush()
            self._transport.close()
            return
        for event in events:
            if isinstance(event, http2.DataReceived):
                self._on_data(event)
            elif isinstance(event, http2.RequestReceived):
                self._on_request(event)
            elif isinstance(event, http2.StreamReset):
                self._end_call(event.stream_id)
            elif isinstance(event, http2.WindowOpened):
                for stream_id in event.stream_ids:
                    room = self._room.pop(stream_id, None)
                    if room is not None:
                        room.set()
            elif isinstance(event, http2.GoAwayReceived):
                pass  # the client sends no new calls; those in progress finish
        self._schedule_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.closed = True
        for stream_id in list(self._calls):
            self._end_call(stream_id)
        self._writable.set()
        self._on_lost()

    def close(self) -> None:
        self._conn.close()
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Everything queued goes out in one write: the responses of one loop turn together."""
        self._flush_scheduled = False
        out = self._conn.data_to_send()
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(out)

    # --- calls
    def _on_request(self, event: http2.RequestReceived) -> None:
        path = b""
        content_type = b""
        timeout_s: float | None = None
        metadata: list[tuple[str, Any]] = []
        for name, value in event.headers:
            if name == b":path":
                path = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout_s = _timeout_s(value)
            elif name == b"grpc-encoding" and value != b"identity":
                self._trailers_only(event.stream_id, grpc.StatusCode.UNIMPLEMENTED,
                                    f"grpc: Decompressor is not installed for grpc-encoding \"{value.decode(errors='replace')}\"")
                return
            elif not name.startswith(b":") and name not in _NOT_METADATA:
                key = name.decode("latin-1")
                try:
                    metadata.append((key, _b64decode(value) if key.endswith("-bin") else value.decode("latin-1")))
                except ValueError:  # binascii.Error: not base64
                    self._trailers_only(event.stream_id, grpc.StatusCode.INTERNAL, f"malformed binary metadata {key}")
                    return
        if not content_type.startswith(b"application/grpc"):
            self._conn.reset(event.stream_id, http2.PROTOCOL_ERROR)  # not a gRPC call
            return
        method = self._server._methods.get(path)
        if method is None:
            service, _, name = path.decode(errors="replace").lstrip("/").rpartition("/")
            known = any(p.startswith(f"/{service}/".encode()) for p in self._server._methods)
            message = f"unknown method {name} for service {service}" if known else f"unknown service {service}"
            self._trailers_only(event.stream_id, grpc.StatusCode.UNIMPLEMENTED, message)
            return
        deadline = None if timeout_s is None else self._loop.time() + timeout_s
        call = _Call(event.stream_id, method, Context(tuple(metadata), self._peer, deadline))
        self._calls[event.stream_id] = call
        if deadline is not None:
            call.timer = self._loop.call_at(deadline, self._expire, event.stream_id)
        if method.handler.request_streaming:
            call.task = self._loop.create_task(self._run(call, None))
        if event.end_stream:
            self._on_end_of_requests(call)

    def _on_data(self, event: http2.DataReceived) -> None:
        call = self._calls.get(event.stream_id)
        if call is None:
            return
        call.buffer += event.data
        while len(call.buffer) >= _PREFIX_BYTES:
            compressed = call.buffer[0]
            length = int.from_bytes(call.buffer[1:5], "big")
            if length > self._server._max_receive_bytes:
                self._fail_call(call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"grpc: received message larger than max ({length} vs. {self._server._max_receive_bytes})")
                return
            if len(call.buffer) < _PREFIX_BYTES + length:
                break
            body = bytes(call.buffer[_PREFIX_BYTES:_PREFIX_BYTES + length])
            del call.buffer[:_PREFIX_BYTES + length]
            if compressed:
                self._fail_call(call, grpc.StatusCode.INTERNAL, "grpc: compressed flag set with identity or empty encoding")
                return
            try:
                request = call.method.handler.request_deserializer(body)
            except Exception:  # noqa: BLE001 - protobuf's DecodeError and kin
                self._fail_call(call, grpc.StatusCode.INTERNAL, "grpc: error unmarshalling request")
                return
            if call.requests is None:  # unary: one message, then the end of the stream
                if call.task is not None:
                    self._fail_call(call, grpc.StatusCode.UNIMPLEMENTED, "grpc: more than one request for a unary call")
                    return
                call.task = self._loop.create_task(self._run(call, request))
            elif call.requests.qsize() >= MAX_QUEUED_MESSAGES:
                self._fail_call(call, grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
                return
            else:
                call.requests.put_nowait(request)
        if event.end_stream:
            self._on_end_of_requests(call)

    def _on_end_of_requests(self, call: _Call) -> None:
        if call.requests is not None:
            call.requests.put_nowait(_END)
        elif call.task is None:  # a unary call ended without its request
            self._fail_call(call, grpc.StatusCode.INTERNAL, "grpc: no request for a unary call")

    async def _run(self, call: _Call, request: Any) -> None:
        handler = call.method.handler
        code, details = grpc.StatusCode.OK, ""
        try:
            if handler.request_streaming:
                request = self._requests(call)
            if handler.response_streaming:
                behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
                responses = behavior(request, call.context)
                if asyncio.iscoroutine(responses):  # an `async def` that answers by aborting (or not at all)
                    responses = await responses
                if responses is not None:
                    async for response in responses:
                        await self._send(call, handler.response_serializer(response))
            else:
                behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary
                await self._send(call, handler.response_serializer(await behavior(request, call.context)))
        except Aborted as e:
            code, details = e.code, e.details
        except asyncio.CancelledError:
            if not call.expired:  # ended elsewhere (_end_call, _fail_call), which counted it
                raise
            code, details = grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"
        except Exception as e:  # noqa: BLE001 - a handler's bug must still end its call
            code, details = call.context.status or (grpc.StatusCode.UNKNOWN, f"Unexpected {type(e).__name__}: {e}")
        finally:
            call.context._done = True
            if call.timer is not None:
                call.timer.cancel()
        if code == grpc.StatusCode.OK and call.context.status is not None:
            code, details = call.context.status
        self._finish(call, code, details)

    async def _requests(self, call: _Call) -> AsyncIterator[Any]:
        assert call.requests is not None
        while True:
            request = await call.requests.get()
            if request is _END:
                return
            yield request

    async def _send(self, call: _Call, body: bytes) -> None:
        if not self._conn.is_open(call.stream_id):
            raise asyncio.CancelledError  # reset meanwhile
        if not call.sent_headers:
            call.sent_headers = True
            self._conn.send_headers(call.stream_id, _RESPONSE_HEADERS)
        self._conn.send_data(call.stream_id, b"\x00" + len(body).to_bytes(4, "big") + body)
        self._schedule_flush()
        # Flow control: wait while the client's window or the socket holds this stream back.
        while self._conn.pending_bytes(call.stream_id) > http2.MAX_PENDING_BYTES // 2:
            room = self._room.setdefault(call.stream_id, asyncio.Event())
            await room.wait()
        if not self._writable.is_set():
            await self._writable.wait()

    def _finish(self, call: _Call, code: grpc.StatusCode, details: str) -> None:
        if self._calls.pop(call.stream_id, None) is None and call.context._cancelled:
            return  # _end_call ended (and counted) it while its handler was finishing
        self._room.pop(call.stream_id, None)
        self._server.count(call.method.labels, code)
        if not self._conn.is_open(call.stream_id):
            return
        if not call.sent_headers:
            self._trailers_only(call.stream_id, code, details)
            return
        self._conn.send_headers(call.stream_id, _OK_TRAILERS if code == grpc.StatusCode.OK else _status_block(code, details), end_stream=True)
        self._schedule_flush()

    def _trailers_only(self, stream_id: int, code: grpc.StatusCode, details: str) -> None:
        block = _RESPONSE_HEADERS + (_OK_TRAILERS if code == grpc.StatusCode.OK else _status_block(code, details))
        self._conn.send_headers(stream_id, block, end_stream=True)
        self._schedule_flush()

    def _fail_call(self, call: _Call, code: grpc.StatusCode, details: str) -> None:
        """End a call the client broke (a bad message): its handler, if running, is cancelled."""
        if call.task is not None:
            call.task.cancel()
        if call.timer is not None:
            call.timer.cancel()
        self._finish(call, code, details)

    def _end_call(self, stream_id: int) -> None:
        """The client reset the stream or the connection ended."""
        call = self._calls.pop(stream_id, None)
        room = self._room.pop(stream_id, None)
        if room is not None:
            room.set()
        if call is None:
            return
        self._server.count(call.method.labels, grpc.StatusCode.CANCELLED)
        call.context._cancelled = True
        if call.timer is not None:
            call.timer.cancel()
        if call.task is not None:
            call.task.cancel()

    def _expire(self, stream_id: int) -> None:
        call = self._calls.get(stream_id)
        if call is None:
            return
        call.expired = True
        if call.task is not None:
            call.task.cancel()
        else:
            self._fail_call(call, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


def _status_block(code: grpc.StatusCode, details: str) -> bytes:
    headers = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        # gRPC's percent-encoding: printable ASCII but '%' as is, everything else as %XX of UTF-8.
        headers.append((b"grpc-message", urllib.parse.quote(details, safe=_MESSAGE_SAFE).encode()))
    return hpack.encode(headers)


_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _timeout_s(value: bytes) -> float | None:
    """grpc-timeout: up to 8 digits and a unit; None if malformed (no deadline, as grpc-go)."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit() or value[-1] not in _TIMEOUT_UNITS:
        return None
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]


def _b64decode(value: bytes) -> bytes:
    return base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)  # gRPC sends -bin values unpadded
