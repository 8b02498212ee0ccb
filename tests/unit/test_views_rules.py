"""`nbdscope rules`: the listing with each check's severity, `rules ID[.CHECK]` explaining like
`ruff rule`, docs/rules.md kept current, and `rules --coverage` over the requirement table."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from nbdscope.cli import main
from nbdscope.report import coverage, ruledoc
from nbdscope.spec import requirements as rq
from tests import fakerules
from tests.contract.schemas import validator
from tests.oracles import ROOT


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbdscope", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_listing_gives_each_check_the_severity_its_findings_carry(monkeypatch: pytest.MonkeyPatch) -> None:
    fakerules.install(monkeypatch)
    code, out = run("rules", "--format", "json")
    assert code == 0
    fake = next(r for r in json.loads(out) if r["id"] == fakerules.RULE)
    assert {c["id"]: c["severity"] for c in fake["checks"]} == fakerules.EXPECTED
    hazard = next(c for c in fake["checks"] if c["id"].endswith(".hazard"))
    assert hazard["blame"] == "client" and hazard["requirements"] == []
    code, text = run("rules")
    assert code == 0 and f"{fakerules.RULE}.should-broken" in text


def test_real_listing_meets_its_schema() -> None:
    code, out = run("rules", "--format", "json")
    assert code == 0
    assert list(validator("rules").iter_errors(json.loads(out))) == []


def test_explain_a_check_prints_rows_consequence_fix_example_severity_and_blame(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fakerules.install(monkeypatch)
    code, text = run("rules", f"{fakerules.RULE}.must-broken")
    assert code == 0
    for expected in (f"### {fakerules.RULE}.must-broken", "Severity: error", "Blame: either",
                     f"`{fakerules.MUST_ROW}` (MUST", '"Transmission", line 292 of proto.md at 89ba7b5',
                     "What it means: consequence of the MUST", "What to do: fix the MUST side",
                     "Example: `example finding of the MUST`"):
        assert expected in text, expected
    assert "should-broken" not in text  # only the check asked for


def test_explain_a_rule_prints_every_check_and_the_paraphrase_of_each_row(monkeypatch: pytest.MonkeyPatch) -> None:
    fakerules.install(monkeypatch)
    rows = dict(rq.table())
    rows[fakerules.SHOULD_ROW] = rq.Requirement(
        fakerules.SHOULD_ROW, "Transmission", 304, "SHOULD", "server", "wire", "our own words for the row")
    monkeypatch.setattr(rq, "table", lambda: rows)
    text = ruledoc.explain(fakerules.RULE)
    assert text.count("### ") == 3
    assert "SHOULD, binds server" in text and "our own words for the row" in text
    assert "Severity: info (its own" in text and "Requirements: none" in text  # the hazard
    assert "Severity: warning (from the spec's word)" in text
    data = ruledoc.explain_json(f"{fakerules.RULE}.should-broken")
    assert data["checks"][0]["requirements"][0]["text"] == "our own words for the row"


@pytest.mark.parametrize("ident", ["bad-reply-chunk", "internal-error", "hard-disconnect"])
def test_explain_json_of_real_rules_meets_its_schema(ident: str) -> None:
    code, out = run("rules", ident, "--format", "json")
    assert code == 0
    assert list(validator("rule-explain").iter_errors(json.loads(out))) == []


@pytest.mark.parametrize("ident", ["no-such-rule", "bad-reply-chunk.no-such-check", "bad-reply-chunk.", "."])
def test_unknown_ids_are_a_one_line_error(ident: str) -> None:
    done = cli("rules", ident)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("nbdscope: error: "), done.stderr


def test_docs_rules_md_is_current() -> None:
    on_disk = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert on_disk == ruledoc.document(), "docs/rules.md is stale: run scripts/gen_rules_doc.py"
    for entry in ruledoc.rule_entries():  # every rule and check has its section, in `rules ID` words
        assert ruledoc.explain(entry.info.id) in on_disk


def test_docs_go_stale_when_a_check_is_added(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_rules_doc", ROOT / "scripts" / "gen_rules_doc.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    doc = tmp_path / "rules.md"
    monkeypatch.setattr(gen, "DOC", doc)
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
    fakerules.install(monkeypatch)
    monkeypatch.setattr(gen, "document", ruledoc.document)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0 and "### views-fake-rule.hazard" in doc.read_text()


def _fake_table() -> dict[str, rq.Requirement]:
    def row(i: str, section: str, level: str, observable: str, **kw: object) -> rq.Requirement:
        return rq.Requirement(i, section, 1, level, "server", observable, "t", part=kw.pop("part", "replies"),
                              **kw)  # type: ignore[arg-type]
    rows = [row("a.1", "A", "MUST", "wire", checks=("x.y",)), row("a.2", "A", "MUST NOT", "wire", checks=("x.y",),
                                                                     partial="some"),
            row("a.3", "A", "SHOULD", "partly", deferred="later", reason="r"), row("a.4", "A", "SHOULD", "not",
                                                                                   reason="r"),
            row("b.1", "B", "MUST", "", part="tls"), row("b.2", "B", "SHOULD", "wire"),
            row("b.may.1", "B", "MAY", "wire", honoured_by=("x.y",), part="tls")]
    return {r.id: r for r in rows}


def test_coverage_counts_each_state_per_section_part_level_and_overall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rq, "table", _fake_table)
    data = coverage.coverage_json()
    t = data["totals"]
    assert {k: t[k] for k in ("rows", "observable", "checked", "partial", "deferred", "open", "not_observable",
                              "unfilled", "may")} == {"rows": 6, "observable": 4, "checked": 1, "partial": 1,
                                                      "deferred": 1, "open": 1, "not_observable": 1,
                                                      "unfilled": 1, "may": 1}
    assert t["coverage"] == 0.5
    assert t["levels"]["MUST"]["rows"] == 3 and t["levels"]["MUST"]["observable"] == 2
    assert t["levels"]["MUST"]["coverage"] == 1.0 and t["levels"]["SHOULD"]["coverage"] == 0.0
    parts = {p["part"]: p for p in data["parts"]}
    assert parts["replies"]["totals"]["rows"] == 5 and parts["tls"]["totals"]["may"] == 1
    assert [s["section"] for s in parts["tls"]["sections"]] == ["B"]
    assert parts["handshake"]["totals"]["coverage"] is None
    states = {r["id"]: r["state"] for r in data["rows"]}
    assert states == {"a.1": "checked", "a.2": "partial", "a.3": "deferred", "a.4": "not-observable",
                      "b.1": "unfilled", "b.2": "open", "b.may.1": "may"}
    assert list(validator("coverage").iter_errors(data)) == []
    code, text = run("rules", "--coverage")
    assert code == 0 and "a.3" in text and "later" in text and "honoured by x.y" in text


def test_real_coverage_meets_its_schema_and_adds_up() -> None:
    code, out = run("rules", "--coverage", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert list(validator("coverage").iter_errors(data)) == []
    table = rq.table()
    assert data["totals"]["rows"] == sum(r.level != "MAY" for r in table.values())
    assert len(data["rows"]) == len(table)
    for key in ("rows", "checked", "deferred", "may"):
        assert sum(p["totals"][key] for p in data["parts"]) == data["totals"][key]
        for p in data["parts"]:
            assert sum(s["totals"][key] for s in p["sections"]) == p["totals"][key]
    t = data["totals"]
    assert t["rows"] == sum(t[k] for k in ("checked", "partial", "deferred", "open", "not_observable", "unfilled"))


def test_coverage_takes_no_id() -> None:
    done = cli("rules", "--coverage", "bad-reply-chunk")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
