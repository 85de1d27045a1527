"""``move-leader`` (ctlv3/command/move_leader_command.go, etcdctl 3.4.23).

Each endpoint gets a client of its own (the one configuration read from flags
and ETCDCTL_* variables, with that endpoint alone) and is asked for its Status
over a direct connection; the first one that leads is told to hand leadership over.
"""

from __future__ import annotations

from . import errors, goutil
from .cobra import Command


def new_move_leader_command(run) -> Command:
    return Command("move-leader <transferee-member-id>",
                   "Transfers leadership to another etcd cluster member.", run=run)


def transfer_leadership_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    from .client import RPCError, deadline_passed

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "move-leader command needs 1 argument")
    try:
        target = goutil.parse_uint(args[0], 16, 64)
    except goutil.GoError as e:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, str(e))
    cfg = ctl.client_settings(cmd)
    ctl.init_display(cmd)
    c = ctl.must_client(cfg)
    eps = list(c.endpoints)
    c.close()
    deadline = ctl.command_ctx()
    leader_cli, leader_id = None, 0
    for ep in eps:
        cli = ctl.must_client(dict(cfg, endpoints=[ep]))
        direct = cli.dial(ep)
        try:
            resp = direct.call("Maintenance", "Status", rpc_pb2.StatusRequest(), deadline, repeatable=True)
        except RPCError as e:
            errors.exit_with_error(errors.EXIT_ERROR, e.client_message(deadline_passed(deadline)))
        finally:
            direct.close()
        if resp.header.member_id == resp.leader:
            leader_cli, leader_id = cli, resp.leader
            break
        cli.close()
    if leader_cli is None:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "no leader endpoint given at [%s]" % " ".join(eps))
    resp = ctl.rpc(leader_cli, "Maintenance", "MoveLeader", rpc_pb2.MoveLeaderRequest(targetID=target),
                   deadline, repeatable=False)
    ctl.display.move_leader(leader_id, target, resp)
