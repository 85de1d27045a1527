"""``-w simple`` (ctlv3/command/printer_simple.go)."""

from __future__ import annotations

from . import errors
from .printer_protobuf import compact_text
from .printer import (EpHashKV, EpHealth, EpStatus, Printer, WatchResponse, db_status_rows, endpoint_hashkv_rows,
                      endpoint_status_rows, event_type_name, member_list_rows)


def _hex(data: bytes) -> bytes:
    return "".join("\\x%02x" % b for b in data).encode("ascii")


class SimplePrinter(Printer):
    format_name = "simple"

    def __init__(self, is_hex: bool):
        self.is_hex = is_hex
        self.value_only = False

    def kv(self, kv) -> None:
        k, v = kv.key, kv.value
        if self.is_hex:
            k, v = _hex(k), _hex(v)
        if not self.value_only:
            errors.out(k + b"\n")
        errors.out(v + b"\n")

    def delete(self, resp) -> None:
        errors.out("%d\n" % resp.deleted)
        for kv in resp.prev_kvs:
            self.kv(kv)

    def get(self, resp) -> None:
        for kv in resp.kvs:
            self.kv(kv)

    def put(self, resp) -> None:
        errors.out("OK\n")
        if resp.HasField("prev_kv"):
            self.kv(resp.prev_kv)

    def txn(self, resp) -> None:
        errors.out("SUCCESS\n" if resp.succeeded else "FAILURE\n")
        for r in resp.responses:
            errors.out("\n")
            which = r.WhichOneof("response")
            if which == "response_delete_range":
                self.delete(r.response_delete_range)
            elif which == "response_put":
                self.put(r.response_put)
            elif which == "response_range":
                self.get(r.response_range)
            else:
                errors.out("unexpected response %s\n" % r)

    def endpoint_health(self, healths: list[EpHealth]) -> None:
        for h in healths:
            if h.error == "":
                errors.err("%s is healthy: successfully committed proposal: took = %s\n"
                           % (h.ep, h.took))
            else:
                errors.err("%s is unhealthy: failed to commit proposal: %s\n" % (h.ep, h.error))

    def endpoint_status(self, statuses: list[EpStatus]) -> None:
        for row in endpoint_status_rows(statuses):
            errors.out(", ".join(row) + "\n")

    def endpoint_hashkv(self, hashes: list[EpHashKV]) -> None:
        for row in endpoint_hashkv_rows(hashes):
            errors.out(", ".join(row) + "\n")

    def move_leader(self, leader: int, target: int, resp) -> None:
        errors.out("Leadership transferred from %x to %x\n" % (leader, target))

    def watch(self, resp: WatchResponse) -> None:
        for ev in resp.events or ():
            errors.out(event_type_name(ev.type) + "\n")
            if ev.HasField("prev_kv"):
                self.kv(ev.prev_kv)
            self.kv(ev.kv)

    def grant(self, resp) -> None:
        errors.out("lease %016x granted with TTL(%ds)\n" % (resp.ID, resp.TTL))

    def revoke(self, lease_id: int, resp) -> None:
        errors.out("lease %016x revoked\n" % (lease_id))

    def keep_alive(self, resp) -> None:
        errors.out("lease %016x keepalived with TTL(%d)\n" % (resp.ID, resp.TTL))

    def time_to_live(self, resp, keys: bool) -> None:
        lid = resp.ID
        if resp.grantedTTL == 0 and resp.TTL == -1:
            errors.out("lease %016x already expired\n" % lid)
            return
        txt = b"lease %016x granted with TTL(%ds), remaining(%ds)" % (lid, resp.grantedTTL, resp.TTL)
        if keys:
            txt += b", attached keys([" + b" ".join(resp.keys) + b"])"
        errors.out(txt + b"\n")

    def leases(self, resp) -> None:
        errors.out("found %d leases\n" % len(resp.leases))
        for item in resp.leases:
            errors.out("%016x\n" % (item.ID))

    def member_add(self, resp) -> None:
        # 3.4.23 says nothing of a learner here
        errors.out("Member %16x added to cluster %16x\n" % (resp.member.ID, resp.header.cluster_id))

    def member_remove(self, member_id: int, resp) -> None:
        errors.out("Member %16x removed from cluster %16x\n" % (member_id, resp.header.cluster_id))

    def member_update(self, member_id: int, resp) -> None:
        errors.out("Member %16x updated in cluster %16x\n" % (member_id, resp.header.cluster_id))

    def member_promote(self, member_id: int, resp) -> None:
        errors.out("Member %16x promoted in cluster %16x\n" % (member_id, resp.header.cluster_id))

    def member_list(self, resp) -> None:
        for row in member_list_rows(resp.members):
            errors.out(", ".join(row) + "\n")

    def db_status(self, ds) -> None:
        for row in db_status_rows(ds):
            errors.out(", ".join(row) + "\n")

    def alarm(self, resp) -> None:
        for a in resp.alarms:  # Go's %+v of *pb.AlarmMember: its compact text form
            errors.out(compact_text(a) + "\n")

    # the auth printers (role and user commands)

    def role_add(self, role: str, resp) -> None:
        errors.out("Role %s created\n" % role)

    def role_get(self, role: str, resp) -> None:
        from .auth_command import get_prefix_range_end

        errors.out("Role %s\nKV Read:\n" % role)

        def print_range(perm) -> None:
            if perm.range_end != b"\x00":
                txt = b"\t[" + perm.key + b", " + perm.range_end + b")"
            else:
                txt = b"\t[" + perm.key + b", <open ended>"
            if get_prefix_range_end(perm.key) == perm.range_end:
                txt += b" (prefix " + perm.key + b")"
            errors.out(txt + b"\n")

        def print_perms(types) -> None:
            for perm in resp.perm:
                if perm.permType in types:
                    if len(perm.range_end) == 0:
                        errors.out(b"\t" + perm.key + b"\n")
                    else:
                        print_range(perm)

        print_perms((0, 2))  # READ, READWRITE
        errors.out("KV Write:\n")
        print_perms((1, 2))  # WRITE, READWRITE

    def role_list(self, resp) -> None:
        for role in resp.roles:
            errors.out("%s\n" % role)

    def role_delete(self, role: str, resp) -> None:
        errors.out("Role %s deleted\n" % role)

    def role_grant_permission(self, role: str, resp) -> None:
        errors.out("Role %s updated\n" % role)

    def role_revoke_permission(self, role: str, key: bytes, end: bytes, resp) -> None:
        r = role.encode("utf-8", "surrogateescape")
        if len(end) == 0:
            errors.out(b"Permission of key " + key + b" is revoked from role " + r + b"\n")
        elif end != b"\x00":
            errors.out(b"Permission of range [" + key + b", " + end + b") is revoked from role " + r + b"\n")
        else:
            errors.out(b"Permission of range [" + key + b", <open ended> is revoked from role " + r + b"\n")

    def user_add(self, user: str, resp) -> None:
        errors.out("User %s created\n" % user)

    def user_get(self, user: str, resp) -> None:
        errors.out("User: %s\nRoles:%s\n" % (user, "".join(" " + role for role in resp.roles)))

    def user_change_password(self, resp) -> None:
        errors.out("Password updated\n")

    def user_grant_role(self, user: str, role: str, resp) -> None:
        errors.out("Role %s is granted to user %s\n" % (role, user))

    def user_revoke_role(self, user: str, role: str, resp) -> None:
        errors.out("Role %s is revoked from user %s\n" % (role, user))

    def user_delete(self, user: str, resp) -> None:
        errors.out("User %s deleted\n" % user)

    def user_list(self, resp) -> None:
        for user in resp.users:
            errors.out("%s\n" % user)
