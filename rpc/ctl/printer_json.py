"""``-w json``: Go's encoding/json of the response (ctlv3/command/printer_json.go)."""

from __future__ import annotations

from . import errors, gojson, goutil
from .printer import EpHealth, Printer


class JSONPrinter(Printer):
    format_name = "json"

    def _pb(self, resp) -> None:
        errors.out(gojson.encode(resp) + "\n")

    delete = get = put = txn = _pb

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
