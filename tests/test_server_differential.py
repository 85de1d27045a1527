"""The real etcdctl 3.4 must not tell a petcd member from an etcd member for KV work.

Each KV-related command script of tests/test_ctl_scripts.py is run with the REAL
etcdctl twice: against a fresh real etcd 3.4 (tests/etcd_fixture.py) and against
a fresh petcd member started as a user would (tests/servers.py start_petcd, the
`petcd` console script).  Stdout, stderr and exit code of every step must agree
after the harness's normalisation (tests/test_ctl_harness.py: IDs, raft terms,
durations, client log timestamps/ids, each run's own address), extended here only
by the masks in _SERVER_MASKS below, each documented with why it legitimately
differs.

Scripts run here: kv, formats, txn, flags, plus two of this file's own: txn
response headers as etcdctl prints them, and raw gRPC requests etcdctl cannot
make (nested txns, serializable and filtered ranges, error statuses).

The "auth" script (users, roles, auth enable) is not run here: auth has its own
differential tests, tests/test_auth_differential.py (etcd's RBAC guide, tokens,
watches, leases, 1 and 3 members) and tests/test_ctl_auth.py (every user, role and
auth command). The flags script's `--user` steps do run: like etcd with auth
disabled, petcd answers Authenticate with "authentication is not enabled".

petcd is started with the same advertised peer URL and cluster token as the etcd
fixture's servers; petcd computes member and cluster IDs from those exactly as
etcd does (rpc/member_ids.py), so even the IDs agree (they are masked anyway).

Run with real etcd first on PATH:
    PATH=$PWD/.cache/etcd/usr/bin:$PATH python -m pytest tests/test_server_differential.py
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from tests.servers import run_on_etcd_and_petcd
from tests.test_ctl_harness import ETCDCTL, Result, Step, diff_runs, run_script
from tests.test_ctl_scripts import SCRIPTS

# Where each op of a txn stands decides its response header revision (etcd's
# mvcc storeTxnWrite): ranges and deletes before the first change read the
# starting revision, a put is always at the next one; a txn that changes nothing
# keeps the starting revision throughout.
_TXN_HEADERS = [
    Step(["put", "a", "1"]),
    Step(["-w", "json", "txn"], stdin=b"\n\nget a\ndel nothing\nput a 2\nget a\ndel nothing\ndel a\nget a\n\n"),
    Step(["-w", "json", "txn"], stdin=b"\n\nget a\ndel nothing\n\n"),
    Step(["-w", "json", "txn"], stdin=b'value("a") = "x"\n\nput a 3\n\ndel nothing\nput b 1\nget b\n\n'),
    Step(["-w", "fields", "txn"], stdin=b"\n\ndel b\nput b 2\ndel b\nget b\n\n"),
    Step(["-w", "protobuf", "txn"], stdin=b"\n\nput c 1\nget c\ndel c --prev-kv\n\n", pb="TxnResponse"),
    Step(["-w", "table", "txn"], stdin=b"\n\nput d 1\n\n"),
]

ETCDCTL_SCRIPTS = {
    "kv": SCRIPTS["kv"],
    "formats": SCRIPTS["formats"],
    "txn": SCRIPTS["txn"],
    "flags": SCRIPTS["flags"],
    "txn_headers": _TXN_HEADERS,
}
# "auth" runs in tests/test_auth_differential.py and tests/test_ctl_auth.py (see the module docstring).
GRPC = "grpc"
RUNS = (*ETCDCTL_SCRIPTS, GRPC)

# Only what a correct petcd legitimately reports differently from etcd 3.4.
# None of the scripts prints Status today, but a step that did would show these.
_SERVER_MASKS = [
    # Status.version: etcd 3.4 reports its own release ("3.4.23"); petcd reports "3.5.0",
    # the etcd API level of the protos it serves (README, "Known differences").
    (re.compile(rb'"version":"3\.[45]\.[0-9]+"'), b'"version":"<server-version>"'),
    (re.compile(rb'(?m)^"Version" : "3\.[45]\.[0-9]+"$'), b'"Version" : "<server-version>"'),
    # Status.dbSize / dbSizeInUse: bbolt's file vs LMDB's file; the sizes of two
    # different storage engines have nothing in common.
    (re.compile(rb'"(dbSize|dbSizeInUse)":[0-9]+'), rb'"\1":<db-size>'),
    (re.compile(rb'(?m)^"(DBSize|DBSizeInUse)" : [0-9]+$'), rb'"\1" : <db-size>'),
]


def _mask_server(r: Result) -> Result:
    out = r.stdout
    for rx, rep in _SERVER_MASKS:
        out = rx.sub(rep, out)
    return Result(r.rc, out, r.stderr)


def test_server_masks_hide_only_version_and_db_size():
    a = Result(0, b'[{"Status":{"version":"3.4.23","dbSize":20480,"dbSizeInUse":16384,"raftIndex":4}}]\n'
                  b'"Version" : "3.4.23"\n"DBSize" : 20480\n', b"")
    b = Result(0, b'[{"Status":{"version":"3.5.0","dbSize":8192,"dbSizeInUse":12288,"raftIndex":4}}]\n'
                  b'"Version" : "3.5.0"\n"DBSize" : 8192\n', b"")
    c = Result(0, b.stdout.replace(b'"raftIndex":4', b'"raftIndex":5'), b"")
    d = Result(0, b.stdout.replace(b'"version":"3.5.0"', b'"version":"3.5.0-petcd"'), b"")
    assert _mask_server(a) == _mask_server(b)
    assert _mask_server(a) != _mask_server(c)
    assert _mask_server(a) != _mask_server(d)


# ------------------------------------------------------------ raw gRPC requests

def _txn_op(**kw) -> pb.RequestOp:
    return pb.RequestOp(**kw)


def _grpc_requests() -> list[tuple[str, object]]:
    """(KV method, request), run in order against a fresh server."""
    rng, put, dele, txn = pb.RangeRequest, pb.PutRequest, pb.DeleteRangeRequest, pb.TxnRequest
    nested = txn(
        compare=[pb.Compare(key=b"a", target=pb.Compare.VALUE, result=pb.Compare.EQUAL, value=b"1")],
        success=[
            _txn_op(request_range=rng(key=b"a")),
            _txn_op(request_txn=txn(success=[_txn_op(request_delete_range=dele(key=b"none")),
                                             _txn_op(request_put=put(key=b"b", value=b"2")),
                                             _txn_op(request_range=rng(key=b"b"))])),
            _txn_op(request_delete_range=dele(key=b"none")),
            _txn_op(request_txn=txn(
                compare=[pb.Compare(key=b"a", target=pb.Compare.VALUE, value=b"zz")],
                failure=[_txn_op(request_range=rng(key=b"a", count_only=True)),
                         _txn_op(request_delete_range=dele(key=b"a", prev_kv=True))])),
        ])
    read_only = txn(success=[_txn_op(request_range=rng(key=b"b")),
                             _txn_op(request_txn=txn(success=[_txn_op(request_range=rng(key=b"b"))]))])
    return [
        ("Put", put(key=b"a", value=b"1")),
        ("Txn", nested),
        ("Txn", read_only),
        ("Txn", txn(success=[_txn_op(request_delete_range=dele(key=b"none"))])),
        ("Txn", txn()),
        ("Put", put(key=b"k1", value=b"x")),
        ("Put", put(key=b"k2", value=b"yy", prev_kv=True)),
        ("Put", put(key=b"k1", value=b"z", prev_kv=True)),
        ("Range", rng(key=b"k", range_end=b"l", serializable=True)),
        ("Range", rng(key=b"k", range_end=b"l", sort_target=pb.RangeRequest.VERSION)),
        ("Range", rng(key=b"k", range_end=b"l", sort_order=pb.RangeRequest.DESCEND,
                      sort_target=pb.RangeRequest.CREATE, limit=1)),
        ("Range", rng(key=b"k", range_end=b"l", min_mod_revision=8, keys_only=True)),
        ("Range", rng(key=b"k", range_end=b"l", max_create_revision=6, limit=1)),
        ("Range", rng(key=b"k", range_end=b"l", count_only=True, limit=1)),
        ("Range", rng(key=b"\0", range_end=b"\0", limit=2)),
        ("Range", rng(key=b"k1", revision=6)),
        ("Range", rng(key=b"k1", revision=1000)),
        ("Range", rng(key=b"")),
        # etcd 3.4 takes any sort_order; one it does not know sorts nothing.  (An unknown
        # sort_target with a known order is not sent: etcd 3.4 crashes on it.)
        ("Range", rng(key=b"k", range_end=b"l", sort_order=7, limit=1)),
        ("Range", rng(key=b"k", range_end=b"l", sort_order=-1, sort_target=9, serializable=True)),
        ("Txn", txn(success=[_txn_op(request_range=rng(key=b"k", range_end=b"l", sort_order=3,
                                                       sort_target=pb.RangeRequest.VALUE))])),
        ("Txn", txn(success=[_txn_op(request_range=rng(key=b"a"))] * 129)),
        ("Txn", txn(success=[_txn_op(request_put=put(key=b"e")),
                             _txn_op(request_txn=txn(success=[_txn_op(request_put=put(key=b"e"))]))])),
        ("Txn", txn(success=[_txn_op(request_delete_range=dele(key=b"d", range_end=b"f")),
                             _txn_op(request_txn=txn(failure=[_txn_op(request_put=put(key=b"e"))]))])),
        ("Txn", txn(success=[_txn_op(request_txn=txn(success=[_txn_op(request_put=put(key=b"e"))],
                                                     failure=[_txn_op(request_put=put(key=b"e"))]))])),
        ("Put", put(key=b"nokey", ignore_value=True)),
        ("Put", put(key=b"k1", value=b"v", ignore_value=True)),
        ("Put", put(key=b"k1", lease=99)),
        ("Txn", txn(success=[_txn_op(request_put=put(key=b"d")), _txn_op(request_put=put(key=b"d"))])),
        ("Txn", txn(success=[_txn_op(request_range=rng(key=b"a", revision=1000))])),
        ("Txn", txn(success=[_txn_op(request_put=put(key=b"nokey", ignore_lease=True))])),
        ("Txn", txn(compare=[pb.Compare(key=b"")])),
        ("DeleteRange", dele(key=b"k", range_end=b"l", prev_kv=True)),
        ("DeleteRange", dele(key=b"k", range_end=b"l")),
        ("Compact", pb.CompactionRequest(revision=5, physical=True)),
        ("Compact", pb.CompactionRequest(revision=5)),
        ("Compact", pb.CompactionRequest(revision=1000)),
        ("Range", rng(key=b"k1", revision=4)),
        ("Range", rng(key=b"k1", revision=5)),
        ("Txn", txn(success=[_txn_op(request_range=rng(key=b"a", revision=3))])),
    ]


def _scrub(msg) -> None:
    """Zero the header fields the harness masks (IDs, raft term), at every level."""
    for fd, v in msg.ListFields():
        if fd.name == "header":
            v.cluster_id = v.member_id = v.raft_term = 0
        elif fd.message_type is not None:
            for item in (v if fd.is_repeated else [v]):
                _scrub(item)


def _run_grpc(endpoint: str) -> list[str]:
    out = []
    with grpc.insecure_channel(endpoint) as channel:
        stub = pb_grpc.KVStub(channel)
        for method, request in _grpc_requests():
            try:
                resp = getattr(stub, method)(request, timeout=10)
            except grpc.RpcError as e:
                out.append("%s -> %s %r" % (method, e.code().name, e.details()))
                continue
            _scrub(resp)
            out.append("%s -> %s" % (method, resp))
    return out


# ------------------------------------------------------------ the runs

def _require_real_etcdctl() -> None:
    try:
        out = subprocess.run(ETCDCTL + ["version"], capture_output=True, text=True, timeout=10).stdout
    except OSError as e:
        pytest.fail(f"the real etcdctl is needed (put .cache/etcd/usr/bin first on PATH): {e}")
    if "etcdctl version: 3.4." not in out:
        pytest.fail(f"{ETCDCTL[0]} is not etcdctl 3.4 (put .cache/etcd/usr/bin first on PATH): {out!r}")


def _run(name: str, endpoint: str, dead: str):
    if name == GRPC:
        return _run_grpc(endpoint)
    return run_script(ETCDCTL_SCRIPTS[name], ETCDCTL, endpoint, dead)


def _run_pair(name: str):
    """One run against a fresh etcd and one against a fresh petcd, concurrently."""
    return run_on_etcd_and_petcd(lambda endpoint, dead: _run(name, endpoint, dead), "petcd-srvdiff-")


@pytest.fixture(scope="module")
def server_runs():
    _require_real_etcdctl()
    with ThreadPoolExecutor(len(RUNS)) as pool:
        return {name: pool.submit(_run_pair, name) for name in RUNS}


@pytest.mark.parametrize("name", sorted(ETCDCTL_SCRIPTS))
def test_etcdctl_cannot_tell_petcd_from_etcd(server_runs, name):
    (expected, expected_ep), (actual, actual_ep) = server_runs[name].result()
    expected = [_mask_server(r) for r in expected]
    actual = [_mask_server(r) for r in actual]
    problems = diff_runs(ETCDCTL_SCRIPTS[name], expected, actual, expected_ep, actual_ep)
    assert not problems, "%d differing steps:\n%s" % (len(problems), "\n".join(problems))


def test_grpc_answers_match_etcd(server_runs):
    (expected, _), (actual, _) = server_runs[GRPC].result()
    problems = ["request %d:\n  expected %s\n  actual   %s" % (i, a, b)
                for i, (a, b) in enumerate(zip(expected, actual)) if a != b]
    assert not problems, "%d differing answers:\n%s" % (len(problems), "\n".join(problems))
