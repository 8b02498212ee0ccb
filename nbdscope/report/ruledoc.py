"""What `nbdscope rules` says about the rule catalogue: one record per rule and per check, and the
explanation `nbdscope rules ID[.CHECK]` prints (docs/rules.md is the same text for every rule).

Everything is read from the catalogue (``nbdscope.analysis.rules.ALL_RULES`` and each rule's
``CHECKS``) and the requirement table at call time, so the listing, the explanation, the JSON, the
Lua plugin's tables and the severity a finding is reported at cannot drift apart."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nbdscope.analysis import rules as catalogue
from nbdscope.analysis.anomaly import INTERNAL_ERROR, Check, RuleInfo
from nbdscope.spec import requirements as rq

PINNED = {"master": "89ba7b5", "ext-header": "e6f3b94"}
"""The commits of doc/proto.md the requirement rows' line numbers refer to (see census.json)."""


@dataclass(frozen=True, slots=True)
class CheckEntry:
    """A check as the views present it: its full id and the severity and blame it is reported with."""

    id: str  # "<rule>.<check>"
    rule: str
    check: Check
    severity: str
    blame: str


@dataclass(frozen=True, slots=True)
class RuleEntry:
    info: RuleInfo
    checks: tuple[CheckEntry, ...]


def rule_entries() -> list[RuleEntry]:
    """Every rule (and internal-error) in catalogue order, each with its declared checks."""
    out: list[RuleEntry] = []
    for cls in catalogue.ALL_RULES:
        info = cls.INFO
        checks = tuple(CheckEntry(f"{info.id}.{c.name}", info.id, c, cls.check_severity(c), c.blame or info.blame)
                       for c in cls.CHECKS)
        out.append(RuleEntry(info, checks))
    out.append(RuleEntry(INTERNAL_ERROR, ()))
    return out


def check_entries() -> dict[str, CheckEntry]:
    """Every declared check by its full id."""
    return {c.id: c for r in rule_entries() for c in r.checks}


def known_ids() -> set[str]:
    """What a selector (--ignore, --select) or `rules ID` may name: rule ids and full check ids."""
    ids: set[str] = set()
    for r in rule_entries():
        ids.add(r.info.id)
        ids.update(c.id for c in r.checks)
    return ids


def lookup(ident: str) -> tuple[RuleEntry, CheckEntry | None]:
    """The rule (and check) an id names; KeyError with a one-line reason when there is none."""
    rule_id, dot, check_name = ident.partition(".")
    for r in rule_entries():
        if r.info.id != rule_id:
            continue
        if not dot:
            return r, None
        for c in r.checks:
            if c.id == ident:
                return r, c
        names = ", ".join(c.id for c in r.checks) or "none"
        raise KeyError(f"rule {rule_id} has no check {check_name!r} (its checks: {names})")
    raise KeyError(f"no rule {rule_id!r} (`nbdscope rules` lists them)")


def _requirement(req_id: str) -> rq.Requirement | None:
    try:
        return rq.requirement(req_id)
    except KeyError:
        return None


# ---------------------------------------------------------------- the listing (`rules --format json`)

def check_json(c: CheckEntry) -> dict[str, Any]:
    return {"id": c.id, "severity": c.severity, "blame": c.blame, "summary": c.check.summary,
            "requirements": list(c.check.requires)}


def listing_json() -> list[dict[str, Any]]:
    """`nbdscope rules --format json`: one object per rule, its checks inside (rules.schema.json)."""
    return [{"id": r.info.id, "severity": r.info.severity, "blame": r.info.blame, "spec": r.info.spec,
             "summary": r.info.summary, "checks": [check_json(c) for c in r.checks]} for r in rule_entries()]


def explain_json(ident: str) -> dict[str, Any]:
    """`nbdscope rules ID --format json`: the rule (or the one check) with everything explain prints."""
    rule, only = lookup(ident)
    checks = [only] if only is not None else list(rule.checks)

    def full(c: CheckEntry) -> dict[str, Any]:
        rows = []
        for req_id in c.check.requires:
            row = _requirement(req_id)
            rows.append({"id": req_id} if row is None else
                        {"id": row.id, "section": row.section, "line": row.line, "spec": row.spec,
                         "level": row.level, "binds": row.binds, "text": row.text})
        return {**check_json(c), "requirements": rows, "consequence": c.check.consequence, "fix": c.check.fix,
                "example": c.check.example}

    return {"id": rule.info.id, "severity": rule.info.severity, "blame": rule.info.blame, "spec": rule.info.spec,
            "summary": rule.info.summary, "checks": [full(c) for c in checks]}


# ---------------------------------------------------------------- the explanation (`rules ID`, docs/rules.md)

def _requirement_line(req_id: str) -> str:
    row = _requirement(req_id)
    if row is None:
        return f"- `{req_id}`: not in the requirement table"
    where = f"\"{row.section}\", line {row.line} of proto.md at {PINNED[row.spec]}"
    binds = f", binds {row.binds}" if row.binds else ""
    text = row.text or "(paraphrase not written yet)"
    return f"- `{row.id}` ({row.level}{binds}; {where}): {text}"


def _check_text(c: CheckEntry) -> list[str]:
    k = c.check
    basis = "its own (a hazard that breaks no statement)" if k.severity is not None or not k.requires \
        else "from the spec's word"
    out = [f"### {c.id}", ""]
    if k.summary:
        out += [k.summary, ""]
    out += [f"Severity: {c.severity} ({basis}) · Blame: {c.blame}", ""]
    if k.requires:
        out += ["Requirements:", "", *(_requirement_line(r) for r in k.requires), ""]
    else:
        out += ["Requirements: none (a hazard, not a broken statement)", ""]
    out += [f"What it means: {k.consequence or '(not written yet)'}", "",
            f"What to do: {k.fix or '(not written yet)'}", ""]
    out += [f"Example: `{k.example}`" if k.example else "Example: (not written yet)", ""]
    return out


def explain(ident: str) -> str:
    """What `nbdscope rules ID` (or ``ID.CHECK``) prints: markdown that reads as plain text."""
    rule, only = lookup(ident)
    i = rule.info
    out = [f"## {i.id}", "", i.summary, "",
           f"Rule severity: {i.severity} (each check states its own) · Blame: {i.blame} · Spec: {i.spec}", ""]
    if only is not None:
        return "\n".join(out + _check_text(only)).rstrip("\n") + "\n"
    if not rule.checks:
        out += ["This rule declares no checks: its findings carry the rule id and the rule's severity.", ""]
    for c in rule.checks:
        out += _check_text(c)
    return "\n".join(out).rstrip("\n") + "\n"


DOC_PREFACE = """# Rules and checks

<!-- generated by scripts/gen_rules_doc.py from the rule catalogue and nbdscope/spec/requirements: edit those -->

Every finding names a rule (`rule`), the check within it that fired (`check`, `rule.check`) and the
requirement rows of the pinned spec it says were broken (`requirements`). `nbdscope rules ID` and
`nbdscope rules ID.CHECK` print the sections below; `nbdscope rules --coverage` shows the requirement
table. A check's severity follows the spec's word: a broken MUST or MUST NOT is an error, a broken SHOULD
or SHOULD NOT a warning; a hazard that breaks no statement states its own. Silence a rule or a check with
`--ignore` or in `nbdscope.toml` (see the README).
"""


def document() -> str:
    """docs/rules.md: the preface, then `rules ID` for every rule in catalogue order."""
    parts = [DOC_PREFACE]
    parts += [explain(r.info.id) for r in rule_entries()]
    return "\n".join(parts)


def dumps(obj: object) -> str:
    return json.dumps(obj, indent=2) + "\n"
