"""Start real servers for tests: petcd as a user would (its console script), and real etcd 3.4."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.sim.ports import free_port

READY_TIMEOUT_S = 30.0


def petcd_command() -> list[str]:
    found = shutil.which("petcd")
    return [found] if found else [sys.executable, "-m", "petcd.rpc.server_cli"]


def etcd_binary(name: str = "etcd") -> str:
    found = shutil.which(name)
    assert found, f"{name} not found on PATH: run the suite with `make test`, which provides etcd 3.4"
    return found


@dataclass
class Server:
    """A running server process and how to reach it."""

    proc: subprocess.Popen[bytes]
    endpoint: str  # host:port
    data_dir: str
    log_path: str
    argv: list[str] = field(default_factory=list)

    def stub(self) -> pb_grpc.KVStub:
        return pb_grpc.KVStub(grpc.insecure_channel(self.endpoint))

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


def wait_ready(server: Server, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until a linearizable Range succeeds (the member has a leader and applies)."""
    deadline = time.monotonic() + timeout_s
    channel = grpc.insecure_channel(server.endpoint)
    stub = pb_grpc.KVStub(channel)
    try:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.log()}")
            try:
                stub.Range(pb.RangeRequest(key=b"health"), timeout=1.0)
                return
            except grpc.RpcError:
                time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout_s}s:\n{server.log()}")
    finally:
        channel.close()


def start_petcd(data_dir: str, *extra: str, port: int | None = None, ready: bool = True) -> Server:
    return _retry_ports(lambda: _start_single(petcd_command(), data_dir, extra, port, ready), fixed_port=port is not None)


def start_etcd(data_dir: str, *extra: str, ready: bool = True) -> Server:
    return _retry_ports(lambda: _start_single([etcd_binary()], data_dir, extra, None, ready), fixed_port=False)


def _retry_ports(start, fixed_port: bool) -> Server:
    """A port from free_port() can be taken by another process before the server binds it: try fresh ports."""
    for attempt in range(3):
        try:
            return start()
        except AssertionError as e:
            if fixed_port or attempt == 2 or "address already in use" not in str(e).lower():
                raise
    raise AssertionError("unreachable")


def _start_single(command: list[str], data_dir: str, extra: tuple[str, ...], port: int | None, ready: bool) -> Server:
    """A one-member cluster on loopback: the same flags for petcd and for real etcd."""
    port = port or free_port()
    peer = free_port()
    argv = [
        *command,
        "--data-dir", data_dir,
        "--listen-client-urls", f"http://127.0.0.1:{port}",
        "--advertise-client-urls", f"http://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"default=http://127.0.0.1:{peer}",
        *extra,
    ]
    return _start(argv, f"127.0.0.1:{port}", data_dir, ready)


def _start(argv: list[str], endpoint: str, data_dir: str, ready: bool) -> Server:
    os.makedirs(os.path.dirname(os.path.abspath(data_dir)), exist_ok=True)
    log_path = os.path.abspath(data_dir) + ".log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, endpoint, data_dir, log_path, argv)
    if ready:
        wait_ready(server)
    return server


@dataclass
class Cluster:
    members: list[Server]
    names: list[str]
    peer_urls: list[str]

    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def stop(self) -> None:
        for m in self.members:
            if m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        for m in self.members:
            m.proc.wait(timeout=20)


def petcd_member_argv(name: str, data_dir: str, client_port: int, peer_url: str, initial_cluster: str, state: str, *extra: str) -> list[str]:
    return [
        *petcd_command(),
        "--name", name,
        "--data-dir", data_dir,
        "--listen-client-urls", f"http://127.0.0.1:{client_port}",
        "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", initial_cluster,
        "--initial-cluster-state", state,
        *extra,
    ]


def start_cluster(root: str, size: int = 3, *extra: str, server: str = "petcd") -> Cluster:
    """A local cluster of `size` members (petcd, or real etcd with server="etcd") on free loopback ports."""
    names = [f"m{i + 1}" for i in range(size)]
    peers = [f"http://127.0.0.1:{free_port()}" for _ in names]
    initial = ",".join(f"{n}={u}" for n, u in zip(names, peers))
    members = []
    for name, peer in zip(names, peers):
        port = free_port()
        argv = petcd_member_argv(name, f"{root}/{name}", port, peer, initial, "new", *extra)
        if server == "etcd":
            argv = [etcd_binary(), *argv[len(petcd_command()):]]
        members.append(_start(argv, f"127.0.0.1:{port}", f"{root}/{name}", ready=False))
    cluster = Cluster(members, names, peers)
    try:
        for m in members:
            wait_ready(m)
    except BaseException:
        cluster.stop()  # a member that failed must not leave the others running
        raise
    return cluster


def restart(server: Server) -> Server:
    """Start a stopped member again with the same command line and data dir."""
    assert server.proc.poll() is not None
    return _start(server.argv, server.endpoint, server.data_dir, ready=False)


def grpc_outcome(call: Callable[[], object]) -> str:
    """"OK", or the status a gRPC call failed with ("CODE: details"), for comparing answers."""
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()}"


def run_on_etcd_and_petcd(run: Callable[[str, str], object], prefix: str) -> tuple[tuple[object, str], tuple[object, str]]:
    """`run(endpoint, dead_endpoint)` against a fresh real etcd and a fresh petcd started with
    etcd_fixture's identity (so member and cluster IDs agree), concurrently: ((etcd's result,
    etcd's endpoint), (petcd's result, petcd's endpoint))."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.etcd_fixture import ADVERTISED_PEER_URL, EtcdServer, closed_port

    dead = "127.0.0.1:%d" % closed_port()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = tempfile.mkdtemp(prefix=prefix, dir=base)
    petcd = None
    try:
        with EtcdServer() as etcd, ThreadPoolExecutor(2) as pool:
            started = pool.submit(
                start_petcd, os.path.join(root, "data"),
                "--name", "default",
                "--initial-advertise-peer-urls", ADVERTISED_PEER_URL,
                "--initial-cluster", "default=" + ADVERTISED_PEER_URL,
                "--initial-cluster-token", "petcd-test",
                "--log-level", "error")
            expected = pool.submit(run, etcd.endpoint, dead)
            petcd = started.result()
            actual = run(petcd.endpoint, dead)
            return (expected.result(), etcd.endpoint), (actual, petcd.endpoint)
    finally:
        if petcd is not None:
            petcd.stop()
        shutil.rmtree(root, ignore_errors=True)
