"""HPACK and the server side of HTTP/2 (rpc/hpack.py, rpc/http2.py), frame by frame, as a
client would send them; RFC 7541's own examples for the decoder."""

from __future__ import annotations

import struct

import pytest

from petcd.rpc import hpack, http2
from petcd.rpc.http2 import (
    CONTINUATION, DATA, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, GOAWAY, HEADERS, PING, PREFACE,
    RST_STREAM, SETTINGS, SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_UPDATE, frame,
)

REQUEST = hpack.encode([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/etcdserverpb.KV/Range"),
                        (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"te", b"trailers")])


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of every frame in `data`."""
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        out.append((data[pos + 3], data[pos + 4], struct.unpack(">I", data[pos + 5:pos + 9])[0], data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return out


def connected(window: int | None = None) -> http2.ServerConnection:
    """A connection past the preface and the client's SETTINGS; what the server sent is dropped."""
    conn = http2.ServerConnection()
    settings = struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, window) if window is not None else b""
    assert conn.receive(PREFACE + frame(SETTINGS, 0, 0, settings)) == []
    sent = frames(conn.data_to_send())
    assert sent[0][0] == SETTINGS and (SETTINGS, FLAG_ACK, 0, b"") in sent
    return conn


# --- HPACK
def test_hpack_decodes_rfc_7541_c4_requests_with_huffman_and_the_dynamic_table():
    decoder = hpack.Decoder()
    first = decoder.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
    assert first == [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")]
    assert decoder.decode(bytes.fromhex("828684be5886a8eb10649cbf"))[-1] == (b"cache-control", b"no-cache")
    third = decoder.decode(bytes.fromhex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"))
    assert third == [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
                     (b":authority", b"www.example.com"), (b"custom-key", b"custom-value")]


def test_hpack_evicts_the_oldest_entries_past_the_table_size():
    """RFC 7541 C.6.1-2: a 256-byte table, responses that push out what came first."""
    decoder = hpack.Decoder(256)
    decoder.decode(bytes.fromhex("488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3"))
    second = decoder.decode(bytes.fromhex("4883640effc1c0bf"))
    assert second == [(b":status", b"307"), (b"cache-control", b"private"), (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"),
                      (b"location", b"https://www.example.com")]
    with pytest.raises(hpack.HpackError):
        decoder.decode(bytes([0x80 | 66]))  # index 66: evicted (4 entries fit, 62..65)


@pytest.mark.parametrize("block", [b"\x80", b"\xff\xff\xff\xff\xff\xff\x7f", b"\x40\x85\xff", b"\x00\x81\xfe\x00",
                                   b"\x3f\xe2\x1f"])
def test_hpack_refuses_what_does_not_decode(block):
    """Index 0, an oversized integer, a truncated string, bad Huffman padding, a size update
    above what SETTINGS allow."""
    with pytest.raises(hpack.HpackError):
        hpack.Decoder().decode(block)


def test_hpack_encoder_output_decodes_to_what_went_in():
    headers = [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"13"),
               (b"grpc-message", b"x" * 300), (b"www-authenticate", b"")]
    assert hpack.Decoder().decode(hpack.encode(headers)) == headers


# --- HTTP/2
def test_a_request_arrives_as_headers_then_data():
    conn = connected()
    events = conn.receive(frame(HEADERS, FLAG_END_HEADERS, 1, REQUEST) + frame(DATA, FLAG_END_STREAM, 1, b"body"))
    assert events == [http2.RequestReceived(1, hpack.Decoder().decode(REQUEST), False), http2.DataReceived(1, b"body", True)]


def test_frames_split_anywhere_and_padding_and_continuation_are_taken():
    conn = connected()
    padded = bytes([3]) + b"body" + b"\0\0\0"
    wire = frame(HEADERS, 0, 1, REQUEST[:5]) + frame(CONTINUATION, FLAG_END_HEADERS, 1, REQUEST[5:]) + frame(DATA, FLAG_END_STREAM | FLAG_PADDED, 1, padded)
    events = []
    for i in range(len(wire)):
        events += conn.receive(wire[i:i + 1])
    assert [type(e) for e in events] == [http2.RequestReceived, http2.DataReceived]
    assert events[1].data == b"body" and events[1].end_stream


def test_sends_wait_for_the_clients_window_and_trailers_wait_for_the_data():
    conn = connected(window=10)
    conn.receive(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, REQUEST))
    conn.send_headers(1, b"\x88")
    conn.send_data(1, b"x" * 25)
    conn.send_headers(1, b"\x00trailers", end_stream=True)
    sent = frames(conn.data_to_send())
    assert [(t, len(p)) for t, _, _, p in sent] == [(HEADERS, 1), (DATA, 10)]
    assert conn.pending_bytes(1) == 15
    events = conn.receive(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 10)))
    assert events == [http2.WindowOpened([1])]
    assert [(t, len(p)) for t, _, _, p in frames(conn.data_to_send())] == [(DATA, 10)]
    conn.receive(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)))
    last = frames(conn.data_to_send())
    assert [(t, f & FLAG_END_STREAM) for t, f, _, _ in last] == [(DATA, 0), (HEADERS, FLAG_END_STREAM)]
    assert not conn.is_open(1)


def test_the_connection_window_bounds_every_stream_together():
    conn = connected()
    for stream_id in (1, 3):
        conn.receive(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, stream_id, REQUEST))
        conn.send_data(stream_id, b"y" * 40_000)
    assert sum(len(p) for t, _, _, p in frames(conn.data_to_send()) if t == DATA) == http2.DEFAULT_WINDOW_BYTES
    assert conn.pending_bytes(1) == 0 and conn.pending_bytes(3) == 80_000 - http2.DEFAULT_WINDOW_BYTES
    events = conn.receive(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100_000)))
    assert events == [http2.WindowOpened([3])]
    assert conn.pending_bytes(3) == 0


def test_the_client_gets_its_windows_back_as_data_comes_in():
    conn = connected()
    conn.receive(frame(HEADERS, FLAG_END_HEADERS, 1, REQUEST))
    chunk = b"z" * http2.DEFAULT_FRAME_BYTES
    for _ in range(http2.STREAM_WINDOW_BYTES // 4 // len(chunk)):
        conn.receive(frame(DATA, 0, 1, chunk))
    updates = [(s, struct.unpack(">I", p)[0]) for t, _, s, p in frames(conn.data_to_send()) if t == WINDOW_UPDATE]
    assert updates == [(1, http2.STREAM_WINDOW_BYTES // 4)]


def test_ping_is_answered_and_a_reset_stream_is_reported():
    conn = connected()
    assert conn.receive(frame(PING, 0, 0, b"12345678")) == []
    assert frames(conn.data_to_send()) == [(PING, FLAG_ACK, 0, b"12345678")]
    conn.receive(frame(HEADERS, FLAG_END_HEADERS, 1, REQUEST))
    assert conn.receive(frame(RST_STREAM, 0, 1, struct.pack(">I", 8))) == [http2.StreamReset(1)]
    assert not conn.is_open(1)
    assert conn.receive(frame(DATA, 0, 1, b"late")) == [], "in flight when reset: dropped"


def test_streams_past_the_limit_are_refused(monkeypatch):
    monkeypatch.setattr(http2, "MAX_STREAMS", 1)
    conn = connected()
    conn.receive(frame(HEADERS, FLAG_END_HEADERS, 1, REQUEST))
    assert conn.receive(frame(HEADERS, FLAG_END_HEADERS, 3, REQUEST)) == []
    assert frames(conn.data_to_send()) == [(RST_STREAM, 0, 3, struct.pack(">I", http2.REFUSED_STREAM))]


@pytest.mark.parametrize("wire, why", [
    (b"GET / HTTP/1.1\r\n\r\n" + b"x" * 10, "not an HTTP/2 connection preface"),
    (PREFACE + frame(HEADERS, 0, 1, REQUEST[:3]) + frame(PING, 0, 0, b"12345678"), "a frame between HEADERS and CONTINUATION"),
    (PREFACE + frame(HEADERS, FLAG_END_HEADERS, 2, REQUEST), "HEADERS on stream 2"),
    (PREFACE + frame(DATA, 0, 5, b"x"), "DATA on idle stream 5"),
    (PREFACE + frame(HEADERS, FLAG_END_HEADERS, 1, b"\x80"), "header index 0 out of range"),
    (PREFACE + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)), "bad connection window update"),
    (PREFACE + b"\x01\x00\x00" + bytes([DATA, 0]) + struct.pack(">I", 1), "frame of 65536 bytes"),
])
def test_protocol_violations_end_the_connection_with_goaway(wire, why):
    conn = http2.ServerConnection()
    with pytest.raises(http2.ConnectionError_, match=why):
        conn.receive(wire)
    assert frames(conn.data_to_send())[-1][0] == GOAWAY
    assert conn.receive(frame(PING, 0, 0, b"12345678")) == [], "closed: nothing more is taken"
