"""Client TLS (etcd's --cert-file, --key-file, --trusted-ca-file, --client-cert-auth, --auto-tls),
with the real etcdctl 3.4, curl and grpc python, each step run against petcd and real etcd 3.4
and the outputs compared byte for byte once what legitimately differs is masked (ports, times,
etcdctl's client ids).

Certificates come from tests/certs.py, made at test time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import subprocess
import time
import urllib.request

import grpc
import pytest

from petcd.rpc.front import Front, server_tls_context
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.sim.ports import free_port
from tests.certs import make_ca
from tests.servers import Server, _start, etcd_binary, petcd_command
from tests.waiting import wait_until

READY_S = 30.0
CTL_TIMEOUTS = ("--dial-timeout", "1s", "--command-timeout", "2s")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pki"))
    ca = make_ca(os.path.join(root, "ca"), "ca")
    other = make_ca(os.path.join(root, "other"), "other")
    return {
        "ca": ca.cert,
        "server": ca.issue("server", server=True),
        "alice": ca.issue("alice"),
        "bob": ca.issue("bob"),
        "root": ca.issue("root"),
        "mallory": other.issue("mallory"),  # signed by a CA the servers do not trust
    }


def _start_https(kind: str, data_dir: str, *flags: str, also_url: str = "") -> tuple[Server, int]:
    """A one-member petcd or etcd with an https client URL, and `also_url` if given (not waited on)."""
    port, peer = free_port(), free_port()
    command = petcd_command() if kind == "petcd" else [etcd_binary()]
    urls = f"https://127.0.0.1:{port}" + (f",{also_url}" if also_url else "")
    argv = [
        *command,
        "--data-dir", data_dir,
        "--listen-client-urls", urls,
        "--advertise-client-urls", urls,
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"default=http://127.0.0.1:{peer}",
        *flags,
    ]
    return _start(argv, f"127.0.0.1:{port}", data_dir, ready=False), port


def _client_ssl(cafile: str | None = None, cert=None, verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def _https_get(port: int, path: str, ctx: ssl.SSLContext) -> tuple[int, str]:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=5) as r:
        return r.status, r.read().decode()


def _wait_healthy(server: Server, port: int, ctx: ssl.SSLContext) -> None:
    def healthy() -> bool:
        assert server.proc.poll() is None, f"server exited with {server.proc.returncode}:\n{server.log()}"
        return _https_get(port, "/health", ctx) == (200, '{"health":"true"}')

    wait_until(healthy, READY_S, f"{server.argv[0]} answers /health over https")


def _etcdctl(port: int, *args: str, scheme: str = "https") -> tuple[int, str, str]:
    """etcdctl 3.4 against 127.0.0.1:port: (exit code, stdout, stderr), masked for comparison."""
    r = subprocess.run([etcd_binary("etcdctl"), "--endpoints", f"{scheme}://127.0.0.1:{port}" if scheme else f"127.0.0.1:{port}", *args],
                       capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", ""), "ETCDCTL_API": "3"})
    return r.returncode, _mask(r.stdout, port), _mask(r.stderr, port)


def _mask(text: str, port: int) -> str:
    text = text.replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    text = re.sub(r'"ts":"[^"]*"', '"ts":"TS"', text)
    return re.sub(r"client-[0-9a-f-]{36}", "client-ID", text)


def _run_both(tmp_path, flags: tuple[str, ...], ready_ctx: ssl.SSLContext, steps) -> dict[str, list]:
    """Start petcd, then etcd, with `flags`; run `steps(port)` against each; their results by server."""
    results = {}
    for kind in ("petcd", "etcd"):
        server, port = _start_https(kind, str(tmp_path / kind), *flags)
        try:
            _wait_healthy(server, port, ready_ctx)
            results[kind] = steps(port)
        finally:
            assert server.stop() == 0 or kind == "etcd", server.log()
    return results


def test_tls_serves_etcdctl_curl_and_refuses_plain_text_like_etcd(tmp_path, pki):
    server = pki["server"]
    flags = ("--cert-file", server.cert, "--key-file", server.key)
    ca = ("--cacert", pki["ca"])

    def steps(port: int) -> list:
        out = [
            _etcdctl(port, *ca, "put", "foo", "bar"),
            _etcdctl(port, *ca, "get", "foo"),
            _etcdctl(port, *ca, "get", "foo", "--print-value-only"),
            _etcdctl(port, *CTL_TIMEOUTS, "get", "foo", scheme=""),  # plain text on the TLS port: refused
            _etcdctl(port, *CTL_TIMEOUTS, "--cacert", pki["mallory"].cert, "get", "foo"),  # server cert not trusted
            _https_get(port, "/health", _client_ssl(pki["ca"])),
        ]
        curl = subprocess.run(["curl", "-sS", "--cacert", pki["ca"], f"https://127.0.0.1:{port}/version"], capture_output=True, text=True, timeout=30)
        out.append((curl.returncode, sorted(json.loads(curl.stdout))))
        plain = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/version"], capture_output=True, text=True, timeout=30)
        out.append(plain.returncode != 0 or "HTTPS" in plain.stdout)
        return out

    results = _run_both(tmp_path, flags, _client_ssl(pki["ca"]), steps)
    petcd, etcd = results["petcd"], results["etcd"]
    assert petcd[0] == (0, "OK\n", "")
    assert petcd[1] == (0, "foo\nbar\n", "")
    assert petcd[3][0] != 0 and "context deadline exceeded" in petcd[3][2]
    assert petcd[5] == (200, '{"health":"true"}')
    assert petcd[6] == (0, ["etcdcluster", "etcdserver"])
    assert petcd[7] is True
    assert petcd == etcd


def test_client_cert_auth_like_etcd(tmp_path, pki):
    server = pki["server"]
    flags = ("--cert-file", server.cert, "--key-file", server.key, "--trusted-ca-file", pki["ca"], "--client-cert-auth")

    def steps(port: int) -> list:
        alice = ("--cacert", pki["ca"], "--cert", pki["alice"].cert, "--key", pki["alice"].key)
        mallory = ("--cacert", pki["ca"], "--cert", pki["mallory"].cert, "--key", pki["mallory"].key)
        out = [
            _etcdctl(port, *CTL_TIMEOUTS, "--cacert", pki["ca"], "put", "k", "v"),  # no client certificate
            _etcdctl(port, *CTL_TIMEOUTS, *mallory, "put", "k", "v"),  # a certificate of another CA
            _etcdctl(port, *alice, "put", "k", "v"),
            _etcdctl(port, *alice, "get", "k"),
            _https_get(port, "/health", _client_ssl(pki["ca"], pki["alice"])),
        ]
        nocert = subprocess.run(["curl", "-sS", "--cacert", pki["ca"], f"https://127.0.0.1:{port}/health"], capture_output=True, text=True, timeout=30)
        out.append(nocert.returncode != 0)  # the TLS alert differs by library (OpenSSL, Go), the refusal does not
        return out

    results = _run_both(tmp_path, flags, _client_ssl(pki["ca"], pki["alice"]), steps)
    petcd, etcd = results["petcd"], results["etcd"]
    assert petcd[0][0] != 0 and "context deadline exceeded" in petcd[0][2]
    assert petcd[1][0] != 0 and "context deadline exceeded" in petcd[1][2]
    assert petcd[2:4] == [(0, "OK\n", ""), (0, "k\nv\n", "")]
    assert petcd[4] == (200, '{"health":"true"}')
    assert petcd[5] is True
    assert petcd == etcd


def test_client_certificate_common_name_is_the_user_like_etcd(tmp_path, pki):
    """With --client-cert-auth and auth enabled, a request without a token acts as the user its
    verified certificate names (CN): root may do all, alice what her role grants, bob (no such
    user) nothing; a password login still wins over the certificate's name."""
    server = pki["server"]
    flags = ("--cert-file", server.cert, "--key-file", server.key, "--trusted-ca-file", pki["ca"], "--client-cert-auth")

    def as_(who: str) -> tuple[str, ...]:
        return ("--cacert", pki["ca"], "--cert", pki[who].cert, "--key", pki[who].key)

    def steps(port: int) -> list:
        setup = [("user", "add", "root:rootpw"), ("user", "add", "alice:alicepw"), ("role", "add", "r"),
                 ("role", "grant-permission", "r", "readwrite", "a"), ("user", "grant-role", "alice", "r"), ("auth", "enable")]
        out = [_etcdctl(port, *as_("root"), *args) for args in setup]
        out += [
            _etcdctl(port, *as_("root"), "put", "x", "1"),  # the certificate's CN is root: no password needed
            _etcdctl(port, *as_("alice"), "put", "a", "1"),
            _etcdctl(port, *as_("alice"), "put", "x", "2"),  # not alice's key
            _etcdctl(port, *as_("bob"), "get", "a"),  # no user bob
            _etcdctl(port, *as_("bob"), "--user", "alice:alicepw", "get", "a"),  # the token's user wins
            _etcdctl(port, *as_("alice"), "--user", "alice:wrong", "get", "a"),
            _etcdctl(port, *as_("root"), "get", "x"),
            _etcdctl(port, *as_("root"), "auth", "disable"),
        ]
        return out

    results = _run_both(tmp_path, flags, _client_ssl(pki["ca"], pki["alice"]), steps)
    petcd = results["petcd"]
    assert petcd[5] == (0, "Authentication Enabled\n", petcd[5][2])
    assert petcd[6:9] == [(0, "OK\n", ""), (0, "OK\n", ""), (1, "", petcd[8][2])]
    assert petcd[8][2].endswith("Error: etcdserver: permission denied\n")
    assert petcd[9][0] == 1 and petcd[10] == (0, "a\n1\n", "")
    assert petcd[12] == (0, "x\n1\n", "")
    assert petcd == results["etcd"]


def test_auto_tls_like_etcd(tmp_path, pki):
    def steps(port: int) -> list:
        skip = ("--insecure-transport=false", "--insecure-skip-tls-verify")
        return [
            _etcdctl(port, *skip, "put", "a", "b"),
            _etcdctl(port, *skip, "get", "a"),
            _etcdctl(port, *CTL_TIMEOUTS, "--cacert", pki["ca"], "get", "a"),  # self-signed: not trusted
            _https_get(port, "/health", _client_ssl(verify=False)),
        ]

    results = _run_both(tmp_path, ("--auto-tls",), _client_ssl(verify=False), steps)
    assert results["petcd"][:2] == [(0, "OK\n", ""), (0, "a\nb\n", "")]
    assert results["petcd"][2][0] != 0
    assert results["petcd"] == results["etcd"]
    for kind in ("petcd", "etcd"):
        fixtures = tmp_path / kind / "fixtures" / "client"
        assert sorted(os.listdir(fixtures)) == ["cert.pem", "key.pem"]
        assert (fixtures / "key.pem").stat().st_mode & 0o077 == 0
        assert (fixtures / "key.pem").read_text().startswith("-----BEGIN EC PRIVATE KEY-----")


def test_https_url_without_certificates_is_refused_like_etcd(tmp_path):
    messages = {}
    for kind in ("petcd", "etcd"):
        server, port = _start_https(kind, str(tmp_path / kind))
        code = server.proc.wait(timeout=READY_S)
        assert code != 0
        found = re.search(r"TLS key/cert \(--cert-file, --key-file\) must be provided for client url \S+ with HTTPS scheme", server.log())
        assert found, server.log()
        messages[kind] = found.group(0).replace(str(port), "PORT")
    assert messages["petcd"] == messages["etcd"] == (
        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:PORT with HTTPS scheme"
    )


def test_grpc_python_over_tls_with_a_client_certificate(tmp_path, pki):
    server, port = _start_https("petcd", str(tmp_path / "p"), "--cert-file", pki["server"].cert, "--key-file", pki["server"].key,
                                "--trusted-ca-file", pki["ca"], "--client-cert-auth")
    try:
        _wait_healthy(server, port, _client_ssl(pki["ca"], pki["alice"]))
        alice = pki["alice"]
        creds = grpc.ssl_channel_credentials(open(pki["ca"], "rb").read(), open(alice.key, "rb").read(), open(alice.cert, "rb").read())
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            kv = pb_grpc.KVStub(channel)
            kv.Put(pb.PutRequest(key=b"g", value=b"1"), timeout=10)
            assert [kv.value for kv in kv.Range(pb.RangeRequest(key=b"g"), timeout=10).kvs] == [b"1"]
        with grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(open(pki["ca"], "rb").read())) as channel:
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.KVStub(channel).Range(pb.RangeRequest(key=b"g"), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.stop() == 0


class _PeerRecorder(pb_grpc.KVServicer):
    """Answers Range with the Common Name the front gives for the call's peer (in the key)."""

    def __init__(self) -> None:
        self.front: Front | None = None

    async def Range(self, request, context):
        name = self.front.common_name_of(context.peer())
        return pb.RangeResponse(kvs=[{"key": (name or "-").encode(), "value": context.peer().encode()}])


def test_front_names_the_certificate_behind_each_grpc_call(tmp_path, pki):
    """The front's mapping from a gRPC call back to its TLS connection (for --client-cert-auth):
    two clients with different certificates on one TLS port, a plain-text one, a TLS one
    without a certificate asked for; real sockets, TLS and gRPC, in one process."""
    sock_dir = tmp_path / "s"
    sock_dir.mkdir(mode=0o700)
    grpc_path = str(sock_dir / "grpc")
    results: dict[str, tuple[str, str]] = {}

    async def main() -> None:
        server = grpc.aio.server()
        recorder = _PeerRecorder()
        pb_grpc.add_KVServicer_to_server(recorder, server)
        server.add_insecure_port(f"unix:{grpc_path}")
        await server.start()

        async def no_http(reader, writer) -> None:
            writer.close()

        front = Front(grpc_path, no_http)
        recorder.front = front
        mtls_port, tls_port, plain_port = free_port(), free_port(), free_port()
        await front.listen(f"127.0.0.1:{mtls_port}", server_tls_context(pki["server"].cert, pki["server"].key, pki["ca"], True))
        await front.listen(f"127.0.0.1:{tls_port}", server_tls_context(pki["server"].cert, pki["server"].key))
        await front.listen(f"127.0.0.1:{plain_port}")
        ca = open(pki["ca"], "rb").read()

        def creds(who):
            c = pki[who]
            return grpc.ssl_channel_credentials(ca, open(c.key, "rb").read(), open(c.cert, "rb").read())

        channels = {
            "alice": grpc.aio.secure_channel(f"127.0.0.1:{mtls_port}", creds("alice")),
            "bob": grpc.aio.secure_channel(f"127.0.0.1:{mtls_port}", creds("bob")),
            "tls": grpc.aio.secure_channel(f"127.0.0.1:{tls_port}", grpc.ssl_channel_credentials(ca)),
            "plain": grpc.aio.insecure_channel(f"127.0.0.1:{plain_port}"),
        }
        try:
            for _ in range(2):  # both connections open at once, each call on its own
                for who, channel in channels.items():
                    kv = (await pb_grpc.KVStub(channel).Range(pb.RangeRequest(key=b"x"), timeout=10)).kvs[0]
                    results[who] = (kv.key.decode(), kv.value.decode())
            for channel in channels.values():
                await channel.close()
            # Closed connections are forgotten (waited on, with a deadline).
            deadline = time.monotonic() + 10.0
            while front._common_names and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert front._common_names == {}
        finally:
            await front.close()
            await server.stop(None)

    asyncio.run(main())
    assert {who: name for who, (name, _) in results.items()} == {"alice": "alice", "bob": "bob", "tls": "-", "plain": "-"}
    assert results["alice"][1].startswith(f"unix:{sock_dir}/") and results["alice"][1] != results["bob"][1]
    assert results["plain"][1] == "unix:"
    assert not [name for name in os.listdir(sock_dir) if name != "grpc"], "bound client paths are unlinked"


def test_what_peer_tls_cannot_do_is_refused_at_start(tmp_path, pki):
    server, _ = _start_https("petcd", str(tmp_path / "p"), "--cert-file", pki["server"].cert, "--key-file", pki["server"].key,
                             "--peer-crl-file", pki["server"].cert)
    assert server.proc.wait(timeout=READY_S) == 2
    assert "--peer-crl-file: certificate revocation lists are not supported by petcd yet" in server.log()


def test_unusable_certificate_files_are_a_start_error(tmp_path, pki):
    cases = [
        (("--cert-file", pki["server"].cert, "--key-file", pki["alice"].key), "key values mismatch"),
        (("--cert-file", str(tmp_path / "missing.pem"), "--key-file", pki["server"].key), "No such file or directory"),
        (("--cert-file", pki["server"].cert, "--key-file", pki["server"].key, "--trusted-ca-file", str(tmp_path / "missing-ca.pem")),
         "No such file or directory"),
    ]
    for i, (flags, why) in enumerate(cases):
        server, _ = _start_https("petcd", str(tmp_path / f"p{i}"), *flags)
        assert server.proc.wait(timeout=READY_S) == 2
        assert "petcd: cannot load the client TLS files (--cert-file " in server.log() and why in server.log(), server.log()


def test_http_and_https_client_urls_side_by_side(tmp_path, pki):
    """As etcd: each client URL keeps its scheme; the certificate files serve only the https one."""
    plain_port = free_port()
    server, port = _start_https("petcd", str(tmp_path / "p"), "--cert-file", pki["server"].cert, "--key-file", pki["server"].key,
                                also_url=f"http://127.0.0.1:{plain_port}")
    try:
        _wait_healthy(server, port, _client_ssl(pki["ca"]))
        assert _etcdctl(port, "--cacert", pki["ca"], "put", "m", "1") == (0, "OK\n", "")
        assert _etcdctl(plain_port, "get", "m", "--print-value-only", scheme="http") == (0, "1\n", "")
        with urllib.request.urlopen(f"http://127.0.0.1:{plain_port}/health", timeout=5) as r:
            assert r.read() == b'{"health":"true"}'
        assert "scheme is HTTP while key and cert files are present" in server.log()
    finally:
        assert server.stop() == 0


def test_petcdctl_speaks_tls_as_etcdctl_does(tmp_path, pki):
    """petcdctl's --cacert, --cert, --key and --insecure-skip-tls-verify against a petcd that
    requires client certificates: the same answers as the real etcdctl's, errors included."""
    server = pki["server"]
    flags = ("--cert-file", server.cert, "--key-file", server.key, "--trusted-ca-file", pki["ca"], "--client-cert-auth")
    petcd, port = _start_https("petcd", str(tmp_path / "p"), *flags)
    from tests.test_ctl_harness import PETCDCTL

    def run(tool: list[str], *args: str) -> tuple[int, str, str]:
        r = subprocess.run([*tool, "--endpoints", f"https://127.0.0.1:{port}", *CTL_TIMEOUTS, *args], capture_output=True, text=True,
                           timeout=60, env={"PATH": os.environ.get("PATH", ""), "ETCDCTL_API": "3"})
        return r.returncode, _mask(r.stdout, port), _mask(r.stderr, port)

    alice = ("--cacert", pki["ca"], "--cert", pki["alice"].cert, "--key", pki["alice"].key)
    steps = [
        (*alice, "put", "k", "v"),
        (*alice, "get", "k", "-w", "json"),
        ("--cacert", pki["ca"], "get", "k"),  # no client certificate
        ("--cacert", pki["ca"], "--cert", pki["mallory"].cert, "--key", pki["mallory"].key, "get", "k"),
        ("--insecure-skip-tls-verify", "--cert", pki["alice"].cert, "--key", pki["alice"].key, "get", "k", "--print-value-only"),
        ("--cacert", "/nonexistent/ca.pem", "get", "k"),
    ]
    try:
        ctx = _client_ssl(pki["ca"], pki["alice"])
        _wait_healthy(petcd, port, ctx)
        for step in steps:
            want, got = run([etcd_binary("etcdctl")], *step), run(PETCDCTL, *step)
            if want[0] == 0:
                assert got == want, step
            else:  # the TLS library's words for a refused handshake differ: the exit code and last line's start agree
                assert (got[0], got[2].splitlines()[-1].split(":")[0]) == (want[0], want[2].splitlines()[-1].split(":")[0]), (step, want, got)
    finally:
        petcd.stop()
