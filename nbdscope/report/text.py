"""The human summary of an analysis run, rendered with rich."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nbdscope.analysis.engine import Result
from nbdscope.analysis.session import Session
from nbdscope.spec import TRANSMISSION_FLAGS

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n} ({n / scale:.1f} {unit})"
    return str(n)


def _flag_bits(value: int) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 1))
    for bit in TRANSMISSION_FLAGS.bits:
        is_set = bool(value & bit.mask)
        table.add_row(f"bit {bit.number:>2}", Text("set" if is_set else "-", style="green" if is_set else "dim"),
                      Text(bit.name, style="" if is_set else "dim"), Text(bit.meaning, style="dim"))
    for n in range(16):
        if value & (1 << n) and TRANSMISSION_FLAGS.bit(n) is None:
            table.add_row(f"bit {n:>2}", Text("set", style="bold red"), Text("reserved", style="bold red"),
                          Text("not defined by the spec", style="dim"))
    return table


def _session_panel(s: Session) -> Panel:
    info = Table(show_header=False, box=None, padding=(0, 1))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("endpoints", f"client {s.client}  ->  server {s.server}")
    info.add_row("input", f"{s.source} frames {s.first_frame}-{s.last_frame}")
    info.add_row("handshake", s.handshake + ("  (capture began mid-connection)" if not s.saw_start else ""))
    info.add_row("TLS", f"yes, {s.tls_bytes} encrypted bytes not decoded" if s.tls else "no")
    name = "unknown" if s.export_name is None else repr(s.export_name)
    info.add_row("export", f"name {name}, size {_size(s.size)}")
    if s.min_block is not None:
        info.add_row("block sizes", f"minimum {s.min_block}, preferred {s.preferred_block}, "
                     f"maximum payload {s.max_payload}")
    else:
        info.add_row("block sizes", "not advertised (spec defaults: minimum 1, maximum payload 32 MiB)")
    replies = {True: "structured", False: "simple only", None: "unknown"}[s.structured_replies]
    if s.extended_headers:
        replies = "extended headers"
    info.add_row("replies", replies)
    if s.meta_contexts:
        info.add_row("meta contexts", ", ".join(f"{k} = {v}" for k, v in sorted(s.meta_contexts.items())))
    info.add_row("disconnect", s.disconnect)
    parts: list[object] = [info]
    if s.transmission_flags is not None:
        parts.append(Text(f"transmission flags {s.transmission_flags:#06x}", style="bold"))
        parts.append(_flag_bits(s.transmission_flags))
    if s.commands:
        cmds = Table(title=None, box=None, padding=(0, 1))
        for col in ("command", "count", "bytes", "errors", "p50 us", "p99 us", "max us"):
            cmds.add_column(col, justify="left" if col == "command" else "right")
        for name, st in s.as_json()["commands"].items():  # type: ignore[union-attr]
            lat = st["latency_us"] or {}
            cmds.add_row(name, str(st["count"]), str(st["bytes"]), str(st["errors"]),
                         *(f"{lat[k]:.1f}" if lat else "-" for k in ("p50", "p99", "max")))
        parts.append(cmds)
    title = f"session {s.id}"
    if s.anomaly_count:
        title += f"  [red]{s.anomaly_count} anomalies[/red]"
    return Panel(Group(*parts), title=title, title_align="left")  # type: ignore[arg-type]


def render(result: Result, inputs: list[str], console: Console) -> None:
    console.print(f"[bold]nbdscope[/bold]: {len(result.sessions)} NBD session(s) in {', '.join(inputs)}")
    for problem in result.problems:
        console.print(f"[yellow]capture problem[/yellow] {problem.source} frame {problem.frame}: {problem.message}")
    for session in result.sessions:
        console.print(_session_panel(session))
    if not result.anomalies:
        console.print("[green]no anomalies[/green]")
        return
    table = Table(title=f"{len(result.anomalies)} anomalies", title_justify="left")
    for col in ("severity", "rule", "blame", "session", "frame", "message", "spec"):
        table.add_column(col, overflow="fold")
    for a in result.anomalies:
        table.add_row(Text(a.severity, style=_SEVERITY_STYLE[a.severity]), a.rule, a.blame, a.session,
                      str(a.frame), a.message, a.spec)
    console.print(table)
