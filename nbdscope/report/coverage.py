"""`nbdscope rules --coverage`: how much of the pinned spec the checks decide, per section, part and overall.

Each MUST / MUST NOT / SHOULD / SHOULD NOT row falls in exactly one state: ``checked`` (checks decide
it), ``partial`` (checks decide part of it: ``partial`` says what is left), ``deferred`` (observable,
no check yet, with the reason), ``open`` (observable and neither: the table's own test rejects it),
``not-observable``, or ``unfilled`` (the row's observability is not written yet). MAY rows record
permissions and are counted apart (``may``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nbdscope.spec import requirements as rq

STATES = ("checked", "partial", "deferred", "open", "not-observable", "unfilled", "may")
TOTAL_KEYS = ("rows", "observable", "checked", "partial", "deferred", "open", "not_observable", "unfilled", "may")


def state(row: rq.Requirement) -> str:
    if row.level == "MAY":
        return "may"
    if row.observable == "not":
        return "not-observable"
    if row.observable not in ("wire", "partly"):
        return "unfilled"
    if row.checks:
        return "partial" if row.partial else "checked"
    return "deferred" if row.deferred else "open"


@dataclass
class Totals:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOTAL_KEYS, 0))
    by_level: dict[str, dict[str, int]] = field(
        default_factory=lambda: {lv: dict.fromkeys(TOTAL_KEYS[:-1], 0) for lv in ("MUST", "SHOULD")})

    def add(self, row: rq.Requirement) -> None:
        if row.level == "MAY":
            self.counts["may"] += 1
            return
        for counts in (self.counts, self.by_level["MUST" if row.level.startswith("MUST") else "SHOULD"]):
            counts["rows"] += 1
            s = state(row)
            counts[s.replace("-", "_")] += 1
            if s not in ("not-observable", "unfilled"):
                counts["observable"] += 1

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        out["coverage"] = self.coverage(self.counts)
        out["levels"] = {lv: {**c, "coverage": self.coverage(c)} for lv, c in self.by_level.items()}
        return out

    @staticmethod
    def coverage(c: dict[str, int]) -> float | None:
        """Share of the observable rows that checks decide (fully or in part); None without any."""
        return round((c["checked"] + c["partial"]) / c["observable"], 4) if c["observable"] else None


def _totals(rows: Iterable[rq.Requirement]) -> Totals:
    t = Totals()
    for r in rows:
        t.add(r)
    return t


def row_json(r: rq.Requirement) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id, "part": r.part, "section": r.section, "line": r.line, "spec": r.spec,
                           "level": r.level, "binds": r.binds, "observable": r.observable, "state": state(r),
                           "checks": list(r.checks)}
    for key in ("reason", "deferred", "partial", "text"):
        if getattr(r, key):
            out[key] = getattr(r, key)
    if r.honoured_by:
        out["honoured_by"] = list(r.honoured_by)
    return out


def coverage_json() -> dict[str, Any]:
    """The whole table with its totals (docs/schemas/coverage.schema.json)."""
    rows = list(rq.table().values())
    parts = []
    for part in rq.PARTS:
        mine = [r for r in rows if r.part == part]
        sections = list(dict.fromkeys(r.section for r in mine))
        parts.append({"part": part, "totals": _totals(mine).as_json(),
                      "sections": [{"section": s, "totals": _totals(r for r in mine if r.section == s).as_json()}
                                   for s in sections]})
    return {"totals": _totals(rows).as_json(), "parts": parts, "rows": [row_json(r) for r in rows]}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def render(console: Any) -> None:
    """The text form: a totals table (sections under their part), then one line per row."""
    from rich.table import Table

    data = coverage_json()
    table = Table(title="requirement table coverage (MUST/SHOULD rows; MAY rows apart)", title_justify="left")
    heads = ("part / section", "rows", "observable", "checked", "partial", "deferred", "open", "not obs.",
             "unfilled", "MUST chk/obs", "SHOULD chk/obs", "coverage", "may")
    for h in heads:
        table.add_column(h, justify="left" if h == "part / section" else "right", overflow="fold")

    def cells(label: str, t: dict[str, Any]) -> list[str]:
        lv = t["levels"]
        level = [f"{lv[x]['checked'] + lv[x]['partial']}/{lv[x]['observable']}" for x in ("MUST", "SHOULD")]
        return [label, *(str(t[k]) for k in ("rows", "observable", "checked", "partial", "deferred", "open",
                                            "not_observable", "unfilled")), *level, _pct(t["coverage"]), str(t["may"])]

    for part in data["parts"]:
        table.add_row(*cells(f"[bold]{part['part']}[/bold]", part["totals"]))
        for s in part["sections"]:
            table.add_row(*cells(f"  {s['section']}", s["totals"]))
    table.add_row(*cells("[bold]all[/bold]", data["totals"]), end_section=True)
    console.print(table)
    rows = Table(title=f"{len(data['rows'])} rows", title_justify="left")
    for h in ("id", "section", "line", "binds", "level", "observable", "checks / why not"):
        rows.add_column(h, overflow="fold")
    for r in data["rows"]:
        why = ", ".join(r["checks"]) or r.get("deferred") or r.get("reason") or ""
        if r.get("partial"):
            why += f" (partial: {r['partial']})"
        if r.get("honoured_by"):
            why = "honoured by " + ", ".join(r["honoured_by"])
        rows.add_row(r["id"], r["section"], str(r["line"]), r["binds"] or "-", r["level"], r["observable"] or "-",
                     why)
    console.print(rows)
