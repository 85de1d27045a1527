"""``-w json``: Go's encoding/json of the response (ctlv3/command/printer_json.go).

Responses etcdctl gets as clientv3 structs rather than protobuf messages are
encoded as those structs: the lease responses embed ``*pb.ResponseHeader``
(its fields are promoted to the top level) and use clientv3's field names and
tags; a watch response is clientv3.WatchResponse with untagged fields.
"""

from __future__ import annotations

from . import errors, gojson, goutil
from .printer import EpHashKV, EpHealth, EpStatus, Printer, WatchResponse


def _promoted_header(resp) -> list[str]:
    """The fields of an embedded *pb.ResponseHeader (absent when nil)."""
    if not resp.HasField("header"):
        return []
    inner = gojson.encode(resp.header)[1:-1]
    return [inner] if inner else []


class JSONPrinter(Printer):
    format_name = "json"

    def _pb(self, resp) -> None:
        errors.out(gojson.encode(resp) + "\n")

    delete = get = put = txn = _pb
    member_list = member_add = alarm = _pb

    def db_status(self, ds) -> None:
        errors.out('{"hash":%d,"revision":%d,"totalKey":%d,"totalSize":%d}\n' % (ds.hash, ds.revision, ds.total_keys, ds.total_size))

    def member_remove(self, member_id: int, resp) -> None:
        self._pb(resp)

    member_update = member_promote = member_remove

    def move_leader(self, leader: int, target: int, resp) -> None:
        self._pb(resp)

    def revoke(self, lease_id: int, resp) -> None:
        self._pb(resp)

    def endpoint_health(self, healths: list[EpHealth]) -> None:
        items = []
        for h in healths:
            s = '{"endpoint":%s,"health":%s,"took":%s' % (
                goutil.json_string(h.ep), "true" if h.health else "false",
                goutil.json_string(h.took))
            if h.error:
                s += ',"error":%s' % goutil.json_string(h.error)
            items.append(s + "}")
        errors.out("[" + ",".join(items) + "]\n")

    def endpoint_status(self, statuses: list[EpStatus]) -> None:
        items = ['{"Endpoint":%s,"Status":%s}' % (goutil.json_string(s.ep), gojson.encode(s.resp))
                 for s in statuses]
        errors.out("[" + ",".join(items) + "]\n")

    def endpoint_hashkv(self, hashes: list[EpHashKV]) -> None:
        items = ['{"Endpoint":%s,"HashKV":%s}' % (goutil.json_string(h.ep), gojson.encode(h.resp))
                 for h in hashes]
        errors.out("[" + ",".join(items) + "]\n")

    def watch(self, resp: WatchResponse) -> None:
        if resp.events is None:
            events = "null"
        else:
            events = "[" + ",".join(gojson.encode(ev) for ev in resp.events) + "]"
        errors.out('{"Header":%s,"Events":%s,"CompactRevision":%d,"Canceled":%s,"Created":%s}\n' % (
            gojson.encode(resp.header), events, resp.compact_revision,
            "true" if resp.canceled else "false", "true" if resp.created else "false"))

    def _lease(self, resp, fields: list[str]) -> None:
        errors.out("{" + ",".join(_promoted_header(resp) + fields) + "}\n")

    def grant(self, resp) -> None:
        self._lease(resp, ['"ID":%d' % resp.ID, '"TTL":%d' % resp.TTL,
                           '"Error":%s' % goutil.json_string(resp.error)])

    def keep_alive(self, resp) -> None:
        self._lease(resp, ['"ID":%d' % resp.ID, '"TTL":%d' % resp.TTL])

    def time_to_live(self, resp, keys: bool) -> None:
        if len(resp.keys) == 0:
            ks = "null"
        else:
            ks = "[" + ",".join(goutil.json_string(goutil.b64(k)) for k in resp.keys) + "]"
        self._lease(resp, ['"id":%d' % resp.ID, '"ttl":%d' % resp.TTL,
                           '"granted-ttl":%d' % resp.grantedTTL, '"keys":%s' % ks])

    def leases(self, resp) -> None:
        items = ",".join('{"id":%d}' % item.ID for item in resp.leases)
        self._lease(resp, ['"leases":[%s]' % items])

    # the auth printers: the protobuf responses as they are

    def _auth(self, *args) -> None:
        self._pb(args[-1])

    role_add = role_get = role_delete = role_list = role_grant_permission = role_revoke_permission = _auth
    user_add = user_get = user_list = user_change_password = user_grant_role = user_revoke_role = _auth
    user_delete = _auth
