"""The client port: gRPC and etcd's HTTP/1.1 JSON gateway on one listener, as etcd's cmux does.

This front listener owns the client ports. On accept it looks at the first bytes: an HTTP/2
connection preface ("PRI * HTTP/2.0...", what every gRPC client sends first) is served here by
the built-in gRPC server (rpc/grpc_server.py), anything else is HTTP/1.1 and is served by
`rpc.http_gateway`. With --experimental-grpc-server grpcio, gRPC connections are spliced
instead to grpcio's server on a private unix socket (grpc.aio cannot be handed accepted
sockets), with two protocols that forward whole reads (flow control by pausing the other
side's reads when a write buffer fills); the rest of this docstring is about that splice.

TLS (an https:// client URL): the listener wraps accepted connections with an ssl.SSLContext
(`server_tls_context`: TLS >= 1.2, ALPN, a verified client certificate when required) and the
sniffing above then runs on the plaintext, so gRPC and HTTP/1.1 share the https port as with
etcd. ALPN lists "http/1.1" before "h2" and OpenSSL picks the server's first protocol the client
offers: gRPC clients (which offer only h2, or grpc-exp and h2) get h2, and curl (h2 and
http/1.1) gets HTTP/1.1, which is what this front serves outside gRPC.

Who is calling (--client-cert-auth): the gRPC server sees only the front's connection to its
unix socket, so the front names that connection. For a TLS client with a verified certificate,
the front binds its end of the upstream unix socket to a fresh path in the member's private
socket directory before connecting (then unlinks the file; the kernel keeps the name), so the
gRPC server's `context.peer()` is "unix:<that path>" and `common_name_of(peer)` maps it to the
certificate's Common Name while the connection lives. Every other connection connects unbound
("unix:"), which maps to None. Chosen over a second, loopback-TCP gRPC listener because that
would be a plaintext gRPC port any local user could reach, skipping TLS and the client
certificate check, while the unix socket sits in the member's 0700 directory; it also keeps
one gRPC listener, and a name from a bound path cannot be confused with any other client.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import ssl
from collections.abc import Awaitable, Callable

from petcd.rpc.grpc_server import BuiltinGrpcServer

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


class _Upstream(_Pipe):
    """The front's connection to the gRPC server; `on_lost` runs when it ends."""

    def __init__(self, on_lost: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._on_lost = on_lost

    def connection_lost(self, exc: Exception | None) -> None:
        if self._on_lost is not None:
            self._on_lost()
        super().connection_lost(exc)


class _Sniff(_Pipe):
    """A client connection until its first bytes tell gRPC from HTTP/1.1."""

    def __init__(self, front: Front, tls: bool = False) -> None:
        super().__init__()
        self._front = front
        self._tls = tls
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
        if head.startswith(H2_PREFACE_START) and self._front.builtin_grpc is not None:
            self._to_builtin_grpc(head)
        elif head.startswith(H2_PREFACE_START):
            self.pending.append(head)
            self.transport.pause_reading()
            self._front.track(asyncio.get_running_loop().create_task(self._splice()))
        else:
            self._to_http(head)

    def eof_received(self) -> bool:
        if not self._decided:
            self.transport.close()
            return False
        keep_open = super().eof_received()
        return keep_open and not self._tls  # TLS has no half-close: asyncio closes the connection

    async def _splice(self) -> None:
        common_name = verified_common_name(self.transport.get_extra_info("ssl_object")) if self._tls else None
        try:
            upstream = await self._front.connect_grpc(common_name)
        except OSError:
            self.transport.close()
            return
        upstream.link(self)  # what the gRPC server sent already (its SETTINGS) goes out first
        self.link(upstream)
        if not self.transport.is_closing():
            self.transport.resume_reading()
        else:
            upstream.transport.close()

    def _to_builtin_grpc(self, head: bytes) -> None:
        """Served here, by the built-in gRPC server (rpc/grpc_server.py): no splice."""
        common_name = verified_common_name(self.transport.get_extra_info("ssl_object")) if self._tls else None
        peer = self._front.name_connection(common_name)
        protocol = self._front.builtin_grpc.protocol(peer, lambda: self._front.forget_connection(peer))
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(head)

    def _to_http(self, head: bytes) -> None:
        if not self._front.serves_http:  # --listen-client-http-urls: HTTP has its own listeners
            self.transport.close()
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, self._front.serve_http, loop=loop)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        reader.feed_data(head)


def server_tls_context(cert_file: str, key_file: str, trusted_ca_file: str = "", client_cert_auth: bool = False) -> ssl.SSLContext:
    """The client listeners' TLS, as etcd 3.4's TLSInfo.ServerConfig: TLS 1.2 or later; a client
    certificate required and verified when --client-cert-auth or --trusted-ca-file is given
    (against that CA file, else the system's CAs, as Go does). Raises OSError or ssl.SSLError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1", "h2"])  # the server's order wins: see the module docstring
    if trusted_ca_file or client_cert_auth:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if trusted_ca_file:
            ctx.load_verify_locations(cafile=trusted_ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return ctx


def verified_common_name(ssl_object: ssl.SSLObject | None) -> str | None:
    """The Common Name of the client certificate the handshake verified, or None (no TLS, no
    certificate asked for, or none; Python shows a certificate's fields only once verified).
    With several CNs the last one, as Go's pkix.Name.CommonName."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names[-1] if names and names[-1] else None


class Front:
    """The listeners on the client URLs."""

    def __init__(self, grpc_path: str, serve_http: HttpHandler | None, builtin_grpc: BuiltinGrpcServer | None = None) -> None:
        """`serve_http` None: gRPC only (a connection that is not HTTP/2 is closed). `builtin_grpc`:
        serve gRPC connections with it, in this process, rather than splice them to grpcio's."""
        self.grpc_path = grpc_path
        self.builtin_grpc = builtin_grpc
        self._serve_http = serve_http
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()
        # "unix:<bound path>" of an open upstream connection -> its client's certificate Common Name
        self._common_names: dict[str, str] = {}
        self._bound_ids = itertools.count()

    async def listen(self, host_port: str, tls: ssl.SSLContext | None = None) -> None:
        """Raises OSError if the address cannot be bound (e.g. already in use)."""
        host, _, port = host_port.rpartition(":")
        host = host.strip("[]") or None
        server = await asyncio.get_running_loop().create_server(
            lambda: _Sniff(self, tls is not None), host, int(port), reuse_address=True, backlog=1024, ssl=tls
        )
        self._servers.append(server)

    def common_name_of(self, peer: str) -> str | None:
        """Given a gRPC call's `context.peer()`, the Common Name of the verified client
        certificate of the TLS connection it came through, or None."""
        return self._common_names.get(peer)

    def name_connection(self, common_name: str | None) -> str:
        """The peer name a built-in gRPC connection's calls give (context.peer()): one that
        common_name_of maps to its certificate's Common Name until forget_connection."""
        peer = f"builtin:{next(self._bound_ids)}"
        if common_name is not None:
            self._common_names[peer] = common_name
        return peer

    def forget_connection(self, peer: str) -> None:
        self._common_names.pop(peer, None)

    async def connect_grpc(self, common_name: str | None) -> _Pipe:
        """A connection to the gRPC server, named by a bound path when it carries `common_name`."""
        loop = asyncio.get_running_loop()
        if common_name is None:
            _, upstream = await loop.create_unix_connection(_Upstream, self.grpc_path)
            return upstream
        path = os.path.join(os.path.dirname(self.grpc_path), f"c{os.getpid()}-{next(self._bound_ids)}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind(path)
            try:
                await loop.sock_connect(sock, self.grpc_path)
            finally:
                os.unlink(path)  # the socket keeps its name; nothing else needs the file
        except BaseException:
            sock.close()
            raise
        peer = f"unix:{path}"
        self._common_names[peer] = common_name
        try:
            _, upstream = await loop.create_unix_connection(lambda: _Upstream(lambda: self._common_names.pop(peer, None)), sock=sock)
        except BaseException:
            self._common_names.pop(peer, None)
            sock.close()
            raise
        return upstream

    @property
    def serves_http(self) -> bool:
        return self._serve_http is not None

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
