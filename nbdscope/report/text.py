"""The human summary of an analysis run, rendered with rich."""

from __future__ import annotations

import os

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nbdscope.analysis.engine import Result
from nbdscope.analysis.session import Session
from nbdscope.report.fieldinfo import BitRow
from nbdscope.report.sessionpanel import session_panel
from nbdscope.selection import Selection

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _flag_bits(bits: list[BitRow]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 1))
    for row in bits:
        if row.bit is None:
            table.add_row(f"bit {row.number:>2}", Text("set", style="bold red"), Text("reserved", style="bold red"),
                          Text("not defined by the spec", style="dim"))
            continue
        table.add_row(f"bit {row.number:>2}", Text("set" if row.set else "-", style="green" if row.set else "dim"),
                      Text(row.bit.name, style="" if row.set else "dim"), Text(row.bit.meaning, style="dim"))
    return table


def _session_panel(s: Session) -> Panel:
    panel = session_panel(s, "report")
    info = Table(show_header=False, box=None, padding=(0, 1))
    info.add_column(style="bold")
    info.add_column()
    for label, value in panel.rows:
        info.add_row(label, value)
    parts: list[object] = [info]
    if panel.flags_value is not None:
        parts.append(Text(f"{panel.flags.field} {panel.flags_value:#06x}", style="bold"))
        parts.append(_flag_bits(panel.bits))
    if panel.commands:
        cmds = Table(title=None, box=None, padding=(0, 1))
        for col in ("command", "count", "bytes", "errors", "p50 us", "p99 us", "max us"):
            cmds.add_column(col, justify="left" if col == "command" else "right")
        for c in panel.commands:
            lat = c.latency_us
            cmds.add_row(c.name, str(c.count), str(c.bytes), str(c.errors),
                         *(f"{lat[k]:.1f}" if lat else "-" for k in ("p50", "p99", "max")))
        parts.append(cmds)
    title = f"session {s.id}"
    if s.anomaly_count:
        title += f"  [red]{s.anomaly_count} anomalies[/red]"
    return Panel(Group(*parts), title=title, title_align="left")  # type: ignore[arg-type]


def _silenced(result: Result, selection: Selection | None) -> Text | None:
    """One line: what the selection kept out of the report, per check."""
    if selection is None or not selection.active:
        return None
    total = sum(result.silenced.values())
    line = Text(f"{total} finding(s) silenced by {selection.describe()}", style="dim")
    if result.silenced:
        line.append(": " + ", ".join(f"{k} {n}" for k, n in result.silenced.items()), style="dim")
    return line


def render(result: Result, inputs: list[str], console: Console, selection: Selection | None = None) -> None:
    console.print(f"[bold]nbdscope[/bold]: {len(result.sessions)} NBD session(s) in {', '.join(inputs)}")
    for problem in result.problems:
        console.print(f"[yellow]capture problem[/yellow] {problem.source} frame {problem.frame}: {problem.message}")
    for session in result.sessions:
        console.print(_session_panel(session))
    silenced = _silenced(result, selection)
    if not result.anomalies:
        console.print("[green]no anomalies[/green]")
    else:
        table = Table(title=f"{len(result.anomalies)} anomalies", title_justify="left")
        for col in ("severity", "check", "blame", "session", "frame", "message", "requirements / spec"):
            table.add_column(col, overflow="fold")
        for a in result.anomalies:
            # several inputs: frame numbers restart with each file, so the frame is named with its file
            frame = f"{os.path.basename(a.source)}:{a.frame}" if result.inputs else str(a.frame)
            table.add_row(Text(a.severity, style=_SEVERITY_STYLE[a.severity]), a.check or a.rule, a.blame, a.session,
                          frame, a.message, ", ".join(a.requirements) or a.spec)
        console.print(table)
    if silenced is not None:
        console.print(silenced)
