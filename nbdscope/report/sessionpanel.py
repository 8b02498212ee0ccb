"""What is shown about one session: the rows of the text report's session panel (rich)
and of the TUI's summary screen (Textual), built here from a Session and only laid out
by the views.

The two views word some facts differently (the report is a wide one-shot printout, the
screen a narrow live one) and each must keep its wording, so every fact below says how
each view spells it, side by side, in the one order both follow. None: that view
leaves the fact out (for that session or always)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.report.fieldinfo import BitRow, bit_rows, field_info
from nbdscope.spec.tables import CodeTable, FlagField

View = Literal["report", "screen"]
Spell = Callable[[Session, int], "str | None"]  # (session, its anomaly count) -> value, None: not shown


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n} ({n / scale:.1f} {unit})"
    return str(n)


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def _replies(s: Session, _: int) -> str:
    if s.extended_headers:
        return "extended headers"
    return {True: "structured", False: "simple only", None: "unknown"}[s.structured_replies]


def _handshake(s: Session, _: int) -> str:
    """The report's handshake row: its style and the replies it settled on (a row of its own each took
    two lines a session, and the TLS row is shown only when TLS was used)."""
    replies = {"extended headers": "extended headers", "structured": "structured replies",
               "simple only": "simple replies only", "unknown": "replies unknown"}[_replies(s, _)]
    return f"{s.handshake}, {replies}" + ("" if s.saw_start else "  (capture began mid-connection)")


def _contexts(s: Session, between: str) -> str:
    return ", ".join(f"{k}{between}{v}" for k, v in sorted(s.meta_contexts.items()))


def _proxy(s: Session, _: int) -> str | None:
    """What the proxy did to the session on purpose, when it did anything."""
    if not s.proxy_actions:
        return None
    counts: dict[str, int] = {}
    for action, _frame, _text in s.proxy_actions:
        counts[action] = counts.get(action, 0) + 1
    rewrites = ", ".join(f"{sent:#06x} -> {got:#06x}" for sent, got in s.flag_rewrites)
    return "; ".join(f"{a} ({rewrites})" if a == "rewrite-flags" else a + (f" x{n}" if n > 1 else "")
                     for a, n in counts.items())


@dataclass(frozen=True, slots=True)
class _Fact:
    report: tuple[str, Spell] | None = None
    screen: tuple[str, Spell] | None = None


_FACTS: tuple[_Fact, ...] = (
    _Fact(report=("endpoints", lambda s, _: f"client {s.client}  ->  server {s.server}"),
          screen=("session", lambda s, _: f"{s.id}  {s.client} → {s.server}  ({s.source})")),
    _Fact(report=("input", lambda s, _: f"{s.source} frames {s.first_frame}-{s.last_frame}"
                  if s.last_source in ("", s.source)
                  else f"{s.source} frame {s.first_frame} to {s.last_source} frame {s.last_frame}")),
    _Fact(report=("handshake", _handshake),
          screen=("handshake", lambda s, _: s.handshake + ("   TLS (encrypted after STARTTLS)" if s.tls else ""))),
    _Fact(report=("TLS", lambda s, _: f"yes, {s.tls_bytes} encrypted bytes not decoded" if s.tls else None)),
    _Fact(report=("export", lambda s, _: "name " + ("unknown" if s.export_name is None else repr(s.export_name))
                  + f", size {_size(s.size)}"),
          screen=("export", lambda s, _: "unknown" if s.export_name is None else repr(s.export_name))),
    _Fact(screen=("size", lambda s, _: "unknown" if s.size is None else f"{s.size:,} bytes")),
    _Fact(report=("block sizes", lambda s, _: f"minimum {s.min_block}, preferred {s.preferred_block}, "
                  f"maximum payload {s.max_payload}" if s.min_block is not None
                  else "not advertised (spec defaults: minimum 1, maximum payload 32 MiB)"),
          screen=("block sizes", lambda s, _: f"min {s.min_block}  preferred {s.preferred_block}  "
                  f"max payload {s.max_payload}" if s.min_block is not None else "not announced")),
    _Fact(screen=("structured replies", lambda s, _: _yes_no(s.structured_replies))),
    _Fact(screen=("extended headers", lambda s, _: _yes_no(s.extended_headers))),
    _Fact(report=("meta contexts", lambda s, _: _contexts(s, " = ") or None),
          screen=("metadata contexts", lambda s, _: _contexts(s, "=") or "none")),
    _Fact(screen=("messages", lambda s, _: f"{s.messages:,}")),
    _Fact(screen=("anomalies", lambda _, n: str(n))),
    _Fact(report=("disconnect", lambda s, _: s.disconnect), screen=("ended", lambda s, _: s.disconnect)),
    _Fact(report=("outcome", lambda s, _: s.outcome.summary if s.outcome is not None else None),
          screen=("outcome", lambda s, _: s.outcome.summary if s.outcome is not None else None)),
    _Fact(report=("description", lambda s, _: repr(s.description) if s.description is not None else None)),
    _Fact(report=("proxy", _proxy), screen=("proxy", _proxy)),
)


def _tables() -> tuple[FlagField, CodeTable]:
    """The session's flags are those TransmissionStart carried, its commands those of its requests."""
    flags = field_info(ev.TransmissionStart, "transmission_flags")
    commands = field_info(ev.Request, "command")
    assert flags is not None and flags.flags is not None and commands is not None and commands.codes is not None
    return flags.flags, commands.codes


SESSION_FLAGS, _COMMANDS = _tables()


@dataclass(frozen=True, slots=True)
class CommandRow:
    """One command of the session's mix; latencies in microseconds (None: no completed reply)."""

    name: str
    count: int
    bytes: int
    errors: int
    latency_us: dict[str, float] | None  # p50, p99, max


@dataclass(frozen=True, slots=True)
class SessionPanel:
    rows: list[tuple[str, str]]  # (label, value), in order
    flags: FlagField  # the table of the session's flags field
    flags_value: int | None  # None: the capture did not show them
    bits: list[BitRow]  # flags_value bit by bit
    commands: list[CommandRow]  # by command number


def session_panel(s: Session, view: View, anomalies: int | None = None) -> SessionPanel:
    """The panel of ``s`` as ``view`` words it; ``anomalies`` defaults to the session's own count."""
    count = s.anomaly_count if anomalies is None else anomalies
    rows: list[tuple[str, str]] = []
    for fact in _FACTS:
        spelled = fact.report if view == "report" else fact.screen
        if spelled is not None:
            text = spelled[1](s, count)
            if text is not None:
                rows.append((spelled[0], text))
    commands = []
    for cmd, st in sorted(s.commands.items()):
        lat = st.as_json()["latency_us"]
        commands.append(CommandRow(_COMMANDS.name(cmd), st.count, st.bytes, st.errors,
                                   lat if isinstance(lat, dict) else None))
    flags = s.transmission_flags
    bits = bit_rows(SESSION_FLAGS, flags) if flags is not None else []
    return SessionPanel(rows, SESSION_FLAGS, flags, bits, commands)
