"""The outputs of a run, each an addon: the JSONL timeline, the text timeline, the
finding lines beside it, and the JSON and text reports written once the run ends.

Each writes to a file object it is given and never decides where that is, so the
same addon serves analyze, live, the proxy and the TUI's side files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import orjson

from nbdscope import __version__
from nbdscope.analysis.addons import Addon
from nbdscope.decoder import events as ev
from nbdscope.report.facts import lean, session_line, session_object, summary_object
from nbdscope.report.records import anomaly_json, input_json, json_builder, json_line
from nbdscope.report.timeline import anomaly_line, message_line

if TYPE_CHECKING:
    from nbdscope.analysis.anomaly import Anomaly
    from nbdscope.analysis.engine import Engine, Result
    from nbdscope.analysis.session import Session
    from nbdscope.selection import Selection
    from nbdscope.vocab import InputStart

def _writer(out: IO[str] | IO[bytes]) -> Callable[[bytes], Any]:
    """A function writing bytes to ``out``, whether it is a text or a binary file. A text file over a
    binary one (stdout, ``-o FILE``) is written through its buffer: orjson's bytes need no decoding and
    encoding again, which cost several microseconds a line (only the JSONL writer uses that file)."""
    if isinstance(out, io.TextIOWrapper):
        out.flush()
        write: Callable[[bytes], Any] = out.buffer.write
        return write
    if isinstance(out, io.TextIOBase):
        return lambda data: out.write(data.decode())
    return out.write  # type: ignore[return-value]


class _Timed(Addon):
    """Base of the line writers: they print times relative to the run's first packet."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def started(self, engine: Engine) -> None:
        self.engine = engine

    def unshown(self, session: Session, event: ev.Event) -> None:
        """A message a display filter (-Y) kept from this writer: lines it owes whatever is shown
        (the JSONL session lines) are written here."""


_TURNS = frozenset((ev.TransmissionStart, ev.ConnectionEnd))  # messages that bring a session line


class JsonlLines(_Timed):
    """The JSONL timeline: a SESSION line as each connection is first seen, one line per decoded
    message and one per finding, a SESSION_UPDATE once the handshake is over, a SESSION_END after a
    connection closed and a SUMMARY at the end (docs/CONTRACT.md). ``inputs``: the files of the run,
    for the summary (by default the files its sessions were in)."""

    def __init__(self, out: IO[str] | IO[bytes], *, flush: bool = False, inputs: list[str] | None = None) -> None:
        super().__init__()
        self.write = _writer(out)
        self.out, self.flush, self.inputs = out, flush, inputs
        self.several = False  # a run over several files: every line names the file of its frame
        self.builders: dict[type, Callable[..., dict[str, Any]]] = {}  # per event class (records.json_builder)
        # a SESSION_END waits for the findings its close brings (they come before any other line), to count them
        self.closing: tuple[Session, ev.Event, str | None] | None = None

    def opened(self, session: Session) -> None:
        self._settle()
        self.write(json_line(session_line("SESSION", session, self.engine.t0())))  # type: ignore[union-attr]

    def message(self, session: Session, event: ev.Event) -> None:
        if self.closing is not None:
            self._settle()
        cls = type(event)
        build = self.builders.get(cls)
        if build is None:
            build = self.builders[cls] = json_builder(cls, self.several)
        engine: Engine = self.engine  # type: ignore[assignment]
        if self.several:
            rec = build(session.id, event, engine.t0(), self._source(session, event))
        else:
            rec = build(session.id, event, engine.t0())
        self.write(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
        if cls in _TURNS:
            self._turn(session, event)
        if self.flush:
            self._flush()

    def unshown(self, session: Session, event: ev.Event) -> None:
        if self.closing is not None:
            self._settle()
        if type(event) in _TURNS:
            self._turn(session, event)
            if self.flush:
                self._flush()

    def _source(self, session: Session, event: ev.Event) -> str | None:
        """The file holding the event's frame, in runs over several: the one being read, but for the closes
        the end of the run makes, whose frame is the last the session had (engine.input_of finds its file)."""
        if not self.several:
            return None
        engine: Engine = self.engine  # type: ignore[assignment]
        if type(event) is ev.ConnectionEnd and event.how == "end-of-capture":
            return engine.input_of(session.source, event.frame, event.time)
        return engine.inputs[-1]

    def _turn(self, session: Session, event: ev.Event) -> None:
        """The session lines a message brings: the negotiated facts once the handshake is over (transmission
        began, or the connection closed in the handshake), and, once closed, its SESSION_END (held back)."""
        source = self._source(session, event)
        if type(event) is ev.TransmissionStart or not session.transmission:
            self.write(json_line(session_line("SESSION_UPDATE", session, self.engine.t0(), event, source)))  # type: ignore[union-attr]
        if type(event) is ev.ConnectionEnd:
            self.closing = (session, event, source)

    def _settle(self) -> None:
        """Write the SESSION_END held back, now that the findings its close brought are counted."""
        if self.closing is not None:
            session, event, source = self.closing
            self.closing = None
            self.write(json_line(session_line("SESSION_END", session, self.engine.t0(), event, source)))  # type: ignore[union-attr]
            if self.flush:
                self._flush()

    def finding(self, anomaly: Anomaly) -> None:
        engine = self.engine
        self.write(anomaly_json(anomaly, bool(engine is not None and engine.inputs),
                                engine.t0() if engine is not None else None))
        if self.flush:
            self._flush()

    def input(self, start: InputStart) -> None:
        self._settle()
        if not self.several:
            self.several = True
            self.builders.clear()
        self.write(input_json(start.source))

    def ending(self, sessions: list[Session]) -> None:
        self._settle()

    def _flush(self) -> None:
        self.out.flush()
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.flush()

    def finished(self, result: Result) -> None:
        self._settle()
        inputs = self.inputs if self.inputs is not None else \
            (result.inputs or list(dict.fromkeys(s.source for s in result.sessions)))
        summary = summary_object(result, inputs, self.engine.utc_offset if self.engine is not None else None)
        self.write(json_line(lean({"type": "SUMMARY", **summary})))
        self._flush()


class TimelineLines(_Timed):
    """The text timeline (``--messages``, the proxy's and live console): one line per message, and,
    with ``findings``, one line per finding as it is found."""

    def __init__(self, out: IO[str], *, findings: bool = False, messages: bool = True, flush: bool = False) -> None:
        super().__init__()
        self.out, self.flush = out, flush
        self.messages, self.findings = messages, findings

    def message(self, session: Session, event: ev.Event) -> None:
        if self.messages:
            self.out.write(message_line(session.id, event, self.engine.t0()) + "\n")  # type: ignore[union-attr]
            if self.flush:
                self.out.flush()

    def wants(self, event_type: type[ev.Event], command: int | None) -> bool:
        return self.messages

    def input(self, start: InputStart) -> None:
        if self.messages:
            self.out.write(f"-- {start.source} (frames from here on are this file's)\n")

    def finding(self, anomaly: Anomaly) -> None:
        if self.findings:
            self.out.write(anomaly_line(anomaly) + "\n")
            self.out.flush()


def json_report(inputs: list[str], result: Result, selection: Selection | None = None,
                utc_offset: int | None = None) -> dict[str, object]:
    """The whole run as one JSON object (docs/CONTRACT.md, ``analyze --format json``). With an active
    selection (--select/--ignore, nbdscope.toml) it says which, and how many findings it silenced per check.
    ``utc_offset``: the capture's own zone (Engine.utc_offset), for the ISO 8601 times of the summary."""
    out: dict[str, object] = {
        "nbdscope": __version__,
        "inputs": inputs,
        "sessions": [session_object(s, result.t0) for s in result.sessions],
        "anomalies": [a.as_json(bool(result.inputs), result.t0) for a in result.anomalies],
        "capture_problems": [{"input": p.source, "frame": p.frame, "message": p.message} for p in result.problems],
        "summary": summary_object(result, inputs, utc_offset),
    }
    if selection is not None and selection.active:
        out["selection"] = {"select": list(selection.select), "ignore": list(selection.ignore),
                            "origin": selection.origin}
        out["silenced"] = dict(result.silenced)
    return out


class JsonReport(Addon):
    """Writes the JSON report when the run ends."""

    def __init__(self, out: IO[str], inputs: list[str], selection: Selection | None = None) -> None:
        self.out, self.inputs, self.selection = out, inputs, selection
        self.engine: Engine | None = None

    def started(self, engine: Engine) -> None:
        self.engine = engine  # for its utc_offset, known only once the input's header was read

    def finished(self, result: Result) -> None:
        offset = self.engine.utc_offset if self.engine is not None else None
        json.dump(json_report(self.inputs, result, self.selection, offset), self.out, indent=2)
        self.out.write("\n")


class TextReport(Addon):
    """Writes the text report (sessions, findings, what was silenced) when the run ends."""

    def __init__(self, out: IO[str], inputs: list[str], selection: Selection | None = None) -> None:
        self.out, self.inputs, self.selection = out, inputs, selection

    def finished(self, result: Result) -> None:
        from rich.console import Console

        from nbdscope.report.text import render

        console = Console(file=self.out, width=None if self.out.isatty() else 140, highlight=False)
        render(result, self.inputs, console, self.selection)


class Filtered(Addon):
    """``-Y EXPR``: hands the inner line writer only the messages the filter accepts, and every finding.

    Rules report a message's findings after the writers have seen it, and the filter may ask about
    them (``anomalies``, ``rule=``), so each message is held until the next one arrives (or the run
    ends) and judged with the findings reported for it meanwhile; findings are queued behind it so
    the output keeps stream order. Findings are computed on every message, shown or not, as tshark's
    expert analysis is under ``-Y``."""

    def __init__(self, inner: _Timed, expr: str) -> None:
        from nbdscope.filter import compile as compile_filter

        self.inner = inner
        self.keep = compile_filter(expr, self._t0)  # raises FilterError for the CLI to report
        self.held: tuple[Session, ev.Event] | None = None
        self.about: list[Anomaly] = []  # findings for the held message
        self.queued: list[Anomaly] = []  # every finding since it, in order

    def _t0(self) -> float:
        return self.inner.engine.t0() if self.inner.engine is not None else 0.0

    def started(self, engine: Engine) -> None:
        self.inner.started(engine)

    def opened(self, session: Session) -> None:
        self._release()
        self.inner.opened(session)

    def message(self, session: Session, event: ev.Event) -> None:
        self._release()
        self.held = (session, event)

    def finding(self, anomaly: Anomaly) -> None:
        if self.held is None:
            self.inner.finding(anomaly)
            return
        if anomaly.session == self.held[0].id and anomaly.frame == self.held[1].frame:
            self.about.append(anomaly)
        self.queued.append(anomaly)

    def input(self, start: InputStart) -> None:
        self._release()  # the held message's frame is in the file before
        self.inner.input(start)

    def ending(self, sessions: list[Session]) -> None:
        self._release()
        self.inner.ending(sessions)

    def finished(self, result: Result) -> None:
        self.inner.finished(result)

    def _release(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            if self.keep(held[0], held[1], self.about):
                self.inner.message(*held)
            else:
                self.inner.unshown(*held)
        for anomaly in self.queued:
            self.inner.finding(anomaly)
        self.about, self.queued = [], []
