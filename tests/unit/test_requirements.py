"""The requirement table against the pinned spec's census, and the checks against the table.

The census (nbdscope/spec/census.json, made by scripts/spec_census.py from doc/proto.md at the
pinned commits) lists every normative keyword; the table must hold exactly one row for each
MUST / MUST NOT / SHOULD / SHOULD NOT, at the same line and section, so nothing is dropped. Every
check a rule declares must name rows that exist, every row's check must exist, and every check
must have a firing test (a ``fired(..., "rule.check")`` call somewhere in tests/)."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from nbdscope.analysis.rules import ALL_RULES
from nbdscope.spec import requirements as rq

TESTS = Path(__file__).resolve().parent.parent
# Parts whose rows are still being written; each is removed when its rows are filled in.
NOT_YET_WRITTEN: set[str] = set()


def _census() -> dict:
    return json.loads((resources.files("nbdscope.spec") / "census.json").read_text())


def _declared() -> dict[str, tuple[str, ...]]:
    return {f"{cls.INFO.id}.{c.name}": c.requires for cls in ALL_RULES for c in cls.CHECKS}


def test_table_has_one_row_per_normative_keyword_of_the_pinned_spec() -> None:
    census = _census()
    must_should = {k["id"]: k for part in ("master", "ext-header") for k in census[part]["keywords"]
                   if k["keyword"] != "MAY"}
    mays = {k["id"]: k for part in ("master", "ext-header") for k in census[part]["keywords"] if k["keyword"] == "MAY"}
    table = rq.table()
    rows = {i: r for i, r in table.items() if r.level != "MAY"}
    assert sorted(set(must_should) - set(rows)) == [], "statements of the spec missing from the table"
    assert sorted(set(rows) - set(must_should)) == [], "rows that are not statements of the pinned spec"
    for i, row in rows.items():
        k = must_should[i]
        assert (row.line, row.level, row.section) == (k["line"], k["keyword"], k["section"]), i
    for i, row in table.items():
        if row.level == "MAY":
            assert i in mays and mays[i]["line"] == row.line and mays[i]["section"] == row.section, i
    per_section = Counter(k["section"] for k in must_should.values())
    assert per_section == Counter(r.section for r in rows.values())


@pytest.mark.parametrize("part", rq.PARTS)
def test_every_row_is_written(part: str) -> None:
    problems = [p for p in rq.problems() if p.startswith(f"{part}.toml ")]
    if part in NOT_YET_WRITTEN:
        pytest.skip(f"{part}: rows not written yet ({len(problems)} open)")
    assert problems == []


def test_checks_and_rows_name_each_other() -> None:
    declared = _declared()
    table = rq.table()
    for check_id, requires in declared.items():
        for req in requires:
            assert req in table, f"{check_id} cites unknown requirement {req}"
            assert check_id in table[req].checks, f"{check_id} enforces {req}, whose row does not name it"
    for row in table.values():
        for check_id in (*row.checks, *row.honoured_by):
            assert check_id in declared, f"row {row.id} names check {check_id}, which no rule declares"


def test_a_check_without_requirements_states_its_own_severity() -> None:
    for cls in ALL_RULES:
        for c in cls.CHECKS:
            assert c.requires or c.severity, f"{cls.INFO.id}.{c.name}: a hazard must state its severity"
            assert not (c.requires and c.severity), f"{cls.INFO.id}.{c.name}: severity comes from the spec's word"


def test_every_check_has_a_firing_test() -> None:
    sources = "\n".join(p.read_text() for p in TESTS.rglob("*.py"))
    named = set(re.findall(r"""fired\([^"']*["']([a-z0-9-]+\.[a-z0-9-]+)["']""", sources))
    missing = sorted(set(_declared()) - named)
    assert missing == [], "checks no test shows firing"


def test_severity_follows_the_strongest_word() -> None:
    table = rq.table()
    must = next(i for i, r in table.items() if r.level == "MUST")
    should = next(i for i, r in table.items() if r.level == "SHOULD NOT")
    assert rq.severity_of((should,)) == "warning"
    assert rq.severity_of((should, must)) == "error"
    assert rq.severity_of(()) is None
