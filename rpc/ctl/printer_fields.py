"""``-w fields`` (ctlv3/command/printer_fields.go)."""

from __future__ import annotations

from . import errors, goutil
from .printer import EpHealth, Printer


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
