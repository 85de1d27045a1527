"""``-w protobuf``: the marshalled response bytes, nothing else (no newline).

etcdctl hands printPB whatever its printer got: protobuf messages marshal as
themselves, the clientv3 lease responses (which embed *pb.ResponseHeader and
so inherit its Marshal method) marshal as their header alone, and a value
without a Marshal method (lease revoke) is refused.
"""

from __future__ import annotations

from . import errors
from .printer import Printer, WatchResponse


def compact_text(msg) -> str:
    """gogoproto's CompactTextString for a message of scalar fields (enums by name)."""
    out = []
    for fd, v in msg.ListFields():
        if fd.enum_type is not None:
            v = fd.enum_type.values_by_number[v].name
        out.append("%s:%s " % (fd.name, v))
    return "".join(out)


class ProtobufPrinter(Printer):
    format_name = "protobuf"

    def _pb(self, resp) -> None:
        errors.out(resp.SerializeToString())

    delete = get = put = txn = _pb
    member_list = member_add = alarm = _pb

    def member_remove(self, member_id: int, resp) -> None:
        self._pb(resp)

    member_update = member_promote = member_remove

    def move_leader(self, leader: int, target: int, resp) -> None:
        self._pb(resp)

    def _header(self, resp) -> None:
        errors.out(resp.header.SerializeToString())

    grant = keep_alive = leases = _header

    def time_to_live(self, resp, keys: bool) -> None:
        self._header(resp)

    def revoke(self, lease_id: int, resp) -> None:
        hdr = compact_text(resp.header) if resp.HasField("header") else "<nil>"
        errors.exit_with_error(errors.EXIT_BAD_FEATURE,
                               "marshal unsupported for type clientv3.LeaseRevokeResponse ({%s})" % hdr)

    def watch(self, resp: WatchResponse) -> None:
        from petcd.rpc.pb import rpc_pb2
        wr = rpc_pb2.WatchResponse(compact_revision=resp.compact_revision, canceled=resp.canceled,
                                   created=resp.created)
        wr.header.SetInParent()
        wr.header.CopyFrom(resp.header)
        wr.events.extend(resp.events or ())
        errors.out(wr.SerializeToString())

    # the auth printers: the protobuf responses as they are

    def _auth(self, *args) -> None:
        self._pb(args[-1])

    role_add = role_get = role_delete = role_list = role_grant_permission = role_revoke_permission = _auth
    user_add = user_get = user_list = user_change_password = user_grant_role = user_revoke_role = _auth
    user_delete = _auth
