"""``lease grant|revoke|timetolive|list|keep-alive`` (ctlv3/command/lease_command.go, etcdctl 3.4.23).

``keep-alive`` follows clientv3's lessor: a LeaseKeepAlive stream, a request
as soon as the lease is due (checked every 500ms), the next one due a third of
the returned TTL later; a response with TTL <= 0 (lease gone) ends it.  It runs
until then, or until SIGINT/SIGTERM kill it (etcdctl installs no handler).
"""

from __future__ import annotations

import time

from . import errors, goutil, pflag
from .cobra import Command


def new_lease_command(run_for) -> Command:
    lc = Command("lease <subcommand>", "Lease related commands")
    lc.add(
        Command("grant <ttl>", "Creates leases", run=run_for("grant")),
        Command("revoke <leaseID>", "Revokes leases", run=run_for("revoke")),
        Command("timetolive <leaseID> [options]", "Get lease information", run=run_for("timetolive"),
                flags=[pflag.bool_flag("keys", False, "Get keys attached to this lease")]),
        Command("list", "List all active leases", run=run_for("list")),
        Command("keep-alive [options] <leaseID>", "Keeps leases alive (renew)", run=run_for("keep-alive"),
                flags=[pflag.bool_flag("once", False, "Resets the keep-alive time to its original "
                                                      "value and exits immediately")]),
    )
    return lc


def lease_from_args(arg: str) -> int:
    try:
        return goutil.parse_int(arg, 16, 64)
    except goutil.GoError as e:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "bad lease ID arg (%s), expecting ID in Hex" % e)


def lease_grant_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    from .client import RPCError, deadline_passed

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "lease grant command needs TTL argument")
    try:
        ttl = goutil.parse_int(args[0], 10, 64)
    except goutil.GoError as e:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "bad TTL (%s)" % e)
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    try:
        resp = client.call("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl), deadline, True)
    except RPCError as e:
        errors.exit_with_error(errors.EXIT_ERROR, "failed to grant lease (%s)"
                               % e.client_message(deadline_passed(deadline)))
    ctl.display.grant(resp)


def lease_revoke_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    from .client import RPCError, deadline_passed

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "lease revoke command needs 1 argument")
    lid = lease_from_args(args[0])
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    try:
        resp = client.call("Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lid), deadline, True)
    except RPCError as e:
        errors.exit_with_error(errors.EXIT_ERROR, "failed to revoke lease (%s)"
                               % e.client_message(deadline_passed(deadline)))
    ctl.display.revoke(lid, resp)


def lease_time_to_live_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "lease timetolive command needs lease ID as argument")
    keys = cmd.local.lookup("keys").v
    client = ctl.must_client_from_cmd(cmd)
    lid = lease_from_args(args[0])
    resp = _no_deadline_rpc(ctl, client, "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=keys))
    ctl.display.time_to_live(resp, keys)


def lease_list_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    client = ctl.must_client_from_cmd(cmd)
    resp = _no_deadline_rpc(ctl, client, "LeaseLeases", rpc_pb2.LeaseLeasesRequest())
    ctl.display.leases(resp)


def _no_deadline_rpc(ctl, client, method: str, req):
    """context.TODO(): no deadline; failures exit with ExitBadConnection."""
    from .client import RPCError

    try:
        return client.call("Lease", method, req, None, True)
    except RPCError as e:
        errors.exit_with_error(errors.EXIT_BAD_CONNECTION, e.client_message(False))


LEASE_NOT_FOUND = "etcdserver: requested lease not found"


def lease_keep_alive_command_func(ctl, cmd: Command, args: list[str]) -> None:
    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "lease keep-alive command needs lease ID as argument")
    lid = lease_from_args(args[0])
    if cmd.local.lookup("once").v:
        client = ctl.must_client_from_cmd(cmd)
        resp, err = keep_alive_once(client, lid)
        if err:
            errors.exit_with_error(errors.EXIT_BAD_CONNECTION, err)
        ctl.display.keep_alive(resp)
        return
    from .watch_command import default_signals
    default_signals()
    client = ctl.must_client_from_cmd(cmd)
    ka = KeepAlive(client, lid)
    for resp in ka.responses():
        ctl.display.keep_alive(resp)
        errors.flush()
    from .printer_simple import SimplePrinter
    if isinstance(ctl.display, SimplePrinter):
        errors.out("lease %016x expired or revoked.\n" % lid)


def keep_alive_once(client, lid: int):
    """clientv3 KeepAliveOnce: (response, error message)."""
    from petcd.rpc.pb import rpc_pb2

    from .client import StreamClosed

    while True:
        st = client.stream("Lease", "LeaseKeepAlive")
        st.send(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
        try:
            resp = st.recv()
        except StreamClosed as e:
            st.close()
            if e.error is None:
                return None, "EOF"
            if e.error.code == "Unavailable":
                time.sleep(0.05)
                continue
            return None, e.error.client_message(False)
        st.close()
        if resp.TTL <= 0:
            return resp, LEASE_NOT_FOUND
        return resp, None


class KeepAlive:
    """clientv3's lessor keep-alive loop for one lease."""

    RETRY_CONN_WAIT = 0.5

    def __init__(self, client, lid: int, first_timeout: float | None = None):
        self.client = client
        self.lid = lid
        self.next_at = time.monotonic()
        dial = client.settings[0] / 1e9
        self.deadline = time.monotonic() + (first_timeout if first_timeout is not None
                                            else (dial + 1.0 if dial > 0 else 5.0))
        self.closed = False

    def responses(self):
        """Yield each LeaseKeepAliveResponse with TTL > 0; end when the lease is gone."""
        import queue
        import threading

        from petcd.rpc.pb import rpc_pb2

        from .client import StreamClosed

        def recv_loop(st, out):
            while True:
                try:
                    resp = st.recv()
                except StreamClosed as e:
                    out.put(("closed", e.error))
                    return
                out.put(("resp", resp))

        while not self.closed:
            st = self.client.stream("Lease", "LeaseKeepAlive")
            out: "queue.Queue" = queue.Queue()
            threading.Thread(target=recv_loop, args=(st, out), daemon=True).start()
            broken = False
            while not broken:
                # sendKeepAliveLoop: send when due (again every 500ms until a response)
                if time.monotonic() >= self.next_at:
                    st.send(rpc_pb2.LeaseKeepAliveRequest(ID=self.lid))
                tick = time.monotonic() + self.RETRY_CONN_WAIT
                while time.monotonic() < tick:
                    try:
                        kind, item = out.get(timeout=max(0.0, tick - time.monotonic()))
                    except queue.Empty:
                        break
                    if kind == "closed":
                        broken = True
                        break
                    if item.TTL <= 0:  # the lease is gone
                        st.close()
                        return
                    self.next_at = time.monotonic() + item.TTL / 3.0
                    self.deadline = time.monotonic() + item.TTL
                    yield item
                if time.monotonic() > self.deadline:  # deadlineLoop: no response in time
                    st.close()
                    return
            st.close()
            time.sleep(self.RETRY_CONN_WAIT)
