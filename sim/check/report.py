"""A self-contained HTML report of a checked history (inline CSS and SVG, no scripts, no external assets).

It shows every verdict's summary; a timeline of all operations, one lane per
process, each a bar from invoke to complete colored by outcome (an info op
without a completion runs to the end, dashed); and, for a linearizability
failure, a close-up of the failing partition around the operation that cannot
be placed: the longest linearizable prefix found is outlined in blue and
numbered in linearization order, the operation that cannot be placed is
outlined in red and marked, and the operations that explain why (the write
that overwrote a value, the read still needing it) are outlined in purple.
Hovering a bar shows the operation: its key, value, outcome and times.

Given the run's faults and leaders (`petcd sim run --report`, or a history
file's #petcd:fault and #petcd:leader sections), the timeline also has one lane
per member showing when it led (and in which term), one lane per fault kind, and
every fault as a shaded band across the operations. A failing report starts
with what failed: the operations the checker could not place, then the other
checkers' violations.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from petcd.sim.check.history import KV_KINDS, Op, show
from petcd.sim.check.verdict import Verdict, overall

COLORS = {"ok": "#6cbf6c", "fail": "#e48a8a", "info": "#f2b84b"}
LEADER_COLOR = "#4a78c2"
# fault bands by family: partitions, members (crash, pause, clock), network, Raft's corners
FAULT_COLORS = {"isolate": "#9b59b6", "split": "#9b59b6", "one_way": "#9b59b6", "bridge": "#9b59b6", "leader": "#9b59b6",
                "stale_leader": "#2f80c0", "late_snapshot": "#2f80c0", "crash": "#d04040", "pause": "#d07a20",
                "clock": "#b0a020", "kill": "#d04040", "partition": "#9b59b6"}
DEFAULT_FAULT_COLOR = "#808080"
LANE_H = 18
BAR_H = 12
LEFT = 110
MAX_WIDTH = 24000
MAX_DETAILS_CHARS = 200_000

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; } h3 { font-size: 15px; }
.ok { color: #1b7f1b; } .fail { color: #b3261e; } .unknown { color: #9a6700; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
.scroll { overflow-x: auto; border: 1px solid #ddd; margin: 8px 0; }
svg text { font: 11px monospace; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
code, .op { font-family: monospace; }
.culprit { color: #b3261e; font-weight: bold; }
.legend span { display: inline-block; margin-right: 14px; }
.sw { display: inline-block; width: 14px; height: 10px; vertical-align: middle; margin-right: 4px; }
li { margin: 2px 0; }
.failed { border-left: 4px solid #b3261e; padding: 4px 12px; background: #fff5f5; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _natural(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def timeline_svg(
    history: Sequence[Op],
    indexes: Iterable[int],
    *,
    prefix: Sequence[int] = (),
    culprit: int | None = None,
    related: Iterable[int] = (),
    window: tuple[float, float] | None = None,
    min_width: int = 900,
    numbers: bool = True,
    faults: Sequence[dict[str, Any]] = (),
    leaders: Sequence[dict[str, Any]] = (),
) -> str:
    """An SVG timeline of history[i] for i in indexes: one lane per process.

    `leaders` ({member, term, from_ms, to_ms}) add one lane per member showing when it led;
    `faults` ({kind, detail, from_ms, to_ms}) one lane per fault kind, and a shaded band each
    across the operations' lanes.
    """
    idx = [i for i in indexes if 0 <= i < len(history)]
    if window is not None:
        lo_w, hi_w = window
        idx = [
            i
            for i in idx
            if history[i].invoke_ms <= hi_w and (history[i].complete_ms is None or history[i].complete_ms >= lo_w)
        ]
    if not idx:
        return "<p>(no operations)</p>"
    ops = [history[i] for i in idx]
    t0 = min(op.invoke_ms for op in ops)
    t1 = max(max(op.invoke_ms, op.complete_ms or op.invoke_ms) for op in ops)
    spans_end = [s["to_ms"] for s in [*faults, *leaders] if s.get("to_ms") is not None]
    t1 = max([t1, *spans_end])
    if window is not None:
        t0, t1 = max(t0, window[0]), min(t1, window[1])
    t1 = max(t1, t0 + 1)

    def shown(s: dict[str, Any]) -> bool:
        end = t1 if s.get("to_ms") is None else s["to_ms"]
        return s["from_ms"] <= t1 and end >= t0

    faults = [f for f in faults if shown(f)]
    leaders = [s for s in leaders if shown(s)]
    lanes = sorted({op.process for op in ops}, key=_natural)
    # a process's ops that overlap in time (an info op runs on after its timeout) get extra rows
    row: dict[int, int] = {}
    rows_of: dict[str, int] = {}
    for p in lanes:
        ends: list[float] = []
        for i, op in sorted(((i, op) for i, op in zip(idx, ops) if op.process == p), key=lambda t: (t[1].invoke_ms, t[0])):
            end = t1 if op.complete_ms is None else op.complete_ms
            for r, e in enumerate(ends):
                if e <= op.invoke_ms:
                    break
            else:
                r = len(ends)
                ends.append(0)
            ends[r] = end
            row[i] = r
        rows_of[p] = max(1, len(ends))
    top_of: dict[str, int] = {}
    y = 24
    leader_lanes = sorted({str(s["member"]) for s in leaders}, key=_natural)
    fault_lanes = sorted({str(f["kind"]) for f in faults})
    special_top: dict[tuple[str, str], int] = {}
    for kind, names in (("leader", leader_lanes), ("fault", fault_lanes)):
        for name in names:
            special_top[(kind, name)] = y
            y += LANE_H
        if names:
            y += 6
    ops_top = y
    for p in lanes:
        top_of[p] = y
        y += rows_of[p] * LANE_H + 4
    per_lane = max(sum(1 for op in ops if op.process == p) for p in lanes)
    width = int(min(MAX_WIDTH, max(min_width, per_lane * 8)))
    scale = (width - LEFT - 150) / (t1 - t0)
    height = y + 10
    order = {i: n for n, i in enumerate(prefix, 1)}
    rel = set(related)

    def x(t: float) -> float:
        return LEFT + (min(max(t, t0), t1) - t0) * scale

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
    ]
    # axis
    step = _nice_step((t1 - t0) / max(1, (width - LEFT) / 110))
    t = (t0 // step) * step
    while t <= t1:
        if t >= t0:
            out.append(f'<line x1="{x(t):.1f}" y1="14" x2="{x(t):.1f}" y2="{height - 8}" stroke="#eee"/>')
            out.append(f'<text x="{x(t) + 2:.1f}" y="12" fill="#888">{_e(_fmt_ms(t))}</text>')
        t += step
    # the faults as shaded bands behind the operations
    for f in faults:
        end = t1 if f.get("to_ms") is None else f["to_ms"]
        fx1, fx2 = x(f["from_ms"]), x(end)
        color = FAULT_COLORS.get(f["kind"], DEFAULT_FAULT_COLOR)
        out.append(
            f'<rect class="fault-band" data-kind="{_e(f["kind"])}" x="{fx1:.1f}" y="{ops_top - 2}" width="{max(1.0, fx2 - fx1):.1f}"'
            f' height="{max(1, height - ops_top - 8)}" fill="{color}" fill-opacity="0.12">'
            f"<title>{_e(_fault_tip(f))}</title></rect>"
        )
    for (kind, name), y in special_top.items():
        label = f"{name} leads" if kind == "leader" else name
        out.append(f'<text x="4" y="{y + BAR_H - 2}" fill="{"#1d3f80" if kind == "leader" else "#444"}">{_e(label[:16])}</text>')
        out.append(f'<line x1="{LEFT}" y1="{y + LANE_H - 2}" x2="{width - 10}" y2="{y + LANE_H - 2}" stroke="#f2f2f2"/>')
    for s in leaders:
        y = special_top[("leader", str(s["member"]))]
        end = t1 if s.get("to_ms") is None else s["to_ms"]
        lx1, lx2 = x(s["from_ms"]), x(end)
        w = max(2.0, lx2 - lx1)
        tip = f"{s['member']} led in term {s['term']} from {s['from_ms']} ms to " + (
            f"{s['to_ms']} ms" if s.get("to_ms") is not None else "the end")
        out.append(
            f'<rect class="leader" data-member="{_e(s["member"])}" data-term="{_e(s["term"])}" x="{lx1:.1f}" y="{y}" width="{w:.1f}"'
            f' height="{BAR_H}" rx="2" fill="{LEADER_COLOR}"><title>{_e(tip)}</title></rect>'
        )
        label = f"t{s['term']}"
        if w >= 7 * len(label) + 3:
            out.append(f'<text x="{lx1 + 2:.1f}" y="{y + BAR_H - 2}" fill="#fff">{_e(label)}</text>')
    for f in faults:
        y = special_top[("fault", str(f["kind"]))]
        end = t1 if f.get("to_ms") is None else f["to_ms"]
        fx1, fx2 = x(f["from_ms"]), x(end)
        out.append(
            f'<rect class="fault" data-kind="{_e(f["kind"])}" x="{fx1:.1f}" y="{y}" width="{max(2.0, fx2 - fx1):.1f}" height="{BAR_H}"'
            f' rx="2" fill="{FAULT_COLORS.get(f["kind"], DEFAULT_FAULT_COLOR)}" fill-opacity="0.7">'
            f"<title>{_e(_fault_tip(f))}</title></rect>"
        )
    for p in lanes:
        y = top_of[p]
        bottom = y + rows_of[p] * LANE_H
        out.append(f'<text x="4" y="{y + BAR_H - 2}" fill="#444">{_e(p[:14])}</text>')
        out.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#eee"/>')
    marks = []
    for i, op in zip(idx, ops):
        y = top_of[op.process] + row[i] * LANE_H
        open_end = op.complete_ms is None
        x1 = x(op.invoke_ms)
        x2 = x(t1 if open_end else op.complete_ms)  # type: ignore[arg-type]
        w = max(2.0, x2 - x1)
        stroke, sw, dash = "#555", 0.5, ""
        if open_end:
            dash = ' stroke-dasharray="4 2"'
        if i in order:
            stroke, sw = "#1d4ed8", 2
        if i in rel:
            stroke, sw, dash = "#7b3fb5", 2.5, ' stroke-dasharray="3 2"'
        if i == culprit:
            stroke, sw, dash = "#d00000", 3, ""
        tip = f"[{i}] {op.label()}\ninvoke {op.invoke_ms} ms, complete {op.complete_ms if not open_end else '-'}"
        if i in order:
            tip += f"  (linearized #{order[i]})"
        if i == culprit:
            tip += "  CANNOT BE PLACED"
        out.append(
            f'<rect x="{x1:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" rx="2" fill="{COLORS.get(op.outcome, "#bbb")}"'
            f' stroke="{stroke}" stroke-width="{sw}"{dash}><title>{_e(tip)}</title></rect>'
        )
        if numbers and i in order and w >= 7 * len(str(order[i])) + 3:
            out.append(f'<text x="{x1 + 2:.1f}" y="{y + BAR_H - 2}" fill="#0b2a80">{order[i]}</text>')
        if i == culprit:
            marks.append(
                f'<text x="{x1:.1f}" y="{y - 1}" fill="#d00000" font-weight="bold">&#9660; cannot be placed</text>'
            )
    out.extend(marks)
    out.append("</svg>")
    return '<div class="scroll">' + "".join(out) + "</div>"


def _fault_tip(f: dict[str, Any]) -> str:
    end = f"{f['to_ms']} ms" if f.get("to_ms") is not None else "the end"
    return f"fault {f['kind']} {f.get('detail', '')}: from {f['from_ms']} ms to {end}"


def _nice_step(raw: float) -> float:
    for m in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 600_000, 3_600_000):
        if m >= raw:
            return m
    return 3_600_000 * (int(raw // 3_600_000) + 1)


def _fmt_ms(t: float) -> str:
    return f"{t / 1000:g}s" if abs(t) >= 10_000 else f"{t:g}ms"


def _legend() -> str:
    items = [
        f'<span><i class="sw" style="background:{COLORS["ok"]}"></i>ok</span>',
        f'<span><i class="sw" style="background:{COLORS["fail"]}"></i>fail</span>',
        f'<span><i class="sw" style="background:{COLORS["info"]}"></i>info (dashed: never completed)</span>',
        '<span><i class="sw" style="border:2px solid #1d4ed8"></i>linearizable prefix (numbered)</span>',
        '<span><i class="sw" style="border:3px solid #d00000"></i>cannot be placed</span>',
        '<span><i class="sw" style="border:2px dashed #7b3fb5"></i>related</span>',
        f'<span><i class="sw" style="background:{LEADER_COLOR}"></i>leader (term)</span>',
        f'<span><i class="sw" style="background:{FAULT_COLORS["crash"]};opacity:.4"></i>fault (shaded while it lasts)</span>',
    ]
    return '<p class="legend">' + "".join(items) + "</p>"


def _op_line(history: Sequence[Op], i: int, cls: str = "op") -> str:
    if 0 <= i < len(history):
        op = history[i]
        end = "-" if op.complete_ms is None else op.complete_ms
        return f'<span class="{cls}">[{i}] {_e(op.label())}</span> <small>({op.invoke_ms}..{end} ms)</small>'
    return f"[{i}]"


def _lin_failure(history: Sequence[Op], f: dict[str, Any], title: str) -> str:
    from petcd.sim.check.linearizability import op_keys

    parts = [f"<h3>{_e(title)}: keys {_e(', '.join(f.get('keys', [])[:20]))}</h3>"]
    culprit = f.get("culprit")
    prefix = f.get("prefix", [])
    related = f.get("related", [])
    if culprit is not None:
        parts.append(f"<p>Cannot be placed: {_op_line(history, culprit, 'culprit')}<br>Why: {_e(f.get('culprit_why', ''))}</p>")
    parts.append(
        f"<p>Longest linearizable prefix found: {len(prefix)} operations; the state after it: "
        f"<code>{_e(', '.join(f'{k}={v}' for k, v in (f.get('state') or {}).items()) or '(no keys)')}</code>"
        + (f", store revision &ge; {_e(f.get('revision_bound'))}" if f.get("revision_bound") is not None else "")
        + "</p>"
    )
    for u in f.get("unsupplied", []):
        parts.append(f"<p>{_e(u['message'])}</p>")
    # the close-up: the partition's ops around the culprit
    keys = set(f.get("keys", []))
    part_idx = [
        i for i, op in enumerate(history) if op.kind in KV_KINDS and {show(k) for k in op_keys(op)} & keys
    ]
    focus = [i for i in ([culprit] if culprit is not None else []) + list(related) if 0 <= i < len(history)]
    tail = [i for i in prefix[-12:] if 0 <= i < len(history)]
    pts = [history[i] for i in focus + tail]
    if pts:
        lo = min(op.invoke_ms for op in pts)
        hi = max((op.complete_ms if op.complete_ms is not None else op.invoke_ms) for op in pts)
        pad = max(1.0, (hi - lo) * 0.05)
        parts.append("<p>Close-up of this partition:</p>")
        parts.append(
            timeline_svg(history, part_idx, prefix=prefix, culprit=culprit, related=related, window=(lo - pad, hi + pad))
        )
    cands = f.get("candidates", [])
    if cands:
        rows = "".join(
            f"<tr><td>{_op_line(history, c['index'], 'culprit' if c['index'] == culprit else 'op')}</td><td>{_e(c['why'])}</td></tr>"
            for c in cands
        )
        parts.append(f"<p>Operations that could come next, and why each cannot:</p><table><tr><th>operation</th><th>why</th></tr>{rows}</table>")
    if prefix:
        items = "".join(f"<li>{_op_line(history, i)}</li>" for i in prefix[-200:])
        start = max(1, len(prefix) - 199)
        parts.append(
            f"<details><summary>The linearizable prefix, in order (last {min(200, len(prefix))})</summary>"
            f'<ol start="{start}">{items}</ol></details>'
        )
    return "".join(parts)


def _violations(history: Sequence[Op], rows: list[dict[str, Any]], title: str) -> str:
    if not rows:
        return ""
    items = []
    for r in rows:
        ops = r.get("ops") or ([r["op"]] if isinstance(r.get("op"), int) else [])
        refs = "".join(f"<br>&nbsp;&nbsp;{_op_line(history, i)}" for i in ops[:4])
        items.append(f"<li>{_e(r.get('message', r))}{refs}</li>")
    return f"<h3>{_e(title)}</h3><ul>{''.join(items)}</ul>"


def _unplaced(history: Sequence[Op], verdicts: Sequence[Verdict]) -> str:
    """What failed, first: the operations the linearizability checker could not place, then the other violations."""
    items: list[str] = []
    for v in verdicts:
        d = v.details
        for title, parts in (("could not be placed", d.get("failures") or []), ("undecided (search budget exhausted)", d.get("unknown") or [])):
            for f in parts:
                culprit = f.get("culprit")
                keys = ", ".join(f.get("keys", [])[:10])
                if culprit is not None:
                    line = f"<li><b>{_e(title)}</b> (keys {_e(keys)}): {_op_line(history, culprit, 'culprit')}<br>why: {_e(f.get('culprit_why', ''))}"
                else:
                    line = f"<li><b>{_e(title)}</b> (keys {_e(keys)})"
                others = [c for c in f.get("candidates", []) if c.get("index") != culprit]
                if others:
                    line += "<br>nor could these come next:<ul>" + "".join(
                        f"<li>{_op_line(history, c['index'])}: {_e(c.get('why', ''))}</li>" for c in others[:10]) + "</ul>"
                items.append(line + "</li>")
        for r in (d.get("revision_violations") or []) + (d.get("violations") or []):
            ops = r.get("ops") or ([r["op"]] if isinstance(r.get("op"), int) else [])
            refs = "".join(f"<br>&nbsp;&nbsp;{_op_line(history, i)}" for i in ops[:4])
            items.append(f"<li><b>{_e(v.checker)}</b>: {_e(r.get('message', r))}{refs}</li>")
        if v.status != "ok" and not (d.get("failures") or d.get("unknown") or d.get("violations") or d.get("revision_violations")):
            items.append(f"<li><b>{_e(v.checker)}</b>: {_e(v.summary)}</li>")
    if not items:
        return ""
    return (
        '<div class="failed" id="unplaced"><h2>What failed: the operations the checker could not place, first</h2>'
        f"<ol>{''.join(items)}</ol></div>"
    )


def _spans_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<details><summary>{_e(title)} ({len(rows)})</summary><table><tr>{head}</tr>{body}</table></details>"


def render_html(
    history: Sequence[Op],
    verdicts: Sequence[Verdict],
    *,
    title: str = "petcd check",
    faults: Sequence[dict[str, Any]] = (),
    leaders: Sequence[dict[str, Any]] = (),
    run: dict[str, Any] | None = None,
    trace: Sequence[str] = (),
) -> str:
    from petcd.sim.check.history import explain_kv_counts

    status = overall(list(verdicts))
    kinds: dict[str, int] = {}
    for op in history:
        kinds[op.kind] = kinds.get(op.kind, 0) + 1
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{_e(title)}: {status}</title><style>{CSS}</style></head><body>",
        f'<h1>{_e(title)}: <span class="{status}">verdict={status}</span></h1>',
    ]
    if run:
        out.append("<p>" + " ".join(f"{_e(k)}=<code>{_e(v)}</code>" for k, v in run.items()) + "</p>")
    out.append(_unplaced(history, verdicts))
    out.append(
        f"<p>{len(history)} operations by {len({op.process for op in history})} processes"
        + (" (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")" if kinds else "")
        + (f"; {len(faults)} faults" if faults else "")
        + (f"; {len({(s['member'], s['term']) for s in leaders})} leaderships" if leaders else "")
        + ".</p>"
    )
    if any(op.kind in KV_KINDS for op in history):
        out.append(f"<p>{_e(explain_kv_counts(history))}.</p>")
    out.append("<table><tr><th>checker</th><th>status</th><th>summary</th></tr>")
    for v in verdicts:
        out.append(
            f'<tr><td><a href="#{_e(v.checker)}">{_e(v.checker)}</a></td><td class="{v.status}">{v.status}</td><td>{_e(v.summary)}</td></tr>'
        )
    out.append("</table>")
    out.append("<h2>Timeline</h2>" + _legend())
    highlight_prefix: list[int] = []
    culprit = None
    related: list[int] = []
    for v in verdicts:
        fails = v.details.get("failures") or []
        if v.checker == "linearizability" and fails:
            highlight_prefix = fails[0].get("prefix", [])
            culprit = fails[0].get("culprit")
            related = fails[0].get("related", [])
    out.append(
        timeline_svg(history, range(len(history)), prefix=highlight_prefix, culprit=culprit, related=related, numbers=False,
                     faults=faults, leaders=leaders)
    )
    out.append(_spans_table("Faults", ("kind", "detail", "from ms", "to ms"),
                            [(f["kind"], f.get("detail", ""), f["from_ms"], f.get("to_ms")) for f in faults]))
    out.append(_spans_table("Leaders", ("member", "term", "from ms", "to ms"),
                            [(s["member"], s["term"], s["from_ms"], "end" if s.get("to_ms") is None else s["to_ms"]) for s in leaders]))
    for v in verdicts:
        out.append(f'<h2 id="{_e(v.checker)}">{_e(v.checker)}: <span class="{v.status}">{v.status}</span></h2>')
        out.append(f"<p>{_e(v.summary)}</p>")
        d = v.details
        for n, f in enumerate(d.get("failures") or []):
            out.append(_lin_failure(history, f, f"Failing partition {n + 1}"))
        for n, f in enumerate(d.get("unknown") or []):
            out.append(_lin_failure(history, f, f"Undecided partition {n + 1} (step budget exhausted)"))
        out.append(_violations(history, d.get("revision_violations") or [], "Revision violations"))
        out.append(_violations(history, d.get("violations") or [], "Violations"))
        out.append(_violations(history, d.get("warnings") or [], "Warnings"))
        if d:
            text = json.dumps(d, indent=1, default=str)
            if len(text) > MAX_DETAILS_CHARS:
                text = text[:MAX_DETAILS_CHARS] + "\n... (truncated)"
            out.append(f"<details><summary>details</summary><pre>{_e(text)}</pre></details>")
    if trace:
        out.append(f"<h2>Trace (last {len(trace)} lines)</h2><pre>{_e(chr(10).join(trace))}</pre>")
    out.append("</body></html>\n")
    return "".join(out)


def write_html_report(
    path: str | Path,
    history: Sequence[Op],
    verdicts: Sequence[Verdict],
    *,
    title: str = "petcd check",
    faults: Sequence[dict[str, Any]] = (),
    leaders: Sequence[dict[str, Any]] = (),
    run: dict[str, Any] | None = None,
    trace: Sequence[str] = (),
) -> None:
    """Write the report for `verdicts` on `history` (the same list the checkers saw) to `path`."""
    Path(path).write_text(
        render_html(history, verdicts, title=title, faults=faults, leaders=leaders, run=run, trace=trace), encoding="utf-8"
    )
