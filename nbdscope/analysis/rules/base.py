"""The rule interface: a rule watches decoder events and reports anomalies."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from nbdscope.analysis.anomaly import Anomaly, Blame, RuleInfo
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev

Report = Callable[[Anomaly], None]


class Rule:
    """One anomaly check. Subclasses set INFO and override on_event (and maybe on_end).

    A rule instance lives for a whole analysis run and sees every session, so
    rules that compare connections (several connections to one export) can."""

    INFO: ClassVar[RuleInfo]

    def __init__(self, report: Report, t0: Callable[[], float]) -> None:
        self._report = report
        self._t0 = t0

    def on_event(self, session: Session, event: ev.Event) -> None:
        raise NotImplementedError

    def on_end(self, sessions: list[Session]) -> None:
        """Called once after all inputs; for findings that need the whole run."""

    def flag(self, session: Session, event: ev.Event, message: str, *, blame: Blame | None = None,
             **values: object) -> None:
        info = self.INFO
        if blame is None:
            if info.blame == "either":
                blame = "client" if event.dir == "c2s" else "server"
            else:
                blame = info.blame
        session.anomaly_count += 1
        self._report(Anomaly(rule=info.id, severity=info.severity, blame=blame, session=session.id,
                             frame=event.frame, time=event.time - self._t0(), message=message, spec=info.spec,
                             source=session.source, values=values))
