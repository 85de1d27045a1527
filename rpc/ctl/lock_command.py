"""``lock`` and ``elect`` (ctlv3/command/lock_command.go, elect_command.go, etcdctl 3.4.23).

Both hold a concurrency Session (a lease kept alive) and install SIGINT/
SIGTERM handlers once it exists: a signal cancels the wait for the lock or
the election, or releases what is held (exit 0).  Before that, a signal
kills the process as Go's default disposition does.
"""

from __future__ import annotations

import signal
import time

from . import errors, pflag
from .cobra import Command


def new_lock_command(run) -> Command:
    return Command("lock <lockname> [exec-command arg1 arg2 ...]", "Acquires a named lock", run=run,
                   flags=[pflag.int_flag("ttl", 10, "timeout for session")])


def new_elect_command(run) -> Command:
    return Command("elect <election-name> [proposal]", "Observes and participates in leader election",
                   run=run, flags=[pflag.Flag("listen", pflag.BoolValue(False), "observation mode", "l")])


def _on_signals(handler) -> None:
    signal.signal(signal.SIGINT, lambda *_: handler())
    signal.signal(signal.SIGTERM, lambda *_: handler())


def _wait(*events) -> None:
    """Wait until one of the threading.Events is set (signal handlers run meanwhile)."""
    while not any(e.is_set() for e in events):
        time.sleep(0.05)


def _session(ctl, cmd: Command, ttl: int):
    from .concurrency import Error, Session
    from .watch_command import default_signals

    default_signals()
    client = ctl.must_client_from_cmd(cmd)
    try:
        return client, Session(client, ttl)
    except Error as e:
        errors.exit_with_error(errors.EXIT_ERROR, str(e))


def lock_command_func(ctl, cmd: Command, args: list[str]) -> None:
    if len(args) == 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS,
                               "lock takes a lock name argument and an optional command to execute")
    err = lock_until_signal(ctl, cmd, args[0], args[1:])
    if err:
        errors.exit_with_error(errors.EXIT_ERROR, err)


def lock_until_signal(ctl, cmd: Command, lockname: str, cmd_args: list[str]) -> str | None:
    import threading

    from petcd.rpc.pb import rpc_pb2

    from .concurrency import BACKGROUND, Context, Error, Mutex, call
    from .env import ORIGINAL_ENVIRON
    from .watch_command import run_command

    client, s = _session(ctl, cmd, cmd.local.lookup("ttl").v)
    m = Mutex(s, lockname)
    ctx = Context()
    donec = threading.Event()

    def on_signal():
        ctx.cancel()
        donec.set()

    _on_signals(on_signal)
    try:
        m.lock(ctx)
    except Error as e:
        return str(e)

    if cmd_args:
        env = {}
        if m.hdr is not None:
            env["ETCD_LOCK_KEY"] = m.key().decode("utf-8", "surrogateescape")
            env["ETCD_LOCK_REV"] = "%d" % m.hdr.revision
        env.update(ORIGINAL_ENVIRON)
        err = run_command(cmd_args, env)
        try:
            m.unlock(BACKGROUND)
            unlock_err = None
        except Error as e:
            unlock_err = str(e)
        return err or unlock_err

    try:
        k = call(client, "KV", "Range", rpc_pb2.RangeRequest(key=m.key()), ctx, True)
    except Error as e:
        return str(e)
    if len(k.kvs) == 0:
        return "lock lost on init"
    ctl.display.get(k)
    errors.flush()
    _wait(donec, s.done)
    if donec.is_set():
        try:
            m.unlock(BACKGROUND)
        except Error as e:
            return str(e)
        return None
    return "session expired"


def elect_command_func(ctl, cmd: Command, args: list[str]) -> None:
    if len(args) not in (1, 2):
        errors.exit_with_error(errors.EXIT_BAD_ARGS,
                               "elect takes one election name argument and an optional proposal argument")
    listen = cmd.local.lookup("listen").v
    if len(args) == 1:
        if not listen:
            errors.exit_with_error(errors.EXIT_BAD_ARGS, "no proposal argument but -l not set")
        err = observe(ctl, cmd, args[0])
    else:
        if listen:
            errors.exit_with_error(errors.EXIT_BAD_ARGS, "proposal given but -l is set")
        err = campaign(ctl, cmd, args[0], args[1])
    if err:
        errors.exit_with_error(errors.EXIT_ERROR, err)


def observe(ctl, cmd: Command, election: str) -> str | None:
    import queue
    import threading

    from .concurrency import Context, Election

    _, s = _session(ctl, cmd, 0)
    e = Election(s, election)
    ctx = Context()
    _on_signals(ctx.cancel)
    out: "queue.Queue" = queue.Queue()
    threading.Thread(target=e.observe, args=(ctx, out), daemon=True).start()
    while True:
        try:
            resp = out.get(timeout=0.05)
        except queue.Empty:
            continue
        if resp is None:
            break
        ctl.display.get(resp)
        errors.flush()
    if ctx.done():
        return None
    return "elect: observer lost"


def campaign(ctl, cmd: Command, election: str, prop: str) -> str | None:
    import threading

    from petcd.rpc.pb import rpc_pb2

    from .concurrency import BACKGROUND, Context, Election, Error, call

    client, s = _session(ctl, cmd, 0)
    e = Election(s, election)
    ctx = Context()
    donec = threading.Event()

    def on_signal():
        ctx.cancel()
        donec.set()

    _on_signals(on_signal)
    try:
        e.campaign(ctx, prop.encode("utf-8", "surrogateescape"))
        resp = call(client, "KV", "Range", rpc_pb2.RangeRequest(key=e.key()), ctx, True)
    except Error as err:
        return str(err)
    ctl.display.get(resp)
    errors.flush()
    _wait(donec, s.done)
    if not donec.is_set():
        return "elect: session expired"
    try:
        e.resign(BACKGROUND)
    except Error as err:
        return str(err)
    return None
