"""Every shipped capture's real outputs against the schemas of docs/schemas/ (analyze
--format json, --format jsonl, --format jsonl --verify-data, and the proxy's --jsonl), plus
what a schema cannot say: flags fields list every defined bit of the right field, names
agree with numbers, and the formats agree with each other."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from nbdscope.report import facts
from nbdscope.report.clock import iso8601
from nbdscope.spec import COMMANDS, FLAG_FIELDS
from tests.contract.checks import check_jsonl
from tests.contract.outputs import SHIPPED, analyze, lines, messages, proxy_jsonl
from tests.contract.schemas import errors


@pytest.mark.parametrize("capture", SHIPPED, ids=lambda p: p.name)
def test_json_report_meets_its_schema(capture: Path) -> None:
    report = json.loads(analyze(capture, "--format", "json"))
    assert errors("report", report) == []
    assert report["inputs"] == [str(capture)]
    for session in report["sessions"]:
        flags = session["export"]["transmission_flags"]
        if flags is not None:
            assert session["export"]["flags"] == FLAG_FIELDS["transmission_flags"].names(flags)
        assert all(name == COMMANDS.name(COMMANDS.by_name(name).value) for name in session["commands"])  # type: ignore[union-attr]


@pytest.mark.parametrize("capture", SHIPPED, ids=lambda p: p.name)
def test_jsonl_meets_its_schemas_and_agrees_with_the_report(capture: Path) -> None:
    records = check_jsonl(analyze(capture, "--format", "jsonl"))
    report = json.loads(analyze(capture, "--format", "json"))
    assert {r["session"] for r in records if "session" in r} <= {s["id"] for s in report["sessions"]}
    anomalies = [{k: v for k, v in r.items() if k != "type"} for r in records if r["type"] == "ANOMALY"]
    assert sorted(map(json.dumps, anomalies)) == sorted(map(json.dumps, report["anomalies"]))
    counted = Counter(r["session"] for r in messages(records))
    assert counted == {s["id"]: s["messages"] for s in report["sessions"] if s["messages"]}


def _session_lines(records: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    found = [r for r in records if r["type"] == kind]
    by_id = {r["session"]: r for r in found}
    assert len(by_id) == len(found), f"a session has two {kind} lines"
    return by_id


@pytest.mark.parametrize("capture", SHIPPED, ids=lambda p: p.name)
def test_session_and_summary_lines_tell_what_the_report_tells(capture: Path) -> None:
    """Each session gets a SESSION line before any other line of it, a SESSION_UPDATE once its handshake is
    over, a SESSION_END after its CONNECTION_END; the run a SUMMARY, last; and their facts are the report's."""
    records = lines(analyze(capture, "--format", "jsonl"))
    report = json.loads(analyze(capture, "--format", "json"))
    opened, updated, ended = (_session_lines(records, k) for k in ("SESSION", "SESSION_UPDATE", "SESSION_END"))
    sessions = {s["id"]: s for s in report["sessions"]}
    assert set(opened) == set(ended) == set(sessions) and set(updated) <= set(sessions)
    for sid, s in sessions.items():
        for line, keys in ((opened[sid], facts.OPENED), (updated.get(sid), facts.NEGOTIATED)):
            if line is not None:
                assert {k: line[k] for k in keys if k in line} == facts.lean({k: s[k] for k in keys}), sid
        if s["handshake"] != "unknown" or s["messages"] > 1:  # seen past its handshake, or ended in it
            assert sid in updated
        end = ended[sid]
        assert {k: end[k] for k in ("disconnect", "messages", "tls_bytes")} == \
               {k: s[k] for k in ("disconnect", "messages", "tls_bytes")}
        assert end.get("commands", {}) == facts.lean(s["commands"])
        assert end["findings"] <= s["findings"] == sum(a["session"] == sid for a in report["anomalies"])
        own = [i for i, r in enumerate(records) if r.get("session") == sid and r["type"] != "ANOMALY"]
        assert records[own[0]] is opened[sid]
        close = next(i for i in own if records[i]["type"] == "CONNECTION_END")
        # after the close only its SESSION_END, and the SESSION_UPDATE of a session that ended in its handshake
        assert [records[i]["type"] for i in own if i > close] in (["SESSION_END"], ["SESSION_UPDATE", "SESSION_END"])
    assert records[-1]["type"] == "SUMMARY" and [r["type"] for r in records].count("SUMMARY") == 1
    assert {k: v for k, v in records[-1].items() if k != "type"} == facts.lean(report["summary"])
    summary = report["summary"]
    assert summary["sessions"] == len(report["sessions"])
    assert summary["messages"] == sum(s["messages"] for s in report["sessions"]) == len(messages(records))
    assert summary["findings"] == {sev: sum(a["severity"] == sev for a in report["anomalies"])
                                   for sev in ("error", "warning", "info")}
    assert summary["capture_problems"] == len(report["capture_problems"])
    assert summary["inputs"] == report["inputs"]


@pytest.mark.parametrize("capture", SHIPPED, ids=lambda p: p.name)
def test_every_time_has_its_epoch_and_t0_is_the_first_packet(capture: Path) -> None:
    records = lines(analyze(capture, "--format", "jsonl"))
    report = json.loads(analyze(capture, "--format", "json"))
    t0 = report["summary"]["t0"]
    assert t0["iso8601"] == iso8601(t0["epoch"])
    timed = [r for r in records if "time" in r] + report["anomalies"] + report["sessions"]
    assert len(timed) > len(records) // 2
    for r in timed:
        assert r["epoch"] == pytest.approx(t0["epoch"] + r["time"], abs=1.5e-6), r
    for s in report["sessions"]:
        assert s["last_epoch"] == pytest.approx(t0["epoch"] + s["last_time"], abs=1.5e-6)


@pytest.mark.parametrize("capture", SHIPPED, ids=lambda p: p.name)
def test_jsonl_with_verify_data_meets_its_schemas(capture: Path) -> None:
    records = check_jsonl(analyze(capture, "--format", "jsonl", "--verify-data"))
    plain = lines(analyze(capture, "--format", "jsonl"))
    # the same messages, with the payload lines added (and findings that need the data)
    assert [r for r in messages(records) if r["type"] != "PayloadData"] == messages(plain)


@pytest.mark.parametrize("capture", SHIPPED, ids=lambda p: p.name)
def test_proxy_jsonl_meets_its_schemas(capture: Path) -> None:
    """The proxy writes the same lines: the same message types, and session lines with the same endpoints
    and negotiated facts (its frames and times are its own)."""
    records = check_jsonl(proxy_jsonl(capture).decode())
    plain = lines(analyze(capture, "--format", "jsonl"))
    assert Counter(r["type"] for r in records if r["type"] != "ANOMALY") == \
           Counter(r["type"] for r in plain if r["type"] != "ANOMALY")
    for kind, keys in (("SESSION", ("session", "client", "server", "saw_start")),
                       ("SESSION_UPDATE", ("session", *facts.NEGOTIATED)),
                       ("SESSION_END", ("session", "disconnect", "messages"))):
        assert [{k: r.get(k) for k in keys} for r in records if r["type"] == kind] == \
               [{k: r.get(k) for k in keys} for r in plain if r["type"] == kind], kind
    summary = next(r for r in records if r["type"] == "SUMMARY")
    assert summary["inputs"] == ["proxy"]
    assert {k: summary[k] for k in ("sessions", "messages")} == {k: plain[-1][k] for k in ("sessions", "messages")}


def test_rules_json_meets_its_schema() -> None:
    import io
    from contextlib import redirect_stdout

    from nbdscope.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["rules", "--format", "json"]) == 0
    assert errors("rules", json.loads(out.getvalue())) == []
