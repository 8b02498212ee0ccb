"""The TUI's model: every decoded message of every session, in arrival order, with
its anomaly mark and its request/reply link.

One producer (a loader thread, the proxy's thread or the live capture thread)
appends through the engine's callbacks; the UI thread only reads. Rows are the
decoder's own immutable events plus a few compact parallel arrays, so a million
messages cost no widget and no per-row object beyond the event itself.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from nbdscope.analysis.anomaly import SEVERITY_RANK, Anomaly
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.vocab import CaptureProblem

NO_ROW = -1
LINK_SCAN = 200_000  # rows searched backwards for the message an anomaly names by frame


@dataclass
class Finding:
    """An anomaly and the row of the message it is about (NO_ROW when none matches)."""

    anomaly: Anomaly
    row: int


@dataclass
class Store:
    events: list[ev.Event] = field(default_factory=list)
    session_of: array = field(default_factory=lambda: array("H"))  # index into sessions
    marks: bytearray = field(default_factory=bytearray)  # 0: none, else 1 + worst severity rank
    link: array = field(default_factory=lambda: array("q"))  # reply -> request row; request -> completing reply
    sessions: list[Session] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    problems: list[CaptureProblem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # source status lines (capture drops, errors)
    t0: float | None = None
    done: bool = False  # the source has ended (file read, proxy stopped)
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards findings/notices lists for readers
    _session_index: dict[str, int] = field(default_factory=dict)
    _row_anomalies: dict[int, list[Anomaly]] = field(default_factory=dict)  # marked rows only: what filters read
    _inflight: dict[tuple[int, int], int] = field(default_factory=dict)  # (session, cookie) -> request row
    _last_row: int = NO_ROW

    def __len__(self) -> int:
        return len(self.link)  # the array written last for a row: a row counted here is complete

    # ------------------------------------------------------------ producer side

    def on_message(self, session: Session, e: ev.Event) -> None:
        """Engine listener: append one message."""
        if isinstance(e, ev.PayloadData):
            return
        if self.t0 is None:
            self.t0 = e.time
        s = self._session_index.get(session.id)
        if s is None:
            s = self._session_index[session.id] = len(self.sessions)
            self.sessions.append(session)
        row = len(self.events)
        link = NO_ROW
        if isinstance(e, ev.Request):
            self._inflight[(s, e.cookie)] = row
        elif isinstance(e, ev.Reply):
            key = (s, e.cookie)
            req = self._inflight.get(key, NO_ROW)
            if req != NO_ROW:
                link = req
                if e.completes:
                    del self._inflight[key]
                    self.link[req] = row
                elif self.link[req] == NO_ROW:
                    self.link[req] = row  # until the completing chunk arrives, point at the first one
        self.events.append(e)
        self.session_of.append(s)
        self.marks.append(0)
        self.link.append(link)
        self._last_row = row

    def on_anomaly(self, a: Anomaly) -> None:
        """Engine listener: attach a finding to the message it names (the one just decoded, if it matches)."""
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
        last = self._last_row
        if last != NO_ROW and self.session_of[last] == s and self.events[last].frame == a.frame:
            return last
        best = NO_ROW
        for row in range(len(self.events) - 1, max(-1, len(self.events) - 1 - LINK_SCAN), -1):
            if self.session_of[row] == s:
                frame = self.events[row].frame
                if frame == a.frame:
                    return row
                if frame < a.frame and best == NO_ROW:
                    best = row  # nearest earlier message of that session
        return best

    def add_notice(self, text: str) -> None:
        with self.lock:
            self.notices.append(text)

    # -------------------------------------------------------------- reader side

    def session_id(self, row: int) -> str:
        return self.sessions[self.session_of[row]].id

    def session_index(self, session_id: str) -> int | None:
        return self._session_index.get(session_id)

    def rel_time(self, row: int) -> float:
        return self.events[row].time - (self.t0 or 0.0)

    def findings_for(self, row: int) -> list[Finding]:
        with self.lock:
            return [f for f in self.findings if f.row == row]

    def anomalies_at(self, row: int) -> Sequence[Anomaly]:
        """The anomalies attached to a row, in arrival order (cheap: what a filter asks for every row)."""
        if not self.marks[row]:
            return ()
        with self.lock:
            return tuple(self._row_anomalies.get(row, ()))

    def anomaly_count(self, session_id: str) -> int:
        with self.lock:
            return sum(1 for f in self.findings if f.anomaly.session == session_id)
