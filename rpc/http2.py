"""The server side of an HTTP/2 connection (RFC 9113), sans IO, as the built-in gRPC server needs it.

`receive(data)` takes bytes from the client and returns events; `send_headers`, `send_data`
and `reset` queue frames; `data_to_send()` hands over the bytes to write. Flow control both
ways: the client's windows bound what we send (data waits in its stream until a WINDOW_UPDATE),
ours are opened again as the client's data is taken in. A protocol violation raises
`ConnectionError_` after queueing a GOAWAY: the caller writes what is pending and closes.

Not served, as a gRPC server needs none of it: server push, priorities (parsed, ignored),
the CONNECT method. Every queue is bounded: MAX_STREAMS open streams (more are refused with
REFUSED_STREAM), MAX_PENDING_BYTES queued per stream (the gRPC layer waits for room first).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from petcd.rpc import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FLAG_END_STREAM, FLAG_ACK, FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
# Error codes (RFC 9113 section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x0, 0x1, 0x2, 0x3, 0x5
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x6, 0x7, 0x8, 0x9
# SETTINGS identifiers.
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

DEFAULT_WINDOW_BYTES = 65_535
DEFAULT_FRAME_BYTES = 16_384
MAX_WINDOW_BYTES = 2**31 - 1
MAX_STREAMS = 10_000  # open streams per connection (our SETTINGS_MAX_CONCURRENT_STREAMS)
# What the client may send us before we open the windows again: per stream (a request of up
# to etcd's 1.5 MiB goes in one go) and for the connection.
STREAM_WINDOW_BYTES = 4 << 20
CONNECTION_WINDOW_BYTES = 16 << 20
MAX_PENDING_BYTES = 4 << 20  # queued to send on one stream; the gRPC layer waits below it

_HEAD = struct.Struct(">I")


class ConnectionError_(Exception):
    """The client broke the protocol; a GOAWAY is queued and the connection must close."""


@dataclass(slots=True)
class RequestReceived:
    stream_id: int
    headers: list[tuple[bytes, bytes]]
    end_stream: bool


@dataclass(slots=True)
class DataReceived:
    stream_id: int
    data: bytes
    end_stream: bool


@dataclass(slots=True)
class StreamReset:
    """The client reset the stream (RST_STREAM), or sent trailers we do not take."""

    stream_id: int


@dataclass(slots=True)
class WindowOpened:
    """Queued data went out: writers waiting for room on these streams may go on."""

    stream_ids: list[int]


@dataclass(slots=True)
class GoAwayReceived:
    pass


@dataclass(slots=True)
class _Stream:
    send_window: int
    recv_unacked: int = 0
    remote_closed: bool = False  # the client sent END_STREAM
    pending: bytearray = field(default_factory=bytearray)
    end_after_pending: bool = False
    trailers: bytes | None = None  # an encoded header block to send once pending is out


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(len(payload))[1:] + bytes((kind, flags)) + _HEAD.pack(stream_id) + payload


class ServerConnection:
    def __init__(self) -> None:
        self._buf = b""
        self._preface_seen = False
        self._out: list[bytes] = []
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._decoder = hpack.Decoder()
        self._peer_window = DEFAULT_WINDOW_BYTES  # the client's SETTINGS_INITIAL_WINDOW_SIZE
        self._peer_frame_bytes = DEFAULT_FRAME_BYTES
        self._send_window = DEFAULT_WINDOW_BYTES  # the connection's, towards the client
        self._recv_unacked = 0
        self._continuation: tuple[int, bool, bytearray] | None = None  # (stream, end_stream, block so far)
        self.closed = False
        settings = [
            (SETTINGS_ENABLE_PUSH, 0), (SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS),
            (SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW_BYTES), (SETTINGS_MAX_HEADER_LIST_SIZE, hpack.MAX_HEADER_LIST_BYTES),
        ]
        self._out.append(frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in settings)))
        self._out.append(frame(WINDOW_UPDATE, 0, 0, _HEAD.pack(CONNECTION_WINDOW_BYTES - DEFAULT_WINDOW_BYTES)))

    # --- output
    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        """An encoded header block (hpack.encode). With end_stream (trailers), it goes after
        whatever data the stream still has queued."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # reset meanwhile
        if end_stream and stream.pending:
            stream.trailers = block
            return
        self._emit_headers(stream_id, block, end_stream)
        if end_stream:
            self._finish(stream_id)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.pending += data
        stream.end_after_pending = end_stream
        self._flush(stream_id, stream)

    def pending_bytes(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        return len(stream.pending) if stream is not None else 0

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        if self._streams.pop(stream_id, None) is not None:
            self._out.append(frame(RST_STREAM, 0, stream_id, _HEAD.pack(code)))

    def close(self, code: int = NO_ERROR) -> None:
        if not self.closed:
            self.closed = True
            self._out.append(frame(GOAWAY, 0, 0, _HEAD.pack(self._last_stream_id) + _HEAD.pack(code)))

    def _emit_headers(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        flags = FLAG_END_STREAM if end_stream else 0
        limit = self._peer_frame_bytes
        if len(block) <= limit:
            self._out.append(frame(HEADERS, flags | FLAG_END_HEADERS, stream_id, block))
            return
        pieces = [block[i:i + limit] for i in range(0, len(block), limit)]
        self._out.append(frame(HEADERS, flags, stream_id, pieces[0]))
        for i, piece in enumerate(pieces[1:], 1):
            self._out.append(frame(CONTINUATION, FLAG_END_HEADERS if i == len(pieces) - 1 else 0, stream_id, piece))

    def _flush(self, stream_id: int, stream: _Stream) -> bool:
        """Send what the windows allow; True if something went out."""
        sent = False
        while stream.pending:
            size = min(len(stream.pending), stream.send_window, self._send_window, self._peer_frame_bytes)
            if size <= 0:
                return sent
            chunk = bytes(stream.pending[:size])
            del stream.pending[:size]
            stream.send_window -= size
            self._send_window -= size
            last = not stream.pending and stream.end_after_pending
            self._out.append(frame(DATA, FLAG_END_STREAM if last else 0, stream_id, chunk))
            sent = True
            if last:
                self._finish(stream_id)
                return sent
        if stream.trailers is not None:
            self._emit_headers(stream_id, stream.trailers, True)
            self._finish(stream_id)
        elif stream.end_after_pending:  # an empty final DATA frame
            self._out.append(frame(DATA, FLAG_END_STREAM, stream_id))
            self._finish(stream_id)
        return sent

    def _finish(self, stream_id: int) -> None:
        """We ended our side: the stream is closed unless the client still sends."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None and not stream.remote_closed:
            # The client may still be sending (a bidi stream we ended): tell it to stop.
            self._out.append(frame(RST_STREAM, 0, stream_id, _HEAD.pack(NO_ERROR)))

    # --- input
    def receive(self, data: bytes) -> list[object]:
        if self.closed:
            return []
        buf = self._buf + data if self._buf else data
        pos = 0
        if not self._preface_seen:
            if len(buf) < len(PREFACE):
                if not PREFACE.startswith(buf):
                    self._fail(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._buf = buf
                return []
            if not buf.startswith(PREFACE):
                self._fail(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface_seen = True
            pos = len(PREFACE)
        events: list[object] = []
        end = len(buf)
        while end - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if length > DEFAULT_FRAME_BYTES:  # our SETTINGS_MAX_FRAME_SIZE is the default
                self._fail(FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - pos < 9 + length:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            stream_id = _HEAD.unpack_from(buf, pos + 5)[0] & 0x7FFFFFFF
            payload = buf[pos + 9:pos + 9 + length]
            pos += 9 + length
            if self._continuation is not None and kind != CONTINUATION:
                self._fail(PROTOCOL_ERROR, "a frame between HEADERS and CONTINUATION")
            self._frame(kind, flags, stream_id, payload, events)
        self._buf = buf[pos:]
        if self._recv_unacked >= CONNECTION_WINDOW_BYTES // 4:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, _HEAD.pack(self._recv_unacked)))
            self._recv_unacked = 0
        return events

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[object]) -> None:
        if kind == DATA:
            self._on_data(flags, stream_id, payload, events)
        elif kind == HEADERS:
            if stream_id == 0 or stream_id % 2 == 0:
                self._fail(PROTOCOL_ERROR, "HEADERS on stream %d" % stream_id)
            payload = self._unpad(flags, payload)
            if flags & FLAG_PRIORITY:
                payload = payload[5:]
            if flags & FLAG_END_HEADERS:
                self._on_headers(stream_id, flags & FLAG_END_STREAM != 0, payload, events)
            else:
                self._continuation = (stream_id, flags & FLAG_END_STREAM != 0, bytearray(payload))
        elif kind == CONTINUATION:
            if self._continuation is None or self._continuation[0] != stream_id:
                self._fail(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            _, end_stream, block = self._continuation
            block += payload
            if len(block) > hpack.MAX_HEADER_LIST_BYTES:
                self._fail(PROTOCOL_ERROR, "header block too large")
            if flags & FLAG_END_HEADERS:
                self._continuation = None
                self._on_headers(stream_id, end_stream, bytes(block), events)
        elif kind == SETTINGS:
            if stream_id:
                self._fail(PROTOCOL_ERROR, "SETTINGS on a stream")
            if not flags & FLAG_ACK:
                self._on_settings(payload, events)
        elif kind == PING:
            if len(payload) != 8:
                self._fail(FRAME_SIZE_ERROR, "PING of %d bytes" % len(payload))
            if not flags & FLAG_ACK:
                self._out.append(frame(PING, FLAG_ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload, events)
        elif kind == RST_STREAM:
            if self._streams.pop(stream_id, None) is not None:
                events.append(StreamReset(stream_id))
        elif kind == GOAWAY:
            events.append(GoAwayReceived())
        elif kind == PUSH_PROMISE:
            self._fail(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored (RFC 9113 sections 5.5, 6.3).

    def _on_headers(self, stream_id: int, end_stream: bool, block: bytes, events: list[object]) -> None:
        try:
            headers = self._decoder.decode(block)  # always, to keep the dynamic table in step
        except hpack.HpackError as e:
            self._fail(COMPRESSION_ERROR, str(e))
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers from the client: gRPC clients send none; end the stream
            self.reset(stream_id, PROTOCOL_ERROR)
            events.append(StreamReset(stream_id))
            return
        if stream_id <= self._last_stream_id:
            self._fail(STREAM_CLOSED, "HEADERS on closed stream %d" % stream_id)
        self._last_stream_id = stream_id
        if len(self._streams) >= MAX_STREAMS:
            self._out.append(frame(RST_STREAM, 0, stream_id, _HEAD.pack(REFUSED_STREAM)))
            return
        self._streams[stream_id] = _Stream(send_window=self._peer_window, remote_closed=end_stream)
        events.append(RequestReceived(stream_id, headers, end_stream))

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[object]) -> None:
        if stream_id == 0:
            self._fail(PROTOCOL_ERROR, "DATA on stream 0")
        self._recv_unacked += len(payload)  # padding counts against the window too
        data = self._unpad(flags, payload)
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                self._fail(PROTOCOL_ERROR, "DATA on idle stream %d" % stream_id)
            return  # a stream we reset or ended: what was in flight is dropped
        if stream.remote_closed:
            self.reset(stream_id, STREAM_CLOSED)
            events.append(StreamReset(stream_id))
            return
        end_stream = flags & FLAG_END_STREAM != 0
        stream.remote_closed = end_stream
        stream.recv_unacked += len(payload)
        if not end_stream and stream.recv_unacked >= STREAM_WINDOW_BYTES // 4:
            self._out.append(frame(WINDOW_UPDATE, 0, stream_id, _HEAD.pack(stream.recv_unacked)))
            stream.recv_unacked = 0
        events.append(DataReceived(stream_id, data, end_stream))

    def _on_settings(self, payload: bytes, events: list[object]) -> None:
        if len(payload) % 6:
            self._fail(FRAME_SIZE_ERROR, "SETTINGS of %d bytes" % len(payload))
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW_BYTES:
                    self._fail(FLOW_CONTROL_ERROR, "initial window above 2^31-1")
                delta = value - self._peer_window
                self._peer_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_BYTES <= value <= 2**24 - 1:
                    self._fail(PROTOCOL_ERROR, "max frame size %d" % value)
                self._peer_frame_bytes = value
            # The client's HEADER_TABLE_SIZE concerns its decoder: our encoder never indexes.
        self._out.append(frame(SETTINGS, FLAG_ACK, 0))
        self._flush_all(events)

    def _on_window_update(self, stream_id: int, payload: bytes, events: list[object]) -> None:
        if len(payload) != 4:
            self._fail(FRAME_SIZE_ERROR, "WINDOW_UPDATE of %d bytes" % len(payload))
        increment = _HEAD.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0 or self._send_window + increment > MAX_WINDOW_BYTES:
                self._fail(FLOW_CONTROL_ERROR, "bad connection window update")
            self._send_window += increment
            self._flush_all(events)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if increment == 0 or stream.send_window + increment > MAX_WINDOW_BYTES:
            self.reset(stream_id, FLOW_CONTROL_ERROR)
            events.append(StreamReset(stream_id))
            return
        stream.send_window += increment
        if self._flush(stream_id, stream):
            events.append(WindowOpened([stream_id]))

    def _flush_all(self, events: list[object]) -> None:
        opened = [sid for sid, stream in list(self._streams.items()) if stream.pending and self._flush(sid, stream)]
        if opened:
            events.append(WindowOpened(opened))

    def _unpad(self, flags: int, payload: bytes) -> bytes:
        if not flags & FLAG_PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            self._fail(PROTOCOL_ERROR, "bad padding")
        return payload[1:len(payload) - payload[0]]

    def _fail(self, code: int, why: str) -> None:
        self.close(code)
        raise ConnectionError_(why)
