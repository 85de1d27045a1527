"""``alarm list|disarm`` and ``defrag`` (ctlv3/command/alarm_command.go, defrag_command.go, etcdctl 3.4.23).

``alarm disarm`` follows clientv3's AlarmDisarm for "every alarm": it lists the alarms, then
deactivates each one, and prints what each deactivation answered (a response without a header).
``defrag`` asks each endpoint (``--cluster``: each member's client URLs) over a connection of its own.
"""

from __future__ import annotations

from . import errors, pflag
from .cobra import Command


def new_alarm_command(run_for) -> Command:
    ac = Command("alarm <subcommand>", "Alarm related commands")
    ac.add(
        Command("disarm", "Disarms all alarms", run=run_for("disarm")),
        Command("list", "Lists all alarms", run=run_for("list")),
    )
    return ac


def new_defrag_command(run) -> Command:
    return Command("defrag", "Defragments the storage of the etcd members with given endpoints", run=run,
                   persistent_flags=[pflag.bool_flag("cluster", False, "use all endpoints from the cluster member list")],
                   flags=[pflag.string_flag("data-dir", "", "Optional. If present, defragments a data directory not in use by etcd.")])


def _alarm_list(ctl, client, deadline):
    from petcd.rpc.pb import rpc_pb2

    return ctl.rpc(client, "Maintenance", "Alarm", rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), deadline, repeatable=True)


def alarm_list_command_func(ctl, cmd: Command, args: list[str]) -> None:
    if args:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "alarm list command accepts no arguments")
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    ctl.display.alarm(_alarm_list(ctl, client, deadline))


def alarm_disarm_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if args:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "alarm disarm command accepts no arguments")
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    disarmed = rpc_pb2.AlarmResponse()
    for alarm in _alarm_list(ctl, client, deadline).alarms:
        req = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=alarm.memberID, alarm=alarm.alarm)
        disarmed.alarms.extend(ctl.rpc(client, "Maintenance", "Alarm", req, deadline, repeatable=False).alarms)
    ctl.display.alarm(disarmed)


def defrag_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    from .client import RPCError, deadline_passed
    from .ep_command import endpoints_from_cluster

    if cmd.flags().lookup("data-dir").v:
        # etcdctl opens etcd's bbolt file there; a petcd data dir is LMDB, defragmented by its server.
        errors.exit_with_error(errors.EXIT_BAD_FEATURE, "defrag --data-dir is not supported by petcdctl")
    client = ctl.must_client_from_cmd(cmd)
    failures = 0
    for ep in endpoints_from_cluster(ctl, cmd):
        deadline = ctl.command_ctx()
        direct = client.dial(ep)
        try:
            direct.call("Maintenance", "Defragment", rpc_pb2.DefragmentRequest(), deadline, repeatable=True)
        except RPCError as e:
            errors.err("Failed to defragment etcd member[%s] (%s)\n" % (ep, e.client_message(deadline_passed(deadline))))
            failures += 1
            continue
        finally:
            direct.close()
        errors.out("Finished defragmenting etcd member[%s]\n" % ep)
    if failures:
        raise errors.CtlExit(errors.EXIT_ERROR)
