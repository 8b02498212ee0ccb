"""One human-readable line per decoded message (analyze --messages, proxy console)."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.decoder import events as ev
from nbdscope.report.names import event_type
from nbdscope.spec import (
    CLIENT_FLAGS,
    COMMAND_FLAGS,
    COMMANDS,
    ERRORS,
    HANDSHAKE_FLAGS,
    INFO_TYPES,
    OPTIONS,
    REPLY_FLAGS,
    TRANSMISSION_FLAGS,
)
from nbdscope.spec.metacontexts import describe_status
from nbdscope.spec.tables import FlagField

MAX_EXTENTS_SHOWN = 8


def _flags(field: FlagField, value: int) -> str:
    names = field.names(value)
    return f"{value:#x}[{','.join(n.split('FLAG_')[-1] for n in names)}]" if names else "0x0"


def _details(e: ev.Event) -> list[str]:
    out: list[str] = []
    if isinstance(e, ev.Request):
        out += [f"cookie={e.cookie:#x}", f"offset={e.offset}", f"length={e.length}"]
        if e.flags:
            out.append("flags=" + _flags(COMMAND_FLAGS, e.flags))
        if e.extended:
            out.append("extended")
    elif isinstance(e, ev.SimpleReply | ev.ReplyChunk):
        out.append(f"cookie={e.cookie:#x}")
        out.append(f"for={COMMANDS.name(e.command)}" if e.command is not None else "for=?")
        if isinstance(e, ev.SimpleReply):
            out.append(f"error={ERRORS.name(e.error)}" if e.error else "ok")
            if e.data_length:
                out.append(f"data={e.data_length}")
        else:
            if e.flags:
                out.append("flags=" + _flags(REPLY_FLAGS, e.flags))
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
                out.append(f"error={ERRORS.name(e.error)}")
            if e.message:
                out.append(f"message={e.message!r}")
        if e.latency_us is not None:
            out.append(f"latency={e.latency_us:.0f}us")
    elif isinstance(e, ev.OptionRequest):
        if e.export_name is not None:
            out.append(f"export={e.export_name!r}")
        if e.info_requests:
            out.append("info=" + ",".join(INFO_TYPES.name(i) for i in e.info_requests))
        if e.queries:
            out.append("queries=" + ",".join(e.queries))
    elif isinstance(e, ev.OptionReply):
        out.append(f"option={OPTIONS.name(e.option)}")
        if e.info_type is not None:
            out.append(INFO_TYPES.name(e.info_type))
        if e.size is not None:
            out.append(f"size={e.size}")
        if e.transmission_flags is not None:
            out.append("flags=" + _flags(TRANSMISSION_FLAGS, e.transmission_flags))
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
            out.append("flags=" + _flags(HANDSHAKE_FLAGS, e.handshake_flags))
        if e.size is not None:
            out.append(f"size={e.size}")
        if e.transmission_flags is not None:
            out.append("tflags=" + _flags(TRANSMISSION_FLAGS, e.transmission_flags))
    elif isinstance(e, ev.ClientFlags):
        out.append("flags=" + _flags(CLIENT_FLAGS, e.flags))
    elif isinstance(e, ev.ExportNameReply | ev.TransmissionStart):
        if e.size is not None:
            out.append(f"size={e.size}")
        if e.transmission_flags is not None:
            out.append("flags=" + _flags(TRANSMISSION_FLAGS, e.transmission_flags))
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
    return f"{session:>4} {e.frame:>7} {e.time - t0:>11.6f} {arrow} {event_type(e):<30} {' '.join(_details(e))}"
