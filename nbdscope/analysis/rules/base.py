"""The rule interface: a rule watches decoder events and reports anomalies."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from nbdscope.analysis.anomaly import Anomaly, Blame, RuleInfo, Severity
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev

Report = Callable[[Anomaly], None]


class Rule:
    """One anomaly check. Subclasses set INFO and override on_event (and maybe on_end).

    A rule instance lives for a whole analysis run and sees every session, so
    rules that compare connections (several connections to one export) can."""

    INFO: ClassVar[RuleInfo]
    EVENTS: ClassVar[tuple[type[ev.Event], ...]] = (ev.Event,)  # what on_event is called for
    NEEDS_DATA: ClassVar[bool] = False  # only meaningful when the decoder keeps payloads
    # requests and replies: the commands the rule cares about (None: all, including replies that
    # match no request). The engine skips the call for others: most rules concern a few commands,
    # and a live proxy pays for every call on every message.
    FOR_COMMANDS: ClassVar[frozenset[int] | None] = None

    def __init__(self, report: Report, t0: Callable[[], float]) -> None:
        self._report = report
        self._t0 = t0

    @classmethod
    def wants(cls, event_type: type[ev.Event], command: int | None) -> bool:
        """Whether on_event is to be called for events of this type (and command, for requests and replies)."""
        if not issubclass(event_type, cls.EVENTS):
            return False
        only = cls.FOR_COMMANDS
        return only is None or not issubclass(event_type, ev.Request | ev.Reply) or command in only

    def on_event(self, session: Session, event: ev.Event) -> None:
        raise NotImplementedError

    def on_end(self, sessions: list[Session]) -> None:
        """Called once after all inputs; for findings that need the whole run."""

    def flag(self, session: Session, event: ev.Event, message: str, *, blame: Blame | None = None,
             severity: Severity | None = None, **values: object) -> None:
        if blame is None and self.INFO.blame == "either":
            blame = "client" if event.dir == "c2s" else "server"
        self.flag_at(session, event.frame, event.time, message, blame=blame, severity=severity, **values)

    def flag_at(self, session: Session, frame: int, time: float, message: str, *, blame: Blame | None = None,
                severity: Severity | None = None, **values: object) -> None:
        """Report at a given frame and absolute capture time (for findings no single event carries)."""
        info = self.INFO
        if blame is None:
            blame = "server" if info.blame == "either" else info.blame
        session.anomaly_count += 1
        self._report(Anomaly(rule=info.id, severity=severity or info.severity, blame=blame, session=session.id,
                             frame=frame, time=time - self._t0(), message=message, spec=info.spec,
                             source=session.source, values=values))
