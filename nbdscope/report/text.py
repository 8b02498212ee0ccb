"""The human summary of an analysis run, rendered with rich at the console's width.

Findings are written as short blocks (a line saying where and what, the message wrapped as words
under it), never as a many-column table: at 80 columns a table cut rule ids in half and gave
each finding nine lines. Flags show only their set bits unless ``bits`` asks for the full table."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.engine import Result
from nbdscope.analysis.session import Session
from nbdscope.report.clock import Clock
from nbdscope.report.fieldinfo import BitRow
from nbdscope.report.sessionpanel import SessionPanel, session_panel
from nbdscope.report.wording import plural
from nbdscope.selection import Selection

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
MESSAGE_INDENT = 4  # a finding's message, under its heading line


def heading(result: Result, inputs: list[str]) -> str:
    """The report's first line: how many sessions, in which inputs."""
    return f"nbdscope: {plural(len(result.sessions), 'NBD session')} in {', '.join(inputs)}"


def compact_bits(bits: list[BitRow]) -> str:
    """The set bits only, each as its short name and number: ``HAS_FLAGS(0) READ_ONLY(1)``; a set bit the
    spec does not define is ``reserved(N)``."""
    words = []
    for row in bits:
        if row.set:
            name = row.bit.name.removeprefix("NBD_FLAG_") if row.bit is not None else "reserved"
            words.append(f"{name}({row.number})")
    return " ".join(words) or "none set"


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


def _info(panel: SessionPanel, bits: bool) -> Table:
    info = Table(show_header=False, box=None, padding=(0, 1))
    info.add_column(style="bold", no_wrap=True)
    info.add_column()
    for label, value in panel.rows:
        info.add_row(label, value)
    if panel.flags_value is not None and not bits:
        info.add_row(panel.flags.field, f"{panel.flags_value:#06x} {compact_bits(panel.bits)}")
    return info


def _session_panel(s: Session, clock: Clock, bits: bool) -> Panel:
    panel = session_panel(s, "report")
    parts: list[object] = [_info(panel, bits)]
    if panel.flags_value is not None and bits:
        parts.append(Text(f"{panel.flags.field} {panel.flags_value:#06x}", style="bold"))
        parts.append(_flag_bits(panel.bits))
    if panel.commands:
        cmds = Table(title=None, box=None, padding=(0, 1))
        for col in ("command", "count", "bytes", "errors", "p50 us", "p99 us", "max us"):
            cmds.add_column(col, justify="left" if col == "command" else "right", no_wrap=col == "command")
        for c in panel.commands:
            lat = c.latency_us
            cmds.add_row(c.name, str(c.count), str(c.bytes), str(c.errors),
                         *(f"{lat[k]:.1f}" if lat else "-" for k in ("p50", "p99", "max")))
        parts.append(cmds)
    title = f"session {s.id}  {clock.text(s.start_time)} to {clock.text(s.last_time or s.start_time)}"
    if s.anomaly_count:
        title += f"  [red]{plural(s.anomaly_count, 'anomaly')}[/red]"
    return Panel(Group(*parts), title=title, title_align="left")  # type: ignore[arg-type]


def _silenced(result: Result, selection: Selection | None) -> Text | None:
    """One line: what the selection kept out of the report, per check."""
    if selection is None or not selection.active:
        return None
    total = sum(result.silenced.values())
    line = Text(f"{plural(total, 'finding')} silenced by {selection.describe()}", style="dim")
    if result.silenced:
        line.append(": " + ", ".join(f"{k} {n}" for k, n in result.silenced.items()), style="dim")
    return line


def frame_of(a: Anomaly, result: Result) -> str:
    """The frame a finding cites; with several inputs named with its file, since numbers restart per file."""
    return f"{os.path.basename(a.source)}:{a.frame}" if result.inputs else str(a.frame)


def _wrapped(text: str, width: int, first: str, later: str) -> str:
    """``text`` wrapped as words at ``width`` after the indents: a rule id or any other word is never broken
    (one longer than the line stays whole) and no line ends in padding."""
    return "\n".join(textwrap.wrap(text, width, initial_indent=first, subsequent_indent=later,
                                   break_long_words=False, break_on_hyphens=False))


def _fields(fields: list[str], width: int, later: str) -> str:
    """Fields joined by two spaces and wrapped between fields only, so that ``blame server`` stays whole."""
    lines = [fields[0]]
    for f in fields[1:]:
        if len(lines[-1]) + 2 + len(f) <= width:
            lines[-1] += "  " + f
        else:
            lines.append(later + f)
    return "\n".join(lines)


def finding_block(a: Anomaly, result: Result, clock: Clock, width: int) -> Text:
    """One finding: ``frame 27  warning  unaligned-extent.length  blame server  s1``, then when, the message
    and the requirement rows (or spec section) as words wrapped under it."""
    fields = [f"frame {frame_of(a, result)}", a.severity, a.check or a.rule, f"blame {a.blame}", a.session or "-"]
    where = f"requirements {', '.join(a.requirements)}" if a.requirements else f"spec: {a.spec}"
    indent = " " * MESSAGE_INDENT
    body = f"at {clock.text(a.time + result.t0)}: {a.message} ({where})"
    head = _fields(fields, width, "  ")
    block = Text(head + "\n" + _wrapped(body, width, indent, indent))
    start = head.index(a.severity)
    block.stylize(_SEVERITY_STYLE[a.severity], start, start + len(a.severity))
    return block


def render(result: Result, inputs: list[str], console: Console, selection: Selection | None = None, *,
           clock: Clock | None = None, bits: bool = False, after_heading: Callable[[], None] | None = None) -> None:
    """The heading line, then (``after_heading``: the --messages timeline goes there) capture problems,
    the session panels and the findings."""
    clock = clock if clock is not None else Clock("rel", result.t0)
    console.print(Text(_wrapped(heading(result, inputs), console.width, "", "  ")), soft_wrap=True)
    if after_heading is not None:
        after_heading()
    for problem in result.problems:
        console.print(f"[yellow]capture problem[/yellow] {problem.source} frame {problem.frame}: {problem.message}")
    for session in result.sessions:
        console.print(_session_panel(session, clock, bits))
    silenced = _silenced(result, selection)
    if not result.anomalies:
        console.print("[green]no anomalies[/green]")
    else:
        console.print(Text(plural(len(result.anomalies), "anomaly"), style="bold"), soft_wrap=True)
        for a in result.anomalies:
            console.print(finding_block(a, result, clock, console.width), soft_wrap=True)
    if silenced is not None:
        console.print(silenced)
