"""Restoring a real etcd 3.4 database into petcd (issue 10): `petcdctl snapshot restore` of the
bbolt file `etcdctl snapshot save` writes (and of `member/snap/db` with --skip-hash-check), compared
revision by revision with the etcd it came from; and the bbolt reader (store/bbolt.py) on real files."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import grpc
import pytest

from petcd.rpc.pb import auth_pb2
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.store.bbolt import BboltError, BboltFile, fnv64a
from petcd.store.etcd_import import parse_revision
from petcd.store.mvcc import MvccStore
from tests.servers import _start, etcd_binary, free_port, petcd_command, start_etcd
from tests.test_ctl_harness import PETCDCTL

ETCDCTL = [etcd_binary("etcdctl")]
BIG = bytes(range(256)) * 1200  # 300 KiB: overflow pages
MANY = 1500  # keys: branch pages in the key bucket
ETCD_BUCKETS = [b"alarm", b"auth", b"authRoles", b"authUsers", b"cluster", b"key", b"lease", b"members",
                b"members_removed", b"meta"]


def ctl(tool: list[str], *args: str, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [*tool, *(["--endpoints", endpoint] if endpoint else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _json(tool: list[str], endpoint: str, *args: str) -> dict:
    out = ctl(tool, "-w", "json", *args, endpoint=endpoint)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _answers(endpoint: str, first: int, last: int) -> dict:
    """What etcdctl answers at every revision first..last (headers aside), and about the leases."""
    revs = {}
    for rev in range(first, last + 1):
        got = _json(ETCDCTL, endpoint, "get", "", "--prefix", f"--rev={rev}")
        got.pop("header")
        revs[rev] = got
    listed = ctl(ETCDCTL, "lease", "list", endpoint=endpoint)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    ids = sorted(lines[1:])
    leases = {}
    for lease_id in ids:
        ttl = _json(ETCDCTL, endpoint, "lease", "timetolive", lease_id, "--keys")
        leases[lease_id] = (ttl["id"], ttl["granted-ttl"], sorted(ttl.get("keys") or []), ttl["ttl"] > 0)
    return {"revs": revs, "lease_list_head": lines[0], "leases": leases}


@pytest.fixture(scope="module")
def etcd_files(tmp_path_factory):
    """Real etcd 3.4 with history, deletes, a physical compaction, keys on two leases, a lease with
    no keys, a user and a role; its `snapshot save` file, its stopped `member/snap/db`, and what
    etcdctl answered before it stopped."""
    root = tmp_path_factory.mktemp("etcd")
    etcd = start_etcd(str(root / "etcd"))
    try:
        with grpc.insecure_channel(etcd.endpoint) as channel:
            kv, lease, auth = pb_grpc.KVStub(channel), pb_grpc.LeaseStub(channel), pb_grpc.AuthStub(channel)
            l1 = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=3600), timeout=10).ID
            l2 = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=7200), timeout=10).ID
            l3 = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=900), timeout=10).ID  # no keys

            def put(key: bytes, value: bytes, lease_id: int = 0) -> int:
                return kv.Put(pb.PutRequest(key=key, value=value, lease=lease_id), timeout=10).header.revision

            def delete(key: bytes, end: bytes = b"") -> int:
                return kv.DeleteRange(pb.DeleteRangeRequest(key=key, range_end=end), timeout=10).header.revision

            for start in range(0, MANY, 100):  # one revision per 100 keys
                kv.Txn(pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"many/%05d" % i, value=b"m%d" % i))
                                              for i in range(start, min(start + 100, MANY))]), timeout=10)
            put(b"big", BIG[::-1])

            def puts(first: int, last: int) -> None:
                for i in range(first, last):
                    k = i % 6
                    lease_id = {1: l1, 2: l2 if i < 12 else 0, 3: l1 if i < 12 else l2, 4: l2}.get(k, 0)
                    put(b"k/%d" % k, b"v%d" % i, lease_id)

            puts(0, 9)
            put(b"d/1", b"x")
            delete(b"k/0")
            compact_at = put(b"big", BIG)
            puts(9, 24)
            put(b"d/2", b"y")
            delete(b"k/4")
            delete(b"d/", b"d0")
            put(b"k/5", b"again")
            put(b"k/0", b"after compaction point")
            kv.Compact(pb.CompactionRequest(revision=compact_at, physical=True), timeout=30)
            put(b"k/0", b"after compaction", l2)
            delete(b"k/5")
            put(b"gone", b"1", l1)
            current = delete(b"gone")
            auth.UserAdd(pb.AuthUserAddRequest(name="root", password="pw"), timeout=10)
            auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
            auth.RoleAdd(pb.AuthRoleAddRequest(name="r"), timeout=10)
            for key, end in ((b"k/", b"k0"), (b"one", b"")):
                auth.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(
                    name="r", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=key, range_end=end)), timeout=10)
            auth.UserAdd(pb.AuthUserAddRequest(name="u", password="upw"), timeout=10)
            auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="u", role="r"), timeout=10)
        answers = _answers(etcd.endpoint, compact_at, current)
        answers["auth"] = _auth_answers(etcd.endpoint)
        snap = str(root / "snap.db")
        out = ctl(ETCDCTL, "snapshot", "save", snap, endpoint=etcd.endpoint)
        assert out.returncode == 0, out.stderr
    finally:
        etcd.stop()
    member_db = str(root / "member-snap.db")
    shutil.copyfile(os.path.join(etcd.data_dir, "member", "snap", "db"), member_db)
    assert os.path.getsize(snap) % 512 == 32 and os.path.getsize(member_db) % 512 == 0
    yield {"snap": snap, "member_db": member_db, "answers": answers, "compact": compact_at, "current": current,
           "leases": (l1, l2, l3)}


def _restore(path: str, data_dir: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], str]:
    peer = f"http://127.0.0.1:{free_port()}"
    out = ctl(PETCDCTL, "snapshot", "restore", path, "--name", "r1", "--data-dir", data_dir,
              "--initial-cluster", f"r1={peer}", "--initial-advertise-peer-urls", peer,
              "--initial-cluster-token", "from-etcd", *extra)
    return out, peer


def test_an_etcd_snapshot_restores_into_petcd_with_its_revisions_history_and_leases(etcd_files, tmp_path):
    data_dir = str(tmp_path / "restored.etcd")
    out, peer = _restore(etcd_files["snap"], data_dir)
    assert out.returncode == 0, out.stderr
    assert '"msg":"restored snapshot"' in out.stderr
    assert "Warning" not in out.stderr
    imported = json.loads(next(line for line in out.stderr.splitlines() if "imported etcd database" in line))
    assert (imported["revision"], imported["compact-revision"], imported["leases"]) == (
        etcd_files["current"], etcd_files["compact"], 3)
    store = MvccStore(os.path.join(data_dir, "member", "mvcc"))
    try:
        assert store.applied_index() == 0
    finally:
        store.close()

    port = free_port()
    argv = [*petcd_command(), "--name", "r1", "--data-dir", data_dir, "--listen-client-urls", f"http://127.0.0.1:{port}",
            "--advertise-client-urls", f"http://127.0.0.1:{port}", "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer, "--initial-cluster", f"r1={peer}", "--initial-cluster-token", "from-etcd"]
    restored = _start(argv, f"127.0.0.1:{port}", data_dir, ready=True)
    try:
        want = etcd_files["answers"]
        assert len(want["revs"]) >= 20 and want["revs"][etcd_files["current"]]["count"] > MANY
        got = _answers(restored.endpoint, etcd_files["compact"], etcd_files["current"])
        for rev in want["revs"]:
            assert got["revs"][rev] == want["revs"][rev], f"get --rev={rev} differs"
        assert got["lease_list_head"] == want["lease_list_head"] == "found 3 leases"
        assert got["leases"] == want["leases"]
        compacted = ctl(ETCDCTL, "get", "k/0", f"--rev={etcd_files['compact'] - 1}", endpoint=restored.endpoint)
        assert compacted.stderr.endswith("Error: etcdserver: mvcc: required revision has been compacted\n")
        put = _json(ETCDCTL, restored.endpoint, "put", "after", "restore")
        assert put["header"]["revision"] == etcd_files["current"] + 1
        # Users, roles and their permissions came over; so did the passwords (bcrypt hashes).
        assert _auth_answers(restored.endpoint) == want["auth"]
        assert ctl(ETCDCTL, "auth", "enable", endpoint=restored.endpoint).stdout == "Authentication Enabled\n"
        assert ctl(ETCDCTL, "--user", "u:upw", "put", "k/9", "v", endpoint=restored.endpoint).stdout == "OK\n"
        denied = ctl(ETCDCTL, "--user", "u:upw", "put", "other", "v", endpoint=restored.endpoint)
        assert denied.stderr.endswith("Error: etcdserver: permission denied\n")
        wrong = ctl(ETCDCTL, "--user", "u:nope", "get", "k/9", endpoint=restored.endpoint)
        assert wrong.stderr.endswith("Error: etcdserver: authentication failed, invalid user ID or password\n")
    finally:
        restored.stop()


def _auth_answers(endpoint: str) -> list[str]:
    """What etcdctl says about the users and roles (auth disabled: no credentials needed)."""
    asks = (["user", "list"], ["role", "list"], ["user", "get", "u"], ["user", "get", "root"], ["role", "get", "r"])
    return [ctl(ETCDCTL, *ask, endpoint=endpoint).stdout for ask in asks]


def _store_view(store_dir: str) -> tuple:
    store = MvccStore(store_dir, readonly=True)
    try:
        revs = range(store.compact_revision(), store.current_revision() + 1)
        return (store.current_revision(), store.compact_revision(), store.leases(),
                [store.range({"key": b"\0", "range_end": b"\0", "revision": r})["kvs"] for r in revs])
    finally:
        store.close()


def test_member_snap_db_restores_with_skip_hash_check(etcd_files, tmp_path):
    refused = _restore(etcd_files["member_db"], str(tmp_path / "no.etcd"))[0]
    assert refused.returncode == 1 and "Error: snapshot missing hash but --skip-hash-check=false" in refused.stderr, refused.stderr
    assert not os.path.exists(tmp_path / "no.etcd")
    out = _restore(etcd_files["member_db"], str(tmp_path / "db.etcd"), "--skip-hash-check")[0]
    assert out.returncode == 0, out.stderr
    assert _restore(etcd_files["snap"], str(tmp_path / "snap.etcd"))[0].returncode == 0
    from_db = _store_view(str(tmp_path / "db.etcd" / "member" / "mvcc"))
    assert from_db == _store_view(str(tmp_path / "snap.etcd" / "member" / "mvcc"))
    assert from_db[:2] == (etcd_files["current"], etcd_files["compact"])


def test_a_damaged_etcd_database_gives_a_clear_error(etcd_files, tmp_path):
    data = open(etcd_files["snap"], "rb").read()
    db = open(etcd_files["member_db"], "rb").read()
    with BboltFile(etcd_files["member_db"]) as f:
        page_size = f.page_size
    flipped = bytearray(data)
    flipped[5000] ^= 1
    no_meta = bytearray(db)
    no_meta[16 + 20] ^= 1  # meta 0's root: checksum fails
    no_meta[page_size + 16 + 20] ^= 1  # and meta 1's
    garbage = bytearray(db)
    for pgid in range(2, len(db) // page_size):  # every page but the meta pages: a wrong page id
        garbage[pgid * page_size] ^= 0x55
    cases = {
        "flipped.db": (bytes(flipped), [], "Error: expected sha256 ["),
        "no-meta.db": (bytes(no_meta), ["--skip-hash-check"], "is a damaged bbolt database: meta page 0: checksum mismatch; meta page 1: checksum mismatch"),
        "truncated.db": (db[:len(db) // 2], ["--skip-hash-check"], "is damaged (truncated?)"),
        "garbage.db": (bytes(garbage), ["--skip-hash-check"], "is damaged: page "),
    }
    for name, (content, extra, why) in cases.items():
        path = str(tmp_path / name)
        open(path, "wb").write(content)
        out = _restore(path, str(tmp_path / "never.etcd"), *extra)[0]
        assert out.returncode == 1 and why in out.stderr, (name, out.stderr)
        assert not os.path.exists(tmp_path / "never.etcd")
    not_bbolt = str(tmp_path / "text.db")
    open(not_bbolt, "wb").write(b"hello" * 1000)
    with pytest.raises(BboltError, match="is not a bbolt database"):
        BboltFile(not_bbolt)


def test_the_bbolt_reader_on_real_etcd_files(etcd_files):
    size = os.path.getsize(etcd_files["snap"]) - 32
    with BboltFile(etcd_files["snap"], size) as db:
        assert db.buckets() == ETCD_BUCKETS
        revisions = list(db.items(b"key"))
        assert [k for k, _ in revisions] == sorted(k for k, _ in revisions)
        assert all(v is not None for _, v in revisions)
        mains = [parse_revision(k)[0] for k, _ in revisions]
        assert max(mains) == etcd_files["current"]
        # the big value (overflow pages) comes back whole
        bigs = [v for _, v in revisions if v.startswith(b"\n\x03big")]
        assert len(bigs) == 1 and BIG in bigs[0]
        many = [v for _, v in revisions if b"many/" in v[:10]]
        assert len(many) == MANY
        meta = dict(db.items(b"meta"))
        assert set(meta) >= {b"consistent_index", b"finishedCompactRev", b"scheduledCompactRev"}
        assert len(list(db.items(b"lease"))) == 3
        assert [k for k, _ in db.items(b"authUsers")] == [b"root", b"u"] and [k for k, _ in db.items(b"authRoles")] == [b"r"]
        with pytest.raises(KeyError):
            list(db.items(b"nope"))
        # every kind of page was read: branch pages (many keys), overflow pages (the big value),
        # inline buckets (etcd's small buckets: meta, lease, authUsers, authRoles, ...)
        assert db.seen["branch"] > 0 and db.seen["overflow"] >= len(BIG) // db.page_size and db.seen["inline"] > 0
    # the stopped member's file (no trailer) reads the same
    with BboltFile(etcd_files["member_db"]) as db:
        assert list(db.items(b"key")) == revisions


def test_a_petcd_backup_is_not_bbolt(tmp_path):
    from petcd.store.backup import is_etcd_snapshot

    store = MvccStore(str(tmp_path / "store"))
    try:
        store.copy_to(str(tmp_path / "copy.mdb"))
    finally:
        store.close()
    assert not is_etcd_snapshot(str(tmp_path / "copy.mdb"))
    with pytest.raises(BboltError, match="is not a bbolt database"):
        BboltFile(str(tmp_path / "copy.mdb"))


class _FakeDb:
    """Buckets as dicts, for what real etcd rarely leaves behind (an unfinished compaction)."""

    path = "fake.db"

    def __init__(self, buckets: dict[bytes, dict[bytes, bytes]]) -> None:
        self._buckets = buckets

    def has_bucket(self, name: bytes) -> bool:
        return name in self._buckets

    def items(self, name: bytes):
        return iter(sorted(self._buckets[name].items()))


def _rev(main: int, sub: int = 0, tomb: bool = False) -> bytes:
    return main.to_bytes(8, "big") + b"_" + sub.to_bytes(8, "big") + (b"t" if tomb else b"")


def _kv(key: bytes, create: int, mod: int, version: int, value: bytes, lease: int = 0) -> bytes:
    from petcd.rpc.pb import kv_pb2

    return kv_pb2.KeyValue(key=key, create_revision=create, mod_revision=mod, version=version, value=value,
                           lease=lease).SerializeToString()


def test_an_unfinished_compaction_is_finished_and_leases_attach_to_the_newest_live_revision(tmp_path):
    from petcd.store.etcd_import import EtcdImportError, import_bbolt

    lease_pb = (7).to_bytes(8, "big")
    db = _FakeDb({
        b"key": {
            _rev(2): _kv(b"a", 2, 2, 1, b"1", 7),
            _rev(3): _kv(b"a", 2, 3, 2, b"2"),
            _rev(4, 0): _kv(b"b", 4, 4, 1, b"x", 7),
            _rev(4, 1): _kv(b"c", 4, 4, 1, b"y", 99),  # a lease that does not exist: not attached
            _rev(5, 0, tomb=True): _kv(b"a", 0, 0, 0, b""),
            _rev(6): _kv(b"a", 6, 6, 1, b"3", 7),
        },
        b"meta": {b"finishedCompactRev": _rev(2), b"scheduledCompactRev": _rev(4)},
        b"lease": {lease_pb: b"\x08\x07\x10\x3c"},  # Lease{ID: 7, TTL: 60}
        b"authUsers": {b"root": b""},
    })
    store = MvccStore(str(tmp_path / "s"))
    try:
        result = import_bbolt(db, store)
        assert (result.revision, result.compact_revision, result.revisions, result.keys, result.attached,
                result.users, result.roles) == (6, 4, 5, 3, 2, 1, 0)
        assert store.compact_revision() == 4 and store.current_revision() == 6
        assert store.lease_info(7) == (60, [b"a", b"b"])
        with pytest.raises(Exception, match="compacted"):
            store.range({"key": b"a", "revision": 3})
        assert [kv["value"] for kv in store.range({"key": b"a", "revision": 4})["kvs"]] == [b"2"]
    finally:
        store.close()
    bad = _FakeDb({b"key": {_rev(2): b"\x0a\x05ab"}, b"meta": {}})
    store = MvccStore(str(tmp_path / "bad"))
    try:
        with pytest.raises(EtcdImportError, match="revision 2_0: not a mvccpb.KeyValue: field 1 runs past the end"):
            import_bbolt(bad, store)
        assert store.current_revision() == 1  # nothing committed
    finally:
        store.close()


# --- `snapshot status` of etcd's file: what etcdctl 3.4 prints, byte for byte
STATUS_FORMATS = ("simple", "table", "json", "fields", "protobuf")  # protobuf: refused by both
_META = struct.Struct("<IIIIQQQQQQ")  # bbolt's meta after the page header: ..., root, seq, freelist, pgid, txid, checksum


def _status(tool: list[str], path: str, fmt: str = "simple") -> tuple[int, str, str]:
    out = ctl(tool, "snapshot", "status", path, "-w", fmt)
    return out.returncode, out.stdout, out.stderr


def test_snapshot_status_of_an_etcd_file_prints_what_etcdctl_prints(etcd_files):
    """etcd's hash (crc32c over the buckets), revision (the key bucket's last), total keys and total
    size, for the `snapshot save` file and the stopped member's db, in every output format."""
    for path in (etcd_files["snap"], etcd_files["member_db"]):
        for fmt in STATUS_FORMATS:
            want = _status(ETCDCTL, path, fmt)
            assert _status(PETCDCTL, path, fmt) == want, (path, fmt)
            assert want[0] == (4 if fmt == "protobuf" else 0), want
        status = json.loads(_status(PETCDCTL, path, "json")[1])
        assert status["revision"] == etcd_files["current"]
        assert status["totalKey"] > MANY and status["totalSize"] == os.path.getsize(etcd_files["member_db"])


def _with_freelist(db: bytes, free) -> bytes:
    """etcd's file as bbolt writes it without NoFreelistSync: two pages appended, the first the
    freelist page listing free(high_water, root pgid), the second a free page; both meta pages
    point at the freelist and count the new pages."""
    page_size, root, high_water = (_META.unpack_from(db, 16)[i] for i in (2, 4, 7))
    ids = free(high_water, root)
    out = bytearray(db[:high_water * page_size])
    out += (struct.pack("<QHHI", high_water, 0x10, len(ids), 0) + struct.pack("<%dQ" % len(ids), *ids)).ljust(page_size, b"\0")
    out += struct.pack("<QHHI", high_water + 1, 0x10, 0, 0).ljust(page_size, b"\0")
    for offset in (16, page_size + 16):
        fields = list(_META.unpack_from(out, offset))
        fields[6], fields[7] = high_water, high_water + 2
        fields[9] = fnv64a(_META.pack(*fields)[:56])
        _META.pack_into(out, offset, *fields)
    return bytes(out)


def test_snapshot_status_runs_bbolts_integrity_check_as_etcdctl_does(etcd_files, tmp_path):
    """A file with a freelist page (etcd writes none, other bbolt writers do): sound, it reports as
    etcdctl does; with a page freed twice, a reachable page freed, or a page neither reachable nor
    free, both refuse it with the same "snapshot file integrity check failed" error."""
    db = open(etcd_files["member_db"], "rb").read()
    probe = str(tmp_path / "probe.db")
    open(probe, "wb").write(_with_freelist(db, lambda hw, root: []))
    with BboltFile(probe) as f:  # the free pages: those no bucket reaches (etcd's, and the appended one)
        problems = f.check()
    assert len(problems) > 1 and all(p.endswith(": unreachable unfreed") for p in problems), problems
    unreachable = sorted(int(p.split()[1].rstrip(":")) for p in problems)
    cases = {
        "sound": lambda hw, root: unreachable,
        "freed-twice": lambda hw, root: [*unreachable, hw + 1],
        "reachable-freed": lambda hw, root: [*unreachable, root],
        "unreachable-unfreed": lambda hw, root: [p for p in unreachable if p != hw + 1],
    }
    for name, free in cases.items():
        path = str(tmp_path / f"{name}.db")
        open(path, "wb").write(_with_freelist(db, free))
        for fmt in ("simple", "json"):
            want = _status(ETCDCTL, path, fmt)
            assert _status(PETCDCTL, path, fmt) == want, (name, fmt)
        if name == "sound":
            assert want[0] == 0 and json.loads(want[1])["totalSize"] == len(db) + 2 * _META.unpack_from(db, 16)[2]
        else:
            assert want[0] == 1 and want[2].startswith("Error: snapshot file integrity check failed. "), (name, want)


def test_snapshot_status_of_a_damaged_etcd_file_is_a_clear_error(etcd_files, tmp_path):
    db = open(etcd_files["member_db"], "rb").read()
    page_size = _META.unpack_from(db, 16)[2]
    with BboltFile(etcd_files["member_db"]) as f:
        key_root = f.bucket_root(b"key")
    flags, count = struct.unpack_from("<HH", db, key_root * page_size + 8)
    assert flags == 0x01 and count >= 2, "the key bucket's root is a branch page (MANY keys)"
    first_child = struct.unpack_from("<Q", db, key_root * page_size + 16 + 8)[0]
    twice = bytearray(db)  # the root's second child is its first one again
    struct.pack_into("<Q", twice, key_root * page_size + 16 + 16 + 8, first_child)
    garbage = bytearray(db)
    for pgid in range(2, len(db) // page_size):  # every page but the meta pages: a wrong page id
        garbage[pgid * page_size] ^= 0x55
    no_meta = bytearray(db)
    no_meta[16 + 20] ^= 1  # meta 0's root: checksum fails
    no_meta[page_size + 16 + 20] ^= 1  # and meta 1's
    cases = {
        # etcdctl: bbolt's freepages panics (exit 2) with "(page N: multiple references)"
        "twice.db": (bytes(twice), f"Error: snapshot file integrity check failed. 1 errors found.\npage {first_child}: multiple references\n"),
        "garbage.db": (bytes(garbage), "Error: snapshot file integrity check failed. "),
        "truncated.db": (db[:len(db) // 2], "is damaged (truncated?): its meta page counts "),
        "no-meta.db": (bytes(no_meta), "is a damaged bbolt database: meta page 0: checksum mismatch; meta page 1: checksum mismatch"),
    }
    for name, (content, why) in cases.items():
        path = str(tmp_path / name)
        open(path, "wb").write(content)
        code, out, err = _status(PETCDCTL, path)
        assert (code, out) == (1, "") and err.startswith("Error: ") and why in err, (name, err)
        if name == "twice.db":
            etcd_code, _, etcd_err = _status(ETCDCTL, path)
            assert etcd_code != 0 and f"(page {first_child}: multiple references)" in etcd_err, etcd_err
        if name == "no-meta.db":
            assert _status(ETCDCTL, path) == (1, "", "Error: checksum error\n")
    missing = _status(PETCDCTL, str(tmp_path / "nope.db"))
    assert missing == _status(ETCDCTL, str(tmp_path / "nope.db")) == (1, "", f"Error: stat {tmp_path}/nope.db: no such file or directory\n")


def test_crc32c_is_castagnoli():
    from petcd.store.crc32c import Crc32c, update

    assert update(0, b"123456789") == 0xE3069283  # the CRC-32C check value
    data = bytes(range(256)) * 1000
    h = Crc32c()
    for i in range(0, len(data), 777):
        h.write(data[i:i + 777])
    assert h.sum32() == update(0, data) == update(update(0, data[:1001]), data[1001:])


# --- alarms: etcd's restore keeps the `alarm` bucket, and so does petcd's import
def _alarm_answers(endpoint: str) -> list[tuple[int, str, str]]:
    """alarm list; a put (refused while NOSPACE is raised); disarm; alarm list; the put again. Of
    stderr, the last line: the client's retry log line before it carries a time and a client id."""
    asks = (["alarm", "list"], ["put", "after", "restore"], ["alarm", "disarm"], ["alarm", "list"], ["put", "after", "restore"])
    return [(o.returncode, o.stdout, "".join(o.stderr.splitlines(True)[-1:]))
            for o in (ctl(ETCDCTL, *ask, endpoint=endpoint) for ask in asks)]


def test_a_nospace_alarm_comes_over_as_etcds_own_restore_keeps_it(tmp_path):
    from tests.test_ctl_maintenance import QUOTA_BYTES, _fill_until_nospace

    etcd = start_etcd(str(tmp_path / "full"), "--quota-backend-bytes", str(QUOTA_BYTES))
    try:
        _fill_until_nospace(etcd.endpoint)
        raised = ctl(ETCDCTL, "alarm", "list", endpoint=etcd.endpoint)
        snap = str(tmp_path / "full.db")
        saved = ctl(ETCDCTL, "snapshot", "save", snap, endpoint=etcd.endpoint)
        assert saved.returncode == 0, saved.stderr
    finally:
        etcd.stop()
    assert raised.returncode == 0 and raised.stdout.startswith("memberID:") and "alarm:NOSPACE" in raised.stdout, raised
    assert _status(PETCDCTL, snap, "json") == _status(ETCDCTL, snap, "json")  # the alarm bucket is hashed too

    flags = ["--name", "r1", "--initial-cluster-token", "from-etcd"]
    answers = {}
    for tool in ("etcd", "petcd"):
        data_dir, peer, port = str(tmp_path / f"{tool}.etcd"), f"http://127.0.0.1:{free_port()}", free_port()
        if tool == "etcd":
            out = ctl(ETCDCTL, "snapshot", "restore", snap, "--data-dir", data_dir, *flags,
                      "--initial-cluster", f"r1={peer}", "--initial-advertise-peer-urls", peer)
        else:
            out, peer = _restore(snap, data_dir)
            assert json.loads(next(line for line in out.stderr.splitlines() if "imported etcd database" in line))["alarms"] == 1
        assert out.returncode == 0, out.stderr
        command = [etcd_binary()] if tool == "etcd" else petcd_command()
        argv = [*command, *flags, "--data-dir", data_dir, "--listen-client-urls", f"http://127.0.0.1:{port}",
                "--advertise-client-urls", f"http://127.0.0.1:{port}", "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer, "--initial-cluster", f"r1={peer}"]
        server = _start(argv, f"127.0.0.1:{port}", data_dir, ready=True)
        try:
            answers[tool] = _alarm_answers(server.endpoint)
        finally:
            server.stop()
    want = answers["etcd"]
    assert want[0] == (0, raised.stdout, ""), "etcd's restore keeps the alarm, under the old member's id"
    assert want[1] == (1, "", "Error: etcdserver: mvcc: database space exceeded\n")
    assert want[3] == (0, "", "") and want[4] == (0, "OK\n", "")
    assert answers["petcd"] == want


def test_alarms_are_read_from_marshalled_alarm_members(tmp_path):
    """The alarm bucket's keys are etcdserverpb.AlarmMember (memberID a uint64, possibly past 2^63);
    every alarm is raised in the new store; a type etcd 3.4 does not have is refused."""
    from petcd.store.etcd_import import EtcdImportError, import_bbolt
    from petcd.store.mvcc import ALARM_CORRUPT, ALARM_NOSPACE

    big_member = 0x8E9E05C52164694D
    alarm = lambda member, kind: pb.AlarmMember(memberID=member, alarm=kind).SerializeToString()
    buckets = {b"key": {_rev(2): _kv(b"a", 2, 2, 1, b"1")}, b"meta": {},
               b"alarm": {alarm(big_member, pb.NOSPACE): b"", alarm(0, pb.CORRUPT): b""}}
    store = MvccStore(str(tmp_path / "s"))
    try:
        assert import_bbolt(_FakeDb(buckets), store).alarms == 2
        assert store.alarms() == [(0, ALARM_CORRUPT), (big_member, ALARM_NOSPACE)]
    finally:
        store.close()
    buckets[b"alarm"] = {b"\x08\x01\x10\x07": b""}  # AlarmMember{memberID: 1, alarm: 7}
    store = MvccStore(str(tmp_path / "bad"))
    try:
        with pytest.raises(EtcdImportError, match="alarm type 7 is not one etcd 3.4 knows"):
            import_bbolt(_FakeDb(buckets), store)
        assert store.alarms() == []
    finally:
        store.close()
