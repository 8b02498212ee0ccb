"""The requirement table: one row per normative statement of the NBD spec, and the checks that decide it.

The rows live in the ``*.toml`` files beside this module, one file per part of the spec (so that
the handshake, TLS, replies, commands and extended headers can each be read and edited alone).
``../census.json`` lists every MUST / MUST NOT / SHOULD / SHOULD NOT of doc/proto.md at the pinned
commits; the tests hold the table to it, so no statement is silently dropped.

Fields of a row (all strings unless said):

- ``id``: the census id, ``<section slug>.<n>`` (``ext.`` for the extended-headers branch,
  ``.may.<n>`` for a MAY);
- ``section``: the spec heading the statement sits under; ``line``: its line at the pinned commit;
- ``level``: MUST, MUST NOT, SHOULD, SHOULD NOT or MAY;
- ``binds``: ``client``, ``server``, ``both`` or ``none`` (a definition, or a statement about the
  document itself);
- ``observable``: ``wire`` (a two-direction capture decides it), ``partly`` (only some cases, or
  only with more than the bytes: a key log, the export's contents), or ``not``; ``reason`` says why
  for ``partly`` and ``not``;
- ``text``: what the statement asks, in our own words;
- ``checks``: list of check ids (``rule.check``) that enforce it;
- ``deferred``: for an observable row with no check, why it is not checked yet;
- ``partial``: for a checked row, what part the checks do not decide.

A MAY row has no checks: it records a permission that no check may flag (``honoured_by`` names
the checks written so as not to).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

Level = Literal["MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY"]
Binds = Literal["client", "server", "both", "none"]
Observable = Literal["wire", "partly", "not"]
LEVELS: tuple[str, ...] = ("MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY")
BINDS: tuple[str, ...] = ("client", "server", "both", "none")
OBSERVABLE: tuple[str, ...] = ("wire", "partly", "not")
PARTS: tuple[str, ...] = ("handshake", "tls", "sizes", "replies", "commands", "extheaders")
"""The table's files, in the order `rules --coverage` prints them."""


@dataclass(frozen=True, slots=True)
class Requirement:
    id: str
    section: str
    line: int
    level: str
    binds: str
    observable: str
    text: str
    checks: tuple[str, ...] = ()
    reason: str = ""
    deferred: str = ""
    partial: str = ""
    honoured_by: tuple[str, ...] = ()
    part: str = ""

    @property
    def spec(self) -> str:
        """Which pinned text the line number refers to: ``master`` or ``ext-header``."""
        return "ext-header" if self.id.startswith("ext.") else "master"

    @property
    def severity(self) -> str | None:
        """What breaking it is: an error for MUST-level, a warning for SHOULD-level, nothing for MAY."""
        if self.level.startswith("MUST"):
            return "error"
        if self.level.startswith("SHOULD"):
            return "warning"
        return None

    @property
    def is_observable(self) -> bool:
        return self.observable in ("wire", "partly")


def _row(part: str, raw: dict[str, object]) -> Requirement:
    def text(key: str) -> str:
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise ValueError(f"requirement {raw.get('id')!r}: {key} must be a string")
        return value

    def ids(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"requirement {raw.get('id')!r}: {key} must be a list of strings")
        return tuple(value)

    line = raw.get("line")
    if not isinstance(line, int):
        raise ValueError(f"requirement {raw.get('id')!r}: line must be an integer")
    return Requirement(id=text("id"), section=text("section"), line=line, level=text("level"),
                       binds=text("binds"), observable=text("observable"), text=text("text"),
                       checks=ids("checks"), reason=text("reason"), deferred=text("deferred"),
                       partial=text("partial"), honoured_by=ids("honoured_by"), part=part)


@cache
def table() -> dict[str, Requirement]:
    """Every row, by id, in spec order within each part."""
    rows: dict[str, Requirement] = {}
    base = resources.files(__package__)
    for part in PARTS:
        data = tomllib.loads((base / f"{part}.toml").read_text(encoding="utf-8"))
        for raw in data.get("req", []):
            row = _row(part, raw)
            if row.id in rows:
                raise ValueError(f"requirement {row.id!r} appears twice")
            rows[row.id] = row
    return rows


def requirement(req_id: str) -> Requirement:
    try:
        return table()[req_id]
    except KeyError:
        raise KeyError(f"no requirement {req_id!r} in nbdscope/spec/requirements") from None


def severity_of(req_ids: tuple[str, ...]) -> str | None:
    """The severity a finding breaking all of these statements earns: the strongest level's."""
    ranks = {"error": 2, "warning": 1}
    found = [s for r in req_ids if (s := requirement(r).severity)]
    return max(found, key=ranks.__getitem__) if found else None


def problems() -> list[str]:
    """What is wrong with the table by itself (values out of range, missing reasons); empty when sound."""
    out: list[str] = []
    for r in table().values():
        where = f"{r.part}.toml {r.id}"
        if r.level not in LEVELS:
            out.append(f"{where}: level {r.level!r}")
        if r.binds not in BINDS:
            out.append(f"{where}: binds {r.binds!r}")
        if r.observable not in OBSERVABLE:
            out.append(f"{where}: observable {r.observable!r}")
        if not r.text:
            out.append(f"{where}: no paraphrase (text)")
        if r.observable in ("partly", "not") and not r.reason:
            out.append(f"{where}: observable={r.observable} needs a reason")
        if r.level == "MAY":
            if r.checks:
                out.append(f"{where}: a MAY row has no checks (honoured_by names the checks that respect it)")
        elif r.is_observable and not r.checks and not r.deferred:
            out.append(f"{where}: observable but neither checked nor deferred with a reason")
    return out
