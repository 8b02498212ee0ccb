"""The session and run facts shared by the JSON report and the JSONL lines (nbdscope/report/facts.py)."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.engine import Result
from nbdscope.analysis.session import Session
from nbdscope.report.facts import lean, session_line, summary_object
from nbdscope.vocab import Endpoint

T0 = 1764641501.25  # 2025-12-02T02:11:41.250000Z


def _session(start: float, last: float) -> Session:
    s = Session(id="s1", client=Endpoint("::1", 40000), server=Endpoint("::1", 10809), source="a.pcap",
                first_frame=3, saw_start=False, start_time=start)
    s.last_time, s.messages = last, 7
    return s


def _finding(severity: str) -> Anomaly:
    return Anomaly(rule="r", severity=severity, blame="client", session="s1", frame=1, time=0.0,  # type: ignore[arg-type]
                   message="m", spec="x")


def test_lean_drops_what_jsonl_leaves_out_and_keeps_false_zero_and_empty_text() -> None:
    assert lean({"a": None, "b": [], "c": {}, "d": False, "e": 0, "f": "", "g": {"h": None, "i": 1}, "j": {"k": None}}) \
        == {"d": False, "e": 0, "f": "", "g": {"i": 1}}


def test_summary_counts_per_severity_and_writes_t0_in_the_captures_zone() -> None:
    result = Result([_session(T0 + 0.5, T0 + 2.0)], [_finding("error"), _finding("info"), _finding("info")], t0=T0,
                    silenced={"r.c": 2})
    summary = summary_object(result, ["a.pcap"], utc_offset=3600)
    assert summary["findings"] == {"error": 1, "warning": 0, "info": 2}
    assert summary["silenced"] == {"r.c": 2} and summary["sessions"] == 1 and summary["messages"] == 7
    assert summary["t0"] == {"epoch": T0, "iso8601": "2025-12-02T03:11:41.250000+01:00"}
    assert summary["last"] == {"time": 2.0, "epoch": T0 + 2.0, "iso8601": "2025-12-02T03:11:43.250000+01:00"}
    empty = summary_object(Result([], []), [])
    assert empty["t0"] is None and empty["last"] is None and empty["messages"] == 0


def test_session_line_takes_the_reports_facts_and_its_moment() -> None:
    s = _session(T0 + 0.5, T0 + 2.0)
    opened = session_line("SESSION", s, T0)
    assert opened == {"type": "SESSION", "session": "s1", "input": "a.pcap", "client": "[::1]:40000",
                      "server": "[::1]:10809", "first_frame": 3, "saw_start": False, "time": 0.5, "epoch": T0 + 0.5}
