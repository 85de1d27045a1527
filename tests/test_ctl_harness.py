"""Differential harness: run a command script with one etcdctl-like tool against
one server, and normalise the results so that two runs can be compared.

Reusable by later tests (e.g. real etcdctl against petcd vs against etcd):

    from tests.test_ctl_harness import ETCDCTL, PETCDCTL, run_script, assert_same_runs
    from tests.test_ctl_scripts import SCRIPTS

    a = run_script(SCRIPTS["kv"], ETCDCTL, etcd_ep)
    b = run_script(SCRIPTS["kv"], ETCDCTL, petcd_ep)
    assert_same_runs(SCRIPTS["kv"], a, b, etcd_ep, petcd_ep)

Placeholders in a step's arguments, stdin and environment values:
  {ep}    the server endpoint (host:port)
  {url}   the server endpoint as http://host:port
  {dead}  an endpoint nobody listens on (connection refused)
Unless a step sets ``endpoint=False``, ``--endpoints={ep}`` is put first.

The normaliser masks only what legitimately differs between two correct runs:
cluster and member IDs, raft terms, durations (health "took"), the timestamps
and random client IDs of the client's log lines, and each run's own server
address.  Its self-tests are at the end of this module.  ``-w protobuf``
output is compared as the parsed message with header IDs/term zeroed (steps
name the message type in ``pb``); two etcd servers from tests/etcd_fixture.py
share member and cluster IDs, so against etcd the raw bytes agree as well.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

from tests.etcd_fixture import ETCDCTL as ETCDCTL_BIN

ETCDCTL = [ETCDCTL_BIN]
_script = os.path.join(os.path.dirname(sys.executable), "petcdctl")
PETCDCTL = [_script] if os.path.exists(_script) else [sys.executable, "-m", "petcd.rpc.ctl.main"]


@dataclass
class Step:
    args: list
    stdin: bytes = b""
    env: dict = field(default_factory=dict)
    endpoint: bool = True
    pb: str | None = None  # response message name when the step prints -w protobuf
    setup: bool = False  # run with the real etcdctl whatever the tool (not compared)
    timeout: float = 30.0

    def describe(self) -> str:
        return " ".join(a if isinstance(a, str) else repr(a) for a in self.args)


@dataclass
class Result:
    rc: int
    stdout: bytes
    stderr: bytes


def _subst(v, ctx: dict):
    if isinstance(v, bytes):
        for k, val in ctx.items():
            v = v.replace(("{%s}" % k).encode(), val.encode())
        return v
    for k, val in ctx.items():
        v = v.replace("{%s}" % k, val)
    return v


def base_env() -> dict:
    """A clean environment: no ETCDCTL_* leaks in from the caller."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for k in ("HOME", "LANG", "LC_ALL", "TZ"):
        if k in os.environ:
            env[k] = os.environ[k]
    return env


def run_step(step: Step, tool: list, endpoint: str, dead: str) -> Result:
    ctx = {"ep": endpoint, "url": "http://" + endpoint, "dead": dead}
    args = [_subst(a, ctx) for a in step.args]
    if step.endpoint:
        args = ["--endpoints=" + endpoint] + args
    env = base_env()
    for k, v in step.env.items():
        env[k] = _subst(v, ctx)
    exe = ETCDCTL if step.setup else tool
    p = subprocess.run(exe + args, input=_subst(step.stdin, ctx), capture_output=True, env=env,
                       timeout=step.timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def run_script(script: list, tool: list, endpoint: str, dead: str = "127.0.0.1:1") -> list:
    return [run_step(step, tool, endpoint, dead) for step in script]


# ------------------------------------------------------------------ normaliser

# A Go time.Duration as printed; "µs" is the two UTF-8 bytes \xc2\xb5 then "s".
_DURATION = rb"[0-9]+(?:\.[0-9]+)?(?:ns|\xc2\xb5s|ms|s|m[0-9.]+s|h[0-9hm.]+s)"
# The same pattern over text (table cells are decoded first): built from the decoded bytes, not
# from the pattern's source, whose \xc2\xb5 escapes would match two other characters.
_DURATION_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:ns|\u00b5s|ms|s|m[0-9.]+s|h[0-9hm.]+s)")
_STDERR_MASKS = [
    (re.compile(rb'"ts":"[0-9T:.+\-Z]+"'), b'"ts":"<ts>"'),
    (re.compile(rb"client-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
     b"client-<uuid>"),
    (re.compile(rb"(?m)^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6} ([A-Z]) \| "),
     rb"<time> \1 | "),
    (re.compile(rb"took = " + _DURATION), b"took = <duration>"),
]
_STDOUT_MASKS = [
    (re.compile(rb'"cluster_id":[0-9]+'), b'"cluster_id":<id>'),
    (re.compile(rb'"member_id":[0-9]+'), b'"member_id":<id>'),
    (re.compile(rb'"raft_term":[0-9]+'), b'"raft_term":<term>'),
    (re.compile(rb'(?m)^"ClusterID" : [0-9]+$'), b'"ClusterID" : <id>'),
    (re.compile(rb'(?m)^"MemberID" : [0-9]+$'), b'"MemberID" : <id>'),
    (re.compile(rb'(?m)^"RaftTerm" : [0-9]+$'), b'"RaftTerm" : <term>'),
    (re.compile(rb'"took":"' + _DURATION + rb'"'), b'"took":"<duration>"'),
    (re.compile(rb'(?m)^"Took" : ' + _DURATION + rb"$"), b'"Took" : <duration>'),
    (re.compile(rb"took = " + _DURATION), b"took = <duration>"),
]


def _normalise_table(out: bytes, endpoint: str) -> bytes:
    """Mask durations (and the server address) inside a tablewriter table.

    Column widths follow the cells' lengths, so the table is parsed, checked
    to be exactly what the renderer produces for its cells (so layout
    differences are not hidden) and re-rendered with those cells masked.
    """
    from petcd.rpc.ctl.printer_table import render

    text = out.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if len(lines) < 5 or not lines[0].startswith("+-") or lines[-1] != "":
        return out
    rows = []
    for ln in lines[:-1]:
        if ln.startswith("+"):
            continue
        cells = [c.strip() for c in ln[1:-1].split("|")]
        if len(rows) > 1 and cells[0] == "":  # a wrapped cell's continuation line
            rows[-1] = [(a + " " + b) if b else a for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    header = [h.lower() for h in rows[0]]
    body = rows[1:]
    if render(header, body) != text:
        return out
    masked = [[_DURATION_TEXT.sub("<duration>", c) if _DURATION_TEXT.fullmatch(c) else c.replace(endpoint, "<ep>")
               for c in r] for r in body]
    return render(header, masked).encode("utf-8", "surrogateescape")


def _normalise_protobuf(out: bytes, message: str) -> bytes:
    from petcd.rpc.pb import rpc_pb2

    msg = getattr(rpc_pb2, message)()
    try:
        msg.ParseFromString(out)
    except Exception:  # noqa: BLE001 - not parseable: compare raw bytes
        return out
    if msg.SerializeToString() != out:
        return out

    def scrub(m):
        for fd, v in m.ListFields():
            if fd.name == "header":
                v.cluster_id = 0
                v.member_id = 0
                v.raft_term = 0
            elif fd.message_type is not None:
                for item in (v if _is_repeated(fd) else [v]):
                    scrub(item)
    scrub(msg)
    return b"<protobuf " + message.encode() + b"> " + repr(msg).encode()


def _is_repeated(fd) -> bool:
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return rep
    return fd.label == fd.LABEL_REPEATED


# petcdctl names itself (usage lines, errors about its usage) and gives its own version, and its help
# leaves out the etcdctl commands it does not offer; everything else must be etcdctl's, byte for byte.
_TOOL_MASKS = [
    (re.compile(rb"petcdctl"), b"etcdctl"),
    (re.compile(rb"etcdctl version: \S+"), b"etcdctl version: <version>"),
    (re.compile(rb"\nVERSION:\n\t\S+\n"), b"\nVERSION:\n\t<version>\n"),
    (re.compile(rb"(?m)^\t(make-mirror|migrate|check perf|check datascale|completion [a-z]+)\t.*\n"), b""),
]


def normalise(step: Step, r: Result, endpoint: str = "") -> Result:
    """Mask IDs, raft term, durations, log timestamps/client IDs and the
    server's own address (each run has its own server), and the tool's own name and version."""
    out, err = r.stdout, r.stderr
    for rx, rep in _TOOL_MASKS:
        out, err = rx.sub(rep, out), rx.sub(rep, err)
    for rx, rep in _STDERR_MASKS:
        err = rx.sub(rep, err)
    if step.pb:
        out = _normalise_protobuf(out, step.pb)
    else:
        for rx, rep in _STDOUT_MASKS:
            out = rx.sub(rep, out)
        if out.startswith(b"+-"):
            out = _normalise_table(out, endpoint)
    if endpoint:
        ep = endpoint.encode()
        out = out.replace(ep, b"<ep>")
        err = err.replace(ep, b"<ep>")
    return Result(r.rc, out, err)


def diff_runs(script: list, expected: list, actual: list, expected_endpoint: str = "",
              actual_endpoint: str = "") -> list:
    """Human-readable differences between two runs of ``script``."""
    problems = []
    for i, (step, a, b) in enumerate(zip(script, expected, actual)):
        if step.setup:
            if a.rc != 0 or b.rc != 0:
                problems.append("step %d (setup) %s failed: %r / %r" % (i, step.describe(), a, b))
            continue
        na, nb = normalise(step, a, expected_endpoint), normalise(step, b, actual_endpoint)
        if na != nb:
            problems.append(
                "step %d: %s\n  expected rc=%d stdout=%r stderr=%r\n  actual   rc=%d stdout=%r stderr=%r"
                % (i, step.describe(), na.rc, na.stdout, na.stderr, nb.rc, nb.stdout, nb.stderr))
    return problems


def assert_same_runs(script: list, expected: list, actual: list, expected_endpoint: str = "",
                     actual_endpoint: str = "") -> None:
    problems = diff_runs(script, expected, actual, expected_endpoint, actual_endpoint)
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ self-tests
# The normaliser must hide exactly IDs, raft terms, durations, log timestamps,
# client IDs and the server address, and nothing else.

_EP_A, _EP_B = "127.0.0.1:40001", "127.0.0.1:50002"


def _same(step, a: Result, b: Result) -> bool:
    return normalise(step, a, _EP_A) == normalise(step, b, _EP_B)


def test_normaliser_masks_only_volatile_fields():
    step = Step(["get", "k"])
    a = Result(0, b'{"header":{"cluster_id":1,"member_id":2,"revision":7,"raft_term":2}}\n'
                  b'"ClusterID" : 1\n"MemberID" : 2\n"Revision" : 7\n"RaftTerm" : 2\n',
               b'{"level":"warn","ts":"2026-01-01T00:00:00.123Z","caller":"x",'
               b'"target":"endpoint://client-0b0c8a36-1f1e-4f55-9d3c-35c6a8d9d2f1/127.0.0.1:40001"}\n'
               b"2026-01-01 10:00:00.123456 W | pkg/flags: x\n"
               b"127.0.0.1:40001 is healthy: successfully committed proposal: took = 1.5ms\n")
    b = Result(0, b'{"header":{"cluster_id":9,"member_id":8,"revision":7,"raft_term":5}}\n'
                  b'"ClusterID" : 9\n"MemberID" : 8\n"Revision" : 7\n"RaftTerm" : 5\n',
               b'{"level":"warn","ts":"2027-02-02T11:11:11.999+0100","caller":"x",'
               b'"target":"endpoint://client-ffffffff-1f1e-4f55-9d3c-35c6a8d9d2f1/127.0.0.1:50002"}\n'
               b"2027-12-31 23:59:59.000001 W | pkg/flags: x\n"
               b"127.0.0.1:50002 is healthy: successfully committed proposal: took = 850\xc2\xb5s\n")
    assert _same(step, a, b)


def test_normaliser_keeps_everything_else():
    step = Step(["get", "k"])
    base = Result(0, b'{"header":{"cluster_id":1,"revision":7}}\nfoo\n', b"Error: x\n")
    for other in (
        Result(1, base.stdout, base.stderr),
        Result(0, b'{"header":{"cluster_id":1,"revision":8}}\nfoo\n', base.stderr),
        Result(0, b'{"header":{"cluster_id":1,"revision":7}}\nfoo \n', base.stderr),
        Result(0, base.stdout, b"Error: y\n"),
        Result(0, base.stdout.replace(b"foo", b"127.0.0.1:1"), base.stderr),
    ):
        assert not _same(step, base, other)


def test_normaliser_tables_and_protobuf():
    from petcd.rpc.ctl.printer_table import render
    from petcd.rpc.pb import rpc_pb2

    step = Step(["-w", "table", "endpoint", "health"])
    ta = render(["endpoint", "health", "took", "error"], [[_EP_A, "true", "1.2ms", ""]])
    tb = render(["endpoint", "health", "took", "error"], [[_EP_B, "true", "12.345678ms", ""]])
    tc = render(["endpoint", "health", "took", "error"], [[_EP_B, "false", "12.345678ms", ""]])
    assert _same(step, Result(0, ta.encode(), b""), Result(0, tb.encode(), b""))
    assert not _same(step, Result(0, ta.encode(), b""), Result(0, tc.encode(), b""))
    # Sub-millisecond durations print in microseconds ("749.989µs"): masked in tables too.
    tu = render(["endpoint", "health", "took", "error"], [[_EP_B, "true", "749.989\u00b5s", ""]])
    assert _same(step, Result(0, ta.encode(), b""), Result(0, tu.encode(), b""))
    skewed = ta.replace("|   true |", "| true   |").encode()
    assert not _same(step, Result(0, ta.encode(), b""), Result(0, skewed, b""))

    step = Step(["-w", "protobuf", "get", "k"], pb="RangeResponse")

    def pb(cluster, rev, value):
        r = rpc_pb2.RangeResponse(count=1)
        r.header.cluster_id, r.header.member_id, r.header.revision, r.header.raft_term = cluster, 3, rev, 2
        r.kvs.add(key=b"k", value=value)
        return Result(0, r.SerializeToString(), b"")

    assert _same(step, pb(11, 5, b"v"), pb(99, 5, b"v"))
    assert not _same(step, pb(11, 5, b"v"), pb(11, 6, b"v"))
    assert not _same(step, pb(11, 5, b"v"), pb(11, 5, b"w"))
