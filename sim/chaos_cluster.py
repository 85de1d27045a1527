"""Real server processes for `petcd chaos`: a local cluster of petcd or etcd members, and its faults.

Each member is started in its own session (so its own process group): a petcd
member is a supervisor and its actor processes, and `kill -9`, SIGSTOP and
SIGCONT go to the whole group at once.

Links are cut one of two ways (`--net`):

- hook (petcd only, no privileges needed): every member is started with
  `--experimental-peer-fault-file F`, and writing {"drop_to": [...], "drop_from": [...]}
  (member ids in hex) to F makes that member's Raft actor drop traffic to and
  from those peers; removing F heals it. Only member-to-member links.
- netns (petcd or etcd, root): every member runs in its own network namespace
  (`petcd.sim.netns`), listening on its namespace's address, and a cut is a
  blackhole route on both sides; clients have namespaces too, so client-member
  links can be cut as well.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

import grpc

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.sim.netns import NetnsNet
from petcd.sim.ports import free_port

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 3.0  # the data is thrown away or kept for reading: a kill -9 after this is fine


class ChaosError(Exception):
    """A setup problem the user can fix (no etcd binary, a cluster that never became ready)."""


# Set by `petcd chaos`'s SIGINT handler. A KeyboardInterrupt raised inside a blocking gRPC call can
# come out as an RpcError, so the loops that retry RPCs also look at this flag.
INTERRUPTED = threading.Event()


def check_interrupted() -> None:
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def find_etcd(explicit: str | None = None) -> str:
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ChaosError(f"--etcd-binary {explicit!r} is not an executable file")
        return explicit
    found = shutil.which("etcd")
    if found:
        return found
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "etcd", "usr", "bin", "etcd")
    if os.access(here, os.X_OK):
        return here
    raise ChaosError("etcd not found on PATH; pass --etcd-binary PATH (or run `make test` once, which fetches etcd 3.4)")


@dataclass
class Member:
    name: str
    argv: list[str]
    endpoint: str  # host:port of the client URL
    data_dir: str
    log_path: str
    fault_file: str | None  # petcd only
    proc: subprocess.Popen[bytes] | None = None
    member_id: str = ""  # hex, as petcd's fault hook and etcdctl spell it
    paused: bool = False
    killed: bool = False  # by the nemesis (a restart is due)
    starts: int = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.alive(), f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            log.write(f"--- chaos: start #{self.starts + 1} at {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        self.killed = False
        self.paused = False

    def signal_group(self, sig: int) -> bool:
        """Send `sig` to the member's whole process group; False if there is no such group any more."""
        if self.proc is None:
            return False
        try:
            os.killpg(self.proc.pid, sig)  # start_new_session: the group id is the leader's pid
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def kill(self) -> None:
        """kill -9 of every process of the member; waits until the leader is reaped."""
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.killed = True
        self.paused = False

    def pause(self) -> None:
        self.signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)
        self.paused = False

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM (after SIGCONT), then kill -9 of the group after `grace_s`; returns the exit code."""
        if self.proc is None:
            return None
        self.signal_group(signal.SIGCONT)
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=max(0.0, grace_s))
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # stragglers of the group, and the leader if it did not stop
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalCluster:
    server: str  # "petcd" | "etcd"
    members: list[Member] = field(default_factory=list)
    netns: NetnsNet | None = None  # --net netns: the run's namespaces (made and torn down by the caller)
    _hook_cuts: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def create(cls, root: str, size: int, server: str = "petcd", etcd_binary: str | None = None, extra: tuple[str, ...] = (),
               netns: NetnsNet | None = None) -> "LocalCluster":
        """Members m1..mN. Without `netns`: on free loopback ports, petcd members with the peer fault hook.
        With it (already set up, holding nodes m1..mN): each member in its namespace, on its address."""
        names = [f"m{i + 1}" for i in range(size)]
        if netns is not None:
            peers = [f"http://{netns.address(n)}:2380" for n in names]
            clients = [f"{netns.address(n)}:2379" for n in names]
        else:
            peers = [f"http://127.0.0.1:{free_port()}" for _ in names]
            clients = [f"127.0.0.1:{free_port()}" for _ in names]
        initial = ",".join(f"{n}={u}" for n, u in zip(names, peers))
        command = [find_etcd(etcd_binary)] if server == "etcd" else [sys.executable, "-m", "petcd.rpc.server_cli"]
        token = f"chaos-{os.getpid()}-{int(time.time())}"
        members = []
        os.makedirs(root, exist_ok=True)
        for name, peer, endpoint in zip(names, peers, clients):
            data_dir = os.path.join(root, name)
            argv = [
                *(netns.exec_prefix(name) if netns is not None else ()),
                *command,
                "--name", name,
                "--data-dir", data_dir,
                "--listen-client-urls", f"http://{endpoint}",
                "--advertise-client-urls", f"http://{endpoint}",
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                *extra,
            ]
            fault_file = None
            if server == "petcd" and netns is None:
                fault_file = os.path.join(root, f"{name}.peer-faults.json")
                argv += ["--experimental-peer-fault-file", fault_file]
            members.append(Member(name, argv, endpoint, data_dir, os.path.join(root, f"{name}.log"), fault_file))
        return cls(server, members, netns)

    @property
    def net(self) -> str:
        return "netns" if self.netns is not None else "hook"

    def can_cut(self, a: str, b: str) -> bool:
        """Whether the link between nodes a and b (members m1.., clients c0..) can be cut."""
        if self.netns is not None:
            return a != b and a in self.netns.addresses and b in self.netns.addresses
        names = {m.name for m in self.members}
        return self.server == "petcd" and a != b and a in names and b in names

    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        for m in self.members:
            m.start()
        deadline = time.monotonic() + timeout_s
        for m in self.members:
            wait_ready(m, deadline)
        self._learn_member_ids(deadline)

    def _learn_member_ids(self, deadline: float) -> None:
        """Member ids from Cluster.MemberList (names are ours, so they map back to members)."""
        last: Exception | None = None
        while time.monotonic() < deadline:
            check_interrupted()
            for m in self.members:
                try:
                    with grpc.insecure_channel(m.endpoint) as ch:
                        resp = pb_grpc.ClusterStub(ch).MemberList(pb.MemberListRequest(), timeout=2)
                except grpc.RpcError as e:
                    last = e
                    continue
                by_name = {x.name: f"{x.ID:x}" for x in resp.members}
                if all(mm.name in by_name for mm in self.members):
                    for mm in self.members:
                        mm.member_id = by_name[mm.name]
                    return
            time.sleep(0.2)
        raise ChaosError(f"could not list the members: {last}")

    def leader(self, timeout_s: float = 1.0) -> Member | None:
        """The member some reachable member calls leader (Maintenance.Status), or None."""
        by_id = {m.member_id: m for m in self.members}
        for m in self.members:
            if not m.alive() or m.paused:
                continue
            try:
                with grpc.insecure_channel(m.endpoint) as ch:
                    st = pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=timeout_s)
            except grpc.RpcError:
                continue
            if st.leader:
                return by_id.get(f"{st.leader:x}")
        return None

    # -- partitions
    def partition(self, sides: list[list[Member]]) -> None:
        """Cut traffic between every pair of members on different sides (both directions)."""
        self.cut([(a.name, b.name) for i, side in enumerate(sides) for other in sides[i + 1:] for a in side for b in other])

    def cut(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Cut each link a<->b between nodes (members by name; with --net netns also clients c0..), both ways.
        Cuts add up until `heal_partitions`."""
        pairs = list(pairs)
        bad = [f"{a}-{b}" for a, b in pairs if not self.can_cut(a, b)]
        if bad:
            raise ChaosError(f"cannot cut {', '.join(bad)} with --net {self.net} and --server {self.server}")
        if self.netns is not None:
            self.netns.cut(pairs)
            return
        by_name = {m.name: m for m in self.members}
        touched = set()
        for a, b in pairs:
            self._hook_cuts.setdefault(a, set()).add(b)
            self._hook_cuts.setdefault(b, set()).add(a)
            touched |= {a, b}
        for name in sorted(touched):
            ids = sorted(by_name[o].member_id for o in self._hook_cuts[name])
            write_fault_file(by_name[name], {"drop_to": ids, "drop_from": ids})

    def heal_partitions(self) -> None:
        if self.netns is not None:
            self.netns.heal()
        self._hook_cuts.clear()
        for m in self.members:
            if m.fault_file:
                try:
                    os.remove(m.fault_file)
                except FileNotFoundError:
                    pass

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Every member at once: SIGCONT, SIGTERM, then kill -9 of what is left after `grace_s`."""
        for m in self.members:
            m.signal_group(signal.SIGCONT)
        for m in self.members:
            if m.alive():
                m.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for m in self.members:
            m.stop(deadline - time.monotonic())
        self.heal_partitions()


def write_fault_file(m: Member, spec: dict[str, list[str]]) -> None:
    assert m.fault_file, "partitions need petcd's --experimental-peer-fault-file"
    tmp = m.fault_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, m.fault_file)


def wait_ready(m: Member, deadline: float) -> None:
    """Until a linearizable Range succeeds on the member (it has a leader and applies)."""
    with grpc.insecure_channel(m.endpoint) as ch:
        stub = pb_grpc.KVStub(ch)
        while time.monotonic() < deadline:
            check_interrupted()
            if m.proc is not None and m.proc.poll() is not None:
                raise ChaosError(f"{m.name} exited with {m.proc.returncode} while starting:\n{m.log_tail()}")
            try:
                stub.Range(pb.RangeRequest(key=b"chaos-ready"), timeout=1.0)
                return
            except grpc.RpcError:
                time.sleep(0.1)
    raise ChaosError(f"{m.name} not ready in time:\n{m.log_tail()}")
