"""``endpoint health|status|hashkv`` (ctlv3/command/ep_command.go as built into etcdctl 3.4.23).

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


def new_endpoint_command(health_run, status_run=None, hashkv_run=None) -> Command:
    ec = Command("endpoint <subcommand>", "Endpoint related commands",
                 persistent_flags=[pflag.bool_flag(
                     "cluster", False, "use all endpoints from the cluster member list")])
    ec.add(
        Command("hashkv", "Prints the KV history hash for each endpoint in --endpoints",
                run=hashkv_run,
                persistent_flags=[pflag.int64_flag(
                    "rev", 0, "maximum revision to hash (default: all revisions)")]),
        Command("health", "Checks the healthiness of endpoints specified in `--endpoints` flag",
                run=health_run),
        Command("status", "Prints out the status of endpoints specified in `--endpoints` flag",
                "When --write-out is set to simple, this command prints out comma-separated "
                "status lists for each endpoint.\nThe items in the lists are endpoint, ID, "
                "version, db size, is leader, is learner, raft term, raft index, raft applied "
                "index, errors.\n",
                run=status_run),
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


def _per_endpoint(ctl, cmd: Command, method: str, req, what: str):
    """Status/HashKV of each endpoint on its own connection (clientv3's
    Maintenance dials each endpoint directly): (responses, last error)."""
    from .client import RPCError, deadline_passed
    from .printer import EpHashKV, EpStatus

    client = ctl.must_client_from_cmd(cmd)
    eps = endpoints_from_cluster(ctl, cmd)
    results, last_err = [], None
    for ep in eps:
        deadline = ctl.command_ctx()
        direct = client.dial(ep)
        try:
            resp = direct.call("Maintenance", method, req, deadline, repeatable=True)
        except RPCError as e:
            last_err = e.client_message(deadline_passed(deadline))
            errors.err("Failed to get the %s of endpoint %s (%s)\n" % (what, ep, last_err))
            continue
        finally:
            direct.close()
        results.append((EpStatus if method == "Status" else EpHashKV)(ep, resp))
    return results, last_err


def ep_status_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    statuses, err = _per_endpoint(ctl, cmd, "Status", rpc_pb2.StatusRequest(), "status")
    ctl.display.endpoint_status(statuses)
    if err is not None:
        raise errors.CtlExit(errors.EXIT_ERROR)


def ep_hashkv_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    rev = cmd.flags().lookup("rev").v
    hashes, err = _per_endpoint(ctl, cmd, "HashKV", rpc_pb2.HashKVRequest(revision=rev), "hash")
    ctl.display.endpoint_hashkv(hashes)
    if err is not None:
        errors.exit_with_error(errors.EXIT_ERROR, err)
