"""One severity per check everywhere: `nbdscope rules`, the finding analyze reports (text report,
console line, JSON/JSONL), the TUI's detail pane and the Wireshark plugin's generated tables all
give every declared check of the catalogue the severity Rule.check_severity decides. Run over the
real catalogue and over a made-up rule holding one check of each kind, so the comparison is
exercised whatever the catalogue declares today."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout

import pytest
from rich.console import Console

from nbdscope.analysis import rules as catalogue
from nbdscope.analysis.engine import Result
from nbdscope.analysis.rules.base import Rule
from nbdscope.cli import main
from nbdscope.report import lua_tables
from nbdscope.report.records import anomaly_json
from nbdscope.report.text import render
from nbdscope.report.timeline import anomaly_line
from nbdscope.tui.detail import Palette, finding_renderable
from tests import fakerules

PAL = Palette(error="red", warning="yellow", accent="blue", muted="dim")


def _declared() -> list[tuple[type[Rule], str]]:
    return [(cls, c.name) for cls in catalogue.ALL_RULES for c in cls.CHECKS]


def _listed() -> dict[str, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["rules", "--format", "json"]) == 0
    return {c["id"]: c["severity"] for r in json.loads(out.getvalue()) for c in r["checks"]}


def _lua_checks() -> dict[str, tuple[str, str]]:
    found = re.findall(r'^  \["([^"]+)"\] = \{ rule = "[^"]+", severity = "([a-z]+)", blame = "([a-z]+)"',
                       lua_tables.generate(), re.M)
    return {i: (sev, blame) for i, sev, blame in found}


def _text(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=300, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _compare_everywhere() -> int:
    listed, lua = _listed(), _lua_checks()
    declared = _declared()
    assert set(listed) == set(lua) == {f"{cls.INFO.id}.{name}" for cls, name in declared}
    for cls, name in declared:
        ident = f"{cls.INFO.id}.{name}"
        severity = cls.check_severity(cls.check(name))
        a = fakerules.finding(cls, name)
        assert (a.severity, a.check, a.requirements) == (severity, ident, cls.check(name).requires), ident
        assert listed[ident] == severity, f"rules lists {ident} as {listed[ident]}, analyze reports {severity}"
        assert lua[ident][0] == severity, f"the plugin files {ident} under {lua[ident][0]}, analyze under {severity}"
        blame = cls.check(name).blame or cls.INFO.blame
        assert lua[ident][1] == blame
        record = json.loads(anomaly_json(a))
        assert (record["severity"], record["check"]) == (severity, ident)
        assert record.get("requirements", []) == list(a.requirements)
        assert anomaly_line(a).startswith(f"ANOMALY {severity} {ident} ")
        assert _text(finding_renderable(a, PAL)).startswith(f"{severity.upper()} {ident}")
        report = io.StringIO()
        render(Result([fakerules.session()], [a]), ["x.pcap"], Console(file=report, width=400, color_system=None))
        assert re.search(rf"^frame \d+  {severity}  {re.escape(ident)}  blame ", report.getvalue(), re.M), \
            report.getvalue()
    return len(declared)


def test_every_check_of_the_catalogue_has_one_severity_everywhere() -> None:
    _compare_everywhere()


def test_the_comparison_covers_one_check_of_each_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    fakerules.install(monkeypatch)
    assert _compare_everywhere() >= 3
    assert {i: s for i, s in _listed().items() if i.startswith(fakerules.RULE)} == fakerules.EXPECTED


def test_a_severity_mismatch_in_the_plugin_tables_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    fakerules.install(monkeypatch)
    real = lua_tables.generate
    monkeypatch.setattr(lua_tables, "generate", lambda: real().replace(
        f'["{fakerules.RULE}.should-broken"] = {{ rule = "{fakerules.RULE}", severity = "warning"',
        f'["{fakerules.RULE}.should-broken"] = {{ rule = "{fakerules.RULE}", severity = "error"'))
    with pytest.raises(AssertionError, match="the plugin files"):
        _compare_everywhere()


# ---------------------------------------------------------------- the plugin's hand-written findings

HAND_WRITTEN = lua_tables.DEFAULT_PLUGIN.read_text(encoding="utf-8").split(lua_tables.END, 1)[1]
NOTES = re.findall(r'note\(rec, "([a-z0-9.-]+)"(.*?)\)\s*$', HAND_WRITTEN, re.M | re.S)


def test_the_plugin_notes_only_ids_of_the_catalogue() -> None:
    assert len(NOTES) > 20
    rules = {cls.INFO.id: cls for cls in catalogue.ALL_RULES}
    checks = {f"{cls.INFO.id}.{c.name}" for cls in catalogue.ALL_RULES for c in cls.CHECKS}
    for ident, _ in NOTES:
        assert ident in rules or ident in checks, f"dissectors/nbdscope.lua notes {ident!r}, no rule or check"


def test_the_plugin_names_a_check_wherever_the_rule_declares_checks() -> None:
    """A rule with checks has no single severity: a note naming only the rule would be filed under
    the rule's, whatever analyze reports. Each such note must name the check analyze reports."""
    with_checks = {cls.INFO.id for cls in catalogue.ALL_RULES if cls.CHECKS}
    stale = sorted({ident for ident, _ in NOTES if ident in with_checks})
    assert not stale, f"dissectors/nbdscope.lua names only the rule for {stale}: name the check (rule.check)"


def test_every_check_id_the_plugin_spells_is_a_check_of_the_catalogue() -> None:
    """Notes may take their id from a table ("reserved-bits-set.command-flags" by flags field): every
    quoted "rule.check" of the hand-written code must be a declared check, so a renamed check cannot
    leave the plugin raising an expert nobody registered."""
    rules = {cls.INFO.id for cls in catalogue.ALL_RULES}
    checks = {f"{cls.INFO.id}.{c.name}" for cls in catalogue.ALL_RULES for c in cls.CHECKS}
    spelled = {m for m in re.findall(r'"([a-z0-9-]+\.[a-z0-9-]+)"', HAND_WRITTEN) if m.split(".", 1)[0] in rules}
    assert len(spelled) > 40
    assert not spelled - checks, f"dissectors/nbdscope.lua names checks that do not exist: {sorted(spelled - checks)}"
