"""A made-up rule with one check of each kind (MUST-level, SHOULD-level, a hazard), for the tests
of the views (`rules`, docs/rules.md, the Lua tables, severity everywhere, --select/--ignore):
they must work whatever checks the real catalogue declares, including none.

``install(monkeypatch)`` adds it to ``nbdscope.analysis.rules.ALL_RULES`` for one test. Its
requirement rows are real rows of the table whose level the census fixes (transmission.1 is a
MUST at line 292, transmission.2 a SHOULD at line 304 of proto.md at 89ba7b5)."""

from __future__ import annotations

import pytest

from nbdscope.analysis import rules as catalogue
from nbdscope.analysis.anomaly import Anomaly, Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.vocab import Endpoint

RULE = "views-fake-rule"
MUST_ROW, SHOULD_ROW = "transmission.1", "transmission.2"


class FakeRule(Rule):
    INFO = RuleInfo(RULE, "error", "either", "Transmission", "a rule the views tests make up")
    CHECKS = (
        Check("must-broken", (MUST_ROW,), "the made-up MUST is broken", consequence="consequence of the MUST",
              fix="fix the MUST side", example="example finding of the MUST"),
        Check("should-broken", (SHOULD_ROW,), "the made-up SHOULD is broken", consequence="consequence of the SHOULD",
              fix="fix the SHOULD side", example="example finding of the SHOULD"),
        Check("hazard", (), "a made-up hazard", severity="info", blame="client", consequence="hazard consequence",
              fix="hazard fix", example="example hazard"),
    )

    def message(self, session: Session, event: object) -> None:  # never attached to an engine
        raise AssertionError("the fake rule only reports through finding()")


# what the spec's word makes of each check (the point of the fake: one of each)
EXPECTED = {f"{RULE}.must-broken": "error", f"{RULE}.should-broken": "warning", f"{RULE}.hazard": "info"}


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue, "ALL_RULES", (*catalogue.ALL_RULES, FakeRule))


def session(sid: str = "s1") -> Session:
    return Session(id=sid, client=Endpoint("127.0.0.1", 5000), server=Endpoint("127.0.0.1", 10809), source="built",
                   first_frame=1, saw_start=True)


def finding(cls: type[Rule], check: str, frame: int = 7) -> Anomaly:
    """The finding ``cls`` reports for its check ``check`` (through Rule.flag_at, as every rule does)."""
    got: list[Anomaly] = []
    rule = cls()
    rule._report = got.append
    rule.flag_at(session(), frame, 1.5, f"made-up finding of {check}", check=check)
    assert len(got) == 1
    return got[0]
