"""Backup and restore: Maintenance.Snapshot saved by the real etcdctl and by petcdctl, `snapshot
status`, and `snapshot restore` into a new member that serves the same keys, history and leases."""

from __future__ import annotations

import json
import os
import subprocess

import grpc
import pytest

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from tests.servers import _start, etcd_binary, free_port, petcd_command, start_etcd, start_petcd
from tests.test_ctl_harness import PETCDCTL


def ctl(tool: list[str], *args: str, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [*tool, *(["--endpoints", endpoint] if endpoint else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


ETCDCTL = [etcd_binary("etcdctl")]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A member with history: overwrites, a delete, a compaction, a lease with a key attached."""
    server = start_petcd(str(tmp_path_factory.mktemp("source") / "data"))
    with grpc.insecure_channel(server.endpoint) as channel:
        kv, lease = pb_grpc.KVStub(channel), pb_grpc.LeaseStub(channel)
        for i in range(20):
            kv.Put(pb.PutRequest(key=b"k/%d" % (i % 6), value=b"v%d" % i), timeout=10)
        kv.DeleteRange(pb.DeleteRangeRequest(key=b"k/5"), timeout=10)
        kv.Compact(pb.CompactionRequest(revision=10, physical=True), timeout=10)
        granted = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=3600), timeout=10)
        kv.Put(pb.PutRequest(key=b"leased", value=b"x", lease=granted.ID), timeout=10)
    yield server, granted.ID
    server.stop()


def _snapshot(tool: list[str], endpoint: str, path: str) -> None:
    out = ctl(tool, "snapshot", "save", path, endpoint=endpoint)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"Snapshot saved at {path}\n"
    assert not os.path.exists(path + ".part")


def _get(endpoint: str, *args: str) -> dict:
    out = ctl(ETCDCTL, "-w", "json", "get", *args, endpoint=endpoint)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("tool", ["etcdctl", "petcdctl"])
def test_snapshot_restore_gives_a_member_with_the_same_keys_history_and_leases(source, tool, tmp_path):
    server, lease_id = source
    path = str(tmp_path / "backup.db")
    _snapshot(ETCDCTL if tool == "etcdctl" else PETCDCTL, server.endpoint, path)

    current = _get(server.endpoint, "k/0")["header"]["revision"]
    status = ctl(PETCDCTL, "-w", "json", "snapshot", "status", path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["revision"] == current

    peer, port = f"http://127.0.0.1:{free_port()}", free_port()
    data_dir = str(tmp_path / "restored.etcd")
    out = ctl(PETCDCTL, "snapshot", "restore", path, "--name", "r1", "--data-dir", data_dir,
              "--initial-cluster", f"r1={peer}", "--initial-advertise-peer-urls", peer, "--initial-cluster-token", "restored")
    assert out.returncode == 0, out.stderr
    assert '"msg":"restored snapshot"' in out.stderr
    argv = [*petcd_command(), "--name", "r1", "--data-dir", data_dir, "--listen-client-urls", f"http://127.0.0.1:{port}",
            "--advertise-client-urls", f"http://127.0.0.1:{port}", "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"r1={peer}", "--initial-cluster-token", "restored"]
    restored = _start(argv, f"127.0.0.1:{port}", data_dir, ready=True)
    try:
        def kvs(endpoint: str, *args: str) -> list:
            return _get(endpoint, "k/", "--prefix", *args).get("kvs", [])

        assert kvs(restored.endpoint) == kvs(server.endpoint)
        for rev in (10, 15, current):
            assert kvs(restored.endpoint, f"--rev={rev}") == kvs(server.endpoint, f"--rev={rev}")
        compacted = ctl(ETCDCTL, "get", "k/0", "--rev=9", endpoint=restored.endpoint)
        assert compacted.stderr.endswith("Error: etcdserver: mvcc: required revision has been compacted\n")
        assert _get(restored.endpoint, "leased")["kvs"][0]["lease"] == lease_id
        leases = ctl(ETCDCTL, "lease", "list", endpoint=restored.endpoint)
        assert leases.stdout == f"found 1 leases\n{lease_id:016x}\n"
        # The new cluster goes on from the restored revision.
        put = ctl(ETCDCTL, "-w", "json", "put", "after", "restore", endpoint=restored.endpoint)
        assert json.loads(put.stdout)["header"]["revision"] == current + 1
    finally:
        restored.stop()


def test_a_damaged_snapshot_is_refused(source, tmp_path):
    server, _ = source
    path = str(tmp_path / "backup.db")
    _snapshot(PETCDCTL, server.endpoint, path)
    data = open(path, "rb").read()
    flipped, truncated = str(tmp_path / "flipped.db"), str(tmp_path / "truncated.db")
    open(flipped, "wb").write(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    open(truncated, "wb").write(data[:-1000])
    for bad, why in ((flipped, "is corrupt: its sha256 checksum does not match its contents"),
                     (truncated, "has no sha256 checksum")):
        for args in (["snapshot", "status", bad], ["snapshot", "restore", bad, "--data-dir", str(tmp_path / "never")]):
            out = ctl(PETCDCTL, *args)
            assert out.returncode == 1 and why in out.stderr, out.stderr
            assert not os.path.exists(tmp_path / "never")
    missing = ctl(PETCDCTL, "snapshot", "status", str(tmp_path / "nope.db"))
    assert (missing.returncode, missing.stderr) == (1, f"Error: stat {tmp_path / 'nope.db'}: no such file or directory\n")


def test_an_etcd_snapshot_is_not_taken_for_a_petcd_one(tmp_path):
    """`snapshot status` tells etcd's bbolt file by its content and reads it as etcdctl does (see
    tests/test_etcd_import.py for the thorough comparison)."""
    etcd = start_etcd(str(tmp_path / "etcd"))
    try:
        path = str(tmp_path / "etcd.db")
        _snapshot(ETCDCTL, etcd.endpoint, path)
    finally:
        etcd.stop()
    out = ctl(PETCDCTL, "snapshot", "status", path)
    want = ctl(ETCDCTL, "snapshot", "status", path)
    assert (out.returncode, out.stdout, out.stderr) == (want.returncode, want.stdout, want.stderr) and want.returncode == 0


def test_snapshot_restore_wal_dir_makes_the_directory_the_member_keeps_its_log_in(source, tmp_path):
    """etcdctl's `snapshot restore --wal-dir`: the directory is made (mode 0700), the member started
    with the same --wal-dir serves the restored keys and writes its Raft log there, not in the data dir."""
    server, _ = source
    path = str(tmp_path / "backup.db")
    _snapshot(PETCDCTL, server.endpoint, path)
    peer, port = f"http://127.0.0.1:{free_port()}", free_port()
    data_dir, wal_dir = str(tmp_path / "restored.etcd"), str(tmp_path / "wal" / "member")
    cluster = ["--initial-cluster", f"r1={peer}", "--initial-advertise-peer-urls", peer, "--initial-cluster-token", "restored"]
    out = ctl(PETCDCTL, "snapshot", "restore", path, "--name", "r1", "--data-dir", data_dir, "--wal-dir", wal_dir, *cluster)
    assert out.returncode == 0, out.stderr
    assert os.stat(wal_dir).st_mode & 0o777 == 0o700
    argv = [*petcd_command(), "--name", "r1", "--data-dir", data_dir, "--wal-dir", wal_dir, "--listen-client-urls", f"http://127.0.0.1:{port}",
            "--advertise-client-urls", f"http://127.0.0.1:{port}", "--listen-peer-urls", peer, *cluster]
    restored = _start(argv, f"127.0.0.1:{port}", data_dir, ready=True)
    try:
        assert _get(restored.endpoint, "k/", "--prefix")["kvs"] == _get(server.endpoint, "k/", "--prefix")["kvs"]
    finally:
        restored.stop()
    assert any(name.endswith(".wal") for name in os.listdir(wal_dir))
    assert not [f for _, _, files in os.walk(data_dir) for f in files if f.endswith(".wal")]


def test_snapshot_restore_refuses_an_existing_wal_dir_or_a_missing_file_as_etcdctl_does(tmp_path):
    """An existing wal dir, both dirs existing, a missing file, a directory for the file: refused
    before anything is made, with the same Error line and exit code as etcdctl 3.4."""
    os.mkdir(tmp_path / "wal")
    os.mkdir(tmp_path / "data")
    restore = ["snapshot", "restore"]
    cases = [[*restore, str(tmp_path / "none.db"), "--wal-dir", str(tmp_path / "wal"), "--data-dir", str(tmp_path / "d")],
             [*restore, str(tmp_path / "none.db"), "--wal-dir", str(tmp_path / "wal"), "--data-dir", str(tmp_path / "data")],
             [*restore, str(tmp_path / "none.db"), "--wal-dir", str(tmp_path / "w2"), "--data-dir", str(tmp_path / "d")],
             [*restore, str(tmp_path / "wal"), "--wal-dir", str(tmp_path / "w2"), "--data-dir", str(tmp_path / "d")]]
    for args in cases:
        want, got = ctl(ETCDCTL, *args), ctl(PETCDCTL, *args)
        error_line = lambda out: out.stderr.splitlines()[-1]  # noqa: E731 (before it, each tool's own log lines)
        assert (got.returncode, error_line(got)) == (want.returncode, error_line(want)) and want.returncode == 1, (want.stderr, got.stderr)
        assert error_line(want).startswith("Error: ")
        assert not os.path.exists(tmp_path / "d") and not os.path.exists(tmp_path / "w2")
