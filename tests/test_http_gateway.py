"""etcd 3.4's HTTP/1.1 endpoints on the client port (/version, /health, /metrics, the v3 JSON
gateway), next to gRPC on the same port.

Every request is sent, the same, to a fresh real etcd 3.4 and a fresh petcd member (both
single-member, started by tests/servers.py), in the same order, and the two answers (status code
and JSON body) must agree after masking what legitimately differs: cluster and member ids, raft
terms, header revisions, the member's URLs, Status's version and sizes, a lease's remaining TTL.
"""

from __future__ import annotations

import base64
import http.client
import json
from typing import Any

import grpc
import pytest

from petcd.rpc.maintenance_service import SERVER_VERSION
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from tests.servers import petcd_command, start_etcd, start_petcd, _start
from tests.waiting import wait_until
from petcd.sim.ports import free_port

STREAM_WAIT_S = 15.0


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("http-gw")
    etcd = start_etcd(str(base / "etcd.data"))
    petcd = start_petcd(str(base / "petcd.data"))
    yield {"etcd": etcd, "petcd": petcd}
    for s in (etcd, petcd):
        s.stop()


def request(endpoint: str, method: str, path: str, body: bytes | str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


HEADER_MASKED = ("cluster_id", "member_id", "raft_term", "revision")


def mask(value: Any, parent: str = "") -> Any:
    """Values that legitimately differ between the two servers become placeholders (their presence stays)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if parent == "header" and k in HEADER_MASKED:
                out[k] = "<masked>"
            elif k in ("ID", "leader", "dbSize", "dbSizeInUse", "raftIndex", "raftTerm", "raftAppliedIndex", "version") and parent != "kvs":
                out[k] = "<masked>"
            elif k in ("peerURLs", "clientURLs"):
                out[k] = ["<url>"] * len(v)
            elif k == "TTL" and parent == "ttl":
                out[k] = "<ttl>" if int(v) > 0 else v
            else:
                out[k] = mask(v, k)
        return out
    if isinstance(value, list):
        return [mask(v, parent) for v in value]
    return value


def both(servers, path: str, body: Any, method: str = "POST", parent: str = "") -> tuple[int, Any]:
    """The same request to etcd then petcd; asserts the masked answers agree and returns etcd's."""
    raw = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    answers = {}
    for name, server in servers.items():
        status, headers, data = request(server.endpoint, method, path, raw)
        try:
            parsed = mask(json.loads(data), parent)
        except ValueError:
            parsed = data
        answers[name] = (status, parsed)
    assert answers["petcd"] == answers["etcd"], f"{method} {path} {raw!r}"
    return answers["etcd"]


def test_version_and_health(servers):
    for name, server in servers.items():
        status, headers, data = request(server.endpoint, "GET", "/version")
        assert status == 200 and headers["content-type"] == "application/json"
        answer = json.loads(data)
        assert set(answer) == {"etcdserver", "etcdcluster"}, name
        assert answer["etcdcluster"].endswith(".0")
        if name == "petcd":
            assert answer["etcdserver"] == SERVER_VERSION
        status, headers, data = request(server.endpoint, "GET", "/health")
        assert (status, data) == (200, b'{"health":"true"}'), name
    # only GET
    assert both(servers, "/health", "", method="POST") == (405, b"Method Not Allowed\n")
    assert both(servers, "/version", "", method="PUT") == (405, b"Method Not Allowed\n")


def test_kv_endpoints_answer_as_etcd(servers):
    k, v = b64("kv/a"), b64("one")
    both(servers, "/v3/kv/put", {"key": k, "value": v})
    both(servers, "/v3/kv/put", {"key": b64("kv/b"), "value": b64("two"), "prev_kv": True})
    both(servers, "/v3/kv/put", {"key": k, "value": b64("uno"), "prev_kv": True})
    both(servers, "/v3/kv/range", {"key": k})
    both(servers, "/v3/kv/range", {"key": b64("kv/"), "range_end": b64("kv0"), "keys_only": True, "sort_order": "DESCEND"})
    both(servers, "/v3/kv/range", {"key": b64("kv/"), "range_end": b64("kv0"), "count_only": True, "serializable": True})
    both(servers, "/v3/kv/range", {"key": b64("nothing")})
    both(servers, "/v3/kv/range", {"key": k, "limit": "1", "unknown_field": 7})  # unknown fields are ignored
    both(servers, "/v3/kv/txn", {
        "compare": [{"key": k, "result": "EQUAL", "target": "VALUE", "value": b64("uno")}],
        "success": [{"request_put": {"key": k, "value": b64("eins")}}, {"request_range": {"key": k}}],
        "failure": [{"request_range": {"key": b64("kv/b")}}],
    })
    both(servers, "/v3/kv/txn", {"compare": [{"key": k, "target": "VERSION", "version": "99"}], "failure": [{"request_delete_range": {"key": k}}]})
    # Patroni's create-if-absent and compare-and-delete (its etcd3 client speaks only this gateway)
    both(servers, "/v3/kv/txn", {"compare": [{"target": "CREATE", "create_revision": "0", "key": b64("kv/leader")}],
                                 "success": [{"request_put": {"key": b64("kv/leader"), "value": b64("me")}}]})
    both(servers, "/v3/kv/txn", {"compare": [{"target": "MOD", "mod_revision": "1", "key": b64("kv/leader")}],
                                 "success": [{"request_delete_range": {"key": b64("kv/leader")}}]})
    both(servers, "/v3/kv/deleterange", {"key": b64("kv/"), "range_end": b64("kv0"), "prev_kv": True})
    both(servers, "/v3/kv/compaction", {"revision": "2", "physical": True})
    both(servers, "/v3/kv/range", {"key": k, "revision": "1"})  # compacted: 400, code 11
    both(servers, "/v3/kv/compaction", {"revision": "1000"})  # future revision
    both(servers, "/v3beta/kv/range", {"key": k})  # etcd 3.4 still serves /v3beta/


def test_lease_endpoints_answer_as_etcd(servers):
    both(servers, "/v3/lease/grant", {"TTL": "60", "ID": "4660"})
    both(servers, "/v3/kv/put", {"key": b64("leased"), "value": b64("x"), "lease": "4660"})
    both(servers, "/v3/lease/timetolive", {"ID": "4660", "keys": True}, parent="ttl")
    both(servers, "/v3/kv/lease/timetolive", {"ID": "4660"}, parent="ttl")
    both(servers, "/v3/lease/timetolive", {"ID": "999"})
    both(servers, "/v3/lease/leases", {})
    both(servers, "/v3/lease/grant", {"TTL": "60", "ID": "4660"})  # lease already exists: 412
    both(servers, "/v3/lease/grant", {"TTL": "9000000001"})  # too large TTL
    both(servers, "/v3/lease/revoke", {"ID": "4660"})
    both(servers, "/v3/kv/lease/revoke", {"ID": "4660"})  # not found: 404, code 5
    both(servers, "/v3/kv/range", {"key": b64("leased")})


def test_cluster_maintenance_auth_endpoints_answer_as_etcd(servers):
    both(servers, "/v3/cluster/member/list", {})
    both(servers, "/v3/maintenance/status", {})
    both(servers, "/v3/auth/authenticate", {"name": "root", "password": "secret"})  # auth not enabled: 412


@pytest.mark.parametrize("body", ["", "null", "xx", '{"key":', '{"key" 1}', "[1]", '"text"', '{"key":"Zm9v"} trailing'])
def test_bad_json_answers_as_etcd(servers, body):
    both(servers, "/v3/kv/range", body)


@pytest.mark.parametrize("path, body", [
    # an enum by a name that is not one of its values (protobuf's ParseDict, told to ignore unknown
    # fields, also dropped these, so "descend" sorted ascending): 400, "unknown value ..."
    ("/v3/kv/range", {"key": b64("k"), "sort_order": "descend"}),
    ("/v3/kv/range", {"key": b64("k"), "sort_order": "DESCEND", "sort_target": "1"}),
    ("/v3/kv/range", {"key": b64("k"), "sort_order": 2}),  # a number is taken as it is
    ("/v3/kv/txn", {"compare": [{"key": b64("k"), "result": "BOGUS", "target": "VALUE", "value": b64("x")}]}),
    ("/v3/kv/txn", {"compare": [{"key": b64("k"), "result": "EQUAL", "target": "NOPE"}]}),
    ("/v3/maintenance/alarm", {"action": "get"}),
    ("/v3/auth/role/grant", {"name": "r", "perm": {"permType": "read", "key": b64("k")}}),
    # bytes that are not standard, padded base64 (ParseDict skipped what was not base64): 400,
    # "illegal base64 data at input byte N", N as Go's decoder counts
    ("/v3/kv/range", {"key": "!!!"}),
    ("/v3/kv/range", {"key": "aw"}),
    ("/v3/kv/range", {"key": "a-_b"}),
    ("/v3/kv/range", {"key": "aw==x"}),
    ("/v3/kv/range", {"key": "aw=x"}),
    ("/v3/kv/range", {"key": "a==="}),
    ("/v3/kv/range", {"key": "aGVs\nbG8="}),  # CR and LF are skipped
    ("/v3/kv/txn", {"success": [{"request_put": {"key": b64("k"), "value": "v"}}]}),
    # the first error in field order is the one reported
    ("/v3/kv/range", {"sort_target": "nope", "key": "!", "sort_order": "nope"}),
])
def test_enum_names_and_base64_are_as_strict_as_etcd(servers, path, body):
    both(servers, path, body)


def test_a_watch_with_a_bad_enum_fails_as_etcd(servers):
    """The first request of a bidi stream fails before the stream opens: "Unknown", 500."""
    assert both(servers, "/v3/watch", {"create_request": {"key": b64("k"), "filters": ["NOPUT", "BOGUS"]}})[0] == 500


def test_unknown_paths_and_methods_answer_as_etcd(servers):
    assert both(servers, "/v3/nope", "{}") == (404, b"Not Found\n")
    assert both(servers, "/v3/auth/status", "{}") == (404, b"Not Found\n")  # not in etcd 3.4's gateway
    assert both(servers, "/nope", None, method="GET") == (404, b"404 page not found\n")
    assert both(servers, "/v3/kv/range", None, method="GET") == (405, b"Method Not Allowed\n")


def test_expect_100_continue_and_keep_alive(servers):
    """curl sends `Expect: 100-continue` for bodies over 1 KiB; two requests on one connection."""
    big = {"key": b64("big"), "value": b64("v" * 4096)}
    for name, server in servers.items():
        host, port = server.endpoint.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("POST", "/v3/kv/put", body=json.dumps(big), headers={"Expect": "100-continue"})
            first = conn.getresponse()
            assert first.status == 200, name
            first.read()
            conn.request("POST", "/v3/kv/range", body=json.dumps({"key": b64("big")}))
            second = json.loads(conn.getresponse().read())
            assert base64.b64decode(second["kvs"][0]["value"]) == b"v" * 4096, name
        finally:
            conn.close()


def test_a_chunked_request_body(servers):
    answers = {}
    for name, server in servers.items():
        host, port = server.endpoint.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("POST", "/v3/kv/range", body=iter([b'{"key":', b'"', b64("kv/a").encode(), b'"}']), encode_chunked=True)
            resp = conn.getresponse()
            answers[name] = (resp.status, mask(json.loads(resp.read())))
        finally:
            conn.close()
    assert answers["petcd"] == answers["etcd"]


class Stream:
    """A streaming POST (/v3/watch, /v3/lease/keepalive): its JSON lines as they come."""

    def __init__(self, endpoint: str, path: str, body: str) -> None:
        host, port = endpoint.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=STREAM_WAIT_S)
        self.conn.request("POST", path, body=body.encode())
        self.resp = self.conn.getresponse()

    def next(self) -> Any:
        line = self.resp.readline()  # http.client undoes the chunked encoding
        assert line, "the stream ended"
        return json.loads(line)

    def close(self) -> None:
        self.conn.close()


def test_watch_stream_answers_as_etcd(servers):
    results = {}
    for name, server in servers.items():
        watch = Stream(server.endpoint, "/v3/watch", json.dumps({"create_request": {"key": b64("w/"), "range_end": b64("w0"), "prev_kv": True}}))
        try:
            assert watch.resp.status == 200 and watch.resp.getheader("Content-Type") == "application/json"
            created = watch.next()
            request(server.endpoint, "POST", "/v3/kv/put", json.dumps({"key": b64("w/1"), "value": b64("a")}))
            request(server.endpoint, "POST", "/v3/kv/put", json.dumps({"key": b64("w/1"), "value": b64("b")}))
            request(server.endpoint, "POST", "/v3/kv/deleterange", json.dumps({"key": b64("w/1")}))
            events = []
            while len(events) < 3:
                events += watch.next()["result"]["events"]
            results[name] = (mask(created), [mask(e) for e in events])
        finally:
            watch.close()
    assert results["petcd"] == results["etcd"]
    created, events = results["etcd"]
    assert created["result"]["created"] is True
    assert [e.get("type", "PUT") for e in events] == ["PUT", "PUT", "DELETE"]


def test_two_watches_in_one_body_and_a_bad_watch_body(servers):
    body = json.dumps({"create_request": {"key": b64("x")}}) + json.dumps({"create_request": {"key": b64("y")}})
    results = {}
    for name, server in servers.items():
        watch = Stream(server.endpoint, "/v3/watch", body)
        try:
            results[name] = [mask(watch.next()), mask(watch.next())]
        finally:
            watch.close()
    assert results["petcd"] == results["etcd"]
    # a body that is not JSON fails before the stream opens: "Unknown", 500
    assert both(servers, "/v3/watch", "xx")[0] == 500


def test_keepalive_stream_answers_as_etcd(servers):
    both(servers, "/v3/lease/grant", {"TTL": "100", "ID": "777"})
    results = {}
    for name, server in servers.items():
        keepalive = Stream(server.endpoint, "/v3/lease/keepalive", json.dumps({"ID": "777"}) + json.dumps({"ID": "778"}))
        try:
            # the stream ends once the body's requests are answered (Patroni reads it as one response)
            results[name] = [mask(json.loads(line)) for line in keepalive.resp.read().splitlines()]
        finally:
            keepalive.close()
    assert results["petcd"] == results["etcd"] and len(results["etcd"]) == 2
    assert results["etcd"][0]["result"]["TTL"] == "100" and "TTL" not in results["etcd"][1]["result"]


def test_a_watch_from_a_compacted_revision_answers_as_etcd(servers):
    """etcd 3.4 cancels it with compact_revision, a header without revision and no cancel_reason."""
    results = {}
    for name, server in servers.items():
        for value in ("1", "2"):
            request(server.endpoint, "POST", "/v3/kv/put", json.dumps({"key": b64("compacted"), "value": b64(value)}))
        revision = json.loads(request(server.endpoint, "POST", "/v3/kv/range", json.dumps({"key": b64("compacted")}))[2])["header"]["revision"]
        request(server.endpoint, "POST", "/v3/kv/compaction", json.dumps({"revision": revision}))
        watch = Stream(server.endpoint, "/v3/watch", json.dumps({"create_request": {"key": b64("compacted"), "start_revision": "1"}}))
        try:
            created, canceled = watch.next(), watch.next()
            assert canceled["result"]["compact_revision"] == revision, name
            results[name] = [mask(created), mask(canceled)]
        finally:
            watch.close()
    assert results["petcd"] == results["etcd"]
    assert "revision" not in results["etcd"][1]["result"]["header"] and "cancel_reason" not in results["etcd"][1]["result"]


def test_a_stream_that_ends_without_a_message_answers_as_etcd(servers):
    """A keep-alive stream with no request: 200, an empty chunked body, and no Grpc-Metadata-*
    header (the gRPC call had no header metadata)."""
    answers = {}
    for name, server in servers.items():
        keepalive = Stream(server.endpoint, "/v3/lease/keepalive", "")
        try:
            headers = {k.lower(): v for k, v in keepalive.resp.getheaders() if k.lower() != "date"}
            answers[name] = (keepalive.resp.status, headers, keepalive.resp.read())
        finally:
            keepalive.close()
    assert answers["petcd"] == answers["etcd"]
    assert "grpc-metadata-content-type" not in answers["etcd"][1]


def test_grpc_still_works_on_the_same_port_with_large_messages(servers):
    value = bytes(range(256)) * 4096  # 1 MiB: many frames through the splice
    with grpc.insecure_channel(servers["petcd"].endpoint) as channel:
        kv = pb_grpc.KVStub(channel)
        kv.Put(pb.PutRequest(key=b"large", value=value), timeout=10)
        assert kv.Range(pb.RangeRequest(key=b"large"), timeout=10).kvs[0].value == value
    status, _, data = request(servers["petcd"].endpoint, "POST", "/v3/kv/range", json.dumps({"key": b64("large")}))
    assert status == 200 and base64.b64decode(json.loads(data)["kvs"][0]["value"]) == value


def test_metrics_is_prometheus_text(servers):
    for name, server in servers.items():
        status, headers, data = request(server.endpoint, "GET", "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4"), name
        text = data.decode()
        for metric in ("etcd_server_has_leader", "etcd_server_is_leader"):
            # etcd (Go) writes 1, prometheus_client 1.0: the same sample in Prometheus' text format
            assert f"\n{metric} 1\n" in text or f"\n{metric} 1.0\n" in text, (name, metric)
        assert "\netcd_mvcc_db_total_size_in_bytes " in text


def _wait_answering(endpoint: str, path: str) -> tuple[int, bytes]:
    """The first answer to GET path once the member listens (polled until a deadline, as wait_ready does)."""
    status, _, data = wait_until(lambda: request(endpoint, "GET", path), STREAM_WAIT_S, f"something to listen on {endpoint}")
    return status, data


def test_health_is_false_without_a_leader_and_sigterm_ends_open_streams(tmp_path):
    """A member of a two-member cluster whose peer never starts has no leader: 503 {"health":"false"}
    (etcd 3.4 serves no client request before it has one, so this one is petcd's alone).
    An open watch stream does not hold up SIGTERM."""
    port, peer, other = free_port(), free_port(), free_port()
    argv = [*petcd_command(), "--name", "a", "--data-dir", str(tmp_path / "a"),
            "--listen-client-urls", f"http://127.0.0.1:{port}", "--advertise-client-urls", f"http://127.0.0.1:{port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"a=http://127.0.0.1:{peer},b=http://127.0.0.1:{other}"]
    server = _start(argv, f"127.0.0.1:{port}", str(tmp_path / "a"), ready=False)
    try:
        assert _wait_answering(server.endpoint, "/health") == (503, b'{"health":"false"}\n')
        watch = Stream(server.endpoint, "/v3/watch", json.dumps({"create_request": {"key": b64("k")}}))
        assert watch.next()["result"]["created"] is True
        assert server.stop(timeout_s=15) == 0
        watch.close()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def test_health_is_false_with_an_active_alarm_unless_excluded(servers):
    """As etcd 3.4: an alarm makes /health 503 {"health":"false"}; `?exclude=NOSPACE` ignores that alarm."""
    for name, server in servers.items():
        with grpc.insecure_channel(server.endpoint) as channel:
            maintenance = pb_grpc.MaintenanceStub(channel)
            me = maintenance.Status(pb.StatusRequest(), timeout=10).header.member_id
            maintenance.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=me, alarm=pb.NOSPACE), timeout=10)
            try:
                assert request(server.endpoint, "GET", "/health")[::2] == (503, b'{"health":"false"}\n'), name
                assert request(server.endpoint, "GET", "/health?exclude=NOSPACE")[::2] == (200, b'{"health":"true"}'), name
            finally:
                maintenance.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=me, alarm=pb.NOSPACE), timeout=10)
        assert request(server.endpoint, "GET", "/health")[::2] == (200, b'{"health":"true"}'), name


def test_listen_client_http_urls_split_grpc_from_http(tmp_path):
    """--listen-client-http-urls (etcd 3.5): the JSON gateway, /health and /version on their own
    URLs; the client URLs then serve gRPC only (an HTTP/1.1 request there is closed unanswered)."""
    http_port = free_port()
    member = start_petcd(str(tmp_path / "d"), "--listen-client-http-urls", f"http://127.0.0.1:{http_port}")
    http_ep = f"127.0.0.1:{http_port}"
    try:
        stub = pb_grpc.KVStub(grpc.insecure_channel(member.endpoint))
        assert stub.Put(pb.PutRequest(key=b"k", value=b"v"), timeout=10).header.revision == 2
        status, _, body = request(http_ep, "POST", "/v3/kv/range", json.dumps({"key": b64("k")}))
        assert status == 200 and json.loads(body)["kvs"][0]["value"] == b64("v")
        assert request(http_ep, "GET", "/health")[0] == 200
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            request(member.endpoint, "GET", "/version")
        with pytest.raises(grpc.RpcError):
            pb_grpc.KVStub(grpc.insecure_channel(http_ep)).Range(pb.RangeRequest(key=b"k"), timeout=3)
    finally:
        member.stop()


class _WsClient:
    """A minimal WebSocket client (RFC 6455: masked frames out, unmasked in), enough for the gateway."""

    def __init__(self, endpoint: str, path: str) -> None:
        import os
        import socket

        host, port = endpoint.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status_line = head.split(b"\r\n")[0].decode()

    def send(self, text: str) -> None:
        import os
        import struct

        data, key = text.encode(), os.urandom(4)
        head = struct.pack(">BB", 0x81, 0x80 | len(data)) if len(data) < 126 else struct.pack(">BBH", 0x81, 0x80 | 126, len(data))
        self.sock.sendall(head + key + bytes(b ^ key[i % 4] for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def receive(self) -> Any:
        """The next text message, decoded as JSON."""
        import struct

        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._read(8))
        payload = self._read(n)
        assert b0 & 0x0F == 1, (b0, payload)
        return json.loads(payload)

    def close(self) -> None:
        self.sock.close()


def test_watch_over_a_websocket_answers_as_etcd(servers):
    """etcd 3.4 serves its gateway's streams over WebSockets too (wsproxy): each message a request,
    each answer line a message back."""
    results = {}
    for name, server in servers.items():
        ws = _WsClient(server.endpoint, "/v3/watch")
        try:
            assert ws.status_line == "HTTP/1.1 101 Switching Protocols"
            ws.send(json.dumps({"create_request": {"key": b64("ws/"), "range_end": b64("ws0")}}))
            created = ws.receive()
            request(server.endpoint, "POST", "/v3/kv/put", json.dumps({"key": b64("ws/1"), "value": b64("a")}))
            event = ws.receive()
            ws.send(json.dumps({"cancel_request": {"watch_id": created["result"].get("watch_id", "0")}}))
            canceled = ws.receive()
            kv = event["result"]["events"][0]["kv"]
            # earlier tests of this module wrote more to one server: revisions are compared relatively
            assert kv.pop("create_revision") == kv.pop("mod_revision")
            results[name] = [mask(created), mask(event), mask(canceled)]
        finally:
            ws.close()
    assert results["petcd"] == results["etcd"]
    assert results["etcd"][1]["result"]["events"][0]["kv"]["value"] == b64("a")
