"""One human-readable line per decoded message (analyze --messages, proxy console)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.report.fieldinfo import code_name, flag_table, type_name
from nbdscope.spec.metacontexts import describe_status

MAX_EXTENTS_SHOWN = 8


def _flags(e: ev.Event, name: str) -> str:
    """A flags field as its value and the short names of its set bits."""
    value = getattr(e, name)
    table = flag_table(type(e), name)
    assert table is not None, f"{type(e).__name__}.{name} is not a flags field"
    names = table.names(value)
    return f"{value:#x}[{','.join(n.split('FLAG_')[-1] for n in names)}]" if names else "0x0"


def _name(e: ev.Event, name: str) -> str:
    """The spec name of an enumerated field's value."""
    return code_name(type(e), name, getattr(e, name))


def _request(e: ev.Request) -> list[str]:
    out = [f"cookie={e.cookie:#x}", f"offset={e.offset}", f"length={e.length}"]
    if e.flags:
        out.append("flags=" + _flags(e, "flags"))
    if e.extended:
        out.append("extended")
    return out


def _reply_head(e: ev.Reply) -> list[str]:
    return [f"cookie={e.cookie:#x}", f"for={_name(e, 'command')}" if e.command is not None else "for=?"]


def _latency(e: ev.Reply, out: list[str]) -> list[str]:
    if e.latency_us is not None:
        out.append(f"latency={e.latency_us:.0f}us")
    return out


def _simple_reply(e: ev.SimpleReply) -> list[str]:
    out = _reply_head(e)
    out.append(f"error={_name(e, 'error')}" if e.error else "ok")
    if e.data_length:
        out.append(f"data={e.data_length}")
    return _latency(e, out)


def _extents(e: ev.ReplyChunk) -> str:
    shown = [f"{n}:{describe_status(e.context, s)}" for n, s in e.extents[:MAX_EXTENTS_SHOWN]]
    more = f",+{len(e.extents) - MAX_EXTENTS_SHOWN}" if len(e.extents) > MAX_EXTENTS_SHOWN else ""
    return f"extents=[{','.join(shown)}{more}]"


def _reply_chunk(e: ev.ReplyChunk) -> list[str]:
    out = _reply_head(e)
    if e.flags:
        out.append("flags=" + _flags(e, "flags"))
    for name in ("offset", "data_length", "hole_length"):
        value = getattr(e, name)
        if value is not None:
            out.append(f"{name}={value}")
    if e.context_id is not None:
        out.append(f"context={e.context_id}({e.context or '?'})")
    if e.extents:
        out.append(_extents(e))
    if e.error is not None:
        out.append(f"error={_name(e, 'error')}")
    if e.message:
        out.append(f"message={e.message!r}")
    return _latency(e, out)


def _option_request(e: ev.OptionRequest) -> list[str]:
    out: list[str] = []
    if e.export_name is not None:
        out.append(f"export={e.export_name!r}")
    if e.info_requests:
        out.append("info=" + ",".join(code_name(type(e), "info_requests", i) for i in e.info_requests))
    if e.queries:
        out.append("queries=" + ",".join(e.queries))
    return out


def _option_reply(e: ev.OptionReply) -> list[str]:
    out = [f"option={_name(e, 'option')}"]
    if e.info_type is not None:
        out.append(_name(e, 'info_type'))
    if e.size is not None:
        out.append(f"size={e.size}")
    if e.transmission_flags is not None:
        out.append("flags=" + _flags(e, "transmission_flags"))
    if e.min_block is not None:
        out.append(f"block={e.min_block}/{e.preferred_block}/{e.max_payload}")
    if e.context_id is not None:
        out.append(f"context={e.context_id}")
    if e.name is not None:
        out.append(f"name={e.name!r}")
    if e.message:
        out.append(f"message={e.message!r}")
    return out


def _greeting(e: ev.ServerGreeting) -> list[str]:
    out: list[str] = []
    if e.handshake_flags is not None:
        out.append("flags=" + _flags(e, "handshake_flags"))
    if e.size is not None:
        out.append(f"size={e.size}")
    if e.transmission_flags is not None:
        out.append("tflags=" + _flags(e, "transmission_flags"))
    return out


def _export(e: ev.ExportNameReply | ev.TransmissionStart) -> list[str]:
    out: list[str] = []
    if e.size is not None:
        out.append(f"size={e.size}")
    if e.transmission_flags is not None:
        out.append("flags=" + _flags(e, "transmission_flags"))
    return out


def _transmission_start(e: ev.TransmissionStart) -> list[str]:
    out = _export(e)
    out.append(f"via={e.how}")
    if e.structured_replies:
        out.append("structured")
    if e.extended_headers:
        out.append("extended")
    return out


def _connection_end(e: ev.ConnectionEnd) -> list[str]:
    out = [f"how={e.how}", "soft" if e.soft else "no-DISC"]
    if e.in_flight:
        out.append(f"unanswered={len(e.in_flight)}")
    return out


def _nothing(e: ev.Event) -> list[str]:
    return []


# per event class, the words after its type name (a class not listed takes its nearest listed base's)
_DESCRIBERS: dict[type, Callable[[Any], list[str]]] = {
    ev.Request: _request,
    ev.SimpleReply: _simple_reply,
    ev.ReplyChunk: _reply_chunk,
    ev.OptionRequest: _option_request,
    ev.OptionReply: _option_reply,
    ev.ServerGreeting: _greeting,
    ev.ClientFlags: lambda e: ["flags=" + _flags(e, "flags")],
    ev.ExportNameReply: _export,
    ev.TransmissionStart: _transmission_start,
    ev.TlsData: lambda e: [f"bytes={e.nbytes}"],
    ev.Gap: lambda e: [f"bytes={e.nbytes}"],
    ev.Resync: lambda e: [f"skipped={e.skipped}"],
    ev.Malformed: lambda e: [e.message],
    ev.ConnectionEnd: _connection_end,
}


def _describer(cls: type) -> Callable[[Any], list[str]]:
    found = _DESCRIBERS.get(cls)
    if found is None:
        found = next((_DESCRIBERS[base] for base in cls.__mro__ if base in _DESCRIBERS), _nothing)
        _DESCRIBERS[cls] = found
    return found


def _details(e: ev.Event) -> list[str]:
    out = _describer(type(e))(e)
    problem = getattr(e, "problem", None)
    if problem:
        out.append(f"PROBLEM: {problem}")
    return out


MARKS = {"error": "!", "warning": "?", "info": "*"}
"""The margin mark of a message that carries findings: its worst finding's severity."""
_RANK = {"info": 0, "warning": 1, "error": 2}
NOTE_INDENT = " " * 8  # where the line under a marked message begins


def anomaly_line(a: Anomaly, when: str | None = None) -> str:
    """A finding on a line of its own (one about no message shown): the check (or the rule, for a finding
    made outside a check), who is to blame, where, ``when`` (its time as the view writes it) and, at the
    end, the requirement rows it says were broken."""
    reqs = f" [{', '.join(a.requirements)}]" if a.requirements else ""
    at = f" at {when}" if when is not None else ""
    return (f"ANOMALY {a.severity} {a.check or a.rule} blame={a.blame} {a.session} frame {a.frame}{at}: "
            f"{a.message}{reqs}")


def finding_note(a: Anomaly) -> str:
    """A finding as the indented line under the message it is about (session, frame and time are on that
    message's line already)."""
    reqs = f" [{', '.join(a.requirements)}]" if a.requirements else ""
    return f"{NOTE_INDENT}{a.severity} {a.check or a.rule} blame={a.blame}: {a.message}{reqs}"


def mark(findings: list[Anomaly]) -> str:
    """The margin mark for a message carrying these findings (a space for none)."""
    if not findings:
        return " "
    return MARKS[max((a.severity for a in findings), key=_RANK.__getitem__)]


def legend_line(s: Session) -> str:
    """Which connection a session id stands for: endpoints and, once negotiated, the export."""
    export = f"  export {s.export_name!r}" if s.export_name is not None else ""
    return f"{s.id:>4}  {s.client} -> {s.server}{export}"


def timeline_heading(time_heading: str, time_width: int) -> str:
    """The column titles of the timeline, laid out as message_line lays out its columns."""
    return f"  {'sess':>4} {'frame':>7} {time_heading:>{time_width}} dir {'type':<30} details"


def message_line(session: str, e: ev.Event, when: str, time_width: int = 11, marked: str = " ") -> str:
    """One message: ``marked`` in the margin, then session, frame, ``when`` (its time as the view's clock
    writes it), direction, type and details."""
    arrow = "->" if e.dir == "c2s" else "<-"
    details = " ".join(_details(e))
    line = f"{marked} {session:>4} {e.frame:>7} {when.rjust(time_width)} {arrow}  {type_name(e):<30} {details}"
    return line if details else line.rstrip()
