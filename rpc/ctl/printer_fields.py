"""``-w fields`` (ctlv3/command/printer_fields.go)."""

from __future__ import annotations

from . import errors, goutil
from .printer import EpHashKV, EpHealth, EpStatus, Printer, WatchResponse, event_type_name


def _b(v: bool) -> str:
    return "true" if v else "false"


class FieldsPrinter(Printer):
    format_name = "fields"

    def kv(self, pfx: str, kv) -> None:
        errors.out('"%sKey" : %s\n' % (pfx, goutil.quote(kv.key)))
        errors.out('"%sCreateRevision" : %d\n' % (pfx, kv.create_revision))
        errors.out('"%sModRevision" : %d\n' % (pfx, kv.mod_revision))
        errors.out('"%sVersion" : %d\n' % (pfx, kv.version))
        errors.out('"%sValue" : %s\n' % (pfx, goutil.quote(kv.value)))
        errors.out('"%sLease" : %d\n' % (pfx, kv.lease))

    def hdr(self, h) -> None:
        errors.out('"ClusterID" : %d\n' % h.cluster_id)
        errors.out('"MemberID" : %d\n' % h.member_id)
        errors.out('"Revision" : %d\n' % h.revision)
        errors.out('"RaftTerm" : %d\n' % h.raft_term)

    def delete(self, resp) -> None:
        self.hdr(resp.header)
        errors.out('"Deleted" : %d\n' % resp.deleted)
        for kv in resp.prev_kvs:
            self.kv("Prev", kv)

    def get(self, resp) -> None:
        self.hdr(resp.header)
        for kv in resp.kvs:
            self.kv("", kv)
        errors.out('"More" : %s\n' % _b(resp.more))
        errors.out('"Count" : %d\n' % resp.count)

    def put(self, resp) -> None:
        self.hdr(resp.header)
        if resp.HasField("prev_kv"):
            self.kv("Prev", resp.prev_kv)

    def txn(self, resp) -> None:
        self.hdr(resp.header)
        errors.out('"Succeeded" : %s\n' % _b(resp.succeeded))
        for r in resp.responses:
            which = r.WhichOneof("response")
            if which == "response_delete_range":
                self.delete(r.response_delete_range)
            elif which == "response_put":
                self.put(r.response_put)
            elif which == "response_range":
                self.get(r.response_range)
            else:
                errors.out('"Unknown" : %s\n' % goutil.quote(str(r).encode()))

    def endpoint_health(self, healths: list[EpHealth]) -> None:
        for h in healths:
            errors.out('"Endpoint" : %s\n' % goutil.quote(h.ep.encode("utf-8", "surrogateescape")))
            errors.out('"Health" : %s\n' % _b(h.health))
            errors.out('"Took" : %s\n' % h.took)
            errors.out('"Error" : %s\n' % h.error)
            errors.out("\n")

    def endpoint_status(self, statuses: list[EpStatus]) -> None:
        for st in statuses:
            r = st.resp
            self.hdr(r.header)
            errors.out('"Version" : %s\n' % goutil.quote(r.version.encode()))
            errors.out('"DBSize" : %d\n' % r.dbSize)
            errors.out('"Leader" : %d\n' % r.leader)
            errors.out('"IsLearner" : %s\n' % _b(r.isLearner))
            errors.out('"RaftIndex" : %d\n' % r.raftIndex)
            errors.out('"RaftTerm" : %d\n' % r.raftTerm)
            errors.out('"RaftAppliedIndex" : %d\n' % r.raftAppliedIndex)
            errors.out('"Errors" : [%s]\n' % " ".join(r.errors))
            errors.out('"Endpoint" : %s\n' % goutil.quote(st.ep.encode("utf-8", "surrogateescape")))
            errors.out("\n")

    def endpoint_hashkv(self, hashes: list[EpHashKV]) -> None:
        for h in hashes:
            self.hdr(h.resp.header)
            errors.out('"Endpoint" : %s\n' % goutil.quote(h.ep.encode("utf-8", "surrogateescape")))
            errors.out('"Hash" : %d\n' % h.resp.hash)
            errors.out("\n")

    def watch(self, resp: WatchResponse) -> None:
        self.hdr(resp.header)
        for ev in resp.events or ():
            errors.out('"Type" : %s\n' % event_type_name(ev.type))
            if ev.HasField("prev_kv"):
                self.kv("Prev", ev.prev_kv)
            self.kv("", ev.kv)

    def grant(self, resp) -> None:
        self.hdr(resp.header)
        errors.out('"ID" : %d\n"TTL" : %d\n' % (resp.ID, resp.TTL))

    def revoke(self, lease_id: int, resp) -> None:
        self.hdr(resp.header)

    def keep_alive(self, resp) -> None:
        self.hdr(resp.header)
        errors.out('"ID" : %d\n"TTL" : %d\n' % (resp.ID, resp.TTL))

    def time_to_live(self, resp, keys: bool) -> None:
        self.hdr(resp.header)
        errors.out('"ID" : %d\n"TTL" : %d\n"GrantedTTL" : %d\n' % (resp.ID, resp.TTL, resp.grantedTTL))
        for k in resp.keys:
            errors.out('"Key" : %s\n' % goutil.quote(k))

    def leases(self, resp) -> None:
        self.hdr(resp.header)
        for item in resp.leases:
            errors.out('"ID" : %d\n' % item.ID)

    def db_status(self, ds) -> None:
        errors.out('"Hash" : %d\n"Revision" : %d\n"Keys" : %d\n"Size" : %d\n' % (ds.hash, ds.revision, ds.total_keys, ds.total_size))

    def alarm(self, resp) -> None:
        self.hdr(resp.header)
        for a in resp.alarms:
            errors.out('"MemberID" : %d\n' % a.memberID)
            errors.out('"AlarmType" : %s\n\n' % a.DESCRIPTOR.fields_by_name["alarm"].enum_type.values_by_number[a.alarm].name)

    def member_list(self, resp) -> None:
        self.hdr(resp.header)
        for m in resp.members:
            errors.out('"ID" : %d\n' % m.ID)
            errors.out('"Name" : %s\n' % goutil.quote(m.name.encode("utf-8", "surrogateescape")))
            for u in m.peerURLs:
                errors.out('"PeerURL" : %s\n' % goutil.quote(u.encode("utf-8", "surrogateescape")))
            for u in m.clientURLs:
                errors.out('"ClientURL" : %s\n' % goutil.quote(u.encode("utf-8", "surrogateescape")))
            errors.out('"IsLearner" : %s\n' % _b(m.isLearner))
            errors.out("\n")

    # the auth printers; etcdctl 3.4 has none for user get and user list in this format

    def _auth_hdr(self, *args) -> None:
        self.hdr(args[-1].header)

    role_add = role_delete = role_grant_permission = role_revoke_permission = _auth_hdr
    user_add = user_change_password = user_grant_role = user_revoke_role = user_delete = _auth_hdr

    def role_get(self, role: str, resp) -> None:
        self.hdr(resp.header)
        for p in resp.perm:
            v = p.DESCRIPTOR.fields_by_name["permType"].enum_type.values_by_number.get(p.permType)
            name = v.name if v is not None else str(p.permType)
            errors.out('"PermType" :  %s\n' % name)  # Println after a label ending in a space
            errors.out('"Key" : %s\n' % goutil.quote(p.key))
            errors.out('"RangeEnd" : %s\n' % goutil.quote(p.range_end))

    def role_list(self, resp) -> None:
        self.hdr(resp.header)
        errors.out('"Roles" :' + "".join(" " + goutil.quote(r.encode("utf-8", "surrogateescape"))
                                         for r in resp.roles) + "\n")
