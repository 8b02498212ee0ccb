"""Rich renderables for the detail and hex panes: one message field by field, every
flags field bit by bit, with names and meanings taken from nbdscope.spec only."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.decoder import events as ev
from nbdscope.report.fieldinfo import NOT_SHOWN, BitRow, FieldInfo, bit_rows, field_info, flag_table
from nbdscope.spec import FLAG_FIELDS
from nbdscope.spec.metacontexts import describe_status
from nbdscope.spec.tables import CodeTable, FlagField
from nbdscope.tui import fields as F
from nbdscope.tui.store import NO_ROW, Store

EXTENTS_SHOWN = 32
HEX_PER_LINE = 8  # bytes per hex line: the pane fits beside the detail in 120 columns


class Palette(dict[str, str]):
    """Colours of the current theme (error, warning, accent, muted), so text stays readable on dark and light."""


def bits_table(bits: list[BitRow], pal: Palette, named: str = "") -> Table:
    """Every defined bit (number, name, set or clear, meaning) and any reserved bit that is set.
    Bits whose name appears in ``named`` (a finding's text) are pointed at."""
    t = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=False)
    t.add_column("bit", justify="right")
    t.add_column("name")
    t.add_column("state")
    t.add_column("meaning", overflow="fold")
    for row in bits:
        b = row.bit
        if b is None:
            bad = f"bold {pal['error']}"
            t.add_row(Text(str(row.number), style=bad), Text("RESERVED", style=bad), Text("SET", style=bad),
                      Text("not defined by the spec: must be zero", style=bad))
            continue
        pointed = bool(named) and (b.name in named or f"bit {b.number})" in named or f"bit {b.number} " in named)
        style = "bold" if row.set else pal["muted"]
        name = Text(b.name, style=style)
        if pointed:
            name.append(" ◀", style=f"bold {pal['warning']}")
        t.add_row(str(b.number), name, Text("set" if row.set else "clear", style=style), Text(b.meaning, style=style))
    return t


def _value(e: ev.Event, info: FieldInfo | None, value: object) -> str:
    """One field's value as the detail pane shows it, decoded by the table its metadata names."""
    kind = info.kind if info is not None else None
    codes = info.codes if info is not None else None
    if isinstance(value, int) and not isinstance(value, bool):
        if kind == "code" and codes is not None:
            code = codes.get(value)
            number = f"{value:#x}" if info is not None and info.hex else str(value)
            return f"{codes.name(value)} ({number})" + (f" — {code.meaning}" if code else "")
        if kind == "cookie":
            return f"{value:#x}"
        if kind in ("flags", "reserved"):
            return f"{value:#06x} ({value})"
    if kind == "us" and isinstance(value, float):
        return F.fmt_latency(value)
    if isinstance(value, tuple):
        shown = _sequence(e, kind, codes, value)
        if shown is not None:
            return shown
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _sequence(e: ev.Event, kind: str | None, codes: CodeTable | None, value: tuple[Any, ...]) -> str | None:
    """A tuple-valued field by its kind (None: no kind that says how)."""
    if kind == "codes" and codes is not None:
        return ", ".join(codes.name(v) for v in value) or "none"
    if kind == "extents":
        ctx = getattr(e, "context", None)
        shown = [f"{n}:{describe_status(ctx, s)}" for n, s in value[:EXTENTS_SHOWN]]
        more = f" (+{len(value) - EXTENTS_SHOWN} more)" if len(value) > EXTENTS_SHOWN else ""
        return ", ".join(shown) + more
    if kind == "in-flight" and codes is not None:
        return ", ".join(f"cookie {c:#x} {codes.name(cmd)} (frame {f})" for c, cmd, f in value)
    if kind == "contexts":
        return ", ".join(f"{i}={n}" for i, n in value)
    if kind == "values":
        return ", ".join(f"{k}={v}" for k, v in value)  # (name, value) pairs on the frozen event
    return None


def finding_renderable(a: Anomaly, pal: Palette) -> RenderableType:
    colour = {"error": pal["error"], "warning": pal["warning"]}.get(a.severity, pal["accent"])
    head = Text()
    head.append(f"{a.severity.upper()} ", style=f"bold {colour}")
    head.append(a.check or a.rule, style="bold")
    head.append(f"  blame: {a.blame}  session {a.session}  frame {a.frame}\n")
    head.append(a.message)
    if a.requirements:
        head.append(f"\nrequirements: {', '.join(a.requirements)} (nbdscope rules {a.check or a.rule})",
                    style=pal["muted"])
    head.append(f"\nspec: {a.spec}", style=pal["muted"])
    parts: list[RenderableType] = [head]
    for key, value in a.values.items():
        field = FLAG_FIELDS.get(key)
        if field is not None and isinstance(value, int):
            parts.append(Text(f"{field.field} of the session: {value:#06x}", style="bold"))
            parts.append(bits_table(bit_rows(field, value), pal, named=a.message))
        elif key not in ("transmission_flags",):
            shown = f"{value:#x}" if key == "cookie" and isinstance(value, int) else str(value)
            parts.append(Text(f"  {key}: {shown}", style=pal["muted"]))
    return Group(*parts)


def message_renderable(store: Store, row: int, pal: Palette) -> RenderableType:
    """The selected message: a title line, every decoded field, flags bit by bit, its link, its findings."""
    if row == NO_ROW or row >= len(store):
        return Text("no message selected", style=pal["muted"])
    e = store.events[row]
    title = Text()
    title.append(F.type_name(e), style="bold")
    arrow = "client → server" if e.dir == "c2s" else "server → client"
    title.append(f"   {arrow}   session {store.session_id(row)}   frame {e.frame}   "
                 f"t={store.rel_time(row):.6f}s   {e.phase}   #{row + 1}")
    parts: list[RenderableType] = [title]
    for finding in store.findings_for(row):  # why the user is probably here: first
        parts.append(finding_renderable(finding.anomaly, pal))
        parts.append(Text(""))
    t = Table(box=None, show_header=False, pad_edge=False, expand=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    flag_fields: list[tuple[str, FlagField, int]] = []
    for f in fields(e):
        if f.name in NOT_SHOWN:
            continue
        value = getattr(e, f.name)
        if value is None or value == () or value == {}:
            continue
        info = field_info(type(e), f.name)
        t.add_row(info.label if info is not None else f.name, _value(e, info, value))
        table = flag_table(type(e), f.name)
        if table is not None and isinstance(value, int):
            flag_fields.append((f.name, table, value))
    parts.append(t)
    other = store.link[row]
    if other != NO_ROW:
        what = "reply" if isinstance(e, ev.Request) else "request"
        o = store.events[other]
        parts.append(Text(f"→ {what}: {F.type_name(o)} #{other + 1}, frame {o.frame} (press r to jump)",
                          style=f"bold {pal['accent']}"))
    elif isinstance(e, ev.Request | ev.Reply):
        parts.append(Text("no matching " + ("reply" if isinstance(e, ev.Request) else "request") + " seen",
                          style=pal["muted"]))
    for name, table, value in flag_fields:
        parts.append(Text(f"\n{name} = {value:#06x}: {table.field}, bit by bit", style="bold"))
        parts.append(bits_table(bit_rows(table, value), pal))
    return Group(*parts)


def hex_renderable(store: Store, row: int, pal: Palette) -> RenderableType:
    """Offsets, hex and ASCII of the header bytes the decoder kept for this message."""
    if row == NO_ROW or row >= len(store):
        return Text("")
    raw = store.events[row].header
    if not raw:
        return Text("no header bytes kept for this message (a summary event, or decoded without headers)",
                    style=pal["muted"])
    out = Text()
    out.append(f"{len(raw)} header bytes\n", style="bold")
    for at in range(0, len(raw), HEX_PER_LINE):
        chunk = raw[at:at + HEX_PER_LINE]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(f"{at:04x}  ", style=pal["muted"])
        out.append(f"{hexes:<{HEX_PER_LINE * 3}} ")
        out.append(f"{text}\n", style=pal["muted"])
    return out
