"""The rule interface: a rule is an addon that watches decoder events and reports anomalies."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from nbdscope.analysis.addons import Addon
from nbdscope.analysis.anomaly import Anomaly, Blame, Check, RuleInfo, Severity
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec.requirements import severity_of

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
    CHECKS: ClassVar[tuple[Check, ...]] = ()  # every way the rule fires; ``flag(check=name)`` names one
    EVENTS: ClassVar[tuple[type[ev.Event], ...]] = (ev.Event,)  # what ``message`` is called for
    NEEDS_DATA: ClassVar[bool] = False  # only meaningful when the decoder keeps payloads
    # requests and replies: the commands the rule cares about (None: all, including replies that
    # match no request). The engine skips the call for others: most rules concern a few commands,
    # and a live proxy pays for every call on every message.
    FOR_COMMANDS: ClassVar[frozenset[int | None] | None] = None  # a None member: replies matching no request
    # Once the capture lost framing in a session (a gap outside a payload, bytes skipped to find a header,
    # a capture that began mid-connection), what a rule infers about a peer may rest on the lost bytes, so
    # findings blaming a peer are dropped there (counted in ``session.withheld``). A rule that weighs the
    # loss itself (the framing rules) sets this.
    JUDGES_LOSSY: ClassVar[bool] = False

    def __init__(self) -> None:
        self._report: Report = _unstarted
        self._t0: Callable[[], float] = lambda: 0.0
        self._input_of: Callable[[str, int, float], str] = lambda default, frame, time: default

    @property
    def name(self) -> str:
        return self.INFO.id

    def started(self, engine: Engine) -> None:
        self._report = engine.report
        self._t0 = engine.t0
        self._input_of = engine.input_of

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

    @classmethod
    def check(cls, name: str) -> Check:
        """The declared check ``name`` (KeyError names the rule when there is none)."""
        for c in cls.CHECKS:
            if c.name == name:
                return c
        raise KeyError(f"rule {cls.INFO.id} declares no check {name!r}")

    @classmethod
    def check_severity(cls, check: Check) -> Severity:
        """The spec's word decides: the strongest level among the rows the check enforces."""
        if check.severity is not None:
            return check.severity
        found = severity_of(check.requires)
        return found if found is not None else cls.INFO.severity  # type: ignore[return-value]  # "error"/"warning"

    def flag(self, session: Session, event: ev.Event, message: str, *, check: str | None = None,
             blame: Blame | None = None, severity: Severity | None = None, **values: Any) -> None:
        declared = self.check(check) if check is not None else None
        either = (declared.blame if declared and declared.blame else self.INFO.blame) == "either"
        if blame is None and either:
            blame = "client" if event.dir == "c2s" else "server"
        self.flag_at(session, event.frame, event.time, message, check=check, blame=blame, severity=severity,
                     **values)

    def flag_at(self, session: Session, frame: int, time: float, message: str, *, check: str | None = None,
                blame: Blame | None = None, severity: Severity | None = None, **values: Any) -> None:
        """Report at a given frame and absolute capture time (for findings no single event carries)."""
        info = self.INFO
        declared = self.check(check) if check is not None else None
        if blame is None:
            default = declared.blame if declared and declared.blame else info.blame
            blame = "server" if default == "either" else default
        if severity is None:
            severity = self.check_severity(declared) if declared else info.severity
        if session.lost_sync and blame in ("client", "server") and not self.JUDGES_LOSSY:
            session.withheld += 1
            return
        session.noted(blame, severity, frame, f"{info.id}.{declared.name}" if declared else info.id)
        self._report(Anomaly(rule=info.id, severity=severity, blame=blame, session=session.id,
                             frame=frame, time=time - self._t0(), message=message, spec=info.spec,
                             source=self._input_of(session.source, frame, time), values=values,
                             check=f"{info.id}.{declared.name}" if declared else "",
                             requirements=declared.requires if declared else ()))
