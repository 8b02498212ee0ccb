"""The JSON Schemas of docs/schemas/, loaded for jsonschema, and the documented rule
(docs/CONTRACT.md, "Recognising a line") that says which schema a JSONL line must meet."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tests.oracles import ROOT

SCHEMAS = ROOT / "docs" / "schemas"
BASE = "https://nbdscope.invalid/schemas/"

# the rule of docs/CONTRACT.md in Python: first match wins (exact names before prefixes)
_EXACT = {
    "ANOMALY": "anomaly-line", "INPUT": "input-line", "SESSION": "session-line", "SESSION_UPDATE": "session-update-line",
    "SESSION_END": "session-end-line", "SUMMARY": "summary-line", "NBD_SIMPLE_REPLY": "simple-reply", "NEWSTYLE_GREETING": "greeting",
    "OLDSTYLE_GREETING": "greeting", "CLIENT_FLAGS": "client-flags", "EXPORT_NAME_REPLY": "export-name-reply",
    "TRANSMISSION_START": "transmission-start", "TLS_START": "tls-start", "TLS_DATA": "tls-data",
    "PayloadData": "payload-data", "CAPTURE_GAP": "capture-gap", "RESYNC": "resync", "MALFORMED": "malformed",
    "CONNECTION_END": "connection-end",
}
_PREFIXES = (("NBD_CMD_", "request"), ("NBD_REPLY_TYPE_", "reply-chunk"), ("NBD_OPT_", "option-request"),
             ("NBD_REP_", "option-reply"))


def schema_files() -> list[Path]:
    return sorted(SCHEMAS.glob("*.schema.json"))


@cache
def registry() -> Registry[Any]:
    resources = []
    for path in schema_files():
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    """The validator for docs/schemas/NAME.schema.json, its references resolved among its neighbours."""
    contents = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return Draft202012Validator(contents, registry=registry())


def line_schema(type_: str) -> str | None:
    """Which line schema a JSONL line with this "type" must meet; None: no line has this type."""
    if type_ in _EXACT:
        return _EXACT[type_]
    return next((schema for prefix, schema in _PREFIXES if type_.startswith(prefix)), None)


def errors(name: str, instance: object) -> list[str]:
    """Every way the instance breaks the schema, one readable line each."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in validator(name).iter_errors(instance)]


def check_line(record: dict[str, Any]) -> list[str]:
    """A JSONL line against the schema its type picks, and against the dispatcher."""
    name = line_schema(record.get("type", ""))
    if name is None:
        return [f"no line schema for type {record.get('type')!r}"]
    return errors(name, record) + errors("jsonl-line", record)


def _nullable(node: dict[str, Any]) -> bool:
    kinds = node.get("type")
    return (isinstance(kinds, list) and "null" in kinds) or any(m == {"type": "null"} for m in node.get("anyOf", ()))


def _may_be_empty(node: dict[str, Any]) -> bool:
    return (node.get("type") == "object" and not node.get("minProperties")) or \
        (node.get("type") == "array" and not node.get("minItems"))


def leaned(node: Any) -> Any:
    """A schema of the JSON report, as the same value is written on a JSONL line (report/facts.py ``lean``):
    never null, and a key whose value may be null or empty is optional."""
    if isinstance(node, list):
        return [leaned(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: leaned(v) for k, v in node.items()}
    if isinstance(out.get("type"), list) and "null" in out["type"]:
        kinds = [k for k in out["type"] if k != "null"]
        out["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "anyOf" in out and {"type": "null"} in out["anyOf"]:
        rest = [m for m in out.pop("anyOf") if m != {"type": "null"}]
        out = {**out, **rest[0]} if len(rest) == 1 else {**out, "anyOf": rest}
    if "required" in node and "properties" in node:
        props = node["properties"]
        out["required"] = [k for k in node["required"] if not (_nullable(props[k]) or _may_be_empty(props[k]))]
    return out
