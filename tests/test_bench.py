"""`petcd bench`: its loads against a real petcd member, and `--compare etcd` against real etcd too.

Figures are printed, not asserted: what is checked is that every load runs, counts what it sent,
and reports errors rather than hiding them.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.servers import petcd_command, start_petcd


def bench(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*petcd_command(), "bench", *args], capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    server = start_petcd(str(tmp_path_factory.mktemp("bench") / "data"))
    yield server
    server.stop()


@pytest.mark.parametrize("load", [
    ["put", "--key-space-size", "100"],
    ["range", "foo", "--consistency", "s"],
    ["range", "foo", "--consistency", "l"],
    ["txn-put", "--txn-ops", "3", "--key-space-size", "50"],
    ["txn-mixed", "--key-space-size", "10"],
    ["lease-keepalive"],
], ids=lambda load: "-".join(load[:1] + load[-1:]))
def test_every_load_sends_exactly_its_total(member, load):
    out = bench(*load, "--endpoints", member.endpoint, "--total", "120", "--clients", "6", "--conns", "2", "--procs", "2", "--json")
    assert out.returncode == 0, out.stderr
    (report,) = json.loads(out.stdout)["reports"]
    assert (report["kind"], report["requests"], report["errors"]) == (load[0], 120, {})
    lat = report["latency_s"]
    assert 0 < lat["fastest"] <= lat["p50"] <= lat["p99"] <= lat["slowest"]
    assert report["client_cpu_s"] > 0 and 0 <= report["machine_busy"] <= 1


def test_watch_load_counts_delivered_events(member):
    out = bench("watch", "--endpoints", member.endpoint, "--total", "40", "--clients", "4", "--watch-keys", "2", "--procs", "1", "--json")
    assert out.returncode == 0, out.stderr
    (report,) = json.loads(out.stdout)["reports"]
    assert report["errors"] == {}
    assert report["requests"] == 40 * 2, "each put reaches the two watchers of its key"


def test_errors_are_counted_and_shown(member):
    out = bench("txn-put", "--endpoints", member.endpoint, "--total", "5", "--clients", "1", "--txn-ops", "200",
                "--key-space-size", "1000", "--procs", "1")
    assert out.returncode == 0, out.stderr
    assert "Requests/sec:\t0.0000" in out.stdout
    assert "[5] INVALID_ARGUMENT: etcdserver: too many operations in txn request" in out.stdout


def test_bad_flags_are_refused():
    out = bench("put", "--clients", "0")
    assert (out.returncode, out.stderr) == (2, "petcd bench: --clients must be at least 1\n")
    out = bench("txn-put", "--txn-ops", "4")
    assert (out.returncode, out.stderr) == (2, "petcd bench: --key-space-size must be at least --txn-ops (keys in one txn must differ)\n")


def test_compare_runs_petcd_next_to_real_etcd():
    out = bench("put", "--compare", "etcd", "--total", "300", "--clients", "10", "--conns", "2", "--procs", "1")
    assert out.returncode == 0, out.stderr
    assert "\netcd: put\nSummary:" in out.stdout and "\npetcd: put\nSummary:" in out.stdout
    table = out.stdout[out.stdout.index("put: petcd next to etcd"):].splitlines()
    assert table[1].split() == ["etcd", "petcd", "petcd/etcd"]
    assert table[-1].split() == ["errors", "0", "0"]
    # Where the servers' CPU went, per request: etcd's one process, petcd's by actor process.
    etcd_part, petcd_part = out.stdout.split("\npetcd: put\n")
    assert "Server CPU per request, by process (all members):\n  etcd " in etcd_part
    roles = {line.split()[0] for line in petcd_part.split("Server CPU per request, by process (all members):\n")[1].split("\n\n")[0].splitlines()}
    assert {"gateway", "raft", "apply", "total"} <= roles
    # The client's share and the machine's: whether the machine, not the server, bounded the rate.
    for part in (etcd_part, petcd_part):
        client_us = int(part.split("Client CPU per request: ")[1].split(" µs\n")[0])
        busy_percent = int(part.split("Machine busy: ")[1].split(" % of ")[0])
        assert client_us > 0 and 0 <= busy_percent <= 100
    print(out.stdout[out.stdout.index("put: petcd next to etcd"):])


def test_check_perf_runs_the_real_etcdctl_check_perf_on_both_servers():
    """`check-perf --compare etcd`: etcdctl's own verdict, the writes it made in the middle of its
    60 s, and each server's CPU over that window by process (figures printed, not asserted)."""
    out = bench("check-perf", "--compare", "etcd", "--load", "s", "--json", timeout_s=600)
    assert out.returncode == 0, out.stderr
    etcd, petcd = json.loads(out.stdout)["reports"]
    for report, roles in ((etcd, {"etcd"}), (petcd, {"gateway", "raft", "apply", "watch"})):
        assert report["kind"] == "check-perf" and report["errors"] == {}
        # Load s is at most 150 writes/s (etcdctl's rate limiter): the window counts what it sent.
        assert 0 < report["requests"] <= 150 * report["elapsed_s"] + 10 and report["elapsed_s"] > 0
        assert any(note.startswith(("PASS: Throughput is", "FAIL: Throughput too low")) for note in report["notes"]), report["notes"]
        assert roles <= {role for role, cpu_s in report["cpu_s"].items() if cpu_s > 0}, report["cpu_s"]
        assert report["client_cpu_s"] > 0 and 0 < report["machine_busy"] <= 1
    assert (etcd["server"], petcd["server"]) == ("etcd", "petcd")
