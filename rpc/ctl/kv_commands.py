"""put, get and del: flag definitions, argument checks and request building
(ctlv3/command/{put,get,del}_command.go), shared with txn's request parser."""

from __future__ import annotations

import sys

from . import errors, goutil, pflag
from .cobra import Command

PUT_LONG = """
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
"""


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def prefix_range_end(key: bytes) -> bytes:
    """clientv3.GetPrefixRangeEnd."""
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[:i + 1])
    return b"\x00"


# --------------------------------------------------------------------------- put

def new_put_command(run=None) -> Command:
    return Command(
        "put [options] <key> <value> (<value> can also be given from stdin)",
        "Puts the given key into the store", PUT_LONG, run,
        flags=[
            pflag.string_flag("lease", "0", "lease ID (in hexadecimal) to attach to the key"),
            pflag.bool_flag("prev-kv", False, "return the previous key-value pair before modification"),
            pflag.bool_flag("ignore-value", False, "updates the key using its current value"),
            pflag.bool_flag("ignore-lease", False, "updates the key using its current lease"),
        ])


def read_stdin() -> bytes:
    try:
        return sys.stdin.buffer.read()
    except (OSError, ValueError):
        return b""


def get_put_op(cmd: Command, args: list[str], stdin_reader=read_stdin):
    from petcd.rpc.pb import rpc_pb2

    fs = cmd.local
    msg = "put command needs 1 argument and input from stdin or 2 arguments"
    if len(args) == 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, msg)
    key = args[0]
    ignore_val = fs.lookup("ignore-value").v
    if ignore_val and len(args) > 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS,
                               "put command needs only 1 argument when 'ignore-value' is set")
    value = b""
    if not ignore_val:
        if len(args) > 1:
            value = _b(args[1])
        else:
            value = stdin_reader()
            if value == b"":
                errors.exit_with_error(errors.EXIT_BAD_ARGS, msg)
    lease_str = fs.lookup("lease").v
    try:
        lease = goutil.parse_int(lease_str, 16, 64)
    except goutil.GoError as e:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "bad lease ID (%s), expecting ID in Hex" % e)
    return rpc_pb2.PutRequest(key=_b(key), value=value, lease=lease,
                              prev_kv=fs.lookup("prev-kv").v, ignore_value=ignore_val,
                              ignore_lease=fs.lookup("ignore-lease").v)


# --------------------------------------------------------------------------- get

def new_get_command(run=None) -> Command:
    return Command(
        "get [options] <key> [range_end]", "Gets the key or a range of keys", "", run,
        flags=[
            pflag.string_flag("consistency", "l", "Linearizable(l) or Serializable(s)"),
            pflag.string_flag("order", "", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
            pflag.string_flag("sort-by", "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
            pflag.int64_flag("limit", 0, "Maximum number of results"),
            pflag.bool_flag("prefix", False, "Get keys with matching prefix"),
            pflag.bool_flag("from-key", False, "Get keys that are greater than or equal to the given key using byte compare"),
            pflag.int64_flag("rev", 0, "Specify the kv revision"),
            pflag.bool_flag("keys-only", False, "Get only the keys"),
            pflag.bool_flag("print-value-only", False, 'Only write values when using the "simple" output format'),
        ])


# RangeRequest.SortOrder / SortTarget enum values
_SORT_ORDERS = {"ASCEND": 1, "DESCEND": 2, "": 0}
_SORT_TARGETS = {"CREATE": 2, "KEY": 0, "MODIFY": 3, "VALUE": 4, "VERSION": 1}
_SORT_TARGETS[""] = 0


def get_get_op(cmd: Command, args: list[str]):
    from petcd.rpc.pb import rpc_pb2

    fs = cmd.local
    prefix, from_key = fs.lookup("prefix").v, fs.lookup("from-key").v
    if len(args) == 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS,
                               "get command needs one argument as key and an optional argument as range_end")
    if prefix and from_key:
        errors.exit_with_error(errors.EXIT_BAD_ARGS,
                               "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    req = rpc_pb2.RangeRequest()
    consistency = fs.lookup("consistency").v
    if consistency == "s":
        req.serializable = True
    elif consistency != "l":
        errors.exit_with_error(errors.EXIT_BAD_FEATURE,
                               "unknown consistency flag %s" % goutil.quote(_b(consistency)))
    key = _b(args[0])
    end = b""
    if len(args) > 1:
        if prefix or from_key:
            errors.exit_with_error(errors.EXIT_BAD_ARGS,
                                   "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
        end = _b(args[1])
    req.limit = fs.lookup("limit").v
    rev = fs.lookup("rev").v
    if rev > 0:
        req.revision = rev
    order_s = fs.lookup("order").v
    if order_s.upper() not in _SORT_ORDERS:
        errors.exit_with_error(errors.EXIT_BAD_FEATURE, "bad sort order %s" % order_s)
    order = _SORT_ORDERS[order_s.upper()]
    target_s = fs.lookup("sort-by").v
    if target_s.upper() not in _SORT_TARGETS:
        errors.exit_with_error(errors.EXIT_BAD_FEATURE, "bad sort target %s" % target_s)
    target = _SORT_TARGETS[target_s.upper()]
    if target == 0 and order == 1:  # KEY, ASCEND: clientv3.WithSort drops the redundant order
        order = 0
    req.sort_order = order
    req.sort_target = target
    if prefix:
        if len(key) == 0:
            key, end = b"\x00", b"\x00"
        else:
            end = prefix_range_end(key)
    if from_key:
        if len(key) == 0:
            key = b"\x00"
        end = b"\x00"
    req.key = key
    req.range_end = end
    req.keys_only = fs.lookup("keys-only").v
    return req


# --------------------------------------------------------------------------- del

def new_del_command(run=None) -> Command:
    return Command(
        "del [options] <key> [range_end]",
        "Removes the specified key or range of keys [key, range_end)", "", run,
        flags=[
            pflag.bool_flag("prefix", False, "delete keys with matching prefix"),
            pflag.bool_flag("prev-kv", False, "return deleted key-value pairs"),
            pflag.bool_flag("from-key", False, "delete keys that are greater than or equal to the given key using byte compare"),
        ])


def get_del_op(cmd: Command, args: list[str]):
    from petcd.rpc.pb import rpc_pb2

    fs = cmd.local
    prefix, from_key = fs.lookup("prefix").v, fs.lookup("from-key").v
    if len(args) == 0 or len(args) > 2:
        errors.exit_with_error(errors.EXIT_BAD_ARGS,
                               "del command needs one argument as key and an optional argument as range_end")
    if prefix and from_key:
        errors.exit_with_error(errors.EXIT_BAD_ARGS,
                               "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    key = _b(args[0])
    end = b""
    if len(args) > 1:
        if prefix or from_key:
            errors.exit_with_error(errors.EXIT_BAD_ARGS,
                                   "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
        end = _b(args[1])
    if prefix:
        if len(key) == 0:
            key, end = b"\x00", b"\x00"
        else:
            end = prefix_range_end(key)
    if from_key:
        if len(key) == 0:
            key = b"\x00"
        end = b"\x00"
    return rpc_pb2.DeleteRangeRequest(key=key, range_end=end, prev_kv=fs.lookup("prev-kv").v)


# --------------------------------------------------------------------------- run

def put_command_func(ctl, cmd: Command, args: list[str]) -> None:
    req = get_put_op(cmd, args)
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    resp = ctl.rpc(client, "KV", "Put", req, deadline, repeatable=False)
    ctl.display.put(resp)


def get_command_func(ctl, cmd: Command, args: list[str]) -> None:
    req = get_get_op(cmd, args)
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    resp = ctl.rpc(client, "KV", "Range", req, deadline, repeatable=True)
    if cmd.local.lookup("print-value-only").v:
        from .printer_simple import SimplePrinter
        if not isinstance(ctl.display, SimplePrinter):
            errors.exit_with_error(errors.EXIT_BAD_ARGS,
                                   "print-value-only is only for `--write-out=simple`")
        ctl.display.value_only = True
    ctl.display.get(resp)


def del_command_func(ctl, cmd: Command, args: list[str]) -> None:
    req = get_del_op(cmd, args)
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    resp = ctl.rpc(client, "KV", "DeleteRange", req, deadline, repeatable=False)
    ctl.display.delete(resp)
