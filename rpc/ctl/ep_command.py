"""``endpoint health`` (ctlv3/command/ep_command.go as built into etcdctl 3.4.23).

Each endpoint gets its own client and one linearizable Range of key "health";
"permission denied" counts as healthy.  etcdctl 3.4.23 does not ask
Maintenance.Alarm (checked against a real etcd with active NOSPACE/CORRUPT
alarms: still "healthy", and the server's Alarm RPC counter stays at 0), so
neither does petcdctl.
"""

from __future__ import annotations

import threading
import time

from . import errors, goutil, pflag
from .cobra import Command
from .env import set_pflags_from_env

PERMISSION_DENIED = "etcdserver: permission denied"


def new_endpoint_command(health_run) -> Command:
    ec = Command("endpoint <subcommand>", "Endpoint related commands",
                 persistent_flags=[pflag.bool_flag(
                     "cluster", False, "use all endpoints from the cluster member list")])
    ec.add(
        Command("hashkv", "Prints the KV history hash for each endpoint in --endpoints",
                run=True, unsupported=True),
        Command("health", "Checks the healthiness of endpoints specified in `--endpoints` flag",
                run=health_run),
        Command("status", "Prints out the status of endpoints specified in `--endpoints` flag",
                "When --write-out is set to simple, this command prints out comma-separated "
                "status lists for each endpoint.\nThe items in the lists are endpoint, ID, "
                "version, db size, is leader, raft term, raft index.\n",
                run=True, unsupported=True),
    )
    return ec


def endpoints_from_cluster(ctl, cmd: Command) -> list[str]:
    from petcd.rpc.pb import rpc_pb2

    from .client import Client, ClientError, RPCError, deadline_passed

    fs = cmd.flags()
    if not fs.lookup("cluster").v:
        return list(fs.lookup("endpoints").v)
    cfg = ctl.client_settings(cmd, with_auth=False, env=False)
    try:
        c = Client(cfg["endpoints"], cfg["dial_timeout"], cfg["keepalive_time"],
                   cfg["keepalive_timeout"], cfg["tls"])
    except ClientError as e:
        errors.exit_with_error(errors.EXIT_ERROR, str(e))
    deadline = ctl.command_ctx()
    try:
        resp = c.call("Cluster", "MemberList", rpc_pb2.MemberListRequest(), deadline, True)
    except RPCError as e:
        errors.exit_with_error(errors.EXIT_ERROR,
                               "failed to fetch endpoints from etcd cluster member list: %s"
                               % e.client_message(deadline_passed(deadline)))
    ret = []
    for m in resp.members:
        ret.extend(m.clientURLs)
    return ret


def _check(ctl, cmd: Command, ep: str, cfg, auth, results, lock) -> None:
    from petcd.rpc.pb import rpc_pb2

    from .client import Client, ClientError, RPCError, deadline_passed
    from .printer import EpHealth

    try:
        cli = Client([ep], cfg["dial_timeout"], cfg["keepalive_time"], cfg["keepalive_timeout"],
                     cfg["tls"], auth)
    except ClientError as e:
        with lock:
            results.append(EpHealth(ep, False, "", str(e)))
        return
    st = time.monotonic()
    deadline = ctl.command_ctx()
    err = None
    try:
        cli.call("KV", "Range", rpc_pb2.RangeRequest(key=b"health"), deadline, True)
    except RPCError as e:
        err = e.client_message(deadline_passed(deadline))
    took = goutil.duration_string(int((time.monotonic() - st) * 1e9))
    eh = EpHealth(ep, False, took)
    if err is None or err == PERMISSION_DENIED:
        eh.health = True
    else:
        eh.error = err
    with lock:
        results.append(eh)


def ep_health_command_func(ctl, cmd: Command, args: list[str]) -> None:
    set_pflags_from_env(cmd.inherited_flags())
    ctl.init_display(cmd)
    cfg = ctl.client_settings(cmd, with_auth=True, env=False)
    auth = cfg["auth"]
    eps = endpoints_from_cluster(ctl, cmd)
    results: list[EpHealth] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_check, args=(ctl, cmd, ep, cfg, auth, results, lock),
                                daemon=True) for ep in eps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctl.display.endpoint_health(results)
    if any(h.error for h in results):
        errors.exit_with_error(errors.EXIT_ERROR, "unhealthy cluster")
