"""``-w simple`` (ctlv3/command/printer_simple.go)."""

from __future__ import annotations

from . import errors
from .printer import EpHealth, Printer


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
