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
from nbdscope.report.clock import TimeMode
from nbdscope.report.fieldinfo import NOT_SHOWN, BitRow, FieldInfo, bit_rows, field_info, flag_table
from nbdscope.spec import FLAG_FIELDS
from nbdscope.spec.metacontexts import describe_status
from nbdscope.spec.tables import CodeTable, FlagField
from nbdscope.tui import fields as F
from nbdscope.tui.store import NO_ROW, Store
from nbdscope.tui.times import moment

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


SIDES = {"c2s": "client → server", "s2c": "server → client"}  # the words of the title line, for every direction


def size_text(n: int) -> str:
    """A byte count or offset with a binary unit beside it when it has one: ``65536 bytes (64 KiB)``."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            amount = n / scale
            return f"{n} bytes ({amount:.0f} {unit})" if n % scale == 0 else f"{n} bytes ({amount:.1f} {unit})"
    return f"{n} byte{'' if n == 1 else 's'}"


def quoted(text: str) -> str:
    """A string from the wire in single quotes as the findings and the report write it, control characters
    escaped (so an empty export name stays visible)."""
    body = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return "'" + body.replace("'", "\\'") + "'"


def plain(value: object) -> str:
    """Any value as a reader wants it: yes/no, items joined by commas, strings unquoted; never a Python repr."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(plain(v) for v in value) or "none"
    return str(value)


def _number(info: FieldInfo | None, value: int) -> str | None:
    """An integer field by its kind (None: no kind that says how)."""
    kind = info.kind if info is not None else None
    if kind == "code" and info is not None and info.codes is not None:
        code = info.codes.get(value)
        number = f"{value:#x}" if info.hex else str(value)
        return f"{info.codes.name(value)} ({number})" + (f" — {code.meaning}" if code else "")
    if kind == "cookie":
        return f"{value:#x}"
    if kind == "flags" and info is not None and info.flags is not None:
        names = [n.removeprefix("NBD_") for n in info.flags.names(value)]
        return f"{value:#06x}: " + (", ".join(names) if names else "no bit set")
    if kind == "reserved":
        return f"{value:#06x}" + (" (must be zero)" if value else "")
    if kind in ("bytes", "offset"):
        return size_text(value)
    return None


def _value(e: ev.Event, info: FieldInfo | None, value: object) -> str:
    """One field's value as the detail pane shows it, decoded by the table its metadata names."""
    kind = info.kind if info is not None else None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        number = _number(info, value)
        if number is not None:
            return number
    if kind == "us" and isinstance(value, float):
        return F.fmt_latency(value)
    if isinstance(e, ev.ConnectionEnd) and kind == "choice" and value in SIDES:
        return f"{SIDES[value]} (the {'client' if value == 'c2s' else 'server'} closed first)"
    if isinstance(value, tuple):
        shown = _sequence(e, kind, info.codes if info is not None else None, value)
        if shown is not None:
            return shown
    if isinstance(value, str):
        return quoted(value) if kind in ("text", "texts") else value
    return plain(value)


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
    if kind == "values":  # (name, value) pairs on the frozen event; a direction is written as the title does
        return ", ".join(f"{SIDES[k]}: {size_text(v)}" if k in SIDES and isinstance(v, int) else f"{k}={plain(v)}"
                         for k, v in value)
    if kind == "texts":
        return ", ".join(quoted(v) if isinstance(v, str) else plain(v) for v in value) or "none"
    return None


def finding_renderable(a: Anomaly, pal: Palette, when: str = "") -> RenderableType:
    """One finding in full; ``when`` is its time as the chosen time mode writes it."""
    colour = {"error": pal["error"], "warning": pal["warning"]}.get(a.severity, pal["accent"])
    head = Text()
    head.append(f"{a.severity.upper()} ", style=f"bold {colour}")
    head.append(a.check or a.rule, style="bold")
    head.append(f"  blame: {a.blame}  session {a.session}  frame {a.frame}" + (f"  t={when}" if when else "") + "\n")
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
            shown = f"{value:#x}" if key == "cookie" and isinstance(value, int) else plain(value)
            parts.append(Text(f"  {key}: {shown}", style=pal["muted"]))
    return Group(*parts)


def message_renderable(store: Store, row: int, pal: Palette, mode: TimeMode = "rel",
                       previous: float | None = None) -> RenderableType:
    """The selected message: a title line, every decoded field, flags bit by bit, its link, its findings.
    Times are written in ``mode``; ``previous`` is the time of the row shown above it (for delta)."""
    if row == NO_ROW or row >= len(store):
        return Text("no message selected", style=pal["muted"])
    e = store.events[row]
    title = Text()
    title.append(F.type_name(e), style="bold")
    side = F.shown_direction(e)
    arrow = SIDES[side] if side is not None else "closing side not seen"
    when = moment(e.time, mode, store.t0, store.utc_offset, previous=previous)
    title.append(f"   {arrow}   session {store.session_id(row)}   frame {e.frame}   "
                 f"t={when}{'' if mode == 'abs' else 's'}   {e.phase}   #{row + 1}")
    parts: list[RenderableType] = [title]
    for finding in store.findings_for(row):  # why the user is probably here: first
        a = finding.anomaly
        parts.append(finding_renderable(a, pal, moment(store.t0 + a.time, mode, store.t0, store.utc_offset,
                                                       previous=previous)))
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
