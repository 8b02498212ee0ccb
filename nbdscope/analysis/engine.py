"""The engine: stream items to per-connection decoders, decoder events to the session
model and then to every addon (rules, statistics, outputs), findings to every addon.

Only ``nbdscope.pipeline.run`` builds one for the commands; tests may build their own.
A hook that raises is caught here: the addon is reported once as an ``internal-error``
finding (the traceback goes to stderr with NBDSCOPE_DEBUG=1) and detached, and the
run goes on without it.
"""

from __future__ import annotations

import bisect
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nbdscope import vocab as it
from nbdscope.analysis.addons import Addon, defines
from nbdscope.analysis.anomaly import INTERNAL_ERROR, Anomaly
from nbdscope.analysis.rules import ALL_RULES, Rule
from nbdscope.analysis.session import Session
from nbdscope.analysis.stats import Statistics
from nbdscope.decoder import Connection
from nbdscope.decoder import events as ev
from nbdscope.tls.keylog import KeyLog

_BY_COMMAND = frozenset((ev.Request, ev.SimpleReply, ev.ReplyChunk))  # rules subscribe to these per command
_REPLIES = frozenset((ev.SimpleReply, ev.ReplyChunk))
MessageHook = Callable[[Session, ev.Event], None]


class FindingFilter(Protocol):
    """What decides which findings are reported (``nbdscope.selection.Selection``)."""

    def keeps(self, a: Anomaly) -> bool: ...


@dataclass
class Result:
    sessions: list[Session]
    anomalies: list[Anomaly]
    problems: list[it.CaptureProblem] = field(default_factory=list)
    t0: float = 0.0
    silenced: dict[str, int] = field(default_factory=dict)  # findings --ignore/--select kept out, per check
    inputs: list[str] = field(default_factory=list)  # the files of a run over several, in reading order

    def internal_errors(self) -> list[Anomaly]:
        """The failures of nbdscope's own in this run (reported like findings, never a peer's)."""
        return [a for a in self.anomalies if a.rule == INTERNAL_ERROR.id]


class Engine:
    """Streaming analysis: memory follows open connections, not the input size.

    ``addons`` run in the order given, before the rules, so an output sees a message before the
    findings about it. ``verify_data`` attaches the rules that compare payloads (stale-read) and has
    the decoder hand payloads over; other needs of the decoder come from the addons' NEEDS."""

    def __init__(self, addons: Sequence[Addon] = (), *, rules: Iterable[type[Rule]] = ALL_RULES,
                 verify_data: bool = False, selection: FindingFilter | None = None,
                 tls_keys: KeyLog | None = None) -> None:
        self.selection = selection
        self.tls_keys = tls_keys  # the peers' key log: sessions are decrypted after STARTTLS
        self.silenced: dict[str, int] = {}
        chosen = [cls() for cls in rules if verify_data or not cls.NEEDS_DATA]
        self.addons: list[Addon] = [Statistics(), *addons, *chosen]
        needs = frozenset().union(*(a.NEEDS for a in self.addons))
        self.keep_data = verify_data or "data" in needs
        self.keep_headers = "headers" in needs  # events carry their header bytes (the TUI's hex pane)
        self.track_payload = "payload-ranges" in needs
        self.sessions: list[Session] = []
        self.anomalies: list[Anomaly] = []
        self.problems: list[it.CaptureProblem] = []
        # a run over several files (InputStart items): each file and its first packet's time, in reading order
        self.inputs: list[str] = []
        self._starts: list[float] = []
        self._open: dict[it.ConnKey, tuple[Session, Connection]] = {}
        self._t0: float | None = None
        self.utc_offset: int | None = None  # the capture's own zone, when its header records one
        # (event type, command of a request or reply) -> the message hooks wanting it
        self._listeners: dict[tuple[type, int | None], list[MessageHook]] = {}
        self._hooks: dict[str, list[Any]] = {}
        self._index_hooks()
        for addon in list(self.addons):
            self._call(addon, "started", self)

    def _want_read(self, session: Session) -> Callable[[int, int], bool] | None:
        """What the decoder asks before gathering read data: the addons that need data decide together
        (None, i.e. always, when one of them takes every read)."""
        if not self.keep_data:
            return None
        deciders = [a for a in self.addons if "data" in a.NEEDS or getattr(a, "NEEDS_DATA", False)]
        if not deciders or not all(defines(a, "wants_read_data") for a in deciders):
            return None
        return lambda offset, length: any(a.wants_read_data(session, offset, length) for a in deciders)

    def _index_hooks(self) -> None:
        self._listeners.clear()
        self._hooks = {hook: [getattr(a, hook) for a in self.addons if defines(a, hook)]
                       for hook in ("stream", "finding", "problem", "input", "opened")}

    def t0(self) -> float:
        return self._t0 or 0.0

    def input_of(self, default: str, frame: int, time: float) -> str:
        """The file that holds the frame seen at this absolute time: ``default`` (the session's input) unless
        the run reads several files. Frame numbers restart with each file, so the time decides: the frame is
        in the current file unless it is older than that file's first packet, and then in the last earlier
        file that began at or before it. (Only a finding about an earlier frame whose timestamp equals the
        first one of the next file, the same microsecond on both sides of a boundary, is put in the later.)"""
        if not self.inputs:
            return default
        current = len(self.inputs) - 1
        if time >= self._starts[current]:
            return self.inputs[current]
        return self.inputs[max(0, bisect.bisect_right(self._starts, time, hi=current) - 1)]

    # ------------------------------------------------------------- failures

    def _call(self, addon: Addon, hook: str, *args: Any) -> None:
        """Call one hook of one addon, detaching the addon if it raises."""
        if addon not in self.addons or not defines(addon, hook):
            return
        try:
            getattr(addon, hook)(*args)
        except Exception as exc:
            self._failed(addon, hook, exc, None)

    def _failed(self, addon: Any, hook: str, exc: Exception, where: ev.Event | None,
                session: Session | None = None) -> None:
        """Report an addon's exception once as a finding and detach the addon. A closed pipe is no bug:
        the reader of our output went away, and the command ends quietly (cli.main)."""
        if isinstance(exc, BrokenPipeError):
            raise exc
        addon = getattr(addon, "__self__", addon)  # a bound hook -> its addon
        if addon not in self.addons:
            return
        self.addons.remove(addon)
        self._index_hooks()
        what = f" on {type(where).__name__} at frame {where.frame}" if where is not None else ""
        self._internal_error(exc, session, where.frame if where is not None else 0,
                             where.time if where is not None else self.t0(),
                             f"{addon.name} failed in {hook}{what} and was detached")

    def _internal_error(self, exc: Exception, session: Session | None, frame: int, time: float, what: str) -> None:
        """A failure of nbdscope's own, as the one finding it gets (the traceback with NBDSCOPE_DEBUG=1)."""
        if os.environ.get("NBDSCOPE_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)
        self.report(Anomaly(rule=INTERNAL_ERROR.id, severity=INTERNAL_ERROR.severity, blame="nbdscope",
                            session=session.id if session is not None else "", frame=frame, time=time - self.t0(),
                            spec=INTERNAL_ERROR.spec,
                            source=self.input_of(session.source if session is not None else "", frame, time),
                            message=f"{what}: {type(exc).__name__}: {exc} (NBDSCOPE_DEBUG=1 shows the traceback)"))

    # ---------------------------------------------------------------- input

    def report(self, anomaly: Anomaly) -> None:
        """Record a finding and hand it to every addon listening for findings (unless it is silenced:
        then it is only counted, and taken back from its session's count)."""
        if self.selection is not None and not self.selection.keeps(anomaly):
            key = anomaly.check or anomaly.rule
            self.silenced[key] = self.silenced.get(key, 0) + 1
            for session in self._sessions_by_id(anomaly.session):
                session.anomaly_count = max(0, session.anomaly_count - 1)
            return
        self.anomalies.append(anomaly)
        self._each("finding", anomaly)

    def _sessions_by_id(self, session_id: str) -> list[Session]:
        """The session with this id (ids are "s<position>", see _start_session), as a list of at most one."""
        try:
            session = self.sessions[int(session_id.removeprefix("s")) - 1]
        except (ValueError, IndexError):
            return []
        return [session] if session.id == session_id else []

    def _each(self, name: str, arg: object) -> None:
        """Call every addon's hook ``name`` that takes one argument (finding, problem, stream)."""
        for hook in self._hooks[name]:
            try:
                hook(arg)
            except Exception as exc:
                self._failed(hook, name, exc, None)

    def feed(self, item: it.StreamItem) -> list[ev.Event]:
        """Fold one stream item in; returns the decoder events it produced."""
        if type(item) is not it.StreamData:  # the common case inline, the rest a call away
            return self._control(item)
        entry = self._open.get(item.conn)
        if entry is None:
            return []
        try:
            events = entry[1].feed(item.dir, item.data, frame=item.frame, time=item.time)
        except Exception as exc:
            self._decoder_failed(item, exc)
            return []
        for event in events:
            self._dispatch(entry[0], event)
        self._stream(item)
        return events

    def _control(self, item: it.StreamItem) -> list[ev.Event]:
        """Every item but data: notes, problems, and the opening, gaps and closing of connections."""
        if isinstance(item, it.StreamNote):
            self._note(item)
            return []
        if isinstance(item, it.CaptureProblem | it.InputStart | it.TimeOrigin):
            self._about_input(item)
            return []
        if self._t0 is None:
            self._t0 = item.time
        if isinstance(item, it.StreamOpen):
            self._start_session(item)
            return []
        entry = self._open.get(item.conn)
        if entry is None:
            return []
        session, conn = entry
        try:
            if isinstance(item, it.StreamGap):
                events = conn.gap(item.dir, item.nbytes, frame=item.frame, time=item.time, snapped=item.snapped)
            elif isinstance(item, it.StreamClose):
                events = conn.close(item.how, frame=item.frame, time=item.time, by=item.by)
                del self._open[item.conn]
            else:  # data reaches here only from a subclass of StreamData, which nothing makes
                raise TypeError(f"unexpected stream item {type(item).__name__}")
        except Exception as exc:
            self._decoder_failed(item, exc)
            return []
        for event in events:
            self._dispatch(session, event)
        self._stream(item)
        return events

    def _note(self, item: it.StreamNote) -> None:
        if item.action:  # the proxy's own doing, which the session records before any addon hears of it
            entry = self._open.get(item.conn)
            if entry is not None:
                entry[0].proxy_action(item.action, item.frame, item.text, dict(item.values))
                if item.action == "tls-plaintext":  # it terminates TLS: plaintext follows STARTTLS
                    entry[1].terminate_tls()
        self._stream(item)

    def _input(self, item: it.InputStart) -> None:
        """The next file of a run over several begins (a file whose start is unknown, a pipe, begins where
        the one before it began)."""
        start = item.time if item.time is not None else (self._starts[-1] if self._starts else -float("inf"))
        self.inputs.append(item.source)
        self._starts.append(max(start, self._starts[-1]) if self._starts else start)
        for session, _ in self._open.values():
            if session.last_frame:  # frame numbers restart: the session's greatest is counted afresh
                session.earlier_last_frame, session.last_frame = session.last_frame, 0
        self._each("input", item)

    def _about_input(self, item: it.CaptureProblem | it.InputStart | it.TimeOrigin) -> None:
        if isinstance(item, it.TimeOrigin):
            if self._t0 is None:  # relative times count from the input's first packet
                self._t0, self.utc_offset = item.time, item.utc_offset
        elif isinstance(item, it.InputStart):
            self._input(item)
        else:
            self.problems.append(item)
            self._each("problem", item)

    def _start_session(self, item: it.StreamOpen) -> None:
        session = Session(id=f"s{len(self.sessions) + 1}", client=item.client, server=item.server,
                          source=item.source, first_frame=item.frame, saw_start=item.saw_start,
                          start_time=item.time)
        self.sessions.append(session)
        self._open[item.conn] = (session, Connection(saw_start=item.saw_start, keep_data=self.keep_data,
                                                     track_payload=self.track_payload,
                                                     keep_headers=self.keep_headers,
                                                     want_read=self._want_read(session),
                                                     tls_keys=self.tls_keys))
        if self._hooks["opened"]:
            self._each("opened", session)
        self._stream(item)

    def _decoder_failed(self, item: it.StreamData | it.StreamGap | it.StreamClose, exc: Exception) -> None:
        """A decoder bug: that connection is decoded no further (reported once), the others go on."""
        session, _ = self._open.pop(item.conn)
        self._internal_error(exc, session, item.frame, item.time,
                             f"the decoder failed at frame {item.frame} and decoded this connection no further")

    def _stream(self, item: it.StreamItem) -> None:
        if self._hooks["stream"]:
            self._each("stream", item)

    def session_of(self, conn: it.ConnKey) -> Session | None:
        """The session of an open connection."""
        entry = self._open.get(conn)
        return entry[0] if entry else None

    def connection(self, conn: it.ConnKey) -> Connection | None:
        entry = self._open.get(conn)
        return entry[1] if entry else None

    def _subscribers(self, key: tuple[type, int | None]) -> list[MessageHook]:
        hooks = self._listeners[key] = [a.message for a in self.addons
                                        if defines(a, "message") and a.wants(*key)]
        return hooks

    def _dispatch(self, session: Session, event: ev.Event) -> None:
        session.observe(event)
        cls = type(event)
        key = (cls, event.command if cls in _BY_COMMAND else None)  # type: ignore[attr-defined]
        hooks = self._listeners.get(key)
        if hooks is None:
            hooks = self._subscribers(key)
        for hook in hooks:
            try:
                hook(session, event)
            except Exception as exc:
                self._failed(hook, "message", exc, event, session)
        if cls in _BY_COMMAND:
            session.track(event)
        if session.followups and cls in _REPLIES and event.completes:  # type: ignore[attr-defined]
            for followup in session.followups.pop(event.cookie, ()):  # type: ignore[attr-defined]
                if getattr(followup, "__self__", None) in self.addons:
                    try:
                        followup(session, event)  # type: ignore[arg-type]  # a reply, by the test above
                    except Exception as exc:
                        self._failed(followup, "message", exc, event, session)

    def run(self, items: Iterable[it.StreamItem]) -> Result:
        for item in items:
            self.feed(item)
        return self.finish()

    def finish(self) -> Result:
        for session in self.sessions if self.inputs else ():
            if not session.last_frame:  # nothing since the file before: its last frame is there
                session.last_frame = session.earlier_last_frame
        for conn_id in list(self._open):
            session, conn = self._open.pop(conn_id)
            for event in conn.close("end-of-capture", frame=session.last_frame, time=session.last_time):
                self._dispatch(session, event)
        for addon in list(self.addons):
            self._call(addon, "ending", self.sessions)
        rank = {src: i for i, src in enumerate(self.inputs or dict.fromkeys(s.source for s in self.sessions))}
        self.anomalies.sort(key=lambda a: (rank.get(a.source, 0), a.frame))
        for session in self.sessions if self.inputs else ():
            session.last_source = self.input_of(session.source, session.last_frame, session.last_time)
            session.last_frame = session.last_frame or session.earlier_last_frame  # closed without a message
        result = Result(self.sessions, self.anomalies, self.problems, self.t0(), dict(sorted(self.silenced.items())),
                        list(self.inputs))
        for addon in list(self.addons):
            self._call(addon, "finished", result)
        return result
