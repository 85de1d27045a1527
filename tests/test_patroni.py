"""Patroni (Debian's package, `make patroni-reference`) keeping a two-node PostgreSQL cluster on
petcd, and the same steps on real etcd 3.4 as the reference.

Patroni's etcd3 store speaks only etcd's HTTP/JSON gateway (/version, /v3/cluster/member/list,
/v3/kv/range|put|txn|deleterange, /v3/lease/grant|keepalive and a /v3/watch stream), so this
is that gateway under a real client. The steps, for each store:

  1. two Patroni nodes start at once against a fresh one-member store: one wins the
     /initialize race (a create-if-absent txn), runs initdb and takes the leader key (a key on
     a lease); the other clones it with pg_basebackup and streams from it as a replica;
  2. a row is written through the leader and waited for on the replica;
  3. the leader's Patroni and its postmaster (each a process group) are killed with SIGKILL:
     nothing deletes the leader key, the lease runs out after `ttl` seconds;
  4. the replica takes the leader key and is promoted: the row is there and it accepts writes;
     the store's leader key names it.

Patroni is Debian's, run by Debian's python3 (not the venv). PostgreSQL refuses to run as root,
so when the suite runs as root (CI does) Patroni runs as the `postgres` user that Debian's
postgresql package creates, in a directory of its own under /tmp (pytest's tmp_path is private
to root); Patroni's and PostgreSQL's log (node1.log, node2.log) and the store's data stay under
tmp_path. PATRONI_TEST_LOG_LEVEL=DEBUG makes Patroni log each request to the store and each watch
message. Bootstrap and failover times are recorded as properties (and printed with -s).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import grpc
import pytest

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.sim.ports import free_port
from tests.servers import Server, start_etcd, start_petcd
from tests.waiting import wait_until

# Patroni's timing (its dynamic configuration, bootstrap.dcs). Patroni 3.0 does not check them,
# later versions want ttl >= loop_wait + 2 * retry_timeout: 10 >= 1 + 2 * 4.
TTL_S, LOOP_WAIT_S, RETRY_TIMEOUT_S = 10, 1, 4
SCOPE, NAMESPACE = "petcd-test", "/service/"
LEADER_KEY = f"{NAMESPACE}{SCOPE}/leader".encode()
BOOTSTRAP_TIMEOUT_S = 90.0  # initdb, the first start, pg_basebackup on a loaded two-core machine
FAILOVER_TIMEOUT_S = TTL_S + 40.0


def patroni_binary() -> str:
    found = shutil.which("patroni")
    assert found, "patroni not found on PATH: run the suite with `make test`, which installs Debian's patroni"
    return found


def postgres_bin_dir() -> str:
    """The newest PostgreSQL of Debian's layout (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    assert found, "PostgreSQL not found under /usr/lib/postgresql: run the suite with `make test`"
    return os.path.dirname(found[-1])


def run_as() -> pwd.struct_passwd | None:
    """Whom Patroni (so PostgreSQL) runs as: `postgres` when the suite is root, else the suite's user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no `postgres` user for PostgreSQL: run the suite with `make test`")


@dataclass
class Node:
    name: str
    home: str  # owned by the user Patroni runs as
    log_path: str
    rest_port: int = field(default_factory=free_port)
    pg_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> str:
        return os.path.join(self.home, "data")

    def config(self, store: str, bin_dir: str) -> dict:
        hba = ["local all all trust", "host all all 127.0.0.1/32 trust", "host replication replicator 127.0.0.1/32 trust"]
        return {
            "scope": SCOPE, "namespace": NAMESPACE, "name": self.name,
            "log": {"level": os.environ.get("PATRONI_TEST_LOG_LEVEL", "INFO")},
            "restapi": {"listen": f"127.0.0.1:{self.rest_port}", "connect_address": f"127.0.0.1:{self.rest_port}"},
            "etcd3": {"hosts": store, "protocol": "http"},
            "bootstrap": {
                "dcs": {"ttl": TTL_S, "loop_wait": LOOP_WAIT_S, "retry_timeout": RETRY_TIMEOUT_S,
                        "maximum_lag_on_failover": 1 << 30,
                        "postgresql": {"use_pg_rewind": False, "use_slots": True,
                                       "parameters": {"max_connections": 20, "max_wal_senders": 5, "max_replication_slots": 5,
                                                      "wal_keep_size": "64MB"}}},
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
                "pg_hba": hba,
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg_port}", "connect_address": f"127.0.0.1:{self.pg_port}",
                "data_dir": self.data_dir, "bin_dir": bin_dir, "pgpass": os.path.join(self.home, "pgpass"),
                "authentication": {"superuser": {"username": "postgres", "password": "postgres-pw"},
                                   "replication": {"username": "replicator", "password": "replicator-pw"}},
                "parameters": {"unix_socket_directories": self.home, "shared_buffers": "16MB", "fsync": "off"},
                "pg_hba": hba,
            },
            "watchdog": {"mode": "off"},
        }

    def start(self, store: str, bin_dir: str, user: pwd.struct_passwd | None) -> None:
        path = os.path.join(self.home, "patroni.yml")
        with open(path, "w") as f:
            json.dump(self.config(store, bin_dir), f)  # JSON is YAML
        env = {"PATH": "/usr/bin:/bin", "HOME": self.home, "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        # The user is changed by setpriv, not by Popen's user=: that makes Python fork() where it
        # otherwise uses vfork(), and a fork while this process's gRPC threads run can crash the
        # child before it execs (it did: "node2's Patroni exited with -11").
        as_user = [] if user is None else ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*as_user, patroni_binary(), path], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=self.home, start_new_session=True)

    def api(self, path: str) -> tuple[int, dict]:
        """GET on Patroni's REST API: (status, JSON body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{path}", timeout=5) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def is_leader(self) -> bool:
        return self.api("/leader")[0] == 200

    def is_streaming_replica(self) -> bool:
        status, body = self.api("/replica")
        return status == 200 and body.get("replication_state", "streaming") == "streaming"

    def psql(self, sql: str) -> str:
        """One statement on this node's PostgreSQL over TCP (trust), its unaligned result."""
        argv = [os.path.join(postgres_bin_dir(), "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-d", "postgres", "-c", sql]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=15,
                              env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "3", "LC_ALL": "C.UTF-8"})
        if done.returncode != 0:
            raise RuntimeError(f"psql on {self.name}: {done.stderr.strip()}")
        return done.stdout.strip()

    def postmasters(self) -> list[tuple[int, int | None]]:
        """(pid, SysV shared memory id or None) of each live postmaster of this data directory:
        the one postmaster.pid names, and any whose command line names the data directory (one
        started a moment before it wrote the file). The directory is this test's own, so no
        other process matches."""
        found: dict[int, int | None] = {}
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                lines = f.read().splitlines()
            shm = lines[6].split() if len(lines) > 6 else []
            found[int(lines[0])] = int(shm[1]) if len(shm) == 2 and shm[1].isdigit() else None
        except (OSError, ValueError, IndexError):
            pass
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in found:
                found[int(entry)] = None
        alive = []
        for pid, shm_id in found.items():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if os.path.basename(argv[0]) in (b"postgres", b"postmaster") and self.data_dir.encode() in argv:
                alive.append((pid, shm_id))
        return alive

    def kill(self) -> None:
        """SIGKILL to Patroni's process group (initdb, pg_basebackup... are in it) and to each
        postmaster's (Patroni starts it in a session of its own; its backends are in that group),
        then drop the postmasters' shared memory segments."""
        postmasters = self.postmasters()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        for pid, _ in postmasters + [p for p in self.postmasters() if p not in postmasters]:
            try:
                group = os.getpgid(pid)
                if group != os.getpgrp():
                    os.killpg(group, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not self.postmasters(), 30, f"the postmasters of {self.name} are gone", interval_s=0.02)
        for _, shm_id in postmasters:
            if shm_id is not None:
                subprocess.run(["ipcrm", "-m", str(shm_id)], capture_output=True)

    def patronictl_list(self) -> list[tuple[str, str, str]]:
        """`patronictl list` with this node's configuration (it reads the store itself, without a
        watch): (member, role, state) for each member."""
        argv = [shutil.which("patronictl") or "patronictl", "-c", os.path.join(self.home, "patroni.yml"), "list", "-f", "json"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                              env={"PATH": "/usr/bin:/bin", "HOME": self.home, "LC_ALL": "C.UTF-8"})
        assert done.returncode == 0, f"patronictl: {done.stderr}"
        return sorted((m["Member"], m["Role"], m["State"]) for m in json.loads(done.stdout))

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return ""


def leader_key(server: Server) -> str | None:
    """The value of Patroni's leader key in the store, read over gRPC."""
    with grpc.insecure_channel(server.endpoint) as channel:
        kvs = pb_grpc.KVStub(channel).Range(pb.RangeRequest(key=LEADER_KEY), timeout=5).kvs
    return kvs[0].value.decode() if kvs else None


@pytest.fixture(params=["etcd", "petcd"])
def store(request, tmp_path):
    start = start_etcd if request.param == "etcd" else start_petcd
    server = start(str(tmp_path / f"{request.param}.data"))
    yield request.param, server
    server.stop()


def test_patroni_failover(store, tmp_path, record_property):
    name, server = store
    user = run_as()
    bin_dir = postgres_bin_dir()
    root = tempfile.mkdtemp(prefix="petcd-patroni-")
    nodes = [Node(f"node{i}", os.path.join(root, f"node{i}"), str(tmp_path / f"node{i}.log")) for i in (1, 2)]
    for node in nodes:
        os.mkdir(node.home, 0o700)
    if user is not None:
        for path in (root, *(n.home for n in nodes)):
            os.chown(path, user.pw_uid, user.pw_gid)
    timings = {}

    def logs() -> str:
        return "\n".join(f"--- {n.name} ({n.log_path}):\n{n.log()}" for n in nodes)

    def exited(some: list[Node]) -> str:
        return ", ".join(f"{n.name}'s Patroni exited with {n.proc.returncode}" for n in some if n.proc.poll() is not None)

    def until(predicate, timeout_s: float, what: str):
        """wait_until, with both nodes' logs in the failure."""
        try:
            return wait_until(predicate, timeout_s, what, interval_s=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{logs()}") from None

    try:
        began = time.monotonic()
        for node in nodes:
            node.start(server.endpoint, bin_dir, user)

        # 1. one leader, one streaming replica
        def roles():
            if exited(nodes):
                return "exited"
            leaders = [n for n in nodes if n.is_leader()]
            replicas = [n for n in nodes if n.is_streaming_replica()]
            return len(leaders) == 1 and len(replicas) == 1 and (leaders[0], replicas[0])

        roles_seen = until(roles, BOOTSTRAP_TIMEOUT_S, "a leader and a streaming replica")
        assert roles_seen != "exited", f"{exited(nodes)}\n{logs()}"
        leader, replica = roles_seen
        timings["bootstrap_s"] = round(time.monotonic() - began, 1)
        assert leader_key(server) == leader.name
        assert leader.psql("SELECT pg_is_in_recovery()") == "f" and replica.psql("SELECT pg_is_in_recovery()") == "t"
        assert [(m, role) for m, role, _ in leader.patronictl_list()] == sorted([(leader.name, "Leader"), (replica.name, "Replica")])

        # 2. a row through the leader, replayed on the replica
        leader.psql("CREATE TABLE survivors (id int PRIMARY KEY, note text)")
        leader.psql("INSERT INTO survivors VALUES (1, 'written before the failover')")
        until(lambda: replica.psql("SELECT note FROM survivors WHERE id = 1") == "written before the failover",
              30, "the row is on the replica")

        # 3. kill -9 the leader's Patroni and PostgreSQL
        killed = time.monotonic()
        leader.kill()

        # 4. the replica is promoted and accepts writes
        def promoted():
            if exited([replica]):
                return "exited"
            return replica.is_leader() and replica.psql("SELECT pg_is_in_recovery()") == "f"

        assert until(promoted, FAILOVER_TIMEOUT_S, f"{replica.name} is promoted") is True, f"{exited([replica])}\n{logs()}"
        timings["failover_s"] = round(time.monotonic() - killed, 1)
        assert replica.psql("SELECT note FROM survivors WHERE id = 1") == "written before the failover"
        replica.psql("INSERT INTO survivors VALUES (2, 'written after the failover')")
        assert replica.psql("SELECT count(*) FROM survivors") == "2"
        assert leader_key(server) == replica.name
        # the killed node's member key went with its lease
        until(lambda: replica.patronictl_list() == [(replica.name, "Leader", "running")], 30,
              f"patronictl lists {replica.name} alone, as the leader")
        status, body = replica.api("/patroni")
        assert status == 200 and body["state"] == "running" and body["timeline"] >= 2, body
    finally:
        try:
            for node in nodes:
                try:
                    node.kill()
                except Exception as e:  # noqa: BLE001 - the other node must go too
                    print(f"tearing down {node.name}: {e!r}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    for key, value in timings.items():
        record_property(key, value)
    print(f"\n{name}: {timings}")
