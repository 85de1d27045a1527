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
