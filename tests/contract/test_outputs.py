"""Every shipped capture's real outputs against the schemas of docs/schemas/ (analyze
--format json, --format jsonl, --format jsonl --verify-data, and the proxy's --jsonl), plus
what a schema cannot say: flags fields list every defined bit of the right field, names
agree with numbers, and the formats agree with each other."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from nbdscope.spec import COMMANDS, FLAG_FIELDS
from tests.contract.checks import check_jsonl
from tests.contract.outputs import SHIPPED, analyze, lines, proxy_jsonl
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
    assert {r["session"] for r in records} <= {s["id"] for s in report["sessions"]}
    anomalies = [{k: v for k, v in r.items() if k != "type"} for r in records if r["type"] == "ANOMALY"]
    assert sorted(map(json.dumps, anomalies)) == sorted(map(json.dumps, report["anomalies"]))
    messages = Counter(r["session"] for r in records if r["type"] != "ANOMALY")
    assert messages == {s["id"]: s["messages"] for s in report["sessions"] if s["messages"]}


@pytest.mark.parametrize("capture", SHIPPED, ids=lambda p: p.name)
def test_jsonl_with_verify_data_meets_its_schemas(capture: Path) -> None:
    records = check_jsonl(analyze(capture, "--format", "jsonl", "--verify-data"))
    plain = lines(analyze(capture, "--format", "jsonl"))
    # the same messages, with the payload lines added (and findings that need the data)
    assert [r for r in records if r["type"] not in ("PayloadData", "ANOMALY")] == \
           [r for r in plain if r["type"] != "ANOMALY"]


@pytest.mark.parametrize("capture", SHIPPED, ids=lambda p: p.name)
def test_proxy_jsonl_meets_its_schemas(capture: Path) -> None:
    records = check_jsonl(proxy_jsonl(capture).decode())
    plain = lines(analyze(capture, "--format", "jsonl"))
    assert Counter(r["type"] for r in records if r["type"] != "ANOMALY") == \
           Counter(r["type"] for r in plain if r["type"] != "ANOMALY")


def test_rules_json_meets_its_schema() -> None:
    import io
    from contextlib import redirect_stdout

    from nbdscope.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["rules", "--format", "json"]) == 0
    assert errors("rules", json.loads(out.getvalue())) == []
