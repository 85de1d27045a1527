"""``-w protobuf``: the marshalled response bytes, nothing else (no newline)."""

from __future__ import annotations

from . import errors
from .printer import Printer


class ProtobufPrinter(Printer):
    format_name = "protobuf"

    def _pb(self, resp) -> None:
        errors.out(resp.SerializeToString())

    delete = get = put = txn = _pb
