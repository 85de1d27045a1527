"""``txn``: read compares and requests from stdin (ctlv3/command/txn_command.go).

The syntax, quirks included, is etcdctl 3.4's:
  * a section ends at an empty line; input ending before that is ``Error: EOF``;
  * a compare is ``<target>("<key>") <op> "<value>"`` parsed with Go's
    ``fmt.Sscanf(rest, "%q) %s %q")``; targets ver/version, c/create, m/mod,
    val/value, lease (which 3.4 cannot build: it panics);
  * a request line is split by etcdctl's argify regexp (double quotes are Go
    string literals; a single-quoted word is sliced with the *number of words*,
    a 3.4 bug reproduced here) and parsed by fresh put/get/del commands.
"""

from __future__ import annotations

import re
import sys

from . import errors, goutil, kv_commands, pflag
from .cobra import Command

_SPACE_RANGES = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
                 (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
                 (0x3000, 0x3000)]


def _is_space(r: int) -> bool:
    return any(lo <= r <= hi for lo, hi in _SPACE_RANGES)


def trim_space(line: bytes) -> bytes:
    """strings.TrimSpace (unicode.IsSpace runes off both ends)."""
    runes = list(goutil._utf8_runes(line))  # noqa: SLF001
    start = 0
    k = 0
    while k < len(runes) and not (runes[k][1] == 1 and runes[k][0] == 0xFFFD) \
            and _is_space(runes[k][0]):
        start += runes[k][1]
        k += 1
    end = len(line)
    j = len(runes) - 1
    while j >= k and not (runes[j][1] == 1 and runes[j][0] == 0xFFFD) and _is_space(runes[j][0]):
        end -= runes[j][1]
        j -= 1
    return line[start:end]


class _ScanError(Exception):
    pass


class _Scanner:
    """fmt.Sscanf's rune reader over a Go string."""

    def __init__(self, data: bytes):
        self.runes = [r for r, _ in goutil._utf8_runes(data)]  # noqa: SLF001
        self.pos = 0

    def get(self):
        if self.pos >= len(self.runes):
            self.pos += 1
            return None
        r = self.runes[self.pos]
        self.pos += 1
        return r

    def unread(self):
        self.pos -= 1

    def must(self):
        r = self.get()
        if r is None:
            raise _ScanError("unexpected EOF")
        return r

    def skip_space(self):
        while True:
            r = self.get()
            if r is None:
                self.unread()
                return
            if r == 0x0A:
                raise _ScanError("unexpected newline")
            if not _is_space(r):
                self.unread()
                return

    def quoted(self) -> bytes:
        self.skip_space()
        if self.pos >= len(self.runes):
            raise _ScanError("unexpected EOF")
        q = self.get()
        if q == 0x60:  # `
            buf = []
            while True:
                r = self.must()
                if r == q:
                    break
                buf.append(r)
            return "".join(map(chr, buf)).encode("utf-8", "surrogatepass")
        if q == 0x22:  # "
            buf = [q]
            while True:
                r = self.must()
                buf.append(r)
                if r == 0x5C:
                    buf.append(self.must())
                elif r == q:
                    break
            lit = "".join(map(chr, buf)).encode("utf-8", "surrogatepass")
            try:
                return goutil.unquote(lit)
            except goutil.GoError as e:
                raise _ScanError(str(e)) from None
        self.unread()
        raise _ScanError("expected quoted string")

    def word(self) -> bytes:
        self.skip_space()
        if self.pos >= len(self.runes):
            raise _ScanError("unexpected EOF")
        buf = []
        while True:
            r = self.get()
            if r is None:
                self.unread()
                break
            if _is_space(r):
                self.unread()
                break
            buf.append(r)
        return "".join(map(chr, buf)).encode("utf-8", "surrogatepass")

    def literal(self, c: int):
        r = self.must()
        if r != c:
            self.unread()
            raise _ScanError("input does not match format")

    def space(self):
        r = self.get()
        if r is not None and not _is_space(r):
            raise _ScanError("expected space in input to match format")
        if r == 0x0A:
            raise _ScanError("newline in input does not match format")
        while r is not None and _is_space(r) and r != 0x0A:
            r = self.get()
        if r is not None:
            self.unread()
        elif self.pos > len(self.runes):
            self.pos = len(self.runes)


def scan_compare(rest: bytes):
    """fmt.Sscanf(rest, "%q) %s %q", &key, &op, &val): (n, key, op, val)."""
    sc = _Scanner(rest)
    vals = [b"", b"", b""]
    n = 0
    try:
        vals[0] = sc.quoted()
        n = 1
        sc.literal(0x29)  # ')'
        sc.space()
        vals[1] = sc.word()
        n = 2
        sc.space()
        vals[2] = sc.quoted()
        n = 3
    except _ScanError:
        pass
    return n, vals[0], vals[1], vals[2]


# Compare.CompareResult values
_RESULTS = {b"=": 0, b"!=": 3, b">": 1, b"<": 2}


def parse_compare(line: bytes):
    from petcd.rpc.pb import rpc_pb2

    text = line.decode("utf-8", "surrogateescape")
    if b"(" not in line:
        errors.exit_with_error(errors.EXIT_INVALID_INPUT, "malformed comparison: %s" % text)
    target, rest = line.split(b"(", 1)
    n, key, op, val = scan_compare(rest)
    if n != 3:
        errors.exit_with_error(
            errors.EXIT_INVALID_INPUT, "malformed comparison: %s; got %s(%s) %s %s" % (
                text, target.decode("utf-8", "surrogateescape"), goutil.quote(key),
                op.decode("utf-8", "surrogateescape"), goutil.quote(val)))
    t = target.decode("utf-8", "surrogateescape")
    int_targets = {"ver": "version", "version": "version", "c": "create_revision",
                   "create": "create_revision", "m": "mod_revision", "mod": "mod_revision"}
    cmp = rpc_pb2.Compare(key=key)
    if t in int_targets:
        try:
            v = goutil.parse_int(val.decode("utf-8", "surrogateescape"), 10, 64)
        except goutil.GoError:
            errors.exit_with_error(errors.EXIT_INVALID_INPUT, "invalid txn compare request: %s" % text)
        _set_result(cmp, op)
        field = int_targets[t]
        cmp.target = {"version": rpc_pb2.Compare.VERSION, "create_revision": rpc_pb2.Compare.CREATE,
                      "mod_revision": rpc_pb2.Compare.MOD}[field]
        setattr(cmp, field, v)
    elif t in ("val", "value"):
        _set_result(cmp, op)
        cmp.target = rpc_pb2.Compare.VALUE
        cmp.value = val
    elif t == "lease":
        # etcdctl 3.4 passes the string on to clientv3.Compare, which panics.
        _set_result(cmp, op)
        errors.go_panic("bad value")
    else:
        errors.exit_with_error(errors.EXIT_INVALID_INPUT,
                               "malformed comparison: %s (unknown target %s)" % (text, t))
    return cmp


def _set_result(cmp, op: bytes) -> None:
    if op not in _RESULTS:
        errors.go_panic("Unknown result op")
    cmp.result = _RESULTS[op]


# ---------------------------------------------------------------------- requests

_WS = r"\t\n\f\r "
_ARG_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^\'"%s][^%s]*[^\'"%s]?' % (_WS, _WS, _WS))


def argify(line: bytes) -> list[bytes]:
    text = line.decode("utf-8", "surrogateescape")
    args = [a.encode("utf-8", "surrogateescape") for a in _ARG_RE.findall(text)]
    for i, a in enumerate(args):
        if not a:
            continue
        if a[:1] == b"'":
            lo, hi = 1, len(args) - 1  # etcdctl 3.4 slices with len(args), not len(args[i])
            if hi > len(a):
                errors.go_panic("runtime error: slice bounds out of range [:%d] with length %d"
                                % (hi, len(a)))
            if lo > hi:
                errors.go_panic("runtime error: slice bounds out of range [%d:%d]" % (lo, hi))
            args[i] = a[lo:hi]
        elif a[:1] == b'"':
            sc = _Scanner(a)
            try:
                args[i] = sc.quoted()
            except _ScanError as e:
                errors.exit_with_error(errors.EXIT_INVALID_INPUT, str(e))
    return args


def _no_stdin() -> bytes:
    # bufio has already drained the (small) piped input.
    return b""


def parse_request_union(line: bytes):
    from petcd.rpc.pb import rpc_pb2

    text = line.decode("utf-8", "surrogateescape")
    args = [a.decode("utf-8", "surrogateescape") for a in argify(line)]
    if len(args) < 2:
        errors.exit_with_error(errors.EXIT_INVALID_INPUT, "invalid txn compare request: %s" % text)
    root = Command("")
    root.add(kv_commands.new_put_command(run=True), kv_commands.new_get_command(run=True),
             kv_commands.new_del_command(run=True), Command("help [command]", run=True),
             Command("completion", run=True))
    cmd, rest, err = root.find(args)
    if err is not None or cmd is root:
        errors.exit_with_error(errors.EXIT_INVALID_INPUT, "invalid txn request: %s" % text)
    if cmd.name in ("help", "completion"):
        errors.err("fatal error: all goroutines are asleep - deadlock!\n")
        raise errors.CtlExit(2)
    fs = cmd.flags()
    try:
        positional = fs.parse(rest)
    except pflag.HelpRequested:
        positional = None
    except pflag.FlagError:
        errors.err(cmd.default_usage() + "\n")
        errors.exit_with_error(errors.EXIT_INVALID_INPUT, "invalid txn request: %s" % text)
    if positional is None or cmd.help_flag.v:
        errors.err("fatal error: all goroutines are asleep - deadlock!\n")
        raise errors.CtlExit(2)
    if cmd.name == "put":
        return rpc_pb2.RequestOp(request_put=kv_commands.get_put_op(cmd, positional, _no_stdin))
    if cmd.name == "get":
        return rpc_pb2.RequestOp(request_range=kv_commands.get_get_op(cmd, positional))
    return rpc_pb2.RequestOp(request_delete_range=kv_commands.get_del_op(cmd, positional))


# ---------------------------------------------------------------------- command

class _LineReader:
    """bufio.Reader.ReadString('\\n') over stdin."""

    def __init__(self, stream):
        self.stream = stream

    def read_line(self) -> bytes:
        line = self.stream.readline()
        if not line.endswith(b"\n"):
            errors.exit_with_error(errors.EXIT_INVALID_INPUT, "EOF")
        return line


def new_txn_command(run=None) -> Command:
    return Command("txn [options]", "Txn processes all the requests in one transaction", "", run,
                   flags=[pflag.Flag("interactive", pflag.BoolValue(False),
                                     "Input transaction in interactive mode", "i")])


def txn_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "txn command does not accept argument")
    interactive = cmd.local.lookup("interactive").v
    reader = _LineReader(sys.stdin.buffer)
    client = ctl.must_client_from_cmd(cmd)

    def prompt(s: str) -> None:
        if interactive:
            errors.out(s + "\n")

    prompt("compares:")
    compares = []
    while True:
        line = trim_space(reader.read_line())
        if not line:
            break
        compares.append(parse_compare(line))
    ops = []
    for title in ("success requests (get, put, del):", "failure requests (get, put, del):"):
        prompt(title)
        section = []
        while True:
            line = trim_space(reader.read_line())
            if not line:
                break
            section.append(parse_request_union(line))
        ops.append(section)
    req = rpc_pb2.TxnRequest(compare=compares, success=ops[0], failure=ops[1])
    resp = ctl.rpc(client, "KV", "Txn", req, None, repeatable=False)
    ctl.display.txn(resp)

