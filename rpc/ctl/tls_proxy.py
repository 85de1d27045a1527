"""--insecure-skip-tls-verify: TLS without checking the server's certificate, as etcdctl's.

grpc python cannot turn certificate verification off, so petcdctl talks plain gRPC to a
loopback listener of its own, and each connection to it is carried to the server in TLS
(ALPN h2, the client certificate if given) with verification off. It lives as long as the
petcdctl process; threads are daemons.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass

READ_BYTES = 1 << 16


@dataclass(frozen=True)
class InsecureTls:
    """The TLS settings of --insecure-skip-tls-verify: a client certificate, or none."""

    cert_file: str = ""
    key_file: str = ""

    def local_target(self, host_port: str) -> str:
        """A loopback host:port whose connections reach `host_port` in unverified TLS."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        threading.Thread(target=_accept, args=(listener, host_port, ctx), daemon=True).start()
        return "127.0.0.1:%d" % listener.getsockname()[1]


def _accept(listener: socket.socket, host_port: str, ctx: ssl.SSLContext) -> None:
    host, _, port = host_port.rpartition(":")
    while True:
        client, _ = listener.accept()
        try:
            upstream = ctx.wrap_socket(socket.create_connection((host.strip("[]"), int(port)), timeout=10), server_hostname=host)
            upstream.settimeout(None)
        except OSError:
            client.close()  # grpc sees the connection fail, as it would the handshake
            continue
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(READ_BYTES):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
