"""Peer TLS: member-to-member traffic encrypted, and both ends authenticated by certificate.

The Raft actor talks to its peers with ZeroMQ (ZMTP over TCP), which has CURVE but no X.509.
With peer TLS on, that same byte stream runs inside TLS through this process, one per member:

- outbound: the Raft actor's sockets to peers connect through a SOCKS5 proxy served here on
  a loopback port (libzmq's ZMQ_SOCKS_PROXY). For each connection this process opens TLS to
  the peer URL the SOCKS request names, presents this member's peer certificate and checks the
  peer's against --peer-trusted-ca-file (and its name, as etcd does), then splices the two.
- inbound: this process listens on --listen-peer-urls with TLS, requires (with
  --peer-client-cert-auth) a client certificate signed by the trusted CA, and with
  --peer-cert-allowed-cn that its Common Name is the one allowed, then splices each
  connection to the Raft actor's local ipc socket.

Why a tunnel rather than TLS inside the actor runtime: the runtime's loop, the batching and
the framing stay exactly what the simulator runs; TLS is a transport concern, like the
network itself. A member whose certificate fails either check never gets a byte through: it
cannot join, vote or read. The cost, measured on the Put path, is in the README.

Run as: python -m petcd.rpc.peer_tls <json spec>
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import socket
import ssl
import struct
import sys
from typing import Any

from petcd.actors.runtime_log import LogLine
from petcd.actors.supervised import die_with_supervisor

READ_BYTES = 1 << 16
HANDSHAKE_TIMEOUT_S = 10.0
# Connections spliced at once; past it new ones are refused (each peer keeps one or two).
MAX_CONNECTIONS = 1024
# A refused peer retries every 100 ms (libzmq's reconnect interval): its warning is logged at
# most once per this many seconds (per message and remote), with how many were not.
WARN_EVERY_S = 10.0
EXIT_LISTEN_FAILED = 2

_SOCKS_VERSION = 5
_SOCKS_CONNECT = 1
_SOCKS_OK, _SOCKS_FAILURE, _SOCKS_REFUSED, _SOCKS_BAD_COMMAND = 0, 1, 5, 7


def server_context(cert_file: str, key_file: str, trusted_ca_file: str, client_cert_auth: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if trusted_ca_file:
        ctx.load_verify_locations(trusted_ca_file)
    if client_cert_auth:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cert_file: str, key_file: str, trusted_ca_file: str) -> ssl.SSLContext:
    """This member's certificate to present; the peer's checked against the CA (with
    --peer-auto-tls and no CA, as etcd: encrypted, not verified)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if trusted_ca_file:
        ctx.load_verify_locations(trusted_ca_file)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def common_name(cert: dict[str, Any] | None) -> str:
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return ""


class PeerTunnel:
    def __init__(self, spec: dict[str, Any], log: LogLine) -> None:
        self._spec = spec
        self._log = log
        self._server_ctx = server_context(spec["cert_file"], spec["key_file"], spec.get("trusted_ca_file", ""),
                                          spec.get("client_cert_auth", False))
        self._client_ctx = client_context(spec["cert_file"], spec["key_file"], spec.get("trusted_ca_file", ""))
        self._allowed_cn = spec.get("allowed_cn", "")
        self._raft_socket = spec["raft_socket"]
        self._connections = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._warned: dict[tuple[str, str], tuple[float, int]] = {}  # (msg, remote) -> (last logged, since suppressed)

    async def start(self, socks: socket.socket) -> None:
        for host_port in self._spec["listen"]:
            host, _, port = host_port.rpartition(":")
            self._servers.append(await asyncio.start_server(
                self._inbound, host.strip("[]"), int(port), ssl=self._server_ctx, reuse_address=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S))
        # A refused handshake surfaces in the loop's exception handler: log it as etcd logs it.
        asyncio.get_running_loop().set_exception_handler(self._on_loop_error)
        self._servers.append(await asyncio.start_server(self._outbound, sock=socks))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()

    # ------------------------------------------------------------------ inbound: TLS -> Raft actor
    async def _inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        cn = common_name(writer.get_extra_info("peercert"))
        if self._allowed_cn and cn != self._allowed_cn:
            self._warn("rejected peer connection: certificate CN not allowed", f"{peer[0]} {cn}", cn=cn, allowed_cn=self._allowed_cn)
            writer.close()
            return
        if not self._admit(writer):
            return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self._raft_socket)
        except OSError as e:
            self._log("warn", "raft actor not reachable for a peer connection", error=str(e))
            self._release(writer)
            return
        await self._splice(reader, writer, up_reader, up_writer)

    # ------------------------------------------------------------------ outbound: SOCKS5 -> TLS
    async def _outbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            return
        try:
            host, port = await asyncio.wait_for(_socks_request(reader, writer), HANDSHAKE_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, OSError) as e:
            self._log("warn", "bad SOCKS request from the raft actor", error=str(e) or type(e).__name__)
            self._release(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, ssl=self._client_ctx, server_hostname=host, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S),
                HANDSHAKE_TIMEOUT_S + 1)
        except ssl.SSLCertVerificationError as e:
            self._warn("peer certificate refused", f"{host}:{port}", error=e.verify_message or str(e))
            await _socks_reply(writer, _SOCKS_REFUSED)
            self._release(writer)
            return
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
            self._log("debug", "peer not reachable over TLS", peer=f"{host}:{port}", error=str(e) or type(e).__name__)
            await _socks_reply(writer, _SOCKS_REFUSED)
            self._release(writer)
            return
        await _socks_reply(writer, _SOCKS_OK)
        await self._splice(reader, writer, up_reader, up_writer)

    # ------------------------------------------------------------------
    def _warn(self, msg: str, remote: str, **fields: Any) -> None:
        now = asyncio.get_running_loop().time()
        last, suppressed = self._warned.get((msg, remote), (-WARN_EVERY_S, 0))
        if now - last < WARN_EVERY_S:
            self._warned[(msg, remote)] = (last, suppressed + 1)
            return
        if len(self._warned) >= MAX_CONNECTIONS:
            self._warned.clear()
        self._warned[(msg, remote)] = (now, 0)
        self._log("warn", msg, remote=remote, **fields, **({"suppressed": suppressed} if suppressed else {}))

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        transport = context.get("transport")
        remote = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(error, (ssl.SSLError, ConnectionError, TimeoutError)):
            # the remote port changes on every retry: the host names the peer
            self._warn("rejected peer connection", str(remote[0] if remote else None), error=str(error) or type(error).__name__)
        else:
            self._log("error", "peer TLS tunnel: " + context.get("message", "unexpected error"), error=repr(error))

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        if self._connections >= MAX_CONNECTIONS:
            self._log("warn", "too many peer connections; refusing one", limit=MAX_CONNECTIONS)
            writer.close()
            return False
        self._connections += 1
        return True

    def _release(self, writer: asyncio.StreamWriter) -> None:
        self._connections -= 1
        writer.close()

    async def _splice(self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                      b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.gather(_pump(a_reader, b_writer), _pump(b_reader, a_writer))
        except asyncio.CancelledError:
            pass  # the tunnel is stopping
        finally:
            self._connections -= 1
            for w in (a_writer, b_writer):
                w.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side ends; then end both (the other pump sees its reader close)."""
    try:
        while data := await reader.read(READ_BYTES):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _socks_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int]:
    """A SOCKS5 CONNECT without authentication (what libzmq sends): the (host, port) asked for."""
    version, n_methods = await reader.readexactly(2)
    methods = await reader.readexactly(n_methods)
    if version != _SOCKS_VERSION or 0 not in methods:
        writer.write(bytes([_SOCKS_VERSION, 0xFF]))
        raise ValueError("not a SOCKS5 greeting offering no authentication")
    writer.write(bytes([_SOCKS_VERSION, 0]))
    version, command, _, address_type = await reader.readexactly(4)
    if address_type == 1:
        host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
    elif address_type == 4:
        host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
    elif address_type == 3:
        (length,) = await reader.readexactly(1)
        host = (await reader.readexactly(length)).decode()
    else:
        raise ValueError(f"SOCKS address type {address_type}")
    (port,) = struct.unpack(">H", await reader.readexactly(2))
    if version != _SOCKS_VERSION or command != _SOCKS_CONNECT:
        await _socks_reply(writer, _SOCKS_BAD_COMMAND)
        raise ValueError(f"SOCKS command {command}")
    return host, port


async def _socks_reply(writer: asyncio.StreamWriter, status: int) -> None:
    writer.write(bytes([_SOCKS_VERSION, status, 0, 1, 0, 0, 0, 0, 0, 0]))
    try:
        await writer.drain()
    except OSError:
        pass


async def serve(spec: dict[str, Any], log: LogLine) -> int:
    socks = socket.socket(fileno=spec["socks_fd"])  # bound by the supervisor (the raft actor knows its port)
    socks.setblocking(False)
    try:
        tunnel = PeerTunnel(spec, log)
    except (OSError, ssl.SSLError) as e:
        print(f"petcd: cannot load the peer TLS certificate: {e}", file=sys.stderr, flush=True)
        return EXIT_LISTEN_FAILED
    try:
        await tunnel.start(socks)
    except OSError as e:
        print(f"petcd: listen peer TLS: {e.strerror or e}", file=sys.stderr, flush=True)
        return EXIT_LISTEN_FAILED
    log("info", "serving peer traffic over TLS", listen=spec["listen"], client_cert_auth=spec.get("client_cert_auth", False),
        allowed_cn=spec.get("allowed_cn", ""))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await tunnel.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    die_with_supervisor(spec)
    log = LogLine(spec.get("log_level", "info"), actor="peer-tls")
    sys.exit(asyncio.run(serve(spec, log)))


if __name__ == "__main__":
    main()
