"""Command scripts for the etcdctl differential tests (data only).

Each script runs top to bottom against a fresh single-node server; steps
depend on earlier steps (revisions, compaction), so keep the order.  See
test_ctl_harness.py for the step fields and the placeholders.
"""

from __future__ import annotations

from tests.test_ctl_harness import Step as S

FAST = "--command-timeout=500ms"

TXN_1 = b"""mod("foo") > "0"

put foo "hello world"
get foo
del nokey

put x y

"""

TXN_FAIL = b"""value("foo") = "nope"
version("foo") = "1"

put foo a

put x y
get x --prefix
del zz --prev-kv

"""

TXN_COMPARES = b"""ver("foo") > "1"
version("foo") != "0"
c("foo") < "100"
create("foo") = "2"
m("foo") > "1"
mod("foo") < "1000"
val("foo") = "hello world"
value("x") != "z"
  mod("foo")   >   "0"   

get foo
get x --keys-only

del x

"""

TXN_QUOTING = b"""

put "a b" 'c d' --prev-kv
put 'q' "\\x00\\xff\\u00e9\\t" --prev-kv
put a"b c"d
put --prev-kv -- k1 -dash
get "a b"
get "\\x61 b" --print-value-only
get a"b --keys-only
get k --prefix --limit 2 --order DESCEND --sort-by VALUE
get k --from-key --rev 2

"""

KV = [
    S(["put", "foo", "bar"]),
    S(["put", "foo", "bar2", "--prev-kv"]),
    S(["put", "foo", "--prev-kv", "--", "-dashed"]),
    S(["put", "stdin-key"], stdin=b"from\nstdin\n"),
    S(["put", "stdin-key", "--prev-kv"], stdin=b"second"),
    S(["put", "nostdin"]),
    S(["put"]),
    S(["put", "a", "b", "c"]),
    S(["put", "", "x"]),
    S(["put", "k", "v", "--lease", "zz"]),
    S(["put", "k", "v", "--lease", "1234abcd"]),
    S(["put", "k", "v", "--lease=-1"]),
    S(["put", "missing", "--ignore-value"]),
    S(["put", "foo", "--ignore-value", "--prev-kv"]),
    S(["put", "foo", "v", "--ignore-value"]),
    S(["put", "foo", "newval", "--ignore-lease"]),
    S(["put", "missing", "v", "--ignore-lease"]),
    S(["put", "k", "v", "--ignore-lease", "--lease", "1"]),
    S(["put", b"bin\xff\x00"[:-1] + b"\x01", b"val\xfe\x80\xe2\x82\xac\n\t\"\\"]),
    S(["put", "uni\u00e9\u2028", "\u4e16\u754c"]),
    S(["put", "p/a", "va"]), S(["put", "p/b", "vb"]), S(["put", "p/c", "vc"]),
    S(["put", "p/d", "vd"]), S(["put", "p/b", "vz"]),
    S(["put", b"x\xff", b"ff"]), S(["put", b"x\xff\xff", b"ffff"]), S(["put", "y", "y"]),
    S(["get", "foo"]),
    S(["get", "nothing"]),
    S(["get", ""]),
    S(["get"]),
    S(["get", "p/", "--prefix"]),
    S(["get", "p/", "--prefix", "--keys-only"]),
    S(["get", "p/", "--prefix", "--print-value-only"]),
    S(["get", "p/", "--prefix", "--limit", "2"]),
    S(["get", "p/", "--prefix", "--limit=0x3"]),
    S(["get", "p/", "--prefix", "--sort-by", "value", "--order", "descend"]),
    S(["get", "p/", "--prefix", "--sort-by", "MODIFY", "--order", "ascend"]),
    S(["get", "p/", "--prefix", "--order", "DESCEND"]),
    S(["get", "p/b", "--from-key", "--limit", "2"]),
    S(["get", "p/a", "p/c"]),
    S(["get", "p/a", "p/c", "--hex"]),
    S(["--hex", "get", "p/", "--prefix", "--keys-only"]),
    S(["get", "", "--prefix", "--keys-only"]),
    S(["get", "", "--from-key", "--limit", "1"]),
    S(["get", b"x\xff", "--prefix"]),
    S(["get", b"bin\xff\x01"]),
    S(["get", "foo", "--rev", "2"]),
    S(["get", "foo", "--rev", "3", "--consistency", "s"]),
    S(["get", "foo", "--rev", "100000"]),
    S(["get", "foo", "--consistency", "x"]),
    S(["get", "foo", "--order", "sideways"]),
    S(["get", "foo", "--sort-by", "size"]),
    S(["get", "--prefix", "--from-key", "p/"]),
    S(["get", "--prefix", "p/", "p/z"]),
    S(["get", "--from-key", "p/", "p/z"]),
    S(["get", "foo", "--count-only"]),
    S(["get", "foo", "--print-value-only", "-w", "json"]),
    S(["get", "foo", "--limit", "x"]),
    S(["get", "foo", "--rev", "99999999999999999999"]),
    S(["get", "foo", "--keys-only=maybe"]),
    S(["del", "p/a"]),
    S(["del", "p/b", "--prev-kv"]),
    S(["del", "p/", "--prefix", "--prev-kv"]),
    S(["put", "r1", "1"]), S(["put", "r2", "2"]), S(["put", "r3", "3"]),
    S(["del", "r1", "r3"]),
    S(["del", "r", "--from-key", "--prev-kv"]),
    S(["del", ""]),
    S(["del"]),
    S(["del", "a", "b", "c"]),
    S(["del", "a", "b", "--prefix"]),
    S(["del", "a", "--prefix", "--from-key"]),
    S(["del", b"x\xff", "--prefix", "--prev-kv", "--hex"]),
    S(["get", "", "--prefix"]),
    S(["compaction", "5"]),
    S(["compaction", "--physical", "6"]),
    S(["compaction", "4"]),
    S(["compaction", "100000"]),
    S(["compaction"]),
    S(["compaction", "x"]),
    S(["get", "foo", "--rev", "3"]),
    S(["del", "", "--from-key"]),
    S(["del", "", "--prefix"]),
]

FORMATS = []
for _fmt in ("json", "fields", "protobuf", "table"):
    _pb = _fmt == "protobuf"
    FORMATS += [
        S(["-w", _fmt, "put", "k1", "v1"], pb="PutResponse" if _pb else None),
        S(["-w", _fmt, "put", "k1", "v2", "--prev-kv"], pb="PutResponse" if _pb else None),
        S(["--write-out=" + _fmt, "put", b"kb\xff", b"%d\x01\x02\xfe"], pb="PutResponse" if _pb else None),
        S(["-w", _fmt, "get", "k", "--prefix", "--limit", "1"], pb="RangeResponse" if _pb else None),
        S(["-w", _fmt, "get", "nothing"], pb="RangeResponse" if _pb else None),
        S(["-w", _fmt, "txn"], stdin=TXN_1, pb="TxnResponse" if _pb else None),
        S(["-w", _fmt, "endpoint", "health"]),
    ]
    if _fmt != "table":
        FORMATS += [
            S(["-w", _fmt, "get", "k", "--prefix"], pb="RangeResponse" if _pb else None),
            S(["-w", _fmt, "get", "k", "--prefix", "--keys-only"], pb="RangeResponse" if _pb else None),
            S(["-w", _fmt, "--hex", "get", "k1"], pb="RangeResponse" if _pb else None),
            S(["-w", _fmt, "del", "nothing"], pb="DeleteRangeResponse" if _pb else None),
            S(["-w", _fmt, "del", "k", "--prefix", "--prev-kv"], pb="DeleteRangeResponse" if _pb else None),
            S(["-w", _fmt, "txn"], stdin=TXN_FAIL, pb="TxnResponse" if _pb else None),
        ]
FORMATS += [
    S(["-w", "table", "del", "k1"]),
    S(["-w", "json", "compaction", "2"]),
    S(["-w", "table", "compaction", "3"]),
    S(["-w", "fields", "get", "k", "--rev", "1"]),
    S(["-w", "json", "version"]),
    S(["-w", "xml", "get", "foo"]),
    S(["-w", "xml", "put"]),
    S(["-w", "json", "get", "foo", "--print-value-only"]),
    S(["-w", "simple", "get", "k1", "--print-value-only"]),
]

TXN = [
    S(["put", "foo", "bar"]),
    S(["txn"], stdin=TXN_1),
    S(["txn", "-i"], stdin=TXN_1),
    S(["txn", "--interactive"], stdin=TXN_FAIL),
    S(["txn"], stdin=TXN_COMPARES),
    S(["txn"], stdin=TXN_QUOTING),
    S(["txn", "--hex"], stdin=b"\n\nget foo\nput foo bar --prev-kv\n\n"),
    S(["txn"], stdin=b"\n\n\n"),
    S(["txn"], stdin=b""),
    S(["txn"], stdin=b"\nget foo\n\n"),
    S(["txn"], stdin=b"\nget foo\n\nget foo"),
    S(["txn", "extra"], stdin=b"\n\n\n"),
    S(["txn"], stdin=b'foo\n\n\n\n'),
    S(["txn"], stdin=b'foo("foo") = "x"\n\n\n\n'),
    S(["txn"], stdin=b'mod("foo") > 0\n\n\n\n'),
    S(["txn"], stdin=b'mod(foo) > "0"\n\n\n\n'),
    S(["txn"], stdin=b'mod("foo")>"0"\n\n\n\n'),
    S(["txn"], stdin=b'mod("fo\\qo") > "1"\n\n\n\n'),
    S(["txn"], stdin=b'ver("foo") = "zz"\n\n\n\n'),
    S(["txn"], stdin=b'value("foo") = `raw "x"`\n\n\n\n'),
    S(["txn"], stdin=b'\nput k v\nput k w\n\n\n'),
    S(["txn"], stdin=b'\nfoo bar\n\n\n'),
    S(["txn"], stdin=b'\nput\n\n\n'),
    S(["txn"], stdin=b'\nput a\n\n\n'),
    S(["txn"], stdin=b'\nget a b c\n\n\n'),
    S(["txn"], stdin=b'\nget a --bogus\n\n\n'),
    S(["txn"], stdin=b'\nput a b --bogus\n\n\n'),
    S(["txn"], stdin=b'\nput a b --lease zz\n\n\n'),
    S(["txn"], stdin=b'\nget a --prefix --from-key\n\n\n'),
    S(["txn"], stdin=b'\nput "a\\qb" c\n\n\n'),
    S(["txn"], stdin=b'\np a b\ng a\nd a\n\n\n'),
    S(["txn"], stdin=b"\nput 'a' b\n\n\n"),
    S(["txn"], stdin=b'\nput "" x\n\n\n'),
    S(["txn"], stdin=b'\nget "" --prefix --keys-only\n\n\n'),
    S(["txn"], stdin=b'\nput x y --ignore-value\n\n\n'),
]

FLAGS = [
    S([], endpoint=False),
    S(["help", "foo", "bar"], endpoint=False),
    S(["help", "get"], endpoint=False),
    S(["get", "-h"]),
    S(["put", "--help"]),
    S(["del", "-h"]),
    S(["txn", "-h"]),
    S(["compaction", "-h"]),
    S(["endpoint", "foo"]),
    S(["endpoint", "health", "-h"]),
    S(["-h", "get"]),
    S(["foo"]),
    S(["gett"]),
    S(["e"]),
    S(["ge", "foo"]),
    S(["ver"]),
    S(["endpoint", "heal", "-w", "json"]),
    S(["--bogus", "get", "foo"]),
    S(["get", "foo", "--bogus"]),
    S(["get", "foo", "-x"]),
    S(["get", "foo", "-w"]),
    S(["get", "--", "--prefix"]),
    S(["--dial-timeout", "x", "get", "foo"]),
    S(["--command-timeout=5", "get", "foo"]),
    S(["--hex=x", "get", "foo"]),
    S(["-w", "json", "--", "get", "foo"]),
    S(["--endpoints", "{url}", "get", "foo"], endpoint=False),
    S(["--endpoints", "{ep},{ep}", "put", "foo", "bar"], endpoint=False),
    S(["--endpoints", "{dead},{ep}", FAST, "put", "", "bar"], endpoint=False),
    S(["--endpoints", "", "get", "foo"], endpoint=False),
    S(["--endpoints", "{dead}", FAST, "get", "foo"], endpoint=False),
    S(["--endpoints", "http://{dead}", FAST, "put", "foo", "bar"], endpoint=False),
    S(["--endpoints", "{dead}", FAST, "compaction", "1"], endpoint=False),
    S(["--endpoints", "{dead}", FAST, "endpoint", "health"], endpoint=False),
    S(["--endpoints", "{dead}", FAST, "-w", "json", "endpoint", "health"], endpoint=False),
    S(["--endpoints", "{dead},{ep}", FAST, "-w", "table", "endpoint", "health"], endpoint=False),
    S(["--endpoints", "{dead}", FAST, "get"], endpoint=False),
    S(["--endpoints", "{dead}", "--command-timeout=0s", "get", "foo"], endpoint=False),
    S(["--command-timeout=0s", "get", "foo"]),
    S(["get", "foo"], env={"ETCDCTL_ENDPOINTS": "{ep}"}, endpoint=False),
    S(["get", "foo"], env={"ETCDCTL_ENDPOINTS": "{ep}", "ETCDCTL_API": "3"}, endpoint=False),
    S(["put", "foo", "bar"], env={"ETCDCTL_WRITE_OUT": "json"}),
    S(["get", "foo"], env={"ETCDCTL_WRITE_OUT": "fields", "ETCDCTL_HEX": "true"}),
    S(["get", "foo"], env={"ETCDCTL_HEX": "x", "ETCDCTL_DIAL_TIMEOUT": "x"}),
    S(["get", "foo"], env={"ETCDCTL_COMMAND_TIMEOUT": "0s", "ETCDCTL_KEEPALIVE_TIME": "3s"}),
    S(["compaction", "1"], env={"ETCDCTL_COMMAND_TIMEOUT": "0s"}),
    S(["get", "foo"], env={"ETCDCTL_FOO": "1", "ETCDCTL_PREFIX": "true", "ETCDCTL_EMPTY": ""}),
    S(["get", "foo"], env={"ETCDCTL_WRITE_OUT": "json"}),
    S(["-w", "fields", "get", "foo"], env={"ETCDCTL_WRITE_OUT": "json"}),
    S(["--endpoints={ep}", "get", "foo"], env={"ETCDCTL_ENDPOINTS": ""}, endpoint=False),
    S(["put"], env={"ETCDCTL_WRITE_OUT": "json", "ETCDCTL_FOO": "x"}),
    S(["endpoint", "health", "-w", "json"], env={"ETCDCTL_FOO": "x"}),
    S(["endpoint", "health"], env={"ETCDCTL_WRITE_OUT": "fields", "ETCDCTL_COMMAND_TIMEOUT": "0s"}),
    S(["endpoint", "health", "--cluster", "-w", "json"]),
    S(["--endpoints", "{dead}", FAST, "endpoint", "health", "--cluster"], endpoint=False),
    S(["--user", "root:pw", "get", "foo"]),
    S(["--user", "root", "--password", "pw", "put", "foo", "x"]),
    S(["--user", "root:x", "endpoint", "health", "-w", "json"]),
    S(["--password", "pw", "get", "foo"]),
    S(["--cert=", "get", "foo"]),
    S(["--cacert", "/nonexistent/ca.pem", "get", "foo"]),
]

AUTH = [
    S(["user", "add", "root:rootpw"], setup=True),
    S(["user", "add", "alice:apw"], setup=True),
    S(["role", "add", "r"], setup=True),
    S(["role", "grant-permission", "r", "readwrite", "a/", "--prefix"], setup=True),
    S(["user", "grant-role", "alice", "r"], setup=True),
    S(["auth", "enable"], setup=True),
    S(["get", "foo"]),
    S(["--user", "root:rootpw", "put", "foo", "bar"]),
    S(["--user", "root:wrong", "get", "foo"]),
    S(["--user", "nobody:x", "get", "foo"]),
    S(["--user", "alice:apw", "put", "a/1", "x"]),
    S(["--user", "alice:apw", "get", "foo"]),
    S(["--user", "alice", "--password", "apw", "get", "a/", "--prefix"]),
    S(["--user", "alice:apw", "txn"], stdin=b'\n\nget foo\n\n'),
    S(["--user", "alice:apw", "endpoint", "health"]),
    S(["--user", "alice:apw", "-w", "json", "endpoint", "health"]),
    S(["endpoint", "health"]),
    S(["-w", "table", "endpoint", "health"]),
    S(["--user", "root:wrong", "-w", "table", "endpoint", "health"]),
    S(["--user", "alice", "get", "a/", "--prefix"], stdin=b"apw\n"),
    S(["--user", "root:rootpw", "compaction", "2"]),
    S(["--endpoints", "{dead}", "--dial-timeout=300ms", "--user", "root:rootpw", "get", "foo"],
      endpoint=False),
]

SCRIPTS = {
    "kv": KV,
    "formats": FORMATS,
    "txn": TXN,
    "flags": FLAGS,
    "auth": AUTH,
}
