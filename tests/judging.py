"""Judging hand-built sessions: scripts (tests/wirescripts.py) through the whole engine, and the
assertion every check's firing test makes.

``fired(result, "rule.check")`` is how a test says a check fired: it returns the findings of that
check and asserts they carry the requirement rows the check declares. tests/unit/test_requirements.py
reads the test sources for these calls, so a check without one fails the suite."""

from __future__ import annotations

from nbdscope import vocab as it
from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.engine import Engine, Result
from nbdscope.analysis.rules import ALL_RULES

Script = list[tuple[str, bytes]]


def analyze(*sessions: Script, client_ports: tuple[int, ...] = (), keep_data: bool = False, tls_keys: object = None,
            closed_by: str | None = None, how: str = "fin", server_port: int = 10809) -> Result:
    """Each script as one connection to 127.0.0.1:``server_port``, one frame per message, all rules on. The
    capture ends with the connections open, unless ``closed_by`` ("c2s" or "s2c") closes each of them (``how``)."""
    engine = Engine(verify_data=keep_data, tls_keys=tls_keys)  # type: ignore[arg-type]
    frame = 0
    for n in range(len(sessions)):
        port = client_ports[n] if client_ports else 40000 + n
        engine.feed(it.StreamOpen(conn=n, client=it.Endpoint("127.0.0.1", port), server=it.Endpoint("127.0.0.1", server_port),
                                  frame=frame, time=frame / 1000, saw_start=True, source="t.pcap"))
    for n, script in enumerate(sessions):
        for direction, data in script:
            frame += 1
            engine.feed(it.StreamData(conn=n, dir=direction, data=data, frame=frame, time=frame / 1000))  # type: ignore[arg-type]
    if closed_by is not None:
        for n in range(len(sessions)):
            frame += 1
            engine.feed(it.StreamClose(conn=n, how=how, frame=frame, time=frame / 1000, by=closed_by))  # type: ignore[arg-type]
    return engine.finish()


def declared(check_id: str) -> tuple[str, ...]:
    """The requirement rows the check ``rule.check`` declares (AssertionError when there is no such check)."""
    rule_id, _, name = check_id.partition(".")
    for cls in ALL_RULES:
        if cls.INFO.id == rule_id:
            return cls.check(name).requires
    raise AssertionError(f"no rule {rule_id!r}")


def fired(result: Result | list[Anomaly], check_id: str, *, blame: str | None = None) -> list[Anomaly]:
    """The findings of ``check_id``; asserts there is at least one, each naming the check's requirement
    rows (and blaming ``blame`` when given)."""
    findings = result.anomalies if isinstance(result, Result) else result
    hits = [a for a in findings if a.check == check_id]
    assert hits, f"{check_id} did not fire; found {[a.check or a.rule for a in findings]}"
    want = declared(check_id)
    for a in hits:
        assert a.requirements == want, f"{check_id} names {a.requirements}, declares {want}"
        if blame is not None:
            assert a.blame == blame, f"{check_id} blamed {a.blame}, not {blame}: {a.message}"
    return hits


def silent(result: Result | list[Anomaly], *rules: str) -> None:
    """Asserts no finding of these rules (or checks) at all: for behaviour the spec permits."""
    findings = result.anomalies if isinstance(result, Result) else result
    bad = [a for a in findings if a.rule in rules or a.check in rules]
    assert not bad, f"flagged permitted behaviour: {[(a.check or a.rule, a.message) for a in bad]}"


DESCRIPTIVE = frozenset({"handshake-outcome", "proxy-action"})
"""Rules whose findings describe what happened (how a handshake ended, what the proxy did) rather
than say that a statement was broken."""


def violations(result: Result | list[Anomaly]) -> list[Anomaly]:
    """The findings that say something was broken: not the descriptive ones, nor the capture's notes."""
    findings = result.anomalies if isinstance(result, Result) else result
    return [a for a in findings if a.rule not in DESCRIPTIVE and not (a.blame == "capture" and a.severity == "info")]
