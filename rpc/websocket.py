"""WebSocket (RFC 6455) for the JSON gateway's streams, as etcd 3.4 serves them (grpc-websocket-proxy).

etcd wraps its gateway in wsproxy: a WebSocket upgrade to a /v3 path becomes a POST to that
path whose body is every message the client sends, each followed by a newline, and every line of
the response body is sent back as one text message. A `Sec-WebSocket-Protocol: Bearer, TOKEN`
header becomes the request's Authorization header ("Bearer TOKEN"), as wsproxy does.

Only what a server needs: the handshake, reading masked frames (fragments joined, pings
answered, a close returned), writing unmasked text frames.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG = 1000, 1002, 1009


class WebSocketClosed(Exception):
    """The client closed the WebSocket, or broke its protocol."""


def is_upgrade(headers: dict[str, str]) -> bool:
    return "websocket" in headers.get("upgrade", "").lower() and "upgrade" in headers.get("connection", "").lower()


def handshake(headers: dict[str, str]) -> tuple[bytes, str] | None:
    """The 101 answer to an upgrade request, and the Authorization it carries ("" if none);
    None if the request is not a valid WebSocket upgrade (version 13 with a key)."""
    key = headers.get("sec-websocket-key", "")
    if not key or headers.get("sec-websocket-version") != "13":
        return None
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {accept}"]
    authorization = ""
    protocol = headers.get("sec-websocket-protocol", "")
    if protocol.startswith("Bearer"):
        lines.append("Sec-WebSocket-Protocol: Bearer")
        _, sep, token = protocol.partition("Bearer,")
        authorization = f"Bearer {token.strip(' ')}" if sep else ""
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), authorization


class WebSocket:
    """One server-side WebSocket over an upgraded connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_message_bytes: int) -> None:
        self._reader = reader
        self._writer = writer
        self._max = max_message_bytes

    async def receive(self) -> bytes:
        """The next whole data message; WebSocketClosed when the client closes or errs."""
        parts: list[bytes] = []
        size = 0
        while True:
            fin, opcode, payload = await self._frame()
            if opcode == OP_PING:
                self._send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                self._send_frame(OP_CLOSE, payload[:2])
                raise WebSocketClosed("closed by the client")
            if (opcode == OP_CONTINUATION) != bool(parts):
                await self.close(CLOSE_PROTOCOL_ERROR)
                raise WebSocketClosed("a continuation frame without a message, or a message inside another")
            size += len(payload)
            if size > self._max:
                await self.close(CLOSE_TOO_BIG)
                raise WebSocketClosed("message too big")
            parts.append(payload)
            if fin:
                return b"".join(parts)

    async def _frame(self) -> tuple[bool, int, bytes]:
        try:
            b0, b1 = await self._reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", await self._reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", await self._reader.readexactly(8))
            if not b1 & 0x80:  # a client's frames are masked (RFC 6455 5.1)
                await self.close(CLOSE_PROTOCOL_ERROR)
                raise WebSocketClosed("an unmasked frame from the client")
            if length > self._max:
                await self.close(CLOSE_TOO_BIG)
                raise WebSocketClosed("frame too big")
            mask = await self._reader.readexactly(4)
            data = await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise WebSocketClosed("connection lost") from e
        key = (mask * (length // 4 + 1))[:length]
        unmasked = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
        return bool(b0 & 0x80), b0 & 0x0F, unmasked

    async def send_text(self, text: bytes) -> None:
        self._send_frame(OP_TEXT, text)
        await self._writer.drain()

    async def close(self, code: int = CLOSE_NORMAL) -> None:
        self._send_frame(OP_CLOSE, struct.pack(">H", code))
        try:
            await self._writer.drain()
        except ConnectionError:
            pass

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, n)
        elif n < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
        self._writer.write(head + payload)
