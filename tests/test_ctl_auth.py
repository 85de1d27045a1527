"""``auth``, ``user`` and ``role``: one script of etcdctl 3.4.23 steps, run

  * test_petcdctl_auth_matches_etcdctl: with the real etcdctl and with petcdctl, each against its
    own fresh real etcd 3.4 (tests/etcd_fixture.py: same member and cluster IDs, same requests);
  * test_etcdctl_auth_cannot_tell_petcd_from_etcd: with the real etcdctl, against a fresh real
    etcd and against a fresh petcd member (tests/servers.py start_petcd, etcd_fixture's identity);

and compared step by step on stdout, stderr and exit code after the harness's normalisation
(tests/test_ctl_harness.py: IDs, raft terms, the client's log timestamps and ids, each run's
own address; ``-w protobuf`` output parsed, header IDs and term zeroed).

The script walks etcd's auth from an empty store: every command and output format of the three
groups (table and, for user get/list, fields are refused by etcdctl 3.4 itself), their argument
errors, passwords from the terminal prompt (speakeasy on a pipe: the stty complaints on stderr
are part of the output), from stdin with ``--interactive=false`` (Go's Scanf("%s"): one word, "" on
a leading newline), from the argument and from ``--new-user-password``; ``auth enable`` without a
root user, with a root role that exists but is not granted (etcdctl's retry then fails on
RoleAdd), and with neither (etcdctl creates the role, grants it, enables); then with auth on:
``--user name:pw``, ``--user name --password pw``, a wrong password, a user held to a
prefix-scoped role, the root user and root role that etcd refuses to take apart ("invalid auth
management"), password changes, and ``auth disable``.  etcdctl 3.4 has no ``auth status``: the
auth group's help is printed (3.5 added the command).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.etcd_fixture import EtcdServer, closed_port
from tests.servers import run_on_etcd_and_petcd
from tests.test_ctl_harness import ETCDCTL, PETCDCTL, Step, diff_runs, run_script

S = Step
ROOT = ["--user", "root:rootpw"]

SCRIPT = [
    # --- help and argument errors (no server involved)
    S(["auth"]),
    S(["auth", "status"]),
    S(["user"]),
    S(["role", "--help"]),
    S(["user", "add", "--help"]),
    S(["user", "passwd", "--help"]),
    S(["user", "get", "-h"]),
    S(["role", "grant-permission", "--help"]),
    S(["role", "revoke-permission", "--help"]),
    S(["auth", "enable", "x"]),
    S(["auth", "disable", "x"]),
    S(["user", "add"]),
    S(["user", "add", "a", "b"]),
    S(["user", "add", ":pw"]),
    S(["user", "delete"]),
    S(["user", "get"]),
    S(["user", "get", "a", "b", "--detail"]),
    S(["user", "list", "x"]),
    S(["user", "passwd"]),
    S(["user", "grant-role", "a"]),
    S(["user", "revoke-role", "a", "b", "c"]),
    S(["role", "add"]),
    S(["role", "delete", "a", "b"]),
    S(["role", "get"]),
    S(["role", "list", "x"]),
    S(["role", "grant-permission", "r", "read"]),
    S(["role", "grant-permission", "r", "bogus", "k"]),
    S(["role", "grant-permission", "r", "read", "k", "--prefix", "--from-key"]),
    S(["role", "grant-permission", "r", "read", "", "--prefix", "--from-key"]),
    S(["role", "grant-permission", "r", "read", "k", "l", "--prefix"]),
    S(["role", "grant-permission", "r", "read", "k", "l", "--from-key"]),
    S(["role", "revoke-permission", "r"]),
    S(["role", "revoke-permission", "r", "k", "l", "--prefix"]),
    S(["role", "revoke-permission", "r", "k", "--prefix", "--from-key"]),
    S(["user", "add", "x", "--interactive=maybe"]),
    S(["role", "grant-permission", "r", "read", "k", "--bogus"]),

    # --- auth enable needs a root user that has the root role
    S(["auth", "disable"]),
    S(["auth", "enable"]),
    S(["user", "add", "root", "--interactive=false"], stdin=b"rootpw\n"),
    S(["user", "add", "root:other"]),
    S(["role", "add", "root"]),
    S(["auth", "enable"]),  # the root role exists but is not granted: etcdctl's RoleAdd fails
    S(["role", "delete", "root"]),

    # --- users and passwords
    S(["user", "add", "alice"], stdin=b"apw\napw\n"),
    S(["user", "add", "bob"], stdin=b"x\ny\n"),
    S(["user", "add", "bob"], stdin=b"\n"),
    S(["user", "add", "bob"], stdin=b""),
    S(["user", "add", "bob", "--interactive=false"], stdin=b"  \tbpw extra\n"),
    S(["user", "add", "crlf"], stdin=b"cpw\r\ncpw\r\n"),
    S(["user", "add", "uni", "--interactive=false"], stdin="\u00a0upw\u2003rest\n".encode()),
    S(["user", "add", "inv", "--interactive=false"], stdin=b"a\xffb\n"),  # Go reads U+FFFD
    S(["user", "add", "eof", "--interactive=false"], stdin=b" tail"),
    S(["user", "add", "lonecr", "--interactive=false"], stdin=b"\rlpw\n"),
    S(["user", "add", "crnl", "--interactive=false"], stdin=b"\r\nnpw\n"),
    S(["user", "add", "carol", "--new-user-password=c:pw"]),
    S(["user", "add", "d:ave", "--new-user-password", "dpw"]),
    S(["-w", "json", "user", "add", "dan:dpw"]),
    S(["-w", "fields", "user", "add", "erin:epw"]),
    S(["-w", "protobuf", "user", "add", "frank:fpw"], pb="AuthUserAddResponse"),
    S(["-w", "table", "user", "add", "gina:gpw"]),  # created, then the printer refuses
    S(["user", "add", "--no-password", "nopw"]),
    S(["user", "add", "--no-password", "no:pw", "--new-user-password=x"]),
    S(["user", "add", "hank", "--interactive=false"], stdin=b"\nhpw\n"),
    S(["user", "add", "ivan", "--interactive=false"], stdin=b""),
    S(["user", "add", "alice:again"]),
    S(["user", "list"]),
    S(["-w", "json", "user", "list"]),
    S(["-w", "fields", "user", "list"]),
    S(["-w", "table", "user", "list"]),
    S(["-w", "protobuf", "user", "list"], pb="AuthUserListResponse"),

    # --- roles and permissions
    S(["role", "add", "r"]),
    S(["role", "add", "r"]),
    S(["-w", "json", "role", "add", "r2"]),
    S(["-w", "fields", "role", "add", "r3"]),
    S(["-w", "protobuf", "role", "add", "r4"], pb="AuthRoleAddResponse"),
    S(["-w", "table", "role", "add", "r5"]),
    S(["role", "grant-permission", "r", "readwrite", "a/", "--prefix"]),
    S(["role", "grant-permission", "r", "read", "b", "c"]),
    S(["role", "grant-permission", "r", "Write", "z", "--from-key"]),
    S(["role", "grant-permission", "r", "READ", "single"]),
    S(["role", "grant-permission", "r", "read", "", "--prefix"]),
    S(["role", "grant-permission", "r", "write", ""]),
    S(["role", "grant-permission", "r", "write", b"\xff\xff", "--prefix"]),
    S(["role", "grant-permission", "r", "readwrite", "q\"\\\n", "--from-key"]),
    S(["role", "grant-permission", "nope", "read", "k"]),
    S(["-w", "json", "role", "grant-permission", "r2", "read", "x"]),
    S(["-w", "fields", "role", "grant-permission", "r3", "write", "y", "--prefix"]),
    S(["-w", "protobuf", "role", "grant-permission", "r4", "readwrite", "w"], pb="AuthRoleGrantPermissionResponse"),
    S(["-w", "table", "role", "grant-permission", "r5", "read", "v"]),
    S(["role", "get", "r"]),
    S(["-w", "json", "role", "get", "r"]),
    S(["-w", "fields", "role", "get", "r"]),
    S(["-w", "table", "role", "get", "r"]),
    S(["-w", "protobuf", "role", "get", "r"], pb="AuthRoleGetResponse"),
    S(["--hex", "role", "get", "r3"]),
    S(["role", "get", "r5"]),
    S(["role", "get", "nope"]),
    S(["role", "list"]),
    S(["-w", "json", "role", "list"]),
    S(["-w", "fields", "role", "list"]),
    S(["-w", "table", "role", "list"]),
    S(["-w", "protobuf", "role", "list"], pb="AuthRoleListResponse"),

    # --- roles of users
    S(["user", "grant-role", "alice", "r"]),
    S(["user", "grant-role", "alice", "r"]),
    S(["user", "grant-role", "alice", "r2"]),
    S(["user", "grant-role", "alice", "nope"]),
    S(["user", "grant-role", "nobody", "r"]),
    S(["-w", "json", "user", "grant-role", "dan", "r2"]),
    S(["-w", "fields", "user", "grant-role", "dan", "r3"]),
    S(["-w", "protobuf", "user", "grant-role", "erin", "r4"], pb="AuthUserGrantRoleResponse"),
    S(["user", "get", "alice"]),
    S(["user", "get", "bob"]),
    S(["-w", "json", "user", "get", "alice"]),
    S(["-w", "json", "user", "get", "bob"]),
    S(["-w", "fields", "user", "get", "alice"]),
    S(["-w", "table", "user", "get", "alice"]),
    S(["-w", "protobuf", "user", "get", "alice"], pb="AuthUserGetResponse"),
    S(["user", "get", "alice", "--detail"]),
    S(["user", "get", "--detail", "bob"]),
    S(["-w", "json", "user", "get", "alice", "--detail"]),
    S(["-w", "fields", "user", "get", "dan", "--detail"]),
    S(["-w", "table", "user", "get", "alice", "--detail"]),
    S(["-w", "table", "user", "get", "bob", "--detail"]),
    S(["user", "get", "nobody"]),
    S(["user", "get", "nobody", "--detail"]),
    S(["user", "revoke-role", "alice", "r2"]),
    S(["user", "revoke-role", "alice", "r2"]),
    S(["user", "revoke-role", "alice", "nope"]),
    S(["user", "revoke-role", "nobody", "r"]),
    S(["-w", "json", "user", "revoke-role", "dan", "r2"]),
    S(["-w", "fields", "user", "revoke-role", "dan", "r3"]),
    S(["-w", "protobuf", "user", "revoke-role", "erin", "r4"], pb="AuthUserRevokeRoleResponse"),
    S(["-w", "table", "user", "revoke-role", "alice", "r"]),
    S(["user", "grant-role", "alice", "r"]),

    # --- revoking permissions
    S(["role", "revoke-permission", "r", "b", "c"]),
    S(["role", "revoke-permission", "r", "b", "c"]),
    S(["role", "revoke-permission", "r", "", "--prefix"]),
    S(["role", "revoke-permission", "r", "z", "--from-key"]),
    S(["role", "revoke-permission", "r", "single"]),
    S(["role", "revoke-permission", "r", b"\xff\xff", "--prefix"]),
    S(["role", "revoke-permission", "nope", "k"]),
    S(["-w", "json", "role", "revoke-permission", "r", "q\"\\\n", "--from-key"]),
    S(["-w", "fields", "role", "revoke-permission", "r3", "y", "--prefix"]),
    S(["-w", "protobuf", "role", "revoke-permission", "r4", "w"], pb="AuthRoleRevokePermissionResponse"),
    S(["-w", "table", "role", "revoke-permission", "r2", "x"]),
    S(["role", "get", "r"]),

    # --- passwords changed, users and roles deleted
    S(["user", "passwd", "bob"], stdin=b"b2\nb2\n"),
    S(["user", "passwd", "bob"], stdin=b"b2\nb3\n"),
    S(["user", "passwd", "bob"], stdin=b"\n"),
    S(["user", "passwd", "bob", "--interactive=false"], stdin=b"bpw\n"),
    S(["user", "passwd", "nobody", "--interactive=false"], stdin=b"x\n"),
    S(["-w", "json", "user", "passwd", "dan", "--interactive=false"], stdin=b"dpw2\n"),
    S(["-w", "fields", "user", "passwd", "erin", "--interactive=false"], stdin=b"epw2\n"),
    S(["-w", "protobuf", "user", "passwd", "frank", "--interactive=false"], stdin=b"fpw2\n",
      pb="AuthUserChangePasswordResponse"),
    S(["-w", "table", "user", "passwd", "gina", "--interactive=false"], stdin=b"gpw2\n"),
    S(["user", "delete", "ivan"]),
    S(["user", "delete", "ivan"]),
    S(["-w", "json", "user", "delete", "hank"]),
    S(["-w", "fields", "user", "delete", "gina"]),
    S(["-w", "protobuf", "user", "delete", "nopw"], pb="AuthUserDeleteResponse"),
    S(["-w", "table", "user", "delete", "carol"]),
    S(["role", "delete", "r5"]),
    S(["role", "delete", "r5"]),
    S(["-w", "json", "role", "delete", "r4"]),
    S(["-w", "fields", "role", "delete", "r3"]),
    S(["-w", "protobuf", "role", "delete", "r2"], pb="AuthRoleDeleteResponse"),
    S(["-w", "table", "role", "delete", "nope"]),
    S(["user", "list"]),
    S(["role", "list"]),

    # --- auth on: etcdctl creates the root role, grants it to root, enables
    S(["put", "a/1", "v1"]),
    S(["auth", "enable"]),
    S(["user", "get", "root"]),
    S(ROOT + ["-w", "json", "user", "get", "root"]),
    S(["auth", "enable"]),
    S(["user", "list"]),
    S(["get", "a/1"]),
    S(ROOT + ["auth", "enable"]),
    S(ROOT + ["user", "list"]),
    S(["--user", "root", "--password", "rootpw", "role", "list"]),
    S(["--user", "root", "role", "list"], stdin=b"rootpw\n"),
    S(["--user", "root:wrong", "user", "list"]),
    S(["--user", "nobody:pw", "user", "list"]),
    S(ROOT + ["user", "get", "root", "--detail"]),
    S(ROOT + ["-w", "json", "role", "get", "root"]),
    S(ROOT + ["-w", "fields", "role", "get", "root"]),
    S(["--user", "alice:apw", "put", "a/2", "v2"]),
    S(["--user", "alice:apw", "put", "b", "v"]),
    S(["--user", "alice:apw", "get", "a/", "--prefix"]),
    S(["--user", "alice", "--password", "apw", "get", "z"]),
    S(["--user", "alice:apw", "user", "list"]),
    S(["--user", "alice:apw", "role", "list"]),
    S(["--user", "alice:apw", "role", "get", "r"]),
    S(["--user", "alice:apw", "role", "get", "root"]),
    S(["--user", "alice:apw", "user", "get", "alice", "--detail"]),
    S(["--user", "alice:apw", "user", "get", "bob"]),
    S(["--user", "alice:apw", "user", "add", "eve:x"]),
    S(["--user", "alice:apw", "role", "grant-permission", "r", "readwrite", "", "--prefix"]),
    S(["--user", "alice:apw", "user", "passwd", "alice", "--interactive=false"], stdin=b"mine\n"),
    S(["--user", "alice:apw", "auth", "disable"]),
    S(["--user", "bob:bpw", "get", "a/1"]),
    S(["--user", "crlf:cpw", "get", "a/1"]),
    S(["--user", "uni:upw", "get", "a/1"]),
    S(["--user", "nopw:", "get", "a/1"]),
    S(["--user", "inv:a\ufffdb", "get", "a/1"]),
    S(["--user", "eof:tail", "get", "a/1"]),
    S(["--user", "lonecr:lpw", "get", "a/1"]),
    S(["--user", "crnl:npw", "get", "a/1"]),
    S(ROOT + ["user", "revoke-role", "root", "root"]),
    S(ROOT + ["user", "delete", "root"]),
    S(ROOT + ["role", "delete", "root"]),
    S(ROOT + ["role", "revoke-permission", "root", "x"]),
    S(ROOT + ["user", "passwd", "alice", "--interactive=false"], stdin=b"apw3\n"),
    S(["--user", "alice:apw", "get", "a/1"]),
    S(["--user", "alice", "--password", "apw3", "get", "a/1"]),
    S(ROOT + ["role", "revoke-permission", "r", "a/", "--prefix"]),
    S(["--user", "alice:apw3", "get", "a/1"]),
    S(ROOT + ["role", "grant-permission", "r", "read", "a/1"]),
    S(["--user", "alice:apw3", "get", "a/1"]),
    S(ROOT + ["user", "add", "bob:again"]),
    S(ROOT + ["role", "add", "r"]),
    S(ROOT + ["role", "get", "nope"]),

    # --- auth off
    S(["auth", "disable"]),
    S(ROOT + ["-w", "fields", "auth", "disable"]),
    S(["auth", "disable"]),
    S(ROOT + ["user", "list"]),
    S(["user", "get", "alice", "--detail"]),
    S(["get", "a/", "--prefix"]),
]


def _run_pair_etcd() -> tuple:
    """The script with etcdctl and with petcdctl, each against its own fresh etcd, concurrently."""
    dead = "127.0.0.1:%d" % closed_port()
    with EtcdServer() as a, EtcdServer() as b, ThreadPoolExecutor(2) as pool:
        fa = pool.submit(run_script, SCRIPT, ETCDCTL, a.endpoint, dead)
        fb = pool.submit(run_script, SCRIPT, PETCDCTL, b.endpoint, dead)
        return (fa.result(), a.endpoint), (fb.result(), b.endpoint)


def test_petcdctl_auth_matches_etcdctl():
    (expected, expected_ep), (actual, actual_ep) = _run_pair_etcd()
    assert b"Authentication Enabled" in b"".join(r.stdout for r in expected), "the script enabled auth on etcd"
    problems = diff_runs(SCRIPT, expected, actual, expected_ep, actual_ep)
    assert not problems, "%d differing steps:\n%s" % (len(problems), "\n".join(problems))


def test_etcdctl_auth_cannot_tell_petcd_from_etcd():
    """The real etcdctl against real etcd and against petcd (petcd's auth on the server side)."""
    (expected, etcd_ep), (actual, petcd_ep) = run_on_etcd_and_petcd(
        lambda endpoint, dead: run_script(SCRIPT, ETCDCTL, endpoint, dead), "petcd-ctlauth-")
    problems = diff_runs(SCRIPT, expected, actual, etcd_ep, petcd_ep)
    assert not problems, "%d differing steps:\n%s" % (len(problems), "\n".join(problems))
