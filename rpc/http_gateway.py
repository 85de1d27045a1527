"""etcd 3.4's HTTP/1.1 endpoints on the client port: /version, /health, /metrics and the v3 JSON
gateway (grpc-gateway): POST /v3/<service>/<rpc> (also under /v3beta/) with a JSON request.

The JSON paths call the very servicer objects the gRPC server uses, with a context whose
abort() raises, so both paths share one implementation. JSON is grpc-gateway's jsonpb as etcd
configures it (OrigName: proto field names; defaults left out; int64 as strings; bytes as
base64). A failed call answers {"error", "message", "code"} with grpc-gateway's HTTP status for
the gRPC code. Streams (Watch, LeaseKeepAlive, ...) take a body of concatenated JSON requests
and answer a chunked body of `{"result": {...}}` lines.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any, NoReturn
from urllib.parse import parse_qs

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from petcd.rpc.errors import Aborted
from petcd.rpc.gateway_state import GatewayState
from petcd.rpc.link import LinkError
from petcd.rpc.maintenance_service import SERVER_VERSION
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import v3election_pb2, v3lock_pb2
from petcd.rpc.websocket import WebSocket, WebSocketClosed, handshake, is_upgrade

_C = grpc.StatusCode
# grpc-gateway v1's runtime.HTTPStatusFromCode (the version etcd 3.4 vendors).
HTTP_STATUS = {
    _C.OK: 200, _C.CANCELLED: 408, _C.UNKNOWN: 500, _C.INVALID_ARGUMENT: 400, _C.DEADLINE_EXCEEDED: 504,
    _C.NOT_FOUND: 404, _C.ALREADY_EXISTS: 409, _C.PERMISSION_DENIED: 403, _C.UNAUTHENTICATED: 401,
    _C.RESOURCE_EXHAUSTED: 429, _C.FAILED_PRECONDITION: 412, _C.ABORTED: 409, _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501, _C.INTERNAL: 500, _C.UNAVAILABLE: 503, _C.DATA_LOSS: 500,
}
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 409: "Conflict", 412: "Precondition Failed", 413: "Request Entity Too Large",
           429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
           504: "Gateway Timeout"}
# Every answer of etcd's client port carries these (etcd's CORS wrapper).
BASE_HEADERS = [("Access-Control-Allow-Headers", "accept, content-type, authorization"),
                ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
                ("Access-Control-Allow-Origin", "*")]
TEXT = "text/plain; charset=utf-8"
HEALTH_TIMEOUT_S = 1.0
MAX_HEADERS = 100

UNARY, STREAM_IN_OUT, STREAM_OUT = "unary", "bidi", "server-stream"
# Requests read from a WebSocket and not yet taken by the stream; past it reading waits.
MAX_QUEUED_WS_REQUESTS = 64
# path -> (service, method, request class, kind), from etcd 3.4's google.api.http options.
ROUTES: dict[str, tuple[str, str, type[Message], str]] = {
    "/v3/kv/range": ("kv", "Range", pb.RangeRequest, UNARY),
    "/v3/kv/put": ("kv", "Put", pb.PutRequest, UNARY),
    "/v3/kv/deleterange": ("kv", "DeleteRange", pb.DeleteRangeRequest, UNARY),
    "/v3/kv/txn": ("kv", "Txn", pb.TxnRequest, UNARY),
    "/v3/kv/compaction": ("kv", "Compact", pb.CompactionRequest, UNARY),
    "/v3/watch": ("watch", "Watch", pb.WatchRequest, STREAM_IN_OUT),
    "/v3/lease/grant": ("lease", "LeaseGrant", pb.LeaseGrantRequest, UNARY),
    "/v3/lease/revoke": ("lease", "LeaseRevoke", pb.LeaseRevokeRequest, UNARY),
    "/v3/kv/lease/revoke": ("lease", "LeaseRevoke", pb.LeaseRevokeRequest, UNARY),
    "/v3/lease/keepalive": ("lease", "LeaseKeepAlive", pb.LeaseKeepAliveRequest, STREAM_IN_OUT),
    "/v3/lease/timetolive": ("lease", "LeaseTimeToLive", pb.LeaseTimeToLiveRequest, UNARY),
    "/v3/kv/lease/timetolive": ("lease", "LeaseTimeToLive", pb.LeaseTimeToLiveRequest, UNARY),
    "/v3/lease/leases": ("lease", "LeaseLeases", pb.LeaseLeasesRequest, UNARY),
    "/v3/kv/lease/leases": ("lease", "LeaseLeases", pb.LeaseLeasesRequest, UNARY),
    "/v3/cluster/member/add": ("cluster", "MemberAdd", pb.MemberAddRequest, UNARY),
    "/v3/cluster/member/remove": ("cluster", "MemberRemove", pb.MemberRemoveRequest, UNARY),
    "/v3/cluster/member/update": ("cluster", "MemberUpdate", pb.MemberUpdateRequest, UNARY),
    "/v3/cluster/member/list": ("cluster", "MemberList", pb.MemberListRequest, UNARY),
    "/v3/cluster/member/promote": ("cluster", "MemberPromote", pb.MemberPromoteRequest, UNARY),
    "/v3/maintenance/alarm": ("maintenance", "Alarm", pb.AlarmRequest, UNARY),
    "/v3/maintenance/status": ("maintenance", "Status", pb.StatusRequest, UNARY),
    "/v3/maintenance/defragment": ("maintenance", "Defragment", pb.DefragmentRequest, UNARY),
    # Hash and HashKV share one path in etcd 3.4; Hash is registered first and wins.
    "/v3/maintenance/hash": ("maintenance", "Hash", pb.HashRequest, UNARY),
    "/v3/maintenance/snapshot": ("maintenance", "Snapshot", pb.SnapshotRequest, STREAM_OUT),
    "/v3/maintenance/transfer-leadership": ("maintenance", "MoveLeader", pb.MoveLeaderRequest, UNARY),
    "/v3/auth/enable": ("auth", "AuthEnable", pb.AuthEnableRequest, UNARY),
    "/v3/auth/disable": ("auth", "AuthDisable", pb.AuthDisableRequest, UNARY),
    "/v3/auth/authenticate": ("auth", "Authenticate", pb.AuthenticateRequest, UNARY),
    "/v3/auth/user/add": ("auth", "UserAdd", pb.AuthUserAddRequest, UNARY),
    "/v3/auth/user/get": ("auth", "UserGet", pb.AuthUserGetRequest, UNARY),
    "/v3/auth/user/list": ("auth", "UserList", pb.AuthUserListRequest, UNARY),
    "/v3/auth/user/delete": ("auth", "UserDelete", pb.AuthUserDeleteRequest, UNARY),
    "/v3/auth/user/changepw": ("auth", "UserChangePassword", pb.AuthUserChangePasswordRequest, UNARY),
    "/v3/auth/user/grant": ("auth", "UserGrantRole", pb.AuthUserGrantRoleRequest, UNARY),
    "/v3/auth/user/revoke": ("auth", "UserRevokeRole", pb.AuthUserRevokeRoleRequest, UNARY),
    "/v3/auth/role/add": ("auth", "RoleAdd", pb.AuthRoleAddRequest, UNARY),
    "/v3/auth/role/get": ("auth", "RoleGet", pb.AuthRoleGetRequest, UNARY),
    "/v3/auth/role/list": ("auth", "RoleList", pb.AuthRoleListRequest, UNARY),
    "/v3/auth/role/delete": ("auth", "RoleDelete", pb.AuthRoleDeleteRequest, UNARY),
    "/v3/auth/role/grant": ("auth", "RoleGrantPermission", pb.AuthRoleGrantPermissionRequest, UNARY),
    "/v3/auth/role/revoke": ("auth", "RoleRevokePermission", pb.AuthRoleRevokePermissionRequest, UNARY),
    "/v3/lock/lock": ("lock", "Lock", v3lock_pb2.LockRequest, UNARY),
    "/v3/lock/unlock": ("lock", "Unlock", v3lock_pb2.UnlockRequest, UNARY),
    "/v3/election/campaign": ("election", "Campaign", v3election_pb2.CampaignRequest, UNARY),
    "/v3/election/proclaim": ("election", "Proclaim", v3election_pb2.ProclaimRequest, UNARY),
    "/v3/election/leader": ("election", "Leader", v3election_pb2.LeaderRequest, UNARY),
    "/v3/election/observe": ("election", "Observe", v3election_pb2.LeaderRequest, STREAM_OUT),
    "/v3/election/resign": ("election", "Resign", v3election_pb2.ResignRequest, UNARY),
}


class _Context:
    """The part of grpc.aio.ServicerContext the servicers use: abort() ends the call. The
    token travels in the Authorization header, as with etcd's gateway."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        token = (headers or {}).get("authorization", "")
        self._metadata = (("authorization", token),) if token else ()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = None) -> NoReturn:
        raise Aborted(code, details)

    def invocation_metadata(self) -> tuple:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None  # an HTTP request carries no deadline

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def peer(self) -> str:
        return "http"


class _BadRequest(Exception):
    pass


class _Request:
    __slots__ = ("method", "path", "query", "version", "headers", "body")

    def __init__(self, method: str, path: str, query: str, version: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.query, self.version, self.headers, self.body = method, path, query, version, headers, body

    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return "close" not in conn if self.version == "HTTP/1.1" else "keep-alive" in conn


class HttpGateway:
    def __init__(self, state: GatewayState, services: dict[str, Any], max_body_bytes: int, metrics: Any = None,
                 metrics_only: bool = False) -> None:
        self._s = state
        self._services = services
        self._max_body = max_body_bytes
        self._metrics_source = metrics  # rpc/metrics.MemberMetrics; None: a few gauges of this process
        # --listen-metrics-urls: etcd's metrics listener serves /metrics and /health only
        self._metrics_only = metrics_only

    # ------------------------------------------------------------------ HTTP/1.1
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: requests one after another (keep-alive) until either side closes."""
        try:
            while True:
                try:
                    req = await self._read_request(reader, writer)
                except _BadRequest:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request")
                    await writer.drain()
                    return
                if req is None:
                    return
                keep = await self._dispatch(req, reader, writer) and req.keep_alive()
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
        try:
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError) as e:
            raise _BadRequest from e
        if not line:
            return None
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest
        method, target, version = parts
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n"):
                break
            if not raw:
                raise asyncio.IncompleteReadError(b"", None)
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest
            headers[name.strip().lower()] = value.strip()
        else:
            raise _BadRequest
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(reader)
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError as e:
                raise _BadRequest from e
            if length < 0 or length > self._max_body:
                raise _BadRequest
            body = await reader.readexactly(length)
        path, _, query = target.partition("?")
        return _Request(method, path, query, version, headers, body)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as e:
                raise _BadRequest from e
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > self._max_body:
                raise _BadRequest
            chunks.append(await reader.readexactly(size))
            await reader.readline()

    @staticmethod
    def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", *(f"{k}: {v}" for k, v in BASE_HEADERS),
                 *(f"{k}: {v}" for k, v in headers), f"Date: {formatdate(usegmt=True)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, extra: list[tuple[str, str]] = ()) -> None:
        headers = [("Content-Type", content_type), *extra, ("Content-Length", str(len(body)))]
        writer.write(self._head(status, headers) + body)

    def _plain_error(self, writer: asyncio.StreamWriter, status: int, text: str, extra: list[tuple[str, str]] = ()) -> None:
        """Go's http.Error."""
        self._send(writer, status, (text + "\n").encode(), TEXT, [("X-Content-Type-Options", "nosniff"), *extra])

    # ------------------------------------------------------------------ routing
    async def _dispatch(self, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False if the connection must close afterwards."""
        path = req.path
        if path.startswith("/v3beta/"):
            path = "/v3/" + path[len("/v3beta/"):]
        if self._metrics_only and path not in ("/metrics", "/health"):
            self._plain_error(writer, 404, "404 page not found")
        elif path == "/version":
            if req.method != "GET":
                self._plain_error(writer, 405, "Method Not Allowed", [("Allow", "GET")])
                return True
            major_minor = ".".join(SERVER_VERSION.split(".")[:2])
            body = json.dumps({"etcdserver": SERVER_VERSION, "etcdcluster": f"{major_minor}.0"}, separators=(",", ":"))
            self._send(writer, 200, body.encode(), "application/json")
        elif path == "/health":
            if req.method != "GET":
                self._plain_error(writer, 405, "Method Not Allowed", [("Allow", "GET")])
                return True
            if await self._healthy(set(parse_qs(req.query).get("exclude", []))):
                self._send(writer, 200, b'{"health":"true"}', TEXT)
            else:
                self._plain_error(writer, 503, '{"health":"false"}')
        elif path == "/metrics":
            if self._metrics_source is not None:
                self._send(writer, 200, await self._metrics_source.render(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._send(writer, 200, (await self._metrics()).encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path.startswith("/v3/"):
            route = ROUTES.get(path)
            if route is None:
                self._plain_error(writer, 404, "Not Found")
            elif is_upgrade(req.headers):  # etcd's wsproxy: any method, proxied as a POST
                await self._websocket(route, req, reader, writer)
                return False
            elif req.method != "POST":
                self._plain_error(writer, 405, "Method Not Allowed")
            elif route[3] == UNARY:
                await self._unary(route, req, writer)
            else:
                return await self._stream(route, req, reader, writer)
        else:
            self._plain_error(writer, 404, "404 page not found")
        return True

    # ------------------------------------------------------------------ the v3 JSON API
    async def _unary(self, route: tuple[str, str, type[Message], str], req: _Request, writer: asyncio.StreamWriter) -> None:
        service, method, cls, _ = route
        try:
            values = _decode_first(req.body)
            request = _parse(cls, values[0] if values else None)
        except Aborted as e:
            self._grpc_error(writer, e.code, e.details)
            return
        try:
            response = await getattr(self._services[service], method)(request, _Context(req.headers))
        except Aborted as e:
            self._grpc_error(writer, e.code, e.details)
            return
        except LinkError as e:
            self._grpc_error(writer, _C.UNAVAILABLE, e.message or e.name)
            return
        except Exception as e:  # a bug: answer as grpc.aio would (UNKNOWN) rather than drop the connection
            self._grpc_error(writer, _C.UNKNOWN, f"Unexpected {type(e)}: {e}")
            return
        self._send(writer, 200, _to_json(response).encode(), "application/json", [("Grpc-Metadata-Content-Type", "application/grpc")])

    def _grpc_error(self, writer: asyncio.StreamWriter, code: grpc.StatusCode, message: str) -> None:
        body = json.dumps({"error": message, "message": message, "code": code.value[0]}, separators=(",", ":"))
        self._send(writer, HTTP_STATUS.get(code, 500), body.encode(), "application/json")

    async def _stream(self, route: tuple[str, str, type[Message], str], req: _Request, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        service, method, cls, kind = route
        try:
            first = _decode_first(req.body)
            first_request = _parse(cls, first[0] if first else None)
        except Aborted as e:
            # grpc-gateway decodes the first request before it opens a bidi stream, and fails it as
            # "Unknown"; a server stream's one request fails as a unary call's does.
            self._grpc_error(writer, _C.UNKNOWN if kind == STREAM_IN_OUT else e.code, e.details)
            return True
        # later requests that do not parse end the client's side of the stream (grpc-gateway's CloseSend)
        requests = _parse_prefix(cls, req.body)
        call = getattr(self._services[service], method)
        if kind == STREAM_IN_OUT:
            responses = _as_stream(call(_iterate(requests), _Context(req.headers)))
        else:
            responses = _as_stream(call(first_request, _Context(req.headers)))
        started = False

        def start(with_metadata: bool = True) -> None:
            """The head, once. Grpc-Metadata-* are the gRPC response's header metadata: a stream that
            ends without a message had none (a trailers-only response), and etcd's gateway sends none."""
            nonlocal started
            if not started:
                started = True
                metadata = [("Grpc-Metadata-Content-Type", "application/grpc")] if with_metadata else []
                writer.write(self._head(200, [("Content-Type", "application/json"), *metadata, ("Transfer-Encoding", "chunked")]))

        def chunk(obj: str) -> None:
            data = (obj + "\n").encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        async def pump() -> None:
            try:
                async for response in responses:
                    start()
                    chunk('{"result":' + _to_json(response) + "}")
                    await writer.drain()
            except Aborted as e:
                if not started:
                    self._grpc_error(writer, e.code, e.details)
                    return
                status = HTTP_STATUS.get(e.code, 500)
                chunk(json.dumps({"error": {"grpc_code": e.code.value[0], "http_code": status, "message": e.details,
                                            "http_status": REASONS.get(status, "")}}, separators=(",", ":")))
            start(with_metadata=False)
            writer.write(b"0\r\n\r\n")

        # The stream lasts until it ends or the client goes away (EOF on its side of the connection).
        pumping = asyncio.ensure_future(pump())
        gone = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait([pumping, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pumping.done():
                pumping.cancel()
                await asyncio.gather(pumping, return_exceptions=True)
                await responses.aclose()
                return False
            if gone.done():
                return False
            gone.cancel()
            await asyncio.gather(gone, return_exceptions=True)
        pumping.result()
        return True

    async def _websocket(self, route: tuple[str, str, type[Message], str], req: _Request, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """A /v3 path over a WebSocket (rpc/websocket.py): each message is one request, each
        answer line ({"result":...}, or an error) one text message back."""
        answer = handshake(req.headers)
        if answer is None:
            self._plain_error(writer, 400, "Bad Request")
            return
        head, authorization = answer
        writer.write(head)
        ws = WebSocket(reader, writer, self._max_body)
        context = _Context({"authorization": authorization} if authorization else {})
        service, method, cls, kind = route
        requests: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=MAX_QUEUED_WS_REQUESTS)

        async def read_requests() -> None:
            """Client messages into the queue, until the client closes or sends what does not parse
            (grpc-gateway then ends the client's side of the stream)."""
            try:
                while True:
                    data = await ws.receive()
                    try:
                        await requests.put(_parse(cls, json.loads(data)))
                    except (Aborted, ValueError):
                        return
            except WebSocketClosed:
                return
            finally:
                if requests.full():
                    requests.get_nowait()
                requests.put_nowait(None)

        async def queued() -> AsyncIterator[Message]:
            while (item := await requests.get()) is not None:
                yield item

        reading = asyncio.ensure_future(read_requests())
        try:
            if kind == STREAM_IN_OUT:
                responses = _as_stream(getattr(self._services[service], method)(queued(), context))
            else:
                first = await requests.get()
                if first is None:
                    return
                result = getattr(self._services[service], method)(first, context)
                responses = _as_stream(result) if kind == STREAM_OUT else _iterate([await result])
            try:
                async for response in responses:
                    body = _to_json(response)
                    await ws.send_text(('{"result":' + body + "}" if kind != UNARY else body).encode())
            except Aborted as e:
                status = HTTP_STATUS.get(e.code, 500)
                await ws.send_text(json.dumps({"error": {"grpc_code": e.code.value[0], "http_code": status, "message": e.details,
                                                         "http_status": REASONS.get(status, "")}}, separators=(",", ":")).encode())
            await ws.close()
        except (Aborted, LinkError, WebSocketClosed, ConnectionError):
            return
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    # ------------------------------------------------------------------ /health, /metrics
    async def _status(self) -> dict[str, Any]:
        answer = await self._s.link.call(self._s.raft_address, {"t": "status"}, HEALTH_TIMEOUT_S)
        return answer["resp"]

    async def _healthy(self, excluded_alarms: set[str]) -> bool:
        """As etcd 3.4: no alarm (but those named by ?exclude=), a leader, and a linearizable read that succeeds in time."""
        # Alarms as this member applied them (etcd reads its own alarm store; the Alarm RPC would
        # take a Raft round, which a learner refuses).
        if any(pb.AlarmType.Name(alarm) not in excluded_alarms for _, alarm in self._s.store.alarms()):
            return False
        try:
            if not (await self._status())["leader"]:
                return False
            # The member's own linearizable read (etcd's is a v2 QGET): no user, so auth cannot refuse it.
            await asyncio.wait_for(self._s.barrier(_Context()), HEALTH_TIMEOUT_S)
        except (Aborted, LinkError, asyncio.TimeoutError):
            return False
        return True

    async def _metrics(self) -> str:
        try:
            status = await self._status()
        except LinkError:
            status = {"leader": "", "is_learner": self._s.is_learner, "raft_term": 0, "commit": 0}
        store = self._s.store
        db_size, db_in_use = store.db_size_bytes()
        me = f"{self._s.member_id:x}"
        gauges = [
            ("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", int(bool(status["leader"]))),
            ("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", int(status["leader"] == me)),
            ("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", int(bool(status["is_learner"]))),
            ("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.", status.get("commit", 0)),
            ("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.", store.applied_index()),
            ("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", db_size),
            ("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.", db_in_use),
            ("etcd_debugging_mvcc_current_revision", "The current revision of store.", store.current_revision()),
        ]
        lines = []
        for name, help_text, value in gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- JSON
def _to_json(msg: Message) -> str:
    return json.dumps(json_format.MessageToDict(msg, preserving_proto_field_name=True), separators=(",", ":"))


def _parse(cls: type[Message], value: Any) -> Message:
    """jsonpb into a request; unknown fields are ignored, as grpc-gateway does."""
    if value is None:
        return cls()
    if not isinstance(value, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(value), "number")
        raise Aborted(_C.INVALID_ARGUMENT, f"json: cannot unmarshal {kind} into Go value of type map[string]json.RawMessage")
    _check_strict(cls.DESCRIPTOR, value)
    try:
        return json_format.ParseDict(value, cls(), ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise Aborted(_C.INVALID_ARGUMENT, str(e)) from e


def _check_strict(descriptor: Any, value: dict[str, Any]) -> None:
    """What Go's jsonpb refuses and protobuf's ParseDict lets through (with ignore_unknown_fields
    it drops an unknown enum name, and it decodes bytes with a base64 decoder that skips what is
    not base64): an enum name that is not one of the enum's ("descend" for "DESCEND"), and a
    bytes field that is not standard, padded base64. Fields in declaration order, as jsonpb
    visits them, so the first error is etcd's."""
    for field in descriptor.fields:
        item = value.get(field.name, value.get(field.json_name))
        if item is None:
            continue
        items = item if field.is_repeated and isinstance(item, list) else [item]
        for one in items:
            if field.type == field.TYPE_ENUM and isinstance(one, str) and one not in field.enum_type.values_by_name:
                enum = field.enum_type
                go_name = enum.full_name[len(enum.file.package) + 1:].replace(".", "_")
                raise Aborted(_C.INVALID_ARGUMENT, f"unknown value {json.dumps(one, ensure_ascii=False)} for enum {enum.file.package}.{go_name}")
            if field.type == field.TYPE_BYTES and isinstance(one, str):
                at = _go_base64_error(one.encode("utf-8"))
                if at is not None:
                    raise Aborted(_C.INVALID_ARGUMENT, f"illegal base64 data at input byte {at}")
            if field.type == field.TYPE_MESSAGE and isinstance(one, dict):
                _check_strict(field.message_type, one)


_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_PLAIN_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _go_base64_error(src: bytes) -> int | None:
    """Where Go's base64.StdEncoding.Decode (encoding/json's for []byte) fails on src, or None:
    its decodeQuantum, step by step (CR and LF are skipped; padding is required). What every
    client sends, padded base64 without line breaks, is let through at once."""
    if _PLAIN_BASE64.fullmatch(src):
        return None
    si, n = 0, len(src)
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j
            c = src[si]
            si += 1
            if c in _BASE64_ALPHABET:
                j += 1
                continue
            if c in b"\r\n":
                continue
            if c != ord("=") or j < 2:
                return si - 1
            if j == 2:  # "==" expected, the first one read
                while si < n and src[si] in b"\r\n":
                    si += 1
                if si == n:
                    return n
                if src[si] != ord("="):
                    return si - 1
                si += 1
            while si < n and src[si] in b"\r\n":
                si += 1
            return si if si < n else None  # anything after the padding is garbage
    return None


_DECODER = json.JSONDecoder()


def _decode_first(body: bytes) -> list[Any]:
    """The body's first JSON value (Go's json.Decoder reads no further), or none; errors in Go's words."""
    text = body.decode("utf-8", errors="replace")
    pos = 0
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    if pos == len(text):
        return []
    try:
        return [_DECODER.raw_decode(text, pos)[0]]
    except json.JSONDecodeError as e:
        raise Aborted(_C.INVALID_ARGUMENT, _go_json_error(e)) from e


def _parse_prefix(cls: type[Message], body: bytes) -> list[Message]:
    """The requests before the first one that does not parse (grpc-gateway then stops sending)."""
    text = body.decode("utf-8", errors="replace")
    out: list[Message] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        try:
            value, pos = _DECODER.raw_decode(text, pos)
            out.append(_parse(cls, value))
        except (json.JSONDecodeError, Aborted):
            return out


def _go_json_error(e: json.JSONDecodeError) -> str:
    if e.pos >= len(e.doc.rstrip()):
        return "unexpected EOF"
    c = e.doc[e.pos]
    quoted = "'\\''" if c == "'" else "'" + c.encode("unicode_escape").decode() + "'"
    if e.msg == "Expecting value":
        return f"invalid character {quoted} looking for beginning of value"
    if e.msg.startswith("Expecting property name"):
        return f"invalid character {quoted} looking for beginning of object key string"
    if e.msg == "Expecting ':' delimiter":
        return f"invalid character {quoted} after object key"
    if e.msg == "Expecting ',' delimiter":
        return f"invalid character {quoted} after object key:value pair"
    return e.msg


async def _as_stream(result: Any) -> AsyncIterator[Message]:
    """A servicer's stream; an RPC not built yet is a coroutine that aborts."""
    if inspect.iscoroutine(result):
        await result
        return
    try:
        async for item in result:
            yield item
    finally:
        await result.aclose()  # at once: a Watch's cleanup drops its watches


async def _iterate(items: list[Message]) -> AsyncIterator[Message]:
    for item in items:
        yield item
