"""The real etcdctl 3.4's watch, lease, lock and elect against petcd, next to the same steps against real etcd."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from tests.servers import Server, etcd_binary, start_etcd, start_petcd
from tests.waiting import Collected, wait_until

@pytest.fixture(scope="module", params=["petcd", "etcd"])
def server(request, tmp_path_factory):
    start = start_petcd if request.param == "petcd" else start_etcd
    s = start(str(tmp_path_factory.mktemp(request.param) / "data"))
    yield s
    s.stop()


def etcdctl(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([etcd_binary("etcdctl"), "--endpoints", server.endpoint, *args], capture_output=True, text=True,
                          env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)


def background(server: Server, *args: str) -> Collected:
    return Collected(subprocess.Popen([etcd_binary("etcdctl"), "--endpoints", server.endpoint, *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env={**os.environ, "ETCDCTL_API": "3"}))


def finish(proc: Collected) -> tuple[int, str, str]:
    return proc.finish(signal.SIGINT)


def wait_for(pred, timeout_s: float = 10.0) -> None:
    wait_until(pred, timeout_s, "the condition holds")


def revision(server: Server) -> int:
    return int(re.search(r'"revision":(\d+)', etcdctl(server, "get", "wt/", "--prefix", "-w", "json").stdout).group(1))


def test_watch(server):
    # From the next revision: the events come whenever the watch is in place.
    w = background(server, "watch", "wt/", "--prefix", "--prev-kv", f"--rev={revision(server) + 1}")
    etcdctl(server, "put", "wt/a", "1")
    etcdctl(server, "put", "wt/a", "2")
    etcdctl(server, "del", "wt/a")
    expected = "PUT\nwt/a\n1\nPUT\nwt/a\n1\nwt/a\n2\nDELETE\nwt/a\n2\nwt/a\n\n"  # prev kv, then the kv
    w.wait_for(lambda out: len(out) >= len(expected), 10, "the watcher printed the three events")
    code, out, _ = finish(w)
    assert out == expected
    rev = revision(server)
    w = background(server, "watch", "wt/a", f"--rev={rev - 2}", "-w", "json")
    w.wait_for(lambda out: '"type":1' in out, 10, "the replayed delete is printed")
    code, out, _ = finish(w)
    assert out.count('"Events"') >= 1 and '"type":1' in out, out  # history replayed: the delete included


def test_lease(server):
    out = etcdctl(server, "lease", "grant", "100")
    assert re.fullmatch(r"lease [0-9a-f]+ granted with TTL\(100s\)\n", out.stdout), out
    lease = out.stdout.split()[1]
    assert etcdctl(server, "put", "lk", "v", "--lease", lease).stdout == "OK\n"
    out = etcdctl(server, "lease", "timetolive", lease, "--keys")
    assert re.fullmatch(rf"lease {lease} granted with TTL\(100s\), remaining\((99|100)s\), attached keys\(\[lk\]\)\n", out.stdout), out
    assert etcdctl(server, "lease", "keep-alive", "--once", lease).stdout == f"lease {lease} keepalived with TTL(100)\n"
    assert lease in etcdctl(server, "lease", "list").stdout
    assert etcdctl(server, "lease", "revoke", lease).stdout == f"lease {lease} revoked\n"
    assert etcdctl(server, "get", "lk").stdout == ""
    out = etcdctl(server, "lease", "revoke", lease)
    assert out.returncode == 1 and out.stderr.endswith("Error: failed to revoke lease (etcdserver: requested lease not found)\n")
    out = etcdctl(server, "lease", "timetolive", lease)
    assert out.stdout == f"lease {lease} already expired\n"


def test_lock(server):
    out = subprocess.run([etcd_binary("etcdctl"), "--endpoints", server.endpoint, "lock", "lk1", "echo", "held"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
    assert out.returncode == 0 and out.stdout == "held\n", out
    holder = background(server, "lock", "lk2")
    wait_for(lambda: etcdctl(server, "get", "lk2/", "--prefix", "--keys-only").stdout.strip() != "")
    waiter = background(server, "lock", "lk2")
    wait_for(lambda: len(etcdctl(server, "get", "lk2/", "--prefix", "--keys-only").stdout.split()) == 2)  # its key is in
    assert waiter.proc.poll() is None and waiter.text() == "", "a second locker waits"
    code, out, _ = finish(holder)
    assert out.startswith("lk2/")
    wait_for(lambda: len(etcdctl(server, "get", "lk2/", "--prefix", "--keys-only").stdout.split()) == 1)
    waiter.wait_for(lambda out: out.startswith("lk2/"), 10, "the waiter prints the lock it got")
    code, out, _ = finish(waiter)
    assert out.startswith("lk2/"), "the waiter got the lock once the holder let go"


def test_elect(server):
    observer = background(server, "elect", "-l", "el")
    cand1 = background(server, "elect", "el", "first")
    cand1.wait_for(lambda out: "first" in out, 10, "the first candidate is elected")
    observer.wait_for(lambda out: "first" in out, 10, "the observer sees the first leader")
    cand2 = background(server, "elect", "el", "second")
    wait_for(lambda: len(etcdctl(server, "get", "el/", "--prefix", "--keys-only").stdout.split()) == 2)  # it campaigns
    finish(cand1)
    cand2.wait_for(lambda out: "second" in out, 10, "the second candidate is elected once the first resigns")
    observer.wait_for(lambda out: "second" in out, 10, "the observer sees the second leader")
    finish(cand2)
    _, out, _ = finish(observer)
    values = [line for line in out.splitlines() if not line.startswith("el/")]
    assert values[:2] == ["first", "second"], out
