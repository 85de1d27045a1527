"""The gRPC connection, shaped after etcd 3.4's clientv3 as etcdctl uses it.

What is reproduced because it shows in etcdctl's output:
  * endpoints are dialled lazily; an RPC waits for a ready connection until
    its deadline (gRPC "wait for ready"), so an unreachable endpoint fails with
    ``context deadline exceeded`` after --command-timeout;
  * every failed attempt is logged by clientv3's retry interceptor as a zap
    JSON line on stderr; read-only RPCs are retried on Unavailable;
  * server errors known to clientv3 (rpctypes) are reported by their message
    alone, others as ``rpc error: code = X desc = Y``;
  * --user/--password authenticate first and send the token as metadata.
"""

from __future__ import annotations

import datetime
import os
import random
import time
import urllib.parse
import uuid

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402

from petcd.rpc.pb import rpc_pb2, rpc_pb2_grpc  # noqa: E402

from . import errors, goutil  # noqa: E402
from .tls_proxy import InsecureTls  # noqa: E402

# clientv3/rpctypes: server error descriptions clientv3 turns into plain errors.
KNOWN_ERRORS = {
    "etcdserver: key is not provided",
    "etcdserver: key not found",
    "etcdserver: value is provided",
    "etcdserver: lease is provided",
    "etcdserver: too many operations in txn request",
    "etcdserver: duplicate key given in txn request",
    "etcdserver: mvcc: required revision has been compacted",
    "etcdserver: mvcc: required revision is a future revision",
    "etcdserver: mvcc: database space exceeded",
    "etcdserver: requested lease not found",
    "etcdserver: lease already exists",
    "etcdserver: too large lease TTL",
    "etcdserver: member ID already exist",
    "etcdserver: Peer URLs already exists",
    "etcdserver: re-configuration failed due to not enough started members",
    "etcdserver: given member URLs are invalid",
    "etcdserver: member not found",
    "etcdserver: can only promote a learner member",
    "etcdserver: can only promote a learner member which is in sync with leader",
    "etcdserver: too many learner members in cluster",
    "etcdserver: request is too large",
    "etcdserver: too many requests",
    "etcdserver: root user does not exist",
    "etcdserver: root user does not have root role",
    "etcdserver: user name already exists",
    "etcdserver: user name is empty",
    "etcdserver: user name not found",
    "etcdserver: role name already exists",
    "etcdserver: role name not found",
    "etcdserver: role name is empty",
    "etcdserver: authentication failed, invalid user ID or password",
    "etcdserver: permission denied",
    "etcdserver: role is not granted to the user",
    "etcdserver: permission is not granted to the role",
    "etcdserver: authentication is not enabled",
    "etcdserver: invalid auth token",
    "etcdserver: invalid auth management",
    "etcdserver: revision of auth store is old",
    "etcdserver: no leader",
    "etcdserver: not leader",
    "etcdserver: leader changed",
    "etcdserver: not capable",
    "etcdserver: server stopped",
    "etcdserver: request timed out",
    "etcdserver: request timed out, possibly due to previous leader failure",
    "etcdserver: request timed out, possibly due to connection lost",
    "etcdserver: request timed out, waiting for the applied index took too long",
    "etcdserver: unhealthy cluster",
    "etcdserver: corrupt cluster",
    "etcdserver: rpc not supported for learner",
    "etcdserver: bad leader transferee",
}

GO_CODES = {
    "OK": "OK", "CANCELLED": "Canceled", "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument", "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound", "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied", "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition", "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange", "UNIMPLEMENTED": "Unimplemented", "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable", "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}

BALANCER_TRANSIENT_FAILURE = "latest balancer error: all SubConns are in TransientFailure"
CTX_DEADLINE = "context deadline exceeded"


class RPCError(Exception):
    """A failed RPC: a gRPC status (Go code name + description)."""

    def __init__(self, code: str, desc: str):
        super().__init__(desc)
        self.code = code
        self.desc = desc

    def status_string(self) -> str:
        return "rpc error: code = %s desc = %s" % (self.code, self.desc)

    def is_context_error(self) -> bool:
        return self.code in ("DeadlineExceeded", "Canceled")

    def client_message(self, deadline_passed: bool) -> str:
        """err.Error() after clientv3's toErr()."""
        if self.desc in KNOWN_ERRORS:
            return self.desc
        if self.code == "DeadlineExceeded" and deadline_passed:
            return CTX_DEADLINE
        if self.code == "Canceled" and deadline_passed:
            return "context canceled"
        return self.status_string()


class ClientError(Exception):
    """clientv3.New failed (etcdctl exits with ExitBadConnection)."""


def parse_endpoint(ep: str):
    """clientv3/balancer/resolver/endpoint.ParseEndpoint: (proto, host, scheme)."""
    proto, host, scheme = "tcp", ep, ""
    if "://" not in ep:
        return proto, host, scheme
    try:
        u = urllib.parse.urlsplit(ep)
    except ValueError:
        return proto, host, scheme
    scheme = u.scheme
    host = u.netloc
    if scheme in ("http", "https"):
        pass
    elif scheme in ("unix", "unixs"):
        proto = "unix"
        host = u.netloc + u.path
    else:
        proto, host = "", ""
    return proto, host, scheme


def zap_iso_ts() -> str:
    """The time as clientv3's logger stamps it (ISO 8601, milliseconds, local zone)."""
    now = datetime.datetime.now().astimezone()
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d" % (now.microsecond // 1000)
    off = now.utcoffset()
    if not off:
        return ts + "Z"
    mins = int(off.total_seconds()) // 60
    sign = "+" if mins >= 0 else "-"
    return ts + "%s%02d%02d" % (sign, abs(mins) // 60, abs(mins) % 60)


def zap_warn(target: str, attempt: int, error: str) -> None:
    errors.err('{"level":"warn","ts":%s,"caller":"clientv3/retry_interceptor.go:62",'
               '"msg":"retrying of unary invoker failed","target":%s,"attempt":%d,"error":%s}\n'
               % (goutil.zap_string(zap_iso_ts()), goutil.zap_string(target), attempt,
                  goutil.zap_string(error)))


# Every channel stays referenced until the process exits: a channel that is
# garbage collected is closed, which races grpc's connectivity polling thread
# (a traceback on stderr).
_CHANNELS: list = []


class _Conn:
    """One endpoint's channel and its last connectivity state."""

    def __init__(self, ep: str, options, tls):
        proto, host, scheme = parse_endpoint(ep)
        self.host = host
        target = ("unix:" + host) if proto == "unix" else host
        self.state = None
        self.saw_failure = False  # grpc-go keeps the last picker error once set
        if isinstance(tls, InsecureTls):
            if scheme == "https" or tls.cert_file:
                target = tls.local_target(target)  # TLS without verification (rpc/ctl/tls_proxy.py)
            self.channel = grpc.insecure_channel(target, options=options)
        elif scheme in ("https", "unixs") or tls is not None:
            creds = tls if tls is not None else grpc.ssl_channel_credentials()
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        _CHANNELS.append(self.channel)
        self.channel.subscribe(self._on_state, try_to_connect=True)

    def _on_state(self, state) -> None:
        self.state = state
        if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            self.saw_failure = True


class Client:
    def __init__(self, endpoints: list[str], dial_timeout: int, keepalive_time: int,
                 keepalive_timeout: int, tls=None, auth: tuple[str, str] | None = None,
                 metadata: list[tuple[str, str]] | None = None):
        if not endpoints:
            raise ClientError("etcdclient: no available endpoints")
        self.id = "client-" + str(uuid.uuid4())
        _, first_host, _ = parse_endpoint(endpoints[0])
        self.target = "endpoint://%s/%s" % (self.id, first_host)
        self.direct = False
        self.settings = (dial_timeout, keepalive_time, keepalive_timeout, tls)
        options = [
            ("grpc.max_receive_message_length", 2 ** 31 - 1),
            ("grpc.max_send_message_length", 2 * 1024 * 1024),
            ("grpc.enable_retries", 0),
        ]
        if keepalive_time > 0:
            # grpc-go raises client keepalive intervals below 10s to 10s
            options.append(("grpc.keepalive_time_ms", max(10000, keepalive_time // 1000000)))
            options.append(("grpc.keepalive_timeout_ms", max(1, keepalive_timeout // 1000000)))
        self.conns = [_Conn(ep, options, tls) for ep in endpoints]
        self.endpoints = list(endpoints)
        self.metadata: list[tuple[str, str]] = list(metadata or [])
        if auth is not None and auth[0] != "" and auth[1] != "":
            self._get_token(auth, dial_timeout)

    def dial(self, ep: str) -> "Client":
        """clientv3's Client.Dial(ep): a connection to that one endpoint
        (grpc's passthrough resolver, pick-first), with this client's token."""
        dial_timeout, keepalive_time, keepalive_timeout, tls = self.settings
        c = Client([ep], dial_timeout, keepalive_time, keepalive_timeout, tls,
                   metadata=self.metadata)
        c.target = "passthrough:///" + ep
        c.direct = True
        return c

    # -- auth --------------------------------------------------------------------

    def _get_token(self, auth, dial_timeout: int) -> None:
        deadline = time.monotonic() + dial_timeout / 1e9 if dial_timeout > 0 else None
        req = rpc_pb2.AuthenticateRequest(name=auth[0], password=auth[1])
        try:
            resp = self.call("Auth", "Authenticate", req, deadline, repeatable=False)
        except RPCError as e:
            msg = e.client_message(deadline is not None and time.monotonic() >= deadline)
            if msg == "etcdserver: authentication is not enabled":
                return
            raise ClientError(msg) from None
        self.metadata = [("token", resp.token)]

    # -- invocation ----------------------------------------------------------------

    def _pick(self, deadline):
        if len(self.conns) == 1:
            return self.conns[0]
        while True:
            for c in self.conns:
                if c.state == grpc.ChannelConnectivity.READY:
                    return c
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.002)

    def _invoke_once(self, service: str, method: str, req, deadline):
        if deadline is not None and time.monotonic() >= deadline:
            raise RPCError("DeadlineExceeded", CTX_DEADLINE)
        conn = self._pick(deadline)
        if conn is None:
            desc = (BALANCER_TRANSIENT_FAILURE
                    if all(c.saw_failure for c in self.conns) else CTX_DEADLINE)
            raise RPCError("DeadlineExceeded", desc)
        stub_cls = getattr(rpc_pb2_grpc, service + "Stub")
        fn = getattr(stub_cls(conn.channel), method)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return fn(req, timeout=timeout, metadata=self.metadata or None, wait_for_ready=True)
        except grpc.RpcError as e:
            raise self.rpc_error(e, conn) from None

    def server_stream(self, service: str, method: str, req, deadline):
        """The responses of a server-streaming RPC, in order; raises RPCError."""
        conn = self._pick(deadline)
        if conn is None:
            raise RPCError("DeadlineExceeded", CTX_DEADLINE)
        fn = getattr(getattr(rpc_pb2_grpc, service + "Stub")(conn.channel), method)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            yield from fn(req, timeout=timeout, metadata=self.metadata or None, wait_for_ready=True)
        except grpc.RpcError as e:
            raise self.rpc_error(e, conn) from None

    def rpc_error(self, e: grpc.RpcError, conn: "_Conn") -> "RPCError":
        """A grpc error as clientv3 reports it."""
        code = GO_CODES.get(e.code().name, "Unknown")
        desc = e.details() or ""
        if code == "DeadlineExceeded" and (desc == "Deadline Exceeded" or desc == ""):
            if conn.saw_failure and conn.state != grpc.ChannelConnectivity.READY:
                desc = self._balancer_error(conn)
            else:
                desc = CTX_DEADLINE
        return RPCError(code, desc)

    def _balancer_error(self, conn) -> str:
        if not self.direct:
            return BALANCER_TRANSIENT_FAILURE
        # grpc-go's pick-first balancer reports the last dial error
        return ('latest balancer error: connection error: desc = "transport: Error while dialing '
                'dial tcp %s: connect: connection refused"' % conn.host)

    def stream(self, service: str, method: str, metadata=()) -> "Stream":
        return Stream(self, service, method, list(metadata))

    def call(self, service: str, method: str, req, deadline, repeatable: bool):
        """Invoke with clientv3's retry interceptor semantics; raise RPCError."""
        last = None
        for attempt in range(100):
            if attempt > 0:
                wait = 0.05 * (1 + 0.1 * (random.random() * 2 - 1))
                if deadline is not None and time.monotonic() + wait >= deadline:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    raise RPCError("DeadlineExceeded", CTX_DEADLINE)
                time.sleep(wait)
            try:
                return self._invoke_once(service, method, req, deadline)
            except RPCError as e:
                last = e
            zap_warn(self.target, attempt, last.status_string())
            if last.is_context_error():
                if deadline is not None and time.monotonic() >= deadline:
                    raise last
                continue
            if not _safe_retry(last, repeatable):
                raise last
        raise last

    def close(self) -> None:
        """Stop using the connections.  They are left open: closing a channel
        races grpc's connectivity polling thread (a traceback on stderr), and
        the process exits soon anyway."""
        for c in self.conns:
            try:
                c.channel.unsubscribe(c._on_state)  # noqa: SLF001
            except Exception:  # noqa: BLE001 - already gone
                pass


class StreamClosed(Exception):
    """The stream ended: ``error`` is the RPCError, or None for a clean end."""

    def __init__(self, error: "RPCError | None"):
        super().__init__(error)
        self.error = error


class Stream:
    """A bidirectional gRPC stream on a ready connection (wait for ready).

    ``send`` queues a request; ``recv`` blocks for the next response and
    raises StreamClosed when the stream ends; ``close`` cancels it.
    """

    _END = object()

    def __init__(self, client: Client, service: str, method: str, metadata: list):
        import queue
        self.requests: "queue.Queue" = queue.Queue()
        conn = client._pick(None)
        stub_cls = getattr(rpc_pb2_grpc, service + "Stub")
        fn = getattr(stub_cls(conn.channel), method)
        md = list(client.metadata) + list(metadata)
        self.call = fn(self._requests(), metadata=md or None, wait_for_ready=True)

    def _requests(self):
        while True:
            item = self.requests.get()
            if item is self._END:
                return
            yield item

    def send(self, req) -> None:
        self.requests.put(req)

    def recv(self):
        try:
            return next(self.call)
        except StopIteration:
            raise StreamClosed(None) from None
        except grpc.RpcError as e:
            code = GO_CODES.get(e.code().name, "Unknown")
            raise StreamClosed(RPCError(code, e.details() or "")) from None

    def close(self) -> None:
        self.requests.put(self._END)
        self.call.cancel()


def _safe_retry(e: RPCError, repeatable: bool) -> bool:
    if repeatable:
        if e.desc in KNOWN_ERRORS and e.code != "Unavailable":
            return False
        return e.code == "Unavailable"
    if e.code != "Unavailable":
        return False
    return e.desc in ("there is no address available", "there is no connection available")


def deadline_after(timeout_ns: int):
    """context.WithTimeout(Background, timeout) as an absolute monotonic deadline."""
    return time.monotonic() + timeout_ns / 1e9


def deadline_passed(deadline) -> bool:
    return deadline is not None and time.monotonic() >= deadline
