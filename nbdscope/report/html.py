"""The HTML report (``analyze FILE -o report.html``): one self-contained page with the session summaries,
the findings with the catalogue's explanation of each check, and the pictures of what the disk saw.

The page loads nothing: styles are inline, the charts are inline SVG (``figures``), and the data they
were drawn from is embedded as JSON (``<script type="application/json" id="nbdscope-plot-data">``) for
tools and tests. Everything that comes from the capture (export names, descriptions, server messages)
is escaped: a peer chooses those bytes."""

from __future__ import annotations

import html
import json
import os
from typing import IO, TYPE_CHECKING, Any

from nbdscope import __version__
from nbdscope.analysis.iomap import IoMap
from nbdscope.report import figures as fig
from nbdscope.report.sessionpanel import session_panel

if TYPE_CHECKING:
    from nbdscope.analysis.anomaly import Anomaly
    from nbdscope.analysis.engine import Result
    from nbdscope.analysis.session import Session
    from nbdscope.selection import Selection

MAX_FINDING_ROWS = 2000  # findings listed one by one; the rest are counted per check
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; } h3 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .2em .5em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.error { color: #b00; font-weight: bold; } .warning { color: #a60; } .info { color: #06c; }
.session { border: 1px solid #ccc; border-radius: 6px; padding: .2em 1em; margin: .6em 0; }
figure.plot { margin: 1em 0; } figure.plot svg { width: 100%; height: auto; }
figcaption { font-weight: bold; margin-bottom: .3em; } .note { color: #666; font-size: .9em; }
dl.explain dt { font-weight: bold; margin-top: .6em; } dl.explain dd { margin-left: 1.2em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _script_json(data: object) -> str:
    """JSON that cannot end the script element it sits in, nor open a comment or markup there."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    """A table of already escaped cells."""
    out = ["<table><tr>", *(f"<th>{h}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _session(s: Session, anomalies: int) -> str:
    panel = session_panel(s, "report")
    title = f"session {_e(s.id)}: {_e(s.client)} → {_e(s.server)}"
    if anomalies:
        title += f' <span class="error">{anomalies} finding{"s" if anomalies != 1 else ""}</span>'
    parts = [f'<div class="session" id="session-{_e(s.id)}"><h3>{title}</h3>',
             _table(["", ""], [[_e(label), _e(value)] for label, value in panel.rows])]
    if panel.flags_value is not None:
        set_bits = [f"{b.number}: {b.bit.name}" if b.bit is not None else f"{b.number}: reserved"
                    for b in panel.bits if b.set]
        parts.append(f"<p>{_e(panel.flags.field)} {panel.flags_value:#06x}: {_e(', '.join(set_bits) or 'none')}</p>")
    if panel.commands:
        rows = []
        for c in panel.commands:
            lat = c.latency_us
            rows.append([_e(c.name), str(c.count), str(c.bytes), str(c.errors),
                         *(f"{lat[k]:.1f}" if lat else "-" for k in ("p50", "p99", "max"))])
        parts.append(_table(["command", "count", "bytes", "errors", "p50 µs", "p99 µs", "max µs"], rows,
                            {1, 2, 3, 4, 5, 6}))
    parts.append("</div>")
    return "".join(parts)


def _findings(result: Result) -> str:
    if not result.anomalies:
        return "<p>No findings.</p>"
    several = bool(result.inputs)
    rows = []
    for a in result.anomalies[:MAX_FINDING_ROWS]:
        frame = f"{os.path.basename(a.source)}:{a.frame}" if several else str(a.frame)
        ident = a.check or a.rule
        rows.append([f'<span class="{_e(a.severity)}">{_e(a.severity)}</span>',
                     f'<a href="#check-{_e(ident)}">{_e(ident)}</a>', _e(a.blame), _e(a.session), _e(frame),
                     f"{a.time:.6f}", _e(a.message)])
    more = len(result.anomalies) - MAX_FINDING_ROWS
    tail = f'<p class="note">{more} more findings are counted below, by check.</p>' if more > 0 else ""
    return _table(["severity", "check", "blame", "session", "frame", "time (s)", "message"], rows, {4, 5}) + tail


def _explanations(anomalies: list[Anomaly]) -> str:
    """What each check that fired means and what to do, from the rule catalogue (`nbdscope rules ID`)."""
    from nbdscope.report.ruledoc import check_entries, rule_entries

    checks, rules = check_entries(), {r.info.id: r.info for r in rule_entries()}
    counts: dict[str, int] = {}
    for a in anomalies:
        counts[a.check or a.rule] = counts.get(a.check or a.rule, 0) + 1
    out = ['<dl class="explain">']
    for ident, n in counts.items():
        out.append(f'<dt id="check-{_e(ident)}">{_e(ident)} ({n})</dt>')
        entry = checks.get(ident)
        if entry is not None:
            k = entry.check
            out.append(f"<dd>{_e(k.summary)}</dd>")
            out.append(f"<dd><b>What it means:</b> {_e(k.consequence or '(not written yet)')}</dd>")
            out.append(f"<dd><b>What to do:</b> {_e(k.fix or '(not written yet)')}</dd>")
            if k.requires:
                out.append(f"<dd><b>Requirements:</b> {_e(', '.join(k.requires))}</dd>")
        elif ident in rules:
            out.append(f"<dd>{_e(rules[ident].summary)}</dd>")
    out.append("</dl>")
    return "".join(out)


def _plots(data: dict[str, Any]) -> str:
    p = data["points"]
    note = (f'<p class="note">{p["kept"]} of {p["requests"]} requests are drawn as points (about one in '
            f'{p["stride"]}, and every one with an error, a finding or no reply: docs/REPORTS.md); histograms '
            "and throughput count every request.</p>") if p["stride"] > 1 else ""
    out = ["<h2>What the disk saw</h2>", note]

    def figure(kind: str, n: int, caption: str, svg: str) -> None:
        out.append(f'<figure class="plot" id="plot-{kind}-{n}" data-plot="{kind}"><figcaption>{caption}</figcaption>'
                   f"{fig.strip_ids(svg, f'p{kind}{n}')}</figure>")

    groups = fig.map_groups(data)
    for n, g in enumerate(groups):
        grp = data["groups"][g]
        name = "(default export)" if not grp["export"] else f"export “{_e(grp['export'])}”"
        figure("iomap", n, f"I/O map: {name} on {_e(grp['server'])} (sessions {_e(', '.join(grp['sessions']))})",
               fig.io_map(data, g))
    if len(data["groups"]) > len(groups):
        out.append(f'<p class="note">{len(data["groups"]) - len(groups)} more export group(s) without a map.</p>')
    if not groups:
        out.append('<p class="note">No requests: nothing to draw.</p>')
        return "".join(out)
    figure("latency-time", 0, "Latency over time", fig.latency_over_time(data))
    figure("latency-dist", 0, "Latency distribution per command", fig.latency_distribution(data))
    figure("sizes", 0, "Request sizes (power-of-two classes, as nbdkit-stats)", fig.sizes(data))
    figure("alignment", 0, "Offset alignment (largest power of two dividing the offset)", fig.alignments(data))
    figure("throughput", 0, "Throughput (read and write)", fig.throughput(data))
    return "".join(out)


def page(inputs: list[str], result: Result, data: dict[str, Any], selection: Selection | None = None) -> str:
    counts: dict[str, int] = {}
    for a in result.anomalies:
        counts[a.session] = counts.get(a.session, 0) + 1
    n, f = len(result.sessions), len(result.anomalies)
    head = (f"<h1>nbdscope report: {_e(', '.join(os.path.basename(i) for i in inputs))}</h1>"
            f"<p>{n} NBD session{'s' if n != 1 else ''}, {f} finding{'s' if f != 1 else ''}. "
            f"nbdscope {_e(__version__)}. Times are seconds since the first packet.</p>")
    problems = "".join(f'<p class="warning">capture problem: {_e(p.source)} frame {p.frame}: {_e(p.message)}</p>'
                       for p in result.problems)
    silenced = ""
    if selection is not None and selection.active:
        silenced = (f'<p class="note">{sum(result.silenced.values())} finding(s) silenced by '
                    f"{_e(selection.describe())}</p>")
    body = [head, problems, "<h2>Findings</h2>", _findings(result), silenced]
    if result.anomalies:
        body += ["<h2>What the findings mean</h2>", _explanations(result.anomalies)]
    body += ["<h2>Sessions</h2>", *(_session(s, counts.get(s.id, 0)) for s in result.sessions), _plots(data)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<title>nbdscope report</title><style>{_STYLE}</style></head><body>{''.join(body)}"
            f'<script type="application/json" id="nbdscope-plot-data">{_script_json(data)}</script>'
            "</body></html>\n")


class HtmlReport(IoMap):
    """Collects the plot data as the run goes and writes the page when it ends."""

    def __init__(self, out: IO[str], inputs: list[str], selection: Selection | None = None) -> None:
        super().__init__()
        self.out, self.inputs, self.selection = out, inputs, selection

    def finished(self, result: Result) -> None:
        super().finished(result)
        self.out.write(page(self.inputs, result, self.model.as_json(), self.selection))
