"""The etcdctl 3.4 command tree: the commands petcdctl implements, and the
others (left out of help, still suggested on typos) which say that petcdctl does not offer them, and why.

petcdctl names itself petcdctl in its usage and its version (`petcdctl version: 0.1.0`); what its
commands print is etcdctl 3.4's."""

from __future__ import annotations

from . import errors, goutil, pflag
from .cobra import API_VERSION, Command, petcd_version


def version_command_func(ctl, cmd, args) -> None:
    errors.out("petcdctl version: %s\nAPI version: %s\n" % (petcd_version(), API_VERSION))


def compaction_command_func(ctl, cmd, args) -> None:
    from petcd.rpc.pb import rpc_pb2
    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "compaction command needs 1 argument")
    try:
        rev = goutil.parse_int(args[0], 10, 64)
    except goutil.GoError as e:
        errors.exit_with_error(errors.EXIT_ERROR, str(e))
    physical = cmd.local.lookup("physical").v
    client = ctl.must_client_from_cmd(cmd)
    deadline = ctl.command_ctx()
    ctl.rpc(client, "KV", "Compact", rpc_pb2.CompactionRequest(revision=rev, physical=physical),
            deadline, repeatable=True)
    errors.out("compacted revision %d\n" % rev)


# Why petcdctl does not offer these etcdctl 3.4 commands.
WHY_UNSUPPORTED = {
    "migrate": "petcd has no v2 store to migrate from",
    "make-mirror": "not written yet; the real etcdctl's make-mirror works against petcd",
    "check perf": "not written yet; the real etcdctl's check perf works against petcd, and `petcd bench` measures it too",
    "check datascale": "it reads the server's process_resident_memory_bytes, which petcd, a member of several processes, does not export",
    "completion bash": "petcdctl does not generate shell completion scripts",
    "completion fish": "petcdctl does not generate shell completion scripts",
    "completion powershell": "petcdctl does not generate shell completion scripts",
    "completion zsh": "petcdctl does not generate shell completion scripts",
}


def unsupported_command_func(ctl, cmd, args) -> None:
    path = cmd.command_path().split(" ", 1)[1]
    errors.exit_with_error(errors.EXIT_BAD_FEATURE, "%s is not supported by petcdctl: %s" % (path, WHY_UNSUPPORTED[path]))


def _lazy(module: str, func: str):
    def runner(ctl, cmd, args):
        import importlib
        getattr(importlib.import_module("petcd.rpc.ctl." + module), func)(ctl, cmd, args)
    return runner


def _group(use: str, short: str, subs: list[tuple[str, str]]) -> Command:
    g = Command(use, short)
    for sub_use, sub_short in subs:
        g.add(Command(sub_use, sub_short, run=unsupported_command_func, unsupported=True))
    return g


def _leaf(use: str, short: str) -> Command:
    return Command(use, short, run=unsupported_command_func, unsupported=True)


def build_root(gflags: list[pflag.Flag]) -> Command:
    from .auth_command import RUN_FUNCS as AUTH_RUN_FUNCS
    from .auth_command import new_auth_command, new_role_command, new_user_command
    from .ep_command import new_endpoint_command
    from .kv_commands import new_del_command, new_get_command, new_put_command
    from .lease_command import new_lease_command
    from .lock_command import new_elect_command, new_lock_command
    from .maintenance_command import new_alarm_command, new_defrag_command
    from .member_command import new_member_command
    from .move_leader_command import new_move_leader_command
    from .snapshot_command import new_snapshot_command
    from .txn_command import new_txn_command
    from .watch_command import new_watch_command

    def member_run(name):
        return _lazy("member_command", "member_%s_command_func" % name)

    def lease_run(name):
        return _lazy("lease_command", {
            "grant": "lease_grant_command_func", "revoke": "lease_revoke_command_func",
            "timetolive": "lease_time_to_live_command_func", "list": "lease_list_command_func",
            "keep-alive": "lease_keep_alive_command_func"}[name])

    def auth_run(group):
        return lambda name: _lazy("auth_command", AUTH_RUN_FUNCS[group][name])

    root = Command("petcdctl", "A simple command line client for etcd3.", persistent_flags=gflags)
    endpoint = new_endpoint_command(_lazy("ep_command", "ep_health_command_func"),
                                    _lazy("ep_command", "ep_status_command_func"),
                                    _lazy("ep_command", "ep_hashkv_command_func"))
    root.add(
        new_get_command(_lazy("kv_commands", "get_command_func")),
        new_put_command(_lazy("kv_commands", "put_command_func")),
        new_del_command(_lazy("kv_commands", "del_command_func")),
        new_txn_command(_lazy("txn_command", "txn_command_func")),
        Command("compaction [options] <revision>", "Compacts the event history in etcd",
                run=compaction_command_func,
                flags=[pflag.bool_flag("physical", False,
                                       "'true' to wait for compaction to physically remove all old revisions")]),
        new_alarm_command(lambda name: _lazy("maintenance_command", "alarm_%s_command_func" % name)),
        new_defrag_command(_lazy("maintenance_command", "defrag_command_func")),
        endpoint,
        new_move_leader_command(_lazy("move_leader_command", "transfer_leadership_command_func")),
        new_watch_command(_lazy("watch_command", "watch_command_func")),
        Command("version", "Prints the version of etcdctl", run=version_command_func),
        new_lease_command(lease_run),
        new_member_command(member_run),
        new_snapshot_command(lambda name: _lazy("snapshot_command", "snapshot_%s_command_func" % name)),
        _leaf("make-mirror [options] <destination>", "Makes a mirror at the destination etcd cluster"),
        _leaf("migrate", "Migrates keys in a v2 store to a mvcc store"),
        new_lock_command(_lazy("lock_command", "lock_command_func")),
        new_elect_command(_lazy("lock_command", "elect_command_func")),
        new_auth_command(auth_run("auth")),
        new_user_command(auth_run("user")),
        new_role_command(auth_run("role")),
        _group("check <subcommand>", "commands for checking properties of the etcd cluster",
               [("perf [options]", "Check the performance of the etcd cluster"),
                ("datascale [options]", "Check the memory usage of holding data for different "
                                        "workloads on a given server endpoint.")]),
        # cobra adds these two when it executes the root command
        Command("help [command]", "Help about any command",
                "Help provides help for any command in the application.\n"
                "Simply type petcdctl help [path to command] for full details.",
                run=help_command_func),
        _group("completion", "Generate the autocompletion script for the specified shell",
               [("bash", "Generate the autocompletion script for bash"),
                ("fish", "Generate the autocompletion script for fish"),
                ("powershell", "Generate the autocompletion script for powershell"),
                ("zsh", "Generate the autocompletion script for zsh")]),
    )
    return root


def help_command_func(ctl, cmd, args) -> None:
    root = cmd.root()
    target, _, err = root.find(args)
    if target is None or err is not None:
        errors.err("Unknown help topic [%s]\n" % " ".join("`%s`" % a for a in args))
        errors.out(root.usage(include_help=False))
        return
    errors.out(target.usage())
