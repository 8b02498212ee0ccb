"""What is known about a session and about a whole run, as JSON objects built in one place for both
the JSON report (its ``sessions`` and ``summary``) and the JSONL timeline's ``SESSION``,
``SESSION_UPDATE``, ``SESSION_END`` and ``SUMMARY`` lines, so that the two never tell a different story.

The JSONL lines take their keys from the report's objects and leave out what is unknown or empty,
as every JSONL line does (docs/CONTRACT.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbdscope.report.clock import iso8601

if TYPE_CHECKING:
    from nbdscope.analysis.engine import Result
    from nbdscope.analysis.session import Session
    from nbdscope.decoder import events as ev

# the keys of the report's session object each JSONL session line carries, in the report's order
OPENED = ("input", "client", "server", "first_frame", "saw_start", "time", "epoch")
NEGOTIATED = ("handshake", "tls", "export", "structured_replies", "extended_headers", "meta_contexts", "outcome")
CLOSED = ("disconnect", "messages", "findings", "commands", "tls_bytes", "proxy_actions")


def moment(t: float, t0: float) -> tuple[float, float]:
    """An absolute time as the outputs write it: seconds since the run's first packet, and since the epoch."""
    return round(t - t0, 6), round(t, 6)


def session_object(s: Session, t0: float) -> dict[str, object]:
    """A session of the JSON report: ``Session.as_json`` with whether the capture saw the connection
    open, when it opened and when it was last seen (relative and epoch), and the findings about it."""
    out: dict[str, object] = {}
    for key, value in s.as_json().items():
        out[key] = value
        if key == "first_frame":
            out["saw_start"] = s.saw_start
            out["time"], out["epoch"] = moment(s.start_time, t0)
        elif key == "last_frame":
            out["last_time"], out["last_epoch"] = moment(max(s.last_time, s.start_time), t0)
        elif key == "messages":
            out["findings"] = s.anomaly_count
    return out


def lean(value: Any) -> Any:
    """The value without the keys JSONL leaves out: None, and empty lists and objects, at any depth
    (``False``, 0 and ``""`` are values)."""
    if isinstance(value, dict):
        kept = {k: lean(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [lean(v) for v in value]
    return value


def session_line(kind: str, s: Session, t0: float, at: ev.Event | None = None,
                 source: str | None = None) -> dict[str, object]:
    """A JSONL session line: ``SESSION`` when the connection is first seen; ``SESSION_UPDATE`` at ``at``,
    the message that ended the handshake (transmission began, or the connection closed during it);
    ``SESSION_END`` at ``at``, the connection's CONNECTION_END. ``source``: the file holding ``at``'s
    frame, in runs over several files."""
    facts = session_object(s, t0)
    rec: dict[str, object] = {"type": kind, "session": s.id}
    if at is not None:
        rec["frame"] = at.frame
        if source is not None:
            rec["input"] = source
        rec["time"], rec["epoch"] = moment(at.time, t0)
        rec["phase"] = "transmission" if s.transmission else "handshake"
    if kind == "SESSION_END":
        rec["how"] = getattr(at, "how", None)
        rec["by"] = s.closed_by
    keys = {"SESSION": OPENED, "SESSION_UPDATE": NEGOTIATED, "SESSION_END": CLOSED}[kind]
    rec.update((key, facts[key]) for key in keys)
    return lean(rec)  # type: ignore[no-any-return]


def summary_object(result: Result, inputs: list[str], utc_offset: int | None = None) -> dict[str, object]:
    """The run in numbers, the JSON report's ``summary`` and the JSONL ``SUMMARY`` line: sessions, messages,
    findings per severity, what was silenced (per check), capture problems, the inputs, the origin ``t0``
    (the first packet) and the latest moment a message was decoded, each in epoch seconds and ISO 8601
    (``last.time``, seconds since ``t0``, is how long the traffic the run saw lasted)."""
    findings = {"error": 0, "warning": 0, "info": 0}
    for a in result.anomalies:
        findings[a.severity] += 1
    known = bool(result.sessions) or result.t0 != 0.0  # an engine that saw no packet has no origin
    last = max((max(s.last_time, s.start_time) for s in result.sessions), default=None)
    return {
        "sessions": len(result.sessions),
        "messages": sum(s.messages for s in result.sessions),
        "findings": findings,
        "silenced": dict(result.silenced),
        "capture_problems": len(result.problems),
        "inputs": list(inputs),
        "t0": {"epoch": round(result.t0, 6), "iso8601": iso8601(result.t0, utc_offset)} if known else None,
        "last": {"time": round(last - result.t0, 6), "epoch": round(last, 6), "iso8601": iso8601(last, utc_offset)}
        if last is not None else None,
    }
