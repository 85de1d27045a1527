"""Go's text/tabwriter, enough for etcdctl's usage text.

etcdctl formats its help through ``tabwriter.NewWriter(w, 0, 8, 1, '\\t', 0)``:
minwidth 0, tabwidth 8, padding 1, padding with tab characters, no flags.
"""

from __future__ import annotations


def _cells(text: str) -> list[list[str]]:
    lines = text.split("\n")
    return [line.split("\t") for line in lines]


def format_tabs(text: str, minwidth: int = 0, tabwidth: int = 8, padding: int = 1) -> str:
    """Return ``text`` aligned as Go's tabwriter (padchar '\\t') would write it."""
    lines = _cells(text)
    out: list[str] = []
    widths: list[int] = []

    def pad(textw: int, cellw: int) -> str:
        cellw = (cellw + tabwidth - 1) // tabwidth * tabwidth
        n = cellw - textw
        return "\t" * ((n + tabwidth - 1) // tabwidth)

    def write_lines(line0: int, line1: int) -> None:
        for i in range(line0, line1):
            line = lines[i]
            parts = []
            for j, cell in enumerate(line):
                if j < len(line) - 1:
                    parts.append(cell)
                    if j < len(widths):
                        parts.append(pad(len(cell), widths[j]))
                else:
                    parts.append(cell)
            out.append("".join(parts))

    def fmt(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            line = lines[this]
            if column >= len(line) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1:
                line = lines[this]
                if column >= len(line) - 1:
                    break
                w = len(line[column]) + padding
                if w > width:
                    width = w
                this += 1
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    fmt(0, len(lines))
    return "\n".join(out)
