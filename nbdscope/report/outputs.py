"""The outputs written while a run goes, each an addon: the JSONL timeline, the text timeline,
the finding lines beside it, and the -Y filter in front of them (the reports written once the
run ends are in report/final.py).

Each writes to a file object it is given and never decides where that is, so the
same addon serves analyze, live, the proxy and the TUI's side files.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import orjson

from nbdscope.analysis.addons import Addon
from nbdscope.decoder import events as ev
from nbdscope.report.clock import Clock
from nbdscope.report.facts import lean, session_line, summary_object
from nbdscope.report.records import anomaly_json, input_json, json_builder, json_line
from nbdscope.report.timeline import (
    anomaly_line,
    finding_note,
    legend_line,
    mark,
    message_line,
    timeline_heading,
)

if TYPE_CHECKING:
    from nbdscope.analysis.anomaly import Anomaly
    from nbdscope.analysis.engine import Engine, Result
    from nbdscope.analysis.session import Session
    from nbdscope.vocab import InputStart, StreamItem

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
        self.settle()
        self.write(json_line(session_line("SESSION", session, self.engine.t0())))  # type: ignore[union-attr]

    def message(self, session: Session, event: ev.Event) -> None:
        if self.closing is not None:
            self.settle()
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
            self.settle()
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

    def settle(self) -> None:
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
        self.settle()
        if not self.several:
            self.several = True
            self.builders.clear()
        self.write(input_json(start.source))

    def ending(self, sessions: list[Session]) -> None:
        self.settle()

    def _flush(self) -> None:
        self.out.flush()
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.flush()

    def finished(self, result: Result) -> None:
        self.settle()
        inputs = self.inputs if self.inputs is not None else \
            (result.inputs or list(dict.fromkeys(s.source for s in result.sessions)))
        summary = summary_object(result, inputs, self.engine.utc_offset if self.engine is not None else None)
        self.write(json_line(lean({"type": "SUMMARY", **summary})))
        self._flush()


class TimelineLines(_Timed):
    """The text timeline (``--messages``, the live and proxy console): a column heading, one line per
    message, and, with ``findings``, each finding as it is found: a mark in the margin of the message it
    is about and an indented line under it, or a line of its own when it is about no message shown.

    A message line is held until its findings are in (the engine reports them while it dispatches the
    message, so the line goes out when the stream item is done, or at the next message). With
    ``legend`` a session's endpoints are written when it first appears (a streaming view cannot know
    them sooner; the text report writes them once at the top instead). Times are on ``time``'s base
    (report/clock.py), one Clock for the whole view."""

    def __init__(self, out: IO[str], *, findings: bool = False, messages: bool = True, flush: bool = False,
                 time: str = "rel", legend: bool = True) -> None:
        super().__init__()
        self.out, self.flush = out, flush
        self.messages, self.findings, self.legend = messages, findings, legend
        self.clock = Clock(time)
        self.held: tuple[Session, ev.Event] | None = None
        self.about: list[Anomaly] = []  # the held message's findings
        self.after: list[Anomaly] = []  # findings about something else, reported meanwhile
        self.headed = False
        self.known: set[str] = set()  # sessions whose legend line is written

    def _when(self, t: float) -> str:
        if self.clock.origin is None and self.engine is not None:
            self.clock.origin, self.clock.utc_offset = self.engine.t0(), self.engine.utc_offset
        return self.clock.text(t)

    def message(self, session: Session, event: ev.Event) -> None:
        if self.messages:
            self.release()
            self.held = (session, event)

    def wants(self, event_type: type[ev.Event], command: int | None) -> bool:
        return self.messages

    def stream(self, item: StreamItem) -> None:
        if self.held is not None:
            self.release()

    def input(self, start: InputStart) -> None:
        self.release()  # the held message's frame is in the file before
        if self.messages:
            self.out.write(f"-- {start.source} (frames from here on are this file's)\n")

    def finding(self, anomaly: Anomaly) -> None:
        if not self.findings:
            return
        held = self.held
        if held is not None and anomaly.session == held[0].id and anomaly.frame == held[1].frame:
            self.about.append(anomaly)
        elif held is not None:
            self.after.append(anomaly)
        else:
            self._write([self._alone(anomaly)], urgent=True)

    def _alone(self, anomaly: Anomaly) -> str:
        t0 = self.engine.t0() if self.engine is not None else 0.0
        return anomaly_line(anomaly, self._when(anomaly.time + t0))

    def release(self) -> None:
        """Write the held message with its findings, and what was reported meanwhile."""
        held, self.held = self.held, None
        if held is None:
            return
        session, event = held
        clock = self.clock
        if clock.mode == "rel" and clock.origin is not None:  # the common case, a few microseconds less a line
            when = f"{event.time - clock.origin:.6f}"
        else:
            when = self._when(event.time)
        line = message_line(session.id, event, when, clock.width, mark(self.about) if self.about else " ")
        if self.headed and not self.about and not self.after and (not self.legend or session.id in self.known):
            self.out.write(line + "\n")
            if self.flush:
                self.out.flush()
            return
        lines: list[str] = []
        if not self.headed:
            self.headed = True
            lines.append(timeline_heading(clock.heading, clock.width))
        if self.legend and session.id not in self.known:
            self.known.add(session.id)
            lines.append(legend_line(session))
        lines.append(line)
        lines += [finding_note(a) for a in self.about]
        lines += [self._alone(a) for a in self.after]
        urgent = bool(self.about or self.after)
        self.about, self.after = [], []
        self._write(lines, urgent)

    def _write(self, lines: list[str], urgent: bool = False) -> None:
        """Findings go out at once (a console watcher waits for them); messages when asked to (``flush``)."""
        self.out.write("\n".join(lines) + "\n")
        if self.flush or urgent:
            self.out.flush()

    def ending(self, sessions: list[Session]) -> None:
        self.release()

    def finished(self, result: Result) -> None:
        self.release()


class FindingsShown(_Timed):
    """Behind ``-Y`` with ``--brief``: notes the findings about the messages the filter keeps (Filtered hands
    a kept message over, then the findings reported meanwhile, then calls ``release``)."""

    def __init__(self) -> None:
        super().__init__()
        self.last: tuple[str, int] | None = None  # the kept message whose findings are coming
        self.kept: set[int] = set()  # id() of each finding kept (the run's result holds them all)

    def message(self, session: Session, event: ev.Event) -> None:
        self.last = (session.id, event.frame)

    def finding(self, anomaly: Anomaly) -> None:
        if self.last == (anomaly.session, anomaly.frame):
            self.kept.add(id(anomaly))

    def release(self) -> None:
        self.last = None

    def of(self, findings: list[Anomaly]) -> list[Anomaly]:
        return [a for a in findings if id(a) in self.kept]


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
        release = getattr(self.inner, "release", None)
        if release is not None:  # the inner writer has every finding about the message: it may write it
            release()
