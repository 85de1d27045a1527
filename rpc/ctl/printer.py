"""etcdctl's output formats: ``-w simple|json|fields|protobuf|table``.

``new_printer`` mirrors ctlv3/command/printer.go's NewPrinter; every format
module implements the subset of the printer interface it supports and the rest
fails the way etcdctl's printerUnsupported does.
"""

from __future__ import annotations

from . import errors


class EpHealth:
    """ctlv3/command/ep_command.go epHealth."""

    def __init__(self, ep: str, health: bool, took: str, error: str = ""):
        self.ep = ep
        self.health = health
        self.took = took
        self.error = error


class EpStatus:
    """ctlv3/command/ep_command.go epStatus (Endpoint, Status)."""

    def __init__(self, ep: str, resp):
        self.ep = ep
        self.resp = resp


class EpHashKV:
    """ctlv3/command/ep_command.go epHashKV (Endpoint, HashKV)."""

    def __init__(self, ep: str, resp):
        self.ep = ep
        self.resp = resp


class WatchResponse:
    """clientv3.WatchResponse as etcdctl sees it: the server's response plus
    the client's closing error; ``events`` is None for a response the client
    made up itself (a failed watch creation), as Go's nil slice."""

    def __init__(self, header=None, events=None, compact_revision: int = 0, canceled: bool = False,
                 created: bool = False, cancel_reason: str = "", close_err: str = ""):
        from petcd.rpc.pb import rpc_pb2
        self.header = header if header is not None else rpc_pb2.ResponseHeader()
        self.events = events
        self.compact_revision = compact_revision
        self.canceled = canceled
        self.created = created
        self.cancel_reason = cancel_reason
        self.close_err = close_err

    @classmethod
    def from_pb(cls, r) -> "WatchResponse":
        return cls(r.header if r.HasField("header") else None, list(r.events), r.compact_revision,
                   r.canceled, r.created, r.cancel_reason)

    def is_progress_notify(self) -> bool:
        return (not self.events and not self.canceled and not self.created
                and self.compact_revision == 0 and self.header.revision != 0)

    def err(self) -> str:
        """WatchResponse.Err().Error(), or "" for no error."""
        if self.close_err:
            return self.close_err
        if self.compact_revision != 0:
            return "etcdserver: mvcc: required revision has been compacted"
        if self.canceled:
            if self.cancel_reason:
                from .client import KNOWN_ERRORS
                if self.cancel_reason in KNOWN_ERRORS:
                    return self.cancel_reason
                return "rpc error: code = FailedPrecondition desc = " + self.cancel_reason
            return "etcdserver: mvcc: required revision is a future revision"
        return ""


def event_type_name(t: int) -> str:
    return {0: "PUT", 1: "DELETE"}.get(t, str(t))


def humanize_bytes(s: int) -> str:
    """go-humanize Bytes (SI units)."""
    import math
    if s < 10:
        return "%d B" % s
    sizes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    e = math.floor(math.log(s) / math.log(1000))
    val = math.floor(s / math.pow(1000, e) * 10 + 0.5) / 10
    fmt = "%.0f %s" if val >= 10 else "%.1f %s"
    return fmt % (val, sizes[int(e)])


def member_list_rows(members) -> list[list[str]]:
    """makeMemberListTable."""
    rows = []
    for m in members:
        rows.append(["%x" % m.ID, "started" if m.name else "unstarted", m.name,
                     ",".join(m.peerURLs), ",".join(m.clientURLs),
                     "true" if m.isLearner else "false"])
    return rows


MEMBER_LIST_HEADER = ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"]


def endpoint_status_rows(statuses: list[EpStatus]) -> list[list[str]]:
    """makeEndpointStatusTable."""
    rows = []
    for st in statuses:
        r = st.resp
        rows.append([st.ep, "%x" % r.header.member_id, r.version, humanize_bytes(r.dbSize),
                     _b(r.leader == r.header.member_id), _b(r.isLearner), str(r.raftTerm),
                     str(r.raftIndex), str(r.raftAppliedIndex), ", ".join(r.errors)])
    return rows


ENDPOINT_STATUS_HEADER = ["endpoint", "ID", "version", "db size", "is leader", "is learner",
                          "raft term", "raft index", "raft applied index", "errors"]


def endpoint_hashkv_rows(hashes: list[EpHashKV]) -> list[list[str]]:
    return [[h.ep, str(h.resp.hash)] for h in hashes]


ENDPOINT_HASHKV_HEADER = ["endpoint", "hash"]

DB_STATUS_HEADER = ["hash", "revision", "total keys", "total size"]


def db_status_rows(ds) -> list[list[str]]:
    """makeDBStatusTable, for a store.backup.BackupStatus."""
    return [["%x" % ds.hash, str(ds.revision), str(ds.total_keys), humanize_bytes(ds.total_size)]]


def _b(v: bool) -> str:
    return "true" if v else "false"


class Printer:
    format_name = ""

    def unsupported(self) -> None:
        errors.exit_with_error(errors.EXIT_BAD_FEATURE,
                               "%s not supported as output format" % self.format_name)

    def delete(self, resp) -> None:
        self.unsupported()

    def get(self, resp) -> None:
        self.unsupported()

    def put(self, resp) -> None:
        self.unsupported()

    def txn(self, resp) -> None:
        self.unsupported()

    def endpoint_health(self, healths: list[EpHealth]) -> None:
        self.unsupported()

    def endpoint_status(self, statuses: list[EpStatus]) -> None:
        self.unsupported()

    def endpoint_hashkv(self, hashes: list[EpHashKV]) -> None:
        self.unsupported()

    def move_leader(self, leader: int, target: int, resp) -> None:
        self.unsupported()

    def watch(self, resp: WatchResponse) -> None:
        self.unsupported()

    def grant(self, resp) -> None:
        self.unsupported()

    def revoke(self, lease_id: int, resp) -> None:
        self.unsupported()

    def keep_alive(self, resp) -> None:
        self.unsupported()

    def time_to_live(self, resp, keys: bool) -> None:
        self.unsupported()

    def leases(self, resp) -> None:
        self.unsupported()

    def member_add(self, resp) -> None:
        self.unsupported()

    def member_remove(self, member_id: int, resp) -> None:
        self.unsupported()

    def member_update(self, member_id: int, resp) -> None:
        self.unsupported()

    def member_promote(self, member_id: int, resp) -> None:
        self.unsupported()

    def member_list(self, resp) -> None:
        self.unsupported()

    def alarm(self, resp) -> None:
        self.unsupported()

    def db_status(self, ds) -> None:
        self.unsupported()

    # the auth printers (role and user commands)

    def role_add(self, role: str, resp) -> None:
        self.unsupported()

    def role_get(self, role: str, resp) -> None:
        self.unsupported()

    def role_delete(self, role: str, resp) -> None:
        self.unsupported()

    def role_list(self, resp) -> None:
        self.unsupported()

    def role_grant_permission(self, role: str, resp) -> None:
        self.unsupported()

    def role_revoke_permission(self, role: str, key: bytes, end: bytes, resp) -> None:
        self.unsupported()

    def user_add(self, user: str, resp) -> None:
        self.unsupported()

    def user_get(self, user: str, resp) -> None:
        self.unsupported()

    def user_list(self, resp) -> None:
        self.unsupported()

    def user_change_password(self, resp) -> None:
        self.unsupported()

    def user_grant_role(self, user: str, role: str, resp) -> None:
        self.unsupported()

    def user_revoke_role(self, user: str, role: str, resp) -> None:
        self.unsupported()

    def user_delete(self, user: str, resp) -> None:
        self.unsupported()


def new_printer(fmt: str, is_hex: bool) -> Printer | None:
    if fmt == "simple":
        from .printer_simple import SimplePrinter
        return SimplePrinter(is_hex)
    if fmt == "fields":
        from .printer_fields import FieldsPrinter
        return FieldsPrinter()
    if fmt == "json":
        from .printer_json import JSONPrinter
        return JSONPrinter()
    if fmt == "protobuf":
        from .printer_protobuf import ProtobufPrinter
        return ProtobufPrinter()
    if fmt == "table":
        from .printer_table import TablePrinter
        return TablePrinter()
    return None
