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

from nbdscope.spec import COMMANDS, ERRORS, FLAG_FIELDS, OPTION_REPLIES, REPLY_TYPES
from tests.contract.outputs import SHIPPED, analyze, lines, proxy_jsonl
from tests.contract.schemas import check_line, errors

# which flag field each flags-valued key holds, per line schema ("flags" depends on the message)
FLAG_KEYS = {"handshake_flags": "handshake_flags", "transmission_flags": "transmission_flags"}
FLAGS_KEY_FIELD = {"request": "command_flags", "reply-chunk": "reply_flags", "client-flags": "client_flags"}


def _check_flags(value: dict[str, Any], field_name: str) -> list[str]:
    field = FLAG_FIELDS[field_name]
    defined = [{"bit": b.number, "name": b.name, "set": bool(value["value"] & b.mask)} for b in field.bits]
    reserved = [{"bit": n, "name": None, "set": True, "reserved": True}
                for n in range(field.width) if field.reserved(value["value"]) >> n & 1]
    return [] if value["bits"] == defined + reserved else [f"{field_name}: bits do not list the field bit by bit"]


def semantic_problems(record: dict[str, Any]) -> list[str]:
    """What the contract says that a schema cannot check."""
    from tests.contract.schemas import line_schema

    kind, out = line_schema(record["type"]), []
    for key, field_name in FLAG_KEYS.items():
        if key in record:
            out += _check_flags(record[key], field_name)
    if "flags" in record and kind in FLAGS_KEY_FIELD:
        out += _check_flags(record["flags"], FLAGS_KEY_FIELD[kind])
    if kind == "request" and record["command"] != record["type"]:
        out.append("a request's command and type differ")
    if kind == "reply-chunk" and REPLY_TYPES.name(record["reply_type"]) != record["type"]:
        out.append("reply_type and type differ")
    if kind == "option-reply" and OPTION_REPLIES.name(record["reply"]) != record["type"]:
        out.append("reply and type differ")
    if "error_name" in record and ERRORS.name(record["error"]) != record["error_name"]:
        out.append("error and error_name differ")
    return out


def check_jsonl(text: str) -> list[dict[str, Any]]:
    records = lines(text)
    problems = [(i + 1, p) for i, r in enumerate(records) for p in check_line(r) + semantic_problems(r)]
    assert not problems, problems[:10]
    return records


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
