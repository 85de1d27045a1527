"""The client port: gRPC and etcd's HTTP/1.1 JSON gateway on one listener, as etcd's cmux does.

grpc.aio cannot be handed accepted sockets, so the gRPC server listens on a private unix
socket and this front listener owns the client ports. On accept it looks at the first bytes:
an HTTP/2 connection preface ("PRI * HTTP/2.0...", what every gRPC client sends first) is
spliced to the gRPC socket with two protocols that forward whole reads (flow control by
pausing the other side's reads when a write buffer fills), anything else is HTTP/1.1 and is
served by `rpc.http_gateway`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

H2_PREFACE_START = b"PRI"
STREAM_LIMIT = 1 << 20  # longest request or header line the HTTP side reads

HttpHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Pipe(asyncio.Protocol):
    """One side of a splice: what it reads goes to `peer`'s transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending: list[bytes] = []  # read before the peer was connected
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def link(self, peer: _Pipe) -> None:
        self.peer = peer
        for data in self.pending:
            peer.transport.write(data)
        self.pending.clear()
        if self.eof:
            self.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is not None and self.peer.transport is not None and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.resume_reading()


class _Sniff(_Pipe):
    """A client connection until its first bytes tell gRPC from HTTP/1.1."""

    def __init__(self, front: Front) -> None:
        super().__init__()
        self._front = front
        self._head = b""
        self._decided = False

    def data_received(self, data: bytes) -> None:
        if self._decided:
            super().data_received(data)
            return
        self._head += data
        if len(self._head) < len(H2_PREFACE_START) and H2_PREFACE_START.startswith(self._head):
            return  # not enough to tell yet
        self._decided = True
        head, self._head = self._head, b""
        if head.startswith(H2_PREFACE_START):
            self.pending.append(head)
            self.transport.pause_reading()
            self._front.track(asyncio.get_running_loop().create_task(self._splice()))
        else:
            self._to_http(head)

    def eof_received(self) -> bool:
        if not self._decided:
            self.transport.close()
            return False
        return super().eof_received()

    async def _splice(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_unix_connection(_Pipe, self._front.grpc_path)
        except OSError:
            self.transport.close()
            return
        upstream.link(self)  # what the gRPC server sent already (its SETTINGS) goes out first
        self.link(upstream)
        if not self.transport.is_closing():
            self.transport.resume_reading()
        else:
            upstream.transport.close()

    def _to_http(self, head: bytes) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, self._front.serve_http, loop=loop)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        reader.feed_data(head)


class Front:
    """The listeners on the client URLs."""

    def __init__(self, grpc_path: str, serve_http: HttpHandler) -> None:
        self.grpc_path = grpc_path
        self._serve_http = serve_http
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()

    async def listen(self, host_port: str) -> None:
        """Raises OSError if the address cannot be bound (e.g. already in use)."""
        host, _, port = host_port.rpartition(":")
        host = host.strip("[]") or None
        server = await asyncio.get_running_loop().create_server(lambda: _Sniff(self), host, int(port), reuse_address=True, backlog=1024)
        self._servers.append(server)

    def track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.track(task)
        try:
            await self._serve_http(reader, writer)
        finally:
            writer.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
