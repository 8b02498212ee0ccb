"""The TUI's model: every decoded message of every session, in arrival order, with
its anomaly mark and its request/reply link.

One producer (a loader thread, the proxy's thread or the live capture thread)
appends through the engine's addon hooks; the UI thread only reads. Rows are the
decoder's own immutable events plus a few compact parallel arrays, so a million
messages cost no widget and no per-row object beyond the event itself.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nbdscope.analysis.addons import Addon
from nbdscope.analysis.anomaly import SEVERITY_RANK, Anomaly
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.vocab import CaptureProblem

if TYPE_CHECKING:
    from nbdscope.analysis.engine import Engine

NO_ROW = -1


@dataclass
class Finding:
    """An anomaly and the row of the message it is about (NO_ROW when none matches)."""

    anomaly: Anomaly
    row: int


@dataclass(eq=False)
class Store(Addon):
    """An addon: the engine hands it every message and finding of the run it watches."""

    NEEDS = frozenset({"headers"})  # not a field (no annotation); the hex pane shows each message's header
    events: list[ev.Event] = field(default_factory=list)
    session_of: array[int] = field(default_factory=lambda: array("H"))  # index into sessions
    marks: bytearray = field(default_factory=bytearray)  # 0: none, else 1 + worst severity rank
    link: array[int] = field(default_factory=lambda: array("q"))  # reply -> request row; request -> completing reply
    sessions: list[Session] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    problems: list[CaptureProblem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # source status lines (capture drops, errors)
    done: bool = False  # the source has ended (file read, proxy stopped)
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards findings/notices lists for readers
    _session_index: dict[str, int] = field(default_factory=dict)
    _row_anomalies: dict[int, list[Anomaly]] = field(default_factory=dict)  # marked rows only: what filters read
    # per session: its rows and their frames, both in arrival order (frames never decrease within a
    # session), so the row a finding or a reply names by frame is a bisection away
    _rows: list[array[int]] = field(default_factory=list)
    _frames: list[array[int]] = field(default_factory=list)
    _engine: Engine | None = None
    _first: float | None = None  # the first message's time: the origin of a store no engine started

    def __len__(self) -> int:
        return len(self.link)  # the array written last for a row: a row counted here is complete

    # ------------------------------------------------------------ producer side

    def started(self, engine: Engine) -> None:
        self._engine = engine  # its origin (the input's first packet) is the one every view counts from

    @property
    def t0(self) -> float:
        """The moment relative times count from: the input's first packet, as in every other view."""
        if self._engine is not None:
            return self._engine.t0()
        return self._first or 0.0

    @property
    def utc_offset(self) -> int | None:
        """The capture's own zone (seconds east of UTC), when its header records one."""
        return self._engine.utc_offset if self._engine is not None else None

    def message(self, session: Session, e: ev.Event) -> None:
        """Append one message, linked to its request (replies) by the request frame the decoder matched."""
        if isinstance(e, ev.PayloadData):
            return
        if self._first is None:
            self._first = e.time
        s = self._session_index.get(session.id)
        if s is None:
            s = self._session_index[session.id] = len(self.sessions)
            self.sessions.append(session)
            self._rows.append(array("q"))
            self._frames.append(array("q"))
        row = len(self.events)
        link = NO_ROW
        if isinstance(e, ev.Reply) and e.request_frame is not None:
            req = self._request_row(s, e.request_frame, e.cookie)
            if req != NO_ROW:
                link = req
                if e.completes or self.link[req] == NO_ROW:
                    self.link[req] = row  # until the completing chunk arrives, point at the first one
        self.events.append(e)
        self.session_of.append(s)
        self.marks.append(0)
        self._rows[s].append(row)
        self._frames[s].append(e.frame)
        self.link.append(link)

    def _request_row(self, s: int, frame: int, cookie: int) -> int:
        rows, frames = self._rows[s], self._frames[s]
        i = bisect_left(frames, frame)
        while i < len(frames) and frames[i] == frame:
            e = self.events[rows[i]]
            if isinstance(e, ev.Request) and e.cookie == cookie:
                return rows[i]
            i += 1
        return NO_ROW

    def finding(self, a: Anomaly) -> None:
        """Attach a finding to the message it names: the latest of its session at that frame, else the
        nearest earlier one."""
        row = self._find_row(a)
        with self.lock:
            if row != NO_ROW:
                self._row_anomalies.setdefault(row, []).append(a)
            self.findings.append(Finding(a, row))
        if row != NO_ROW:
            self.marks[row] = max(self.marks[row], 1 + SEVERITY_RANK[a.severity])

    def _find_row(self, a: Anomaly) -> int:
        s = self._session_index.get(a.session)
        if s is None:
            return NO_ROW
        i = bisect_right(self._frames[s], a.frame) - 1
        return self._rows[s][i] if i >= 0 else NO_ROW

    def problem(self, problem: CaptureProblem) -> None:
        self.problems.append(problem)
        self.add_notice(f"{problem.source}: frame {problem.frame}: {problem.message}; results up to there are kept")

    def add_notice(self, text: str) -> None:
        with self.lock:
            self.notices.append(text)

    # -------------------------------------------------------------- reader side

    def session_id(self, row: int) -> str:
        return self.sessions[self.session_of[row]].id

    def session_index(self, session_id: str) -> int | None:
        return self._session_index.get(session_id)

    def rel_time(self, row: int) -> float:
        return self.events[row].time - self.t0

    def findings_for(self, row: int) -> list[Finding]:
        """The findings on one row, in arrival order (from the per-row index: no scan of every finding)."""
        return [Finding(a, row) for a in self.anomalies_at(row)]

    def anomalies_at(self, row: int) -> Sequence[Anomaly]:
        """The anomalies attached to a row, in arrival order (cheap: what a filter asks for every row)."""
        if not self.marks[row]:
            return ()
        with self.lock:
            return tuple(self._row_anomalies.get(row, ()))

    def anomaly_count(self, session_id: str) -> int:
        with self.lock:
            return sum(1 for f in self.findings if f.anomaly.session == session_id)
