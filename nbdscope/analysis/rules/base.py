"""The rule interface: a rule is an addon that watches decoder events and reports anomalies."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from nbdscope.analysis.addons import Addon
from nbdscope.analysis.anomaly import Anomaly, Blame, RuleInfo, Severity
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev

if TYPE_CHECKING:
    from nbdscope.analysis.engine import Engine

Report = Callable[[Anomaly], None]


def _unstarted(anomaly: Anomaly) -> None:
    raise RuntimeError("a rule reported before the engine started it")


class Rule(Addon):
    """One anomaly check. Subclasses set INFO and override ``message`` (and maybe ``ending``).

    A rule instance lives for a whole analysis run and sees every session, so
    rules that compare connections (several connections to one export) can."""

    INFO: ClassVar[RuleInfo]
    EVENTS: ClassVar[tuple[type[ev.Event], ...]] = (ev.Event,)  # what ``message`` is called for
    NEEDS_DATA: ClassVar[bool] = False  # only meaningful when the decoder keeps payloads
    # requests and replies: the commands the rule cares about (None: all, including replies that
    # match no request). The engine skips the call for others: most rules concern a few commands,
    # and a live proxy pays for every call on every message.
    FOR_COMMANDS: ClassVar[frozenset[int | None] | None] = None  # a None member: replies matching no request

    def __init__(self) -> None:
        self._report: Report = _unstarted
        self._t0: Callable[[], float] = lambda: 0.0

    @property
    def name(self) -> str:
        return self.INFO.id

    def started(self, engine: Engine) -> None:
        self._report = engine.report
        self._t0 = engine.t0

    @classmethod
    def subscribes(cls, event_type: type[ev.Event], command: int | None) -> bool:
        """Whether ``message`` is to be called for events of this type (and command, for requests and replies)."""
        if not issubclass(event_type, cls.EVENTS):
            return False
        only = cls.FOR_COMMANDS
        return only is None or not issubclass(event_type, ev.Request | ev.Reply) or command in only

    def wants(self, event_type: type[ev.Event], command: int | None) -> bool:
        return self.subscribes(event_type, command)

    def message(self, session: Session, event: ev.Event) -> None:
        raise NotImplementedError

    def ending(self, sessions: list[Session]) -> None:
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
