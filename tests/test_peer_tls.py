"""Peer TLS: Raft traffic between members is encrypted and both ends are authenticated.

Each member's advertised peer URL is a recording relay in front of its real peer port, so
every byte any member sends to another passes through a relay: with plain http:// peer URLs
the written value shows up in the recording (the relays see the traffic), with https:// it
does not. A member whose certificate another CA signed, or whose Common Name is not the one
allowed, gets no byte through: it never learns what the others commit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field

import pytest

from petcd.sim.ports import free_port
from tests.certs import make_ca
from tests.servers import Cluster, _start, petcd_command, wait_ready
from tests.test_ctl_harness import ETCDCTL
from tests.waiting import wait_until


@dataclass
class Relay:
    """A TCP relay that records what passes through it, both ways."""

    target_port: int
    port: int = field(default_factory=free_port)
    seen: bytearray = field(default_factory=bytearray)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sock: socket.socket | None = None
    _conns: list[socket.socket] = field(default_factory=list)

    def start(self) -> "Relay":
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def recorded(self) -> bytes:
        with self._lock:
            return bytes(self.seen)

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        for s in self._conns:
            s.close()


def _cluster(root: str, scheme: str, flags: dict[str, list[str]]) -> tuple[Cluster, list[Relay]]:
    names = list(flags)
    real = {n: free_port() for n in names}
    relays = [Relay(real[n]).start() for n in names]
    advertised = {n: f"{scheme}://127.0.0.1:{r.port}" for n, r in zip(names, relays)}
    initial = ",".join(f"{n}={advertised[n]}" for n in names)
    members = []
    for n in names:
        port = free_port()
        argv = [*petcd_command(), "--name", n, "--data-dir", f"{root}/{n}",
                "--listen-client-urls", f"http://127.0.0.1:{port}", "--advertise-client-urls", f"http://127.0.0.1:{port}",
                "--listen-peer-urls", f"{scheme}://127.0.0.1:{real[n]}", "--initial-advertise-peer-urls", advertised[n],
                "--initial-cluster", initial, *flags[n]]
        members.append(_start(argv, f"127.0.0.1:{port}", f"{root}/{n}", ready=False))
    return Cluster(members, names, list(advertised.values())), relays


def _ctl(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ETCDCTL, "--endpoints", endpoint, *args], capture_output=True, text=True, timeout=30)


def _peer_flags(ca, name: str, *extra: str) -> list[str]:
    files = ca.issue(name, server=True, client=True)
    return ["--peer-cert-file", files.cert, "--peer-key-file", files.key, "--peer-trusted-ca-file", ca.cert,
            "--peer-client-cert-auth", *extra]


def _write_and_read_everywhere(cluster: Cluster, value: str) -> None:
    eps = [m.endpoint for m in cluster.members]
    assert _ctl(eps[0], "put", "secret", value).stdout == "OK\n"
    for ep in eps:  # linearizable reads: each member has the value, through the peer links
        assert _ctl(ep, "get", "secret", "--print-value-only").stdout == value + "\n"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_peer_traffic_is_encrypted_with_tls_and_readable_without(tmp_path, scheme):
    value = "peer-secret-" + os.urandom(6).hex()
    ca = make_ca(str(tmp_path / "pki"))
    flags = {n: (_peer_flags(ca, n) if scheme == "https" else []) for n in ("m1", "m2", "m3")}
    cluster, relays = _cluster(str(tmp_path), scheme, flags)
    try:
        for m in cluster.members:
            wait_ready(m)
        _write_and_read_everywhere(cluster, value)
        recorded = b"".join(r.recorded() for r in relays)
        assert recorded, "the relays saw no peer traffic"
        assert (value.encode() in recorded) == (scheme == "http")
    finally:
        cluster.stop()
        for r in relays:
            r.stop()


def test_a_member_with_a_foreign_certificate_gets_nothing(tmp_path):
    """m3's certificate is signed by another CA: m1 and m2 commit without it (a quorum of
    three), refuse its connections, and m3 never learns what they committed."""
    ours, theirs = make_ca(str(tmp_path / "pki"), "ours"), make_ca(str(tmp_path / "pki"), "theirs")
    flags = {"m1": _peer_flags(ours, "m1"), "m2": _peer_flags(ours, "m2"), "m3": _peer_flags(theirs, "m3")}
    cluster, relays = _cluster(str(tmp_path), "https", flags)
    try:
        for m in cluster.members[:2]:
            wait_ready(m)
        eps = [m.endpoint for m in cluster.members]
        assert _ctl(eps[0], "put", "secret", "for-members-only").stdout == "OK\n"
        assert _ctl(eps[1], "get", "secret", "--print-value-only").stdout == "for-members-only\n"
        # The leader's heartbeats to m3 never get through: m3's certificate is refused.
        refused = "peer certificate refused"
        wait_until(lambda: refused in cluster.members[2].log() and any(refused in m.log() for m in cluster.members[:2]), 30,
                   "m3, and the leader, refusing the other side's certificate")
        local = _ctl(eps[2], "get", "secret", "--consistency=s", "--print-value-only")
        assert (local.returncode, local.stdout) == (0, ""), local
    finally:
        cluster.stop()
        for r in relays:
            r.stop()


def test_a_member_whose_name_is_not_allowed_is_refused(tmp_path):
    """--peer-cert-allowed-cn: m1 and m2 take peer connections only from certificates naming
    "member"; m3's names "intruder" (same CA), so m1 and m2 refuse what it sends."""
    ca = make_ca(str(tmp_path / "pki"))
    allowed = ["--peer-cert-allowed-cn", "member"]
    member = ca.issue("member", server=True, client=True)
    as_member = ["--peer-cert-file", member.cert, "--peer-key-file", member.key, "--peer-trusted-ca-file", ca.cert,
                 "--peer-client-cert-auth", *allowed]
    flags = {"m1": as_member, "m2": as_member, "m3": _peer_flags(ca, "intruder")}
    cluster, relays = _cluster(str(tmp_path), "https", flags)
    try:
        for m in cluster.members[:2]:
            wait_ready(m)
        assert _ctl(cluster.members[0].endpoint, "put", "k", "v").stdout == "OK\n"
        wait_until(lambda: any('"cn": "intruder"' in m.log() for m in cluster.members[:2]), 30, "m1 or m2 refusing m3")
    finally:
        cluster.stop()
        for r in relays:
            r.stop()


def test_peer_auto_tls_encrypts_without_a_ca(tmp_path):
    value = "auto-secret-" + os.urandom(6).hex()
    flags = {n: ["--peer-auto-tls"] for n in ("m1", "m2", "m3")}
    cluster, relays = _cluster(str(tmp_path), "https", flags)
    try:
        for m in cluster.members:
            wait_ready(m)
        _write_and_read_everywhere(cluster, value)
        assert value.encode() not in b"".join(r.recorded() for r in relays)
    finally:
        cluster.stop()
        for r in relays:
            r.stop()
