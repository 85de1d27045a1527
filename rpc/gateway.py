"""A gateway process: etcd's gRPC API on the client URLs, in front of one member's actors.

Run as: python -m petcd.rpc.gateway <json spec> (the supervisor in `rpc.member` does).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys
from typing import Any

import grpc
import uvloop

from petcd.actors.runtime_log import LogLine
from petcd.actors.supervised import die_with_supervisor
from petcd.rpc.auth_service import AuthService
from petcd.rpc.auth_tokens import token_provider
from petcd.rpc.cluster_service import ClusterService
from petcd.rpc.election_service import ElectionService
from petcd.rpc.grpc_server import BuiltinGrpcServer
from petcd.rpc.front import STREAM_LIMIT, Front, server_tls_context
from petcd.rpc.gateway_state import GatewayState
from petcd.rpc.http_gateway import HttpGateway
from petcd.rpc.kv_service import KVService
from petcd.rpc.link import LinkError, MemberLink
from petcd.rpc.lock_service import LockService
from petcd.rpc.metrics import GrpcCounter, MemberMetrics
from petcd.rpc.lease_service import LeaseService
from petcd.rpc.maintenance_service import MaintenanceService
from petcd.rpc.watch_service import WatchService
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.rpc.pb import v3election_pb2_grpc, v3lock_pb2_grpc
from petcd.store.mvcc import MvccStore

# gRPC accepts this much more than --max-request-bytes, as etcd does, so that the
# server (not the transport) answers "request is too large".
_GRPC_OVERHEAD_BYTES = 512 * 1024
EXIT_LISTEN_FAILED = 3
STATUS_POLL_INTERVAL_S = 0.5


def _missing_rpcs_say_so(servicer: Any) -> Any:
    """RPCs not built yet answer UNIMPLEMENTED naming what is missing (grpc's default leaks a
    Python class name through grpc.aio)."""
    base = next(c for c in type(servicer).__mro__ if c.__name__.endswith("Servicer") and c.__module__.endswith("_pb2_grpc"))
    service = base.__name__.removesuffix("Servicer")
    for name, method in vars(base).items():
        if callable(method) and not name.startswith("_") and getattr(type(servicer), name) is method:
            setattr(servicer, name, _unimplemented(f"{service}.{name}"))
    return servicer


def _unimplemented(rpc: str) -> Any:
    async def answer(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"petcd: {rpc} is not implemented yet")

    return answer


async def serve(spec: dict[str, Any], log: LogLine) -> int:
    link = MemberLink(spec["address"], spec["endpoints"])
    store = MvccStore(spec["mvcc_dir"], readonly=True, map_size_bytes=spec.get("map_size_bytes", 8 << 30))
    state = GatewayState(
        member_id=spec["member_id"],
        cluster_token=spec["cluster_token"],
        link=link,
        store=store,
        raft_address=spec["raft_address"],
        max_txn_ops=spec["max_txn_ops"],
        max_request_bytes=spec["max_request_bytes"],
        request_timeout_s=spec["request_timeout_s"],
        quota_bytes=spec.get("quota_bytes", 0),
        tokens=token_provider(spec.get("auth_token", "simple"), spec.get("auth_token_ttl_s", 300)),
        bcrypt_cost=spec.get("bcrypt_cost", 10),
    )
    grpc_counter = GrpcCounter()
    server = grpc.aio.server(
        interceptors=[grpc_counter],
        options=[
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ("grpc.max_receive_message_length", spec["max_request_bytes"] + _GRPC_OVERHEAD_BYTES),
            ("grpc.max_send_message_length", 2**31 - 1),
        ]
    )
    # The gRPC server listens on a private unix socket; the client ports are the front's, which
    # splices gRPC (HTTP/2) connections to it and serves HTTP/1.1 itself (rpc/front.py).
    grpc_socket = spec.get("grpc_socket") or os.path.join(os.path.dirname(spec["endpoints"][spec["address"]].removeprefix("ipc://")), "grpc")
    services = {
        "kv": KVService(state), "maintenance": MaintenanceService(state), "cluster": ClusterService(state), "auth": AuthService(state),
        "watch": WatchService(state), "lease": LeaseService(state, spec["min_lease_ttl_s"]),
    }
    # Lock and Election run on the member's own KV, Lease and Watch API, as etcd's do (v3lock, v3election).
    self_channel = grpc.aio.insecure_channel(f"unix:{grpc_socket}", options=[("grpc.max_receive_message_length", -1)])
    services["lock"] = LockService(self_channel)
    services["election"] = ElectionService(self_channel)
    # --experimental-grpc-server builtin: the client ports' gRPC is served by rpc/grpc_server.py;
    # grpcio's server stays on the unix socket, for Lock and Election's own calls.
    builtin = BuiltinGrpcServer(spec["max_request_bytes"] + _GRPC_OVERHEAD_BYTES, grpc_counter.handled) \
        if spec.get("grpc_server") == "builtin" else None
    registrations = [
        (pb_grpc.add_KVServicer_to_server, "kv"), (pb_grpc.add_MaintenanceServicer_to_server, "maintenance"),
        (pb_grpc.add_ClusterServicer_to_server, "cluster"), (pb_grpc.add_AuthServicer_to_server, "auth"),
        (pb_grpc.add_WatchServicer_to_server, "watch"), (pb_grpc.add_LeaseServicer_to_server, "lease"),
        (v3lock_pb2_grpc.add_LockServicer_to_server, "lock"), (v3election_pb2_grpc.add_ElectionServicer_to_server, "election"),
    ]
    for add, name in registrations:
        servicer = _missing_rpcs_say_so(services[name])
        for target in (server, builtin) if builtin is not None else (server,):
            add(servicer, target)
    if server.add_insecure_port(f"unix:{grpc_socket}") == 0:
        print(f"petcd: listen unix {grpc_socket}: bind failed", file=sys.stderr, flush=True)
        return EXIT_LISTEN_FAILED
    metrics = MemberMetrics(state, grpc_counter)
    http = HttpGateway(state, services, spec["max_request_bytes"] + _GRPC_OVERHEAD_BYTES, metrics)
    # --listen-client-http-urls (etcd 3.5): HTTP on its own listeners, the client URLs gRPC only.
    http_listen = spec.get("http_listen", [])
    front = Front(grpc_socket, None if http_listen else http.serve, builtin)
    # Client TLS (https:// client URLs): the front terminates it, and names the client
    # certificate behind a gRPC call for --client-cert-auth (rpc/front.py).
    tls_listen = set(spec.get("tls_listen", ()))
    tls = None
    if tls_listen:
        try:
            tls = server_tls_context(spec["cert_file"], spec["key_file"], spec.get("trusted_ca_file", ""), spec.get("client_cert_auth", False))
        except (OSError, ssl.SSLError) as e:
            print(f"petcd: cannot load the client TLS certificate: {e}", file=sys.stderr, flush=True)
            return EXIT_LISTEN_FAILED
    state.client_cert_auth = bool(spec.get("client_cert_auth", False))
    state.common_name_of = front.common_name_of
    for host_port in spec["listen"]:
        try:
            await front.listen(host_port, tls if host_port in tls_listen else None)
        except OSError:
            await front.close()
            print(f"petcd: listen tcp {host_port}: bind: address already in use", file=sys.stderr, flush=True)
            return EXIT_LISTEN_FAILED
    http_servers = []
    for host_port in http_listen:
        host, _, port = host_port.rpartition(":")
        try:
            http_servers.append(await asyncio.start_server(
                http.serve, host.strip("[]"), int(port), ssl=tls if host_port in tls_listen else None, limit=STREAM_LIMIT))
        except OSError:
            await front.close()
            print(f"petcd: listen tcp {host_port}: bind: address already in use", file=sys.stderr, flush=True)
            return EXIT_LISTEN_FAILED
    # --listen-metrics-urls: etcd's separate listener for /metrics and /health (plain HTTP).
    metrics_http = HttpGateway(state, services, spec["max_request_bytes"], metrics, metrics_only=True)
    metrics_servers = []
    for host_port in spec.get("metrics_listen", ()):
        host, _, port = host_port.rpartition(":")
        try:
            metrics_servers.append(await asyncio.start_server(metrics_http.serve, host.strip("[]"), int(port)))
        except OSError:
            await front.close()
            print(f"petcd: listen tcp {host_port}: bind: address already in use", file=sys.stderr, flush=True)
            return EXIT_LISTEN_FAILED
    link.start()
    await _refresh_status(state, log)
    poller = asyncio.get_running_loop().create_task(_poll_status(state, log))
    await server.start()
    log("info", "ready to serve client requests", listen=spec["listen"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    poller.cancel()
    for listener in [*metrics_servers, *http_servers]:
        listener.close()
    await front.close()
    if builtin is not None:
        builtin.close()
    await server.stop(grace=1.0)
    await self_channel.close()
    link.close()
    store.close()
    return 0


async def _refresh_status(state: GatewayState, log: LogLine) -> None:
    try:
        answer = await state.link.call(state.raft_address, {"t": "status"}, timeout_s=1.0)
    except LinkError as e:
        log("debug", "status not available", error=e.name)
        return
    status = answer["resp"]
    state.cluster_id = status["cluster_id"]
    state.saw_leader(status["leader"])
    state.is_learner = status["is_learner"]


async def _poll_status(state: GatewayState, log: LogLine) -> None:
    """Keep the cluster id and learner flag current (they change on join and promote)."""
    while True:
        await asyncio.sleep(STATUS_POLL_INTERVAL_S)
        await _refresh_status(state, log)


def main(argv: list[str] | None = None) -> None:
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    die_with_supervisor(spec)
    log = LogLine(spec.get("log_level", "info"), actor=spec["address"])
    # uvloop (libuv's event loop, in C) in place of asyncio's own: the loop runs every request's
    # reads, writes and callbacks, and it takes a Put about 10 us less CPU (README, Benchmarks).
    sys.exit(uvloop.run(serve(spec, log)))


if __name__ == "__main__":
    main()
