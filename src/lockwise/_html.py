"""The HTML report: one self-contained page from a JSON report.

``lockwise report run.json --html report.html`` writes it. The page has no
external resources and no script (inline CSS, inline SVG drawn here), so it
opens offline and in locked-down viewers. Sections:

* the findings, each with its text report and its stacks;
* the lock-order graph as a drawing: nodes on a circle (members of one
  strongly connected component side by side), edges as curved arrows, every
  edge that lies on a cycle (and its nodes) in red. Edges come from the
  report's ``"order_graph"`` plus those implied by the findings (lock-order
  cycles; "holds A, waits for B" in deadlocks), so older reports draw too;
* the contention table (the ``"profile"`` section), with waiter and holder
  sites;
* a per-thread timeline of holds and waits of the busiest locks.

Every piece of text from the report (lock names, thread names, stacks,
source lines) is escaped. Cost: linear in the report; the graph drawing is
capped at ``MAX_NODES`` nodes (cycle members first).
"""

from __future__ import annotations

import math
import os
from html import escape

from ._files import atomic_write
from ._findings import Finding, StackInfo
from ._report import FORK_FIX, confirmation_status, format_ns, format_stack, profile_header, render

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Iterable, Optional

#: Most nodes drawn in the lock-order graph (cycle members and locks named in
#: findings first, then the most connected).
MAX_NODES = 60
#: Width of a timeline drawing, in px.
TIMELINE_WIDTH = 900

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;
background:#f6f7f9}
header{background:#23262d;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#c9ccd3}
main{padding:8px 24px 40px;max-width:1400px}
section.block{background:#fff;border:1px solid #dde0e5;border-radius:6px;padding:12px 18px;
margin:16px 0}
h2{font-size:17px;margin:4px 0 10px}
.finding{border-left:4px solid #999;padding:4px 12px;margin:12px 0;background:#fafafa}
.finding.kind-deadlock{border-color:#c62828}.finding.kind-lock-order{border-color:#ef6c00}
.finding.kind-hang{border-color:#6a1b9a}.finding.kind-contention{border-color:#1565c0}
.finding.kind-fork-hazard{border-color:#00838f}
.finding h3{font-size:15px;margin:6px 0}
.kind{display:inline-block;font-size:12px;padding:1px 7px;border-radius:9px;color:#fff;
background:#777;margin-right:6px}
.kind-deadlock .kind{background:#c62828}.kind-lock-order .kind{background:#ef6c00}
.kind-hang .kind{background:#6a1b9a}.kind-fork-hazard .kind{background:#00838f}
pre{background:#f2f3f5;padding:8px 10px;overflow:auto;font:12px/1.4 ui-monospace,Menlo,
Consolas,monospace;margin:6px 0}
details summary{cursor:pointer;color:#333}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e3e5e8;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f0f1f4;position:sticky;top:0}
td.lock,th.lock{text-align:left}
td.lock small{color:#666}
tr.sites td{text-align:left;color:#444;font-size:12px;background:#fcfcfd}
.note{color:#555;font-size:13px}
svg text{font:12px system-ui,sans-serif}
svg .node rect{fill:#eef3fb;stroke:#5b7db1;stroke-width:1.2}
svg .node.cycle rect{fill:#fdecea;stroke:#c62828;stroke-width:2}
svg .edge{fill:none;stroke:#8a94a6;stroke-width:1.3}
svg .edge.cycle{stroke:#c62828;stroke-width:2.4}
svg .hold{fill:#4f8fd6}svg .wait{fill:#e0533d}
svg .lane{fill:#f4f5f7}
.legend span{display:inline-block;width:12px;height:12px;vertical-align:-2px;margin:0 4px 0 12px}
"""


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


# ------------------------------------------------------------------ graph


class _Graph:
    """Nodes (by display name) and edges of the drawing, with cycle edges."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[tuple[str, str], str] = {}  # (from, to) -> why

    def node(self, ref: Any, named: bool = False) -> Optional[str]:
        if isinstance(ref, dict):
            name = str(ref.get("name", "?"))
            site = str(ref.get("site", ""))
        elif ref is None:
            return None
        else:
            name, site = str(ref), ""
        entry = self.nodes.setdefault(name, {"name": name, "site": site, "named": False})
        if site and not entry["site"]:
            entry["site"] = site
        if named:
            entry["named"] = True
        return name

    def edge(self, a: Optional[str], b: Optional[str], why: str) -> None:
        if a is not None and b is not None:
            self.edges.setdefault((a, b), why)

    def cycle_edges(self) -> set[tuple[str, str]]:
        comp = _components(list(self.nodes), list(self.edges))
        size: dict[int, int] = {}
        for c in comp.values():
            size[c] = size.get(c, 0) + 1
        return {(a, b) for a, b in self.edges if a == b or (comp[a] == comp[b] and
                                                            size[comp[a]] > 1)}


def _components(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Strongly connected components (Tarjan, iterative): node -> component id."""
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        out[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    comp: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    ncomp = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            recurse = False
            succ = out[v]
            while i < len(succ):
                w = succ[i]
                i += 1
                if w not in index:
                    work.append((v, i))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp[w] = ncomp
                    if w == v:
                        break
                ncomp += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return comp


def build_graph(data: dict[str, Any], findings: list[Finding]) -> _Graph:
    """The lock-order graph of a report, with the edges its findings imply."""
    g = _Graph()
    order = data.get("order_graph")
    if isinstance(order, dict):
        for ref in order.get("nodes", []):
            g.node(ref)
        for edge in order.get("edges", []):
            if isinstance(edge, dict):
                g.edge(g.node(edge.get("from_name")), g.node(edge.get("to_name")), "order")
    for f in findings:
        for ref in f.locks:
            g.node(ref.to_dict(), named=True)
        if f.kind == "lock-order":
            for edge in f.details.get("cycle", []):
                if isinstance(edge, dict):
                    g.edge(g.node(edge.get("from"), True), g.node(edge.get("to"), True),
                           "lock-order")
        elif f.kind == "deadlock":
            for entry in f.details.get("threads", []):
                wait = entry.get("waits_for", {}) if isinstance(entry, dict) else {}
                if not isinstance(wait, dict) or wait.get("kind") != "lock":
                    continue
                target = g.node(wait.get("lock"), True)
                for held in entry.get("holds", []):
                    g.edge(g.node(held.get("lock"), True), target, "deadlock")
    return g


def _text_width(text: str) -> float:
    return 7.2 * len(text) + 16


def render_graph(g: _Graph) -> str:
    """The graph as an inline SVG (circle layout; cycle edges in red)."""
    if not g.nodes:
        return '<p class="note">No lock was acquired while holding another: no order graph.</p>'
    cycles = g.cycle_edges()
    in_cycle = {n for e in cycles for n in e}
    degree: dict[str, int] = {n: 0 for n in g.nodes}
    for a, b in g.edges:
        degree[a] += 1
        degree[b] += 1
    ranked = sorted(g.nodes, key=lambda n: (n not in in_cycle, not g.nodes[n]["named"],
                                            -degree[n], n))
    shown = ranked[:MAX_NODES]
    comp = _components(list(g.nodes), list(g.edges))
    shown.sort(key=lambda n: (comp[n], n))  # a component's nodes side by side
    n = len(shown)
    label = {name: name if len(name) <= 40 else name[:37] + "..." for name in shown}
    widest = max(_text_width(label[x]) for x in shown)
    radius = 0.0 if n == 1 else max(110.0, n * 46 / (2 * math.pi), widest * 0.75)
    width = 2 * radius + widest + 60
    height = 2 * radius + 90
    cx, cy = width / 2, height / 2
    pos: dict[str, tuple[float, float]] = {}
    for i, name in enumerate(shown):
        angle = -math.pi / 2 + 2 * math.pi * i / n
        pos[name] = (cx + radius * math.cos(angle), cy + radius * math.sin(angle))
    parts = [f'<svg id="order-graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
             'aria-label="lock-order graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" '
             'fill="#8a94a6"/></marker><marker id="arrow-cycle" viewBox="0 0 10 10" refX="9" '
             'refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
             '<path d="M0,0L10,5L0,10z" fill="#c62828"/></marker></defs>']
    for (a, b), why in sorted(g.edges.items()):
        if a not in pos or b not in pos:
            continue
        cyc = (a, b) in cycles
        cls = "edge cycle" if cyc else "edge"
        marker = "arrow-cycle" if cyc else "arrow"
        title = f"{a} \u2192 {b} ({why})"
        (x1, y1), (x2, y2) = pos[a], pos[b]
        if a == b:
            d = (f"M{x1 - 10:.1f},{y1 - 12:.1f} C{x1 - 40:.1f},{y1 - 60:.1f} "
                 f"{x1 + 40:.1f},{y1 - 60:.1f} {x1 + 10:.1f},{y1 - 12:.1f}")
        else:
            dx, dy = x2 - x1, y2 - y1
            dist = math.hypot(dx, dy) or 1.0
            ux, uy = dx / dist, dy / dist
            # Leave the boxes (half height 12, half width from the label).
            sa = _clip(ux, uy, _text_width(label[a]) / 2, 13)
            sb = _clip(ux, uy, _text_width(label[b]) / 2, 13)
            sx, sy = x1 + ux * sa, y1 + uy * sa
            ex, ey = x2 - ux * sb, y2 - uy * sb
            # Bend to the right of the direction, so a -> b and b -> a separate.
            bend = min(40.0, dist * 0.18)
            mx, my = (sx + ex) / 2 - uy * bend, (sy + ey) / 2 + ux * bend
            d = f"M{sx:.1f},{sy:.1f} Q{mx:.1f},{my:.1f} {ex:.1f},{ey:.1f}"
        parts.append(f'<path class="{cls}" d="{d}" marker-end="url(#{marker})" '
                     f'data-from="{_e(a)}" data-to="{_e(b)}"><title>{_e(title)}</title></path>')
    for name in shown:
        x, y = pos[name]
        info = g.nodes[name]
        w = _text_width(label[name])
        cls = "node cycle" if name in in_cycle else "node"
        parts.append(f'<g class="{cls}" data-name="{_e(name)}">'
                     f'<title>{_e(name)} {_e(info["site"])}</title>'
                     f'<rect x="{x - w / 2:.1f}" y="{y - 12:.1f}" width="{w:.1f}" height="24" '
                     f'rx="6"/><text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">'
                     f'{_e(label[name])}</text></g>')
    parts.append("</svg>")
    more = len(g.nodes) - len(shown)
    note = (f'<p class="note">{more} more lock(s) not drawn (cycle members and locks in '
            f'findings come first).</p>' if more > 0 else "")
    ncyc = len(cycles)
    summary = (f'<p class="note">{len(g.nodes)} lock(s), {len(g.edges)} order edge(s); '
               f'{ncyc} edge(s) on a cycle, drawn in red.</p>' if ncyc else
               f'<p class="note">{len(g.nodes)} lock(s), {len(g.edges)} order edge(s); '
               'no cycle.</p>')
    return summary + '<div style="overflow:auto">' + "".join(parts) + "</div>" + note


def _clip(ux: float, uy: float, half_w: float, half_h: float) -> float:
    """Distance from a box's centre to its border along the unit vector (ux, uy)."""
    tx = half_w / abs(ux) if ux else math.inf
    ty = half_h / abs(uy) if uy else math.inf
    return min(tx, ty) + 2


# --------------------------------------------------------------- findings


def _stack_html(stack: StackInfo) -> str:
    text = "\n".join(format_stack(stack.frames, indent="")) or "(no Python frames)"
    return (f"<details open><summary>{_e(stack.thread)}: {_e(stack.title)}</summary>"
            f"<pre>{_e(text)}</pre></details>")


def _fork_html(f: Finding) -> str:
    """A fork hazard's id and fix, and a forked child's deadlock's link to it."""
    link = f.details.get("fork_hazard") if f.kind == "deadlock" else (
        f.details if f.kind == "fork-hazard" else None)
    if not isinstance(link, dict) or not link.get("id"):
        return ""
    what = ("Held by another thread of the parent when it forked: see fork hazard"
            if f.kind == "deadlock" else "Fork hazard")
    return (f'<p class="note">{what} <code>{_e(link.get("id"))}</code>. '
            f"Fix: {_e(FORK_FIX)}</p>")


def render_findings(findings: list[Finding]) -> str:
    if not findings:
        return ('<p class="note">No findings: no deadlock, lock-order inversion, hang or '
                'fork hazard.</p>')
    parts = []
    for i, f in enumerate(findings, 1):
        stacks = "".join(_stack_html(s) for s in f.stacks)
        locks = ", ".join(_e(ref.name) for ref in f.locks)
        parts.append(
            f'<article class="finding kind-{_e(f.kind)}" id="finding-{i}">'
            f'<h3><span class="kind">{_e(f.kind)}</span>{_e(f.summary)}</h3>'
            + (f'<p class="note">Locks: {locks}; threads: '
               f'{_e(", ".join(f.threads))}</p>' if f.locks or f.threads else "")
            + (f'<p class="note confirmation">{_e(confirmation_status(f))}</p>'
               if f.kind == "lock-order" else "")
            + _fork_html(f)
            + f"<details><summary>Full report</summary><pre>{_e(render(f))}</pre></details>"
            + (f"<h4>Stacks</h4>{stacks}" if stacks else "") + "</article>")
    return "".join(parts)


# ---------------------------------------------------------------- profile


_COLUMNS = (("acquisitions", "acquired", False), ("contentions", "contended", False),
            ("wait_total_ns", "wait total", True), ("wait_max_ns", "wait max", True),
            ("wait_mean_ns", "wait mean", True), ("wait_p99_ns", "wait p99", True),
            ("hold_total_ns", "hold total", True), ("hold_max_ns", "hold max", True),
            ("hold_mean_ns", "hold mean", True), ("handoffs", "hand-offs", False))


def _cell(value: Any, duration: bool) -> str:
    if value is None:
        return "-"
    return format_ns(value) if duration else str(value)


def _sites_html(label: str, sites: Iterable[dict[str, Any]]) -> str:
    items = [f"<li>{_e(s.get('site', '?'))} in {_e(s.get('function', '?'))}"
             + (f" <code>{_e(s.get('code'))}</code>" if s.get("code") else "")
             + f" &mdash; {_e(s.get('count', 0))}x, {_e(format_ns(s.get('wait_ns')))}</li>"
             for s in sites]
    if not items:
        return ""
    return f"<b>{_e(label)}</b><ul>{''.join(items)}</ul>"


def render_table(profile: dict[str, Any]) -> str:
    locks = [d for d in profile.get("locks", []) if isinstance(d, dict)]
    head = "".join(f"<th>{_e(title)}</th>" for _k, title, _d in _COLUMNS)
    rows = []
    for d in locks:
        cells = "".join(f"<td>{_e(_cell(d.get(k), dur))}</td>" for k, _t, dur in _COLUMNS)
        rows.append(f'<tr class="lock-row" data-lock="{_e(d.get("name", "?"))}">'
                    f'<td class="lock">{_e(d.get("name", "?"))}<br>'
                    f'<small>{_e(d.get("site", "?"))} ({_e(d.get("type", "Lock"))})</small>'
                    f"</td>{cells}</tr>")
        sites = (_sites_html("Waited at", d.get("waiters", []))
                 + _sites_html("Held from (acquired by the holder while others waited)",
                               d.get("holders", [])))
        if sites:
            rows.append(f'<tr class="sites"><td colspan="{len(_COLUMNS) + 1}">{sites}</td></tr>')
    if not rows:
        rows.append(f'<tr><td colspan="{len(_COLUMNS) + 1}">No lockwise lock was acquired '
                    "while profiling.</td></tr>")
    return (f'<p class="note">{_e(profile_header(profile))}. Sorted by total wait.</p>'
            f'<div style="overflow:auto"><table id="contention"><thead><tr>'
            f'<th class="lock">lock</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            "</table></div>")


def render_timeline(profile: dict[str, Any]) -> str:
    timeline = profile.get("timeline")
    if not isinstance(timeline, dict) or not timeline.get("locks"):
        return '<p class="note">No holds or waits were recorded.</p>'
    parts = ['<p class="note legend">Per thread, for the most waited-for locks '
             '(upper half of a lane: holds, lower half: waits):'
             '<span style="background:#4f8fd6"></span>holds'
             '<span style="background:#e0533d"></span>waits</p>']
    for lock in timeline["locks"]:
        threads = [t for t in lock.get("threads", []) if t.get("events")]
        if not threads:
            continue
        starts = [e[1] for t in threads for e in t["events"]]
        ends = [e[2] for t in threads for e in t["events"]]
        t0, t1 = min(starts), max(ends)
        span = max(t1 - t0, 1)
        label_w = 160
        lane_h = 22
        width = label_w + TIMELINE_WIDTH + 10
        height = lane_h * len(threads) + 28
        scale = TIMELINE_WIDTH / span
        svg = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
               f'height="{height}" data-lock="{_e(lock.get("name", "?"))}">']
        for row, t in enumerate(threads):
            y = row * lane_h + 4
            name = str(t.get("thread", "?"))
            svg.append(f'<rect class="lane" x="{label_w}" y="{y}" width="{TIMELINE_WIDTH}" '
                       f'height="{lane_h - 4}"/><text x="{label_w - 6}" y="{y + 13}" '
                       f'text-anchor="end">{_e(name if len(name) <= 22 else name[:21] + "...")}'
                       "</text>")
            # Holds in the upper half of the lane, waits in the lower half (a
            # thread may hold one lock of a class while it waits for another).
            for kind, start, stop in sorted(t["events"], key=lambda e: e[0] != "hold"):
                x = label_w + (start - t0) * scale
                w = max((stop - start) * scale, 1.0)
                cls = "wait" if kind == "wait" else "hold"
                top = y + (lane_h - 4) / 2 if cls == "wait" else y + 1
                svg.append(f'<rect class="{cls}" x="{x:.1f}" y="{top:.1f}" width="{w:.1f}" '
                           f'height="{(lane_h - 6) / 2:.1f}"><title>{_e(name)} {cls}s '
                           f'{_e(format_ns(stop - start))} at +{_e(format_ns(start))}'
                           "</title></rect>")
        axis_y = lane_h * len(threads) + 18
        svg.append(f'<text x="{label_w}" y="{axis_y}">+{_e(format_ns(t0))}</text>'
                   f'<text x="{label_w + TIMELINE_WIDTH}" y="{axis_y}" text-anchor="end">'
                   f'+{_e(format_ns(t1))}</text></svg>')
        more = " (the most recent events only)" if lock.get("truncated") else ""
        parts.append(f"<h3>{_e(lock.get('name', '?'))} <small>{_e(lock.get('site', ''))}"
                     f"</small></h3><p class='note'>{len(threads)} thread(s), "
                     f"{_e(format_ns(span))} shown{more}</p>"
                     f'<div style="overflow:auto">{"".join(svg)}</div>')
    return "".join(parts)


# ------------------------------------------------------------------ page


def render_notes(notes: list[str]) -> str:
    """The report's notes (checks that ran degraded), if any."""
    if not notes:
        return ""
    items = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return (f'<section class="block" id="notes"><h2>Notes</h2><p class="note">Some checks '
            f"ran degraded in this run:</p><ul>{items}</ul></section>")


def render_page(data: dict[str, Any], findings: list[Finding], source: str = "") -> str:
    """The whole HTML document (a str)."""
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    summary = (", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
               if counts else "no findings")
    profile = data.get("profile")
    if isinstance(profile, dict):
        contention = render_table(profile)
        timeline = render_timeline(profile)
    else:
        hint = ('<p class="note">This run was not profiled (use <code>lockwise run '
                "--profile</code>).</p>")
        contention = timeline = hint
    graph = render_graph(build_graph(data, findings))
    title = f"lockwise report{': ' + os.path.basename(source) if source else ''}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p id=\"summary\">{len(findings)} finding(s): "
        f"{_e(summary)}</p></header><main>"
        f"{render_notes(data.get('notes', []))}"
        f'<section class="block" id="findings"><h2>Findings</h2>'
        f"{render_findings(findings)}</section>"
        f'<section class="block" id="graph"><h2>Lock-order graph</h2>{graph}</section>'
        f'<section class="block" id="profile"><h2>Contention</h2>{contention}</section>'
        f'<section class="block" id="timeline"><h2>Timeline</h2>{timeline}</section>'
        "</main></body></html>\n")


def write(path: str, data: dict[str, Any], findings: list[Finding], source: str = "") -> None:
    """Write the HTML report of ``data`` (a loaded JSON report) to ``path``
    (atomically, through a private temporary file: see ``_files``)."""
    page = render_page(data, findings, source)
    atomic_write(path, lambda f: f.write(page))
