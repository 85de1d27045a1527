"""``-w table`` (ctlv3/command/printer_table.go with olekukonko/tablewriter)."""

from __future__ import annotations

from . import errors
from .printer import (DB_STATUS_HEADER, ENDPOINT_HASHKV_HEADER, db_status_rows, ENDPOINT_STATUS_HEADER, MEMBER_LIST_HEADER, EpHashKV,
                      EpHealth, EpStatus, Printer, endpoint_hashkv_rows, endpoint_status_rows,
                      member_list_rows)

MAX_COL_WIDTH = 30
PENALTY = 100000  # tablewriter's defaultPenalty


def _wrap_words(words: list[str], spc: int, lim: int, pen: int) -> list[list[str]]:
    """tablewriter.WrapWords: minimum-raggedness line breaking."""
    n = len(words)
    length = [[0] * n for _ in range(n)]
    for i in range(n):
        length[i][i] = len(words[i])
        for j in range(i + 1, n):
            length[i][j] = length[i][j - 1] + spc + len(words[j])
    nbrk = [0] * n
    cost = [2 ** 31 - 1] * n
    for i in range(n - 1, -1, -1):
        if length[i][n - 1] <= lim:
            cost[i] = 0
            nbrk[i] = n
        else:
            for j in range(i + 1, n):
                d = lim - length[i][j - 1]
                c = d * d + cost[j]
                if length[i][j - 1] > lim:
                    c += pen
                if c < cost[i]:
                    cost[i] = c
                    nbrk[i] = j
    lines, i = [], 0
    while i < n:
        lines.append(words[i:nbrk[i]])
        i = nbrk[i]
    return lines


def _wrap_string(s: str, lim: int) -> list[str]:
    """tablewriter.WrapString."""
    words = s.replace("\n", " ").split(" ")
    for w in words:
        if len(w) > lim:
            lim = len(w)
    return [" ".join(line) for line in _wrap_words(words, 1, lim, PENALTY)]


def _dimension(s: str) -> tuple[list[str], int]:
    """tablewriter's parseDimension with auto-wrap: (lines, column width)."""
    raw = s.split("\n")
    width = max(len(line) for line in raw)
    width = min(width, MAX_COL_WIDTH)
    new_width = width
    lines: list[str] = []
    for i, para in enumerate(raw):
        para_lines = _wrap_string(para, width)
        for line in para_lines:
            new_width = max(new_width, len(line))
        if i > 0:
            lines.append(" ")
        lines.extend(para_lines)
    return lines, new_width


def _title(name: str) -> str:
    return name.replace("_", " ").strip().upper() or " "


def render(header: list[str], rows: list[list[str]]) -> str:
    """tablewriter.Table.Render: default settings, SetAlignment(ALIGN_RIGHT)."""
    ncol = len(header)
    widths = [0] * ncol
    hdr = []
    for i, h in enumerate(header):
        lines, w = _dimension(_title(h))
        hdr.append(lines)
        widths[i] = max(widths[i], w)
    cells = []
    for row in rows:
        parsed = []
        for i, c in enumerate(row):
            lines, w = _dimension(c)
            parsed.append(lines)
            widths[i] = max(widths[i], w)
        cells.append(parsed)
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"
    out = [sep]
    for k in range(max(len(h) for h in hdr)):
        line = "|"
        for i in range(ncol):
            txt = hdr[i][k] if k < len(hdr[i]) else ""
            gap = widths[i] - len(txt)
            left = gap // 2
            line += " " + " " * left + txt + " " * (gap - left) + " |"
        out.append(line + "\n")
    out.append(sep)
    for row in cells:
        for k in range(max(len(lines) for lines in row)):
            line = "|"
            for i in range(ncol):
                txt = row[i][k] if k < len(row[i]) else ""
                line += " " + txt.rjust(widths[i]) + " |"
            out.append(line + "\n")
    out.append(sep)
    return "".join(out)


class TablePrinter(Printer):
    format_name = "table"

    def endpoint_health(self, healths: list[EpHealth]) -> None:
        rows = [[h.ep, "true" if h.health else "false", h.took, h.error] for h in healths]
        errors.out(render(["endpoint", "health", "took", "error"], rows))

    def endpoint_status(self, statuses: list[EpStatus]) -> None:
        errors.out(render(ENDPOINT_STATUS_HEADER, endpoint_status_rows(statuses)))

    def endpoint_hashkv(self, hashes: list[EpHashKV]) -> None:
        errors.out(render(ENDPOINT_HASHKV_HEADER, endpoint_hashkv_rows(hashes)))

    def db_status(self, ds) -> None:
        errors.out(render(DB_STATUS_HEADER, db_status_rows(ds)))

    def member_list(self, resp) -> None:
        errors.out(render(MEMBER_LIST_HEADER, member_list_rows(resp.members)))
