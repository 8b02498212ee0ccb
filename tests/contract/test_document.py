"""docs/CONTRACT.md against the program: every option --help shows is documented under its
command and every documented option exists, the rule ids are the catalogue's, and the
table that recognises JSONL lines is the one the tests and the dispatcher schema use."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from nbdscope.analysis.rules import CATALOGUE
from tests.contract.schemas import _EXACT, _PREFIXES, SCHEMAS
from tests.oracles import ROOT

DOC = (ROOT / "docs" / "CONTRACT.md").read_text()
COMMANDS = ("analyze", "proxy", "tui", "live", "rules")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b")


def _section(command: str) -> str:
    start = DOC.index(f"\n### {command}\n")
    return DOC[start:DOC.index("\n### ", start + 1)]


def _help_options(command: str) -> set[str]:
    text = subprocess.run([sys.executable, "-m", "nbdscope", command, "--help"], capture_output=True, text=True,
                          check=True, cwd=ROOT, timeout=60).stdout
    return set(OPTION.findall(text)) - {"-h", "--help"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_documented_under_its_command_and_exists(command: str) -> None:
    shown, documented = _help_options(command), set(OPTION.findall(_section(command)))
    assert shown - documented == set(), "options --help shows that docs/CONTRACT.md does not"
    assert documented - shown == set(), "options docs/CONTRACT.md names that --help does not show"


def test_rule_ids_are_the_catalogue() -> None:
    text = DOC[DOC.index("\n## Rule ids\n"):]
    listed = re.findall(r"`([a-z]+(?:-[a-z]+)+)`", text)
    assert listed == [info.id for info in CATALOGUE]


def test_the_line_table_is_the_one_the_tests_and_the_dispatcher_use() -> None:
    text = DOC[DOC.index("\n### Recognising a line\n"):DOC.index("\n### Keys of every message line\n")]
    rows = re.findall(r"^\| (.+?) \| .+? \| `([a-z-]+)\.schema\.json` \|$", text, re.M)
    exact: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for test, schema in rows:
        for name in re.findall(r"`([A-Za-z_]+)`", test):
            (prefixes if test.startswith("starts with") else exact)[name] = schema
    assert exact == _EXACT and prefixes == dict(_PREFIXES)
    dispatcher = json.loads((SCHEMAS / "jsonl-line.schema.json").read_text())
    routed: dict[str, str] = {}
    for rule in dispatcher["allOf"]:
        test, target = rule["if"]["properties"]["type"], rule["then"]["$ref"].removesuffix(".schema.json")
        for name in test.get("enum", [test.get("const")]) if "pattern" not in test else [test["pattern"][1:]]:
            routed[name] = target
    assert routed == {**_EXACT, **dict(_PREFIXES)}
