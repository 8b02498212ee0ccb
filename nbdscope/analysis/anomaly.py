"""Anomalies and the rule metadata they carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "info"]
Blame = Literal["client", "server", "capture", "proxy", "nbdscope"]
"""Who a finding is about: a peer, the capture (it lost or cut what it saw), the proxy's own doing
(e.g. flags it was asked to rewrite), or nbdscope itself (an addon that failed: ``internal-error``)."""
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    severity: Severity
    blame: Blame | Literal["either"]  # "either": decided per finding by who sent the bytes
    spec: str  # section of doc/proto.md the rule rests on
    summary: str  # one line, our own words


@dataclass(frozen=True, slots=True)
class Check:
    """One distinct way a rule can fire, named ``<rule id>.<name>``, and the spec rows it enforces.

    Its severity comes from the spec's own word (``requirements.severity_of``: MUST-level → error,
    SHOULD-level → warning); only a hazard that breaks no statement (``requires`` empty, e.g. the
    qemu 3.0 misnumbered flag) states a severity of its own."""

    name: str
    requires: tuple[str, ...] = ()  # requirement ids of nbdscope/spec/requirements
    summary: str = ""  # one line, our own words
    severity: Severity | None = None  # hazards only: set when ``requires`` is empty
    blame: Blame | Literal["either"] | None = None  # None: the rule's
    # for `nbdscope rules ID.CHECK` and docs/rules.md, in our own words:
    consequence: str = ""  # what it breaks in practice
    fix: str = ""  # which side to fix and how; known implementations and versions where known
    example: str = ""  # a finding's message as the check words it


@dataclass(frozen=True, slots=True)
class Anomaly:
    rule: str
    severity: Severity
    blame: Blame
    session: str
    frame: int
    time: float
    message: str
    spec: str
    source: str = ""
    values: dict[str, object] = field(default_factory=dict)
    check: str = ""  # "<rule>.<check>"; empty only for findings made outside a rule
    requirements: tuple[str, ...] = ()  # the requirement rows this finding says were broken

    def as_json(self, with_input: bool = False, t0: float | None = None) -> dict[str, object]:
        """The finding as the reports give it; ``with_input`` (runs over several files) adds the file
        that holds its frame, since frame numbers restart with each file; ``t0`` (the run's origin) adds
        ``epoch``, the absolute moment beside the relative ``time``."""
        out: dict[str, object] = {
            "rule": self.rule, "severity": self.severity, "blame": self.blame, "session": self.session,
            "frame": self.frame, "time": round(self.time, 6)}
        if t0 is not None:
            out["epoch"] = round(self.time + t0, 6)
        out["message"], out["spec"] = self.message, self.spec
        if with_input:
            out["input"] = self.source
        if self.check:
            out["check"] = self.check
        if self.requirements:
            out["requirements"] = list(self.requirements)
        if self.values:
            out["values"] = self.values
        return out


INTERNAL_ERROR = RuleInfo("internal-error", "error", "nbdscope", "none: a failure of nbdscope itself",
                          "an addon of nbdscope (a rule or an output) raised and was detached; the rest of the "
                          "analysis went on without it (a bug of ours, never a peer's fault)")
