"""One human-readable line per decoded message (analyze --messages, proxy console)."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Anomaly
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


def _details(e: ev.Event) -> list[str]:
    out: list[str] = []
    if isinstance(e, ev.Request):
        out += [f"cookie={e.cookie:#x}", f"offset={e.offset}", f"length={e.length}"]
        if e.flags:
            out.append("flags=" + _flags(e, "flags"))
        if e.extended:
            out.append("extended")
    elif isinstance(e, ev.SimpleReply | ev.ReplyChunk):
        out.append(f"cookie={e.cookie:#x}")
        out.append(f"for={_name(e, 'command')}" if e.command is not None else "for=?")
        if isinstance(e, ev.SimpleReply):
            out.append(f"error={_name(e, 'error')}" if e.error else "ok")
            if e.data_length:
                out.append(f"data={e.data_length}")
        else:
            if e.flags:
                out.append("flags=" + _flags(e, "flags"))
            for name in ("offset", "data_length", "hole_length"):
                value = getattr(e, name)
                if value is not None:
                    out.append(f"{name}={value}")
            if e.context_id is not None:
                out.append(f"context={e.context_id}({e.context or '?'})")
            if e.extents:
                shown = [f"{n}:{describe_status(e.context, s)}" for n, s in e.extents[:MAX_EXTENTS_SHOWN]]
                more = f",+{len(e.extents) - MAX_EXTENTS_SHOWN}" if len(e.extents) > MAX_EXTENTS_SHOWN else ""
                out.append(f"extents=[{','.join(shown)}{more}]")
            if e.error is not None:
                out.append(f"error={_name(e, 'error')}")
            if e.message:
                out.append(f"message={e.message!r}")
        if e.latency_us is not None:
            out.append(f"latency={e.latency_us:.0f}us")
    elif isinstance(e, ev.OptionRequest):
        if e.export_name is not None:
            out.append(f"export={e.export_name!r}")
        if e.info_requests:
            out.append("info=" + ",".join(code_name(type(e), "info_requests", i) for i in e.info_requests))
        if e.queries:
            out.append("queries=" + ",".join(e.queries))
    elif isinstance(e, ev.OptionReply):
        out.append(f"option={_name(e, 'option')}")
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
    elif isinstance(e, ev.ServerGreeting):
        if e.handshake_flags is not None:
            out.append("flags=" + _flags(e, "handshake_flags"))
        if e.size is not None:
            out.append(f"size={e.size}")
        if e.transmission_flags is not None:
            out.append("tflags=" + _flags(e, "transmission_flags"))
    elif isinstance(e, ev.ClientFlags):
        out.append("flags=" + _flags(e, "flags"))
    elif isinstance(e, ev.ExportNameReply | ev.TransmissionStart):
        if e.size is not None:
            out.append(f"size={e.size}")
        if e.transmission_flags is not None:
            out.append("flags=" + _flags(e, "transmission_flags"))
        if isinstance(e, ev.TransmissionStart):
            out.append(f"via={e.how}")
            if e.structured_replies:
                out.append("structured")
            if e.extended_headers:
                out.append("extended")
    elif isinstance(e, ev.TlsData | ev.Gap):
        out.append(f"bytes={e.nbytes}")
    elif isinstance(e, ev.Resync):
        out.append(f"skipped={e.skipped}")
    elif isinstance(e, ev.Malformed):
        out.append(e.message)
    elif isinstance(e, ev.ConnectionEnd):
        out.append(f"how={e.how}")
        out.append("soft" if e.soft else "no-DISC")
        if e.in_flight:
            out.append(f"unanswered={len(e.in_flight)}")
    if getattr(e, "problem", None):
        out.append(f"PROBLEM: {e.problem}")  # type: ignore[attr-defined]
    return out


def anomaly_line(a: Anomaly) -> str:
    """A finding as the console shows it beside the timeline."""
    return f"ANOMALY {a.severity} {a.rule} blame={a.blame} {a.session} frame {a.frame}: {a.message}"


def message_line(session: str, e: ev.Event, t0: float) -> str:
    arrow = "->" if e.dir == "c2s" else "<-"
    return f"{session:>4} {e.frame:>7} {e.time - t0:>11.6f} {arrow} {type_name(e):<30} {' '.join(_details(e))}"
