"""``watch`` (ctlv3/command/watch_command.go as built into etcdctl 3.4.23).

What is reproduced, quirks included:
  * the arguments are re-read from the raw command line (os.Args) after the
    first "watch" word, to find ``--`` and the command to run per event;
  * ETCDCTL_WATCH_KEY / ETCDCTL_WATCH_RANGE_END stand for the key and
    range_end (and are not warned about as unknown ETCDCTL_ variables);
  * ``-i`` reads ``watch ...`` and ``progress`` lines from stdin; each watch
    line is parsed by a fresh flag set of the watch command alone (so global
    flags are refused) and prints from its own thread; EOF ends the program
    (exit 3);
  * a command given after ``--`` runs once per event with ETCD_WATCH_*
    variables (Go %q quoting); its failure ends etcdctl with exit 1;
  * a watch the server cancels prints ``watch was canceled (...)``, and once
    the (only) watch is closed, ``Error: watch is canceled by the server``
    (exit 5);
  * there is no --progress-notify flag in 3.4.23, and SIGINT/SIGTERM simply
    kill the process (Go's default disposition), so the output is flushed
    after every response.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from . import errors, goutil, pflag
from .cobra import Command
from .env import ORIGINAL_ENVIRON

ERR_BAD_ARGS_NUM = "bad number of arguments"
ERR_BAD_ARGS_NUM_CONFLICT_ENV = "bad number of arguments (found conflicting environment key)"
ERR_BAD_ARGS_NUM_SEPARATOR = "bad number of arguments (found separator --, but no commands)"
ERR_BAD_ARGS_INTERACTIVE_WATCH = "args[0] must be 'watch' for interactive calls"



def watch_flags() -> list[pflag.Flag]:
    return [
        pflag.Flag("interactive", pflag.BoolValue(False), "Interactive mode", "i"),
        pflag.bool_flag("prefix", False, "Watch on a prefix if prefix is set"),
        pflag.int64_flag("rev", 0, "Revision to start watching"),
        pflag.bool_flag("prev-kv", False, "get the previous key-value pair before the event happens"),
    ]


def new_watch_command(run) -> Command:
    return Command("watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
                   "Watches events stream on keys or prefixes", run=run, flags=watch_flags())


def default_signals() -> None:
    """Go's default disposition: SIGINT/SIGTERM terminate the process."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _Opts:
    """The package-level flag variables (watchPrefix, watchRev, watchPrevKey)."""

    def __init__(self, prefix=False, rev=0, prev_kv=False):
        self.prefix, self.rev, self.prev_kv = prefix, rev, prev_kv


class _ArgsError(Exception):
    pass


def parse_watch_args(os_args: list[str], command_args: list[str], env_key: str, env_range: str,
                     interactive: bool, opts: _Opts):
    """parseWatchArgs: (watch args, exec args); raises _ArgsError."""
    raw = list(os_args)
    watch_args = list(command_args)
    for i, a in enumerate(raw):
        if a == "watch":
            raw = raw[i + 1:]
            break
    if interactive:
        if watch_args[0] != "watch":
            opts.prefix, opts.rev, opts.prev_kv = False, 0, False
            raise _ArgsError(ERR_BAD_ARGS_INTERACTIVE_WATCH)
        watch_args = watch_args[1:]

    exec_idx, exec_exist = 0, False
    if not interactive:
        for exec_idx, a in enumerate(raw):
            if a == "--":
                exec_exist = True
                break
        if exec_exist and exec_idx == len(raw) - 1:
            raise _ArgsError(ERR_BAD_ARGS_NUM_SEPARATOR)
        if not exec_exist and len(raw) < 1 and env_key == "":
            raise _ArgsError(ERR_BAD_ARGS_NUM)
        if exec_exist and env_key != "":
            widx, ridx = len(watch_args) - 1, len(raw) - 1
            while widx >= 0:
                if ridx < 0:
                    errors.go_panic("runtime error: index out of range [%d]" % ridx)
                if watch_args[widx] == raw[ridx]:
                    ridx -= 1
                    widx -= 1
                    continue
                if ridx == exec_idx:
                    raise _ArgsError(ERR_BAD_ARGS_NUM_CONFLICT_ENV)
                widx -= 1
        if not exec_exist and len(watch_args) > 0 and env_key != "":
            raise _ArgsError(ERR_BAD_ARGS_NUM_CONFLICT_ENV)
    else:
        for exec_idx, a in enumerate(watch_args):
            if a == "--":
                exec_exist = True
                break
        if exec_exist and exec_idx == len(watch_args) - 1:
            opts.prefix, opts.rev, opts.prev_kv = False, 0, False
            raise _ArgsError(ERR_BAD_ARGS_NUM_SEPARATOR)
        fs = pflag.FlagSet(watch_flags())
        try:
            p_args = fs.parse(watch_args)
        except pflag.HelpRequested:
            opts.prefix, opts.rev, opts.prev_kv = False, 0, False
            raise _ArgsError("pflag: help requested") from None
        except pflag.FlagError as e:
            opts.prefix, opts.rev, opts.prev_kv = False, 0, False
            raise _ArgsError(str(e)) from None
        if not exec_exist and env_key == "" and len(p_args) < 1:
            opts.prefix, opts.rev, opts.prev_kv = False, 0, False
            raise _ArgsError(ERR_BAD_ARGS_NUM)
        if not exec_exist and len(p_args) > 0 and env_key != "":
            opts.prefix, opts.rev, opts.prev_kv = False, 0, False
            raise _ArgsError(ERR_BAD_ARGS_NUM_CONFLICT_ENV)

    args_with_sep = watch_args if interactive else raw
    idx, found_sep = 0, False
    for idx, a in enumerate(args_with_sep):
        if a == "--":
            found_sep = True
            break
    exec_args = args_with_sep[idx + 1:] if found_sep else None

    if interactive:
        fs = pflag.FlagSet(watch_flags())
        try:
            watch_args = fs.parse(args_with_sep)
        except pflag.HelpRequested:
            raise _ArgsError("pflag: help requested") from None
        except pflag.FlagError as e:
            raise _ArgsError(str(e)) from None
        opts.prefix = fs.lookup("prefix").v
        opts.rev = fs.lookup("rev").v
        opts.prev_kv = fs.lookup("prev-kv").v

    if env_key != "":
        ranges = [env_key] + ([env_range] if env_range != "" else [])
        watch_args = ranges + watch_args

    if not found_sep:
        return watch_args, None

    end_idx = len(watch_args) - 1
    while end_idx >= 0:
        if watch_args[end_idx] == args_with_sep[idx + 1]:
            break
        end_idx -= 1
    if end_idx < 0:
        errors.go_panic("runtime error: slice bounds out of range [:-1]")
    return watch_args[:end_idx], exec_args


def get_watch_chan(watcher, args: list[str], opts: _Opts):
    """getWatchChan: the new watch, or raise _ArgsError."""
    from .kv_commands import prefix_range_end

    if len(args) < 1:
        raise _ArgsError(ERR_BAD_ARGS_NUM)
    key = _b(args[0])
    end = b""
    if len(args) == 2:
        if opts.prefix:
            raise _ArgsError("`range_end` and `--prefix` are mutually exclusive")
        end = _b(args[1])
    if opts.prefix:
        if len(key) == 0:
            key, end = b"\x00", b"\x00"
        else:
            end = prefix_range_end(key)
    return watcher.watch(key, end, opts.rev, opts.prev_kv)


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


_print_lock = threading.Lock()


def print_watch_ch(ctl, watch, exec_args) -> None:
    from .printer import event_type_name

    for resp in watch:
        with _print_lock:
            if resp.canceled:
                errors.err("watch was canceled (%s)\n" % resp.err())
            if resp.is_progress_notify():
                errors.out("progress notify: %d\n" % resp.header.revision)
            ctl.display.watch(resp)
            errors.flush()
        if exec_args:
            for ev in resp.events or ():
                env = dict(ORIGINAL_ENVIRON)
                env["ETCD_WATCH_REVISION"] = "%d" % resp.header.revision
                env["ETCD_WATCH_EVENT_TYPE"] = '"%s"' % event_type_name(ev.type)
                env["ETCD_WATCH_KEY"] = goutil.quote(ev.kv.key)
                env["ETCD_WATCH_VALUE"] = goutil.quote(ev.kv.value)
                err = run_command(exec_args, env)
                if err is not None:
                    errors.err("command [%s] error (%s)\n" % (
                        " ".join(goutil.quote(_b(a)) for a in exec_args), err))
                    errors.flush_and_exit(1)


def run_command(argv: list[str], env: dict) -> str | None:
    """exec.Command(...).Run() with etcdctl's stdout/stderr: None, or Go's error text."""
    import shutil

    path = argv[0]
    if "/" not in path:
        found = shutil.which(path, path=env.get("PATH", os.defpath))
        if found is None:
            return 'exec: %s: executable file not found in $PATH' % goutil.quote(_b(path))
        path = found
    sys.stdout.buffer.flush()
    try:
        p = subprocess.run(list(argv), env={_b(k): _b(v) for k, v in env.items()},
                           executable=path)
    except OSError as e:
        return "fork/exec %s: %s" % (path, _os_err(e))
    if p.returncode < 0:
        return "signal: " + _signal_name(-p.returncode)
    if p.returncode != 0:
        return "exit status %d" % p.returncode
    return None


def _os_err(e: OSError) -> str:
    return {2: "no such file or directory", 13: "permission denied", 8: "exec format error",
            20: "not a directory"}.get(e.errno, (e.strerror or str(e)).lower())


def _signal_name(sig: int) -> str:
    return {1: "hangup", 2: "interrupt", 3: "quit", 6: "aborted", 9: "killed", 13: "broken pipe",
            15: "terminated"}.get(sig, "signal %d" % sig)


def watch_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from .watch_client import Watcher

    env_key = ORIGINAL_ENVIRON.get("ETCDCTL_WATCH_KEY", "")
    env_range = ORIGINAL_ENVIRON.get("ETCDCTL_WATCH_RANGE_END", "")
    if env_key == "" and env_range != "":
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "ETCDCTL_WATCH_KEY is empty but got "
                               "ETCDCTL_WATCH_RANGE_END=%s" % goutil.quote(_b(env_range)))
    default_signals()
    fs = cmd.local
    opts = _Opts(fs.lookup("prefix").v, fs.lookup("rev").v, fs.lookup("prev-kv").v)
    if fs.lookup("interactive").v:
        watch_interactive_func(ctl, cmd, ctl.os_args, env_key, env_range)
        return
    try:
        watch_args, exec_args = parse_watch_args(ctl.os_args, args, env_key, env_range, False, opts)
    except _ArgsError as e:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, str(e))
    client = ctl.must_client_from_cmd(cmd)
    watcher = Watcher(client)
    try:
        w = get_watch_chan(watcher, watch_args, opts)
    except _ArgsError as e:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, str(e))
    print_watch_ch(ctl, w, exec_args)
    errors.exit_with_error(errors.EXIT_INTERRUPTED, "watch is canceled by the server")


def watch_interactive_func(ctl, cmd: Command, os_args: list[str], env_key: str, env_range: str) -> None:
    from .txn_command import argify
    from .watch_client import Watcher

    client = ctl.must_client_from_cmd(cmd)
    watcher = Watcher(client)
    opts = _Opts()
    stdin = sys.stdin.buffer
    while True:
        raw = stdin.readline()
        if not raw.endswith(b"\n"):
            with _print_lock:
                errors.exit_with_error(errors.EXIT_INVALID_INPUT, "Error reading watch request line: EOF")
        line = raw[:-1]
        text = line.decode("utf-8", "surrogateescape")
        args = [a.decode("utf-8", "surrogateescape") for a in argify(line)]
        if len(args) < 1:
            errors.err("Invalid command: %s (watch and progress supported)\n" % text)
            continue
        if args[0] == "watch":
            if len(args) < 2 and env_key == "":
                errors.err("Invalid command %s (command type or key is not provided)\n" % text)
                continue
            try:
                watch_args, exec_args = parse_watch_args(os_args, args, env_key, env_range, True, opts)
            except _ArgsError as e:
                with _print_lock:
                    errors.exit_with_error(errors.EXIT_BAD_ARGS, str(e))
            try:
                w = get_watch_chan(watcher, watch_args, opts)
            except _ArgsError as e:
                errors.err("Invalid command %s (%s)\n" % (text, e))
                continue
            threading.Thread(target=_print_and_exit_on_error, args=(ctl, w, exec_args),
                             daemon=True).start()
        elif args[0] == "progress":
            watcher.request_progress()
        else:
            errors.err("Invalid command %s (only support watch)\n" % text)


def _print_and_exit_on_error(ctl, w, exec_args) -> None:
    try:
        print_watch_ch(ctl, w, exec_args)
    except errors.CtlExit as e:
        errors.flush_and_exit(e.code)
