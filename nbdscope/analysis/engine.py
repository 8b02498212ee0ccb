"""Fans stream items out to per-connection decoders, then decoder events out to
session summaries, rules and any listening view."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nbdscope import vocab as it
from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.rules import ALL_RULES, Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev

_BY_COMMAND = frozenset((ev.Request, ev.SimpleReply, ev.ReplyChunk))  # rules subscribe to these per command
MessageListener = Callable[[Session, ev.Event], None]
AnomalyListener = Callable[[Anomaly], None]


@dataclass
class Result:
    sessions: list[Session]
    anomalies: list[Anomaly]
    problems: list[it.CaptureProblem] = field(default_factory=list)
    t0: float = 0.0


class Engine:
    """Streaming analysis: memory follows open connections, not the input size."""

    def __init__(self, *, rules: Iterable[type[Rule]] = ALL_RULES, on_message: MessageListener | None = None,
                 on_anomaly: AnomalyListener | None = None, keep_data: bool = False,
                 track_payload: bool = False, keep_headers: bool = False) -> None:
        self.keep_data = keep_data
        self.keep_headers = keep_headers  # events carry their header bytes (the TUI's hex pane)
        self.track_payload = track_payload
        self.sessions: list[Session] = []
        self.anomalies: list[Anomaly] = []
        self.problems: list[it.CaptureProblem] = []
        self._open: dict[int, tuple[Session, Connection]] = {}
        self._on_message = on_message
        self._on_anomaly = on_anomaly
        self._t0: float | None = None
        self.rules = [cls(self._report, self.t0) for cls in rules]
        # (event type, command of a request or reply) -> the rules wanting it
        self._listeners: dict[tuple[type, int | None], list[Callable[[Session, ev.Event], None]]] = {}

    def t0(self) -> float:
        return self._t0 or 0.0

    def _report(self, anomaly: Anomaly) -> None:
        self.anomalies.append(anomaly)
        if self._on_anomaly:
            self._on_anomaly(anomaly)

    def feed(self, item: it.StreamItem) -> list[ev.Event]:
        """Fold one stream item in; returns the decoder events it produced."""
        if type(item) is it.StreamData:  # the common case first
            entry = self._open.get(item.conn)
            if entry is None:
                return []
            events = entry[1].feed(item.dir, item.data, frame=item.frame, time=item.time)
            for event in events:
                self._dispatch(entry[0], event)
            return events
        if isinstance(item, it.CaptureProblem):
            self.problems.append(item)
            return []
        if self._t0 is None:
            self._t0 = item.time
        if isinstance(item, it.StreamOpen):
            session = Session(id=f"s{len(self.sessions) + 1}", client=item.client, server=item.server,
                              source=item.source, first_frame=item.frame, saw_start=item.saw_start,
                              start_time=item.time)
            self.sessions.append(session)
            self._open[item.conn] = (session, Connection(saw_start=item.saw_start, keep_data=self.keep_data,
                                                              track_payload=self.track_payload,
                                                              keep_headers=self.keep_headers))
            return []
        entry = self._open.get(item.conn)
        if entry is None:
            return []
        session, conn = entry
        if isinstance(item, it.StreamData):
            events = conn.feed(item.dir, item.data, frame=item.frame, time=item.time)
        elif isinstance(item, it.StreamGap):
            events = conn.gap(item.dir, item.nbytes, frame=item.frame, time=item.time)
        else:
            events = conn.close(item.how, frame=item.frame, time=item.time, by=item.by)
            del self._open[item.conn]
        for event in events:
            self._dispatch(session, event)
        return events

    def connection(self, conn: int) -> Connection | None:
        entry = self._open.get(conn)
        return entry[1] if entry else None

    def _dispatch(self, session: Session, event: ev.Event) -> None:
        session.observe(event)
        if self._on_message:
            self._on_message(session, event)
        cls = type(event)
        command = event.command if cls in _BY_COMMAND else None  # type: ignore[attr-defined]
        listeners = self._listeners.get((cls, command))
        if listeners is None:
            listeners = self._listeners[(cls, command)] = [
                r.on_event for r in self.rules if r.wants(cls, command) and (self.keep_data or not r.NEEDS_DATA)]
        for on_event in listeners:
            on_event(session, event)

    def run(self, items: Iterable[it.StreamItem]) -> Result:
        for item in items:
            self.feed(item)
        return self.finish()

    def finish(self) -> Result:
        for conn_id in list(self._open):
            session, conn = self._open.pop(conn_id)
            for event in conn.close("end-of-capture", frame=session.last_frame, time=session.last_time):
                self._dispatch(session, event)
        for rule in self.rules:
            rule.on_end(self.sessions)
        rank = {src: i for i, src in enumerate(dict.fromkeys(s.source for s in self.sessions))}
        self.anomalies.sort(key=lambda a: (rank.get(a.source, 0), a.frame))
        return Result(self.sessions, self.anomalies, self.problems, self.t0())
