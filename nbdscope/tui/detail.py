"""Rich renderables for the detail and hex panes: one message field by field, every
flags field bit by bit, with names and meanings taken from nbdscope.spec only."""

from __future__ import annotations

from dataclasses import fields

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.decoder import events as ev
from nbdscope.spec import (
    CLIENT_FLAGS,
    COMMAND_FLAGS,
    COMMANDS,
    ERRORS,
    FLAG_FIELDS,
    HANDSHAKE_FLAGS,
    INFO_TYPES,
    OPTION_REPLIES,
    OPTIONS,
    REPLY_FLAGS,
    REPLY_TYPES,
    TRANSMISSION_FLAGS,
)
from nbdscope.spec.metacontexts import describe_status
from nbdscope.spec.tables import CodeTable, FlagField
from nbdscope.tui import fields as F
from nbdscope.tui.store import NO_ROW, Store

_SKIP = {"dir", "frame", "time", "phase", "header", "seq", "start", "end", "data_start"}
_CODES: dict[str, CodeTable] = {"command": COMMANDS, "option": OPTIONS, "reply_type": REPLY_TYPES,
                                "info_type": INFO_TYPES}
EXTENTS_SHOWN = 32
HEX_PER_LINE = 8  # bytes per hex line: the pane fits beside the detail in 120 columns


class Palette(dict[str, str]):
    """Colours of the current theme (error, warning, accent, muted), so text stays readable on dark and light."""


def flag_table_for(e: ev.Event, name: str) -> FlagField | None:
    """Which spec flags field a field of this event is."""
    if name in ("transmission_flags",):
        return TRANSMISSION_FLAGS
    if name == "handshake_flags":
        return HANDSHAKE_FLAGS
    if name == "request_flags":
        return COMMAND_FLAGS
    if name == "flags":
        return {ev.Request: COMMAND_FLAGS, ev.ReplyChunk: REPLY_FLAGS, ev.ClientFlags: CLIENT_FLAGS}.get(type(e))
    return None


def bits_table(field: FlagField, value: int, pal: Palette, named: str = "") -> Table:
    """Every defined bit (number, name, set or clear, meaning) and any reserved bit that is set.
    Bits whose name appears in ``named`` (a finding's text) are pointed at."""
    t = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=False)
    t.add_column("bit", justify="right")
    t.add_column("name")
    t.add_column("state")
    t.add_column("meaning", overflow="fold")
    for b in field.bits:
        on = bool(value & b.mask)
        pointed = bool(named) and (b.name in named or f"bit {b.number})" in named or f"bit {b.number} " in named)
        style = "bold" if on else pal["muted"]
        name = Text(b.name, style=style)
        if pointed:
            name.append(" ◀", style=f"bold {pal['warning']}")
        t.add_row(str(b.number), name, Text("set" if on else "clear", style=style), Text(b.meaning, style=style))
    for n in range(field.width):
        if value & (1 << n) and field.bit(n) is None:
            bad = f"bold {pal['error']}"
            t.add_row(Text(str(n), style=bad), Text("RESERVED", style=bad), Text("SET", style=bad),
                      Text("not defined by the spec: must be zero", style=bad))
    return t


def _value(e: ev.Event, name: str, value: object) -> str:
    if name in _CODES and isinstance(value, int):
        code = _CODES[name].get(value)
        return f"{_CODES[name].name(value)} ({value})" + (f" — {code.meaning}" if code else "")
    if name == "reply" and isinstance(value, int):
        code = OPTION_REPLIES.get(value)
        return f"{OPTION_REPLIES.name(value)} ({value:#x})" + (f" — {code.meaning}" if code else "")
    if name == "error" and isinstance(value, int):
        code = ERRORS.get(value)
        return f"{ERRORS.name(value)} ({value})" + (f" — {code.meaning}" if code else "")
    if name in ("cookie", "transmission_flags", "handshake_flags", "flags", "request_flags",
                "oldstyle_high_flags") and isinstance(value, int):
        return f"{value:#x}" if name == "cookie" else f"{value:#06x} ({value})"
    if name == "info_requests" and isinstance(value, tuple):
        return ", ".join(INFO_TYPES.name(v) for v in value) or "none"
    if name == "latency_us" and isinstance(value, float):
        return F.fmt_latency(value)
    if name == "extents" and isinstance(value, tuple):
        ctx = getattr(e, "context", None)
        shown = [f"{n}:{describe_status(ctx, s)}" for n, s in value[:EXTENTS_SHOWN]]
        more = f" (+{len(value) - EXTENTS_SHOWN} more)" if len(value) > EXTENTS_SHOWN else ""
        return ", ".join(shown) + more
    if name == "in_flight" and isinstance(value, tuple):
        return ", ".join(f"cookie {c:#x} {COMMANDS.name(cmd)} (frame {f})" for c, cmd, f in value)
    if name in ("values", "unparsed") and isinstance(value, tuple):
        return str(dict(value))  # (name, value) pairs on the event
    if name == "meta_contexts" and isinstance(value, tuple):
        return ", ".join(f"{i}={n}" for i, n in value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


def finding_renderable(a: Anomaly, pal: Palette) -> RenderableType:
    colour = {"error": pal["error"], "warning": pal["warning"]}.get(a.severity, pal["accent"])
    head = Text()
    head.append(f"{a.severity.upper()} ", style=f"bold {colour}")
    head.append(f"{a.rule}", style="bold")
    head.append(f"  blame: {a.blame}  session {a.session}  frame {a.frame}\n")
    head.append(a.message)
    head.append(f"\nspec: {a.spec}", style=pal["muted"])
    parts: list[RenderableType] = [head]
    for key, value in a.values.items():
        field = FLAG_FIELDS.get(key)
        if field is not None and isinstance(value, int):
            parts.append(Text(f"{field.field} of the session: {value:#06x}", style="bold"))
            parts.append(bits_table(field, value, pal, named=a.message))
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
        if f.name in _SKIP:
            continue
        value = getattr(e, f.name)
        if value is None or value == () or value == {}:
            continue
        t.add_row(f.name, _value(e, f.name, value))
        table = flag_table_for(e, f.name)
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
        parts.append(bits_table(table, value, pal))
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
