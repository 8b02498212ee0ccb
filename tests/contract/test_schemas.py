"""The schemas themselves: valid draft 2020-12, every reference resolvable, enumerations
equal to the spec tables and rule catalogue, and a line schema for every message type
the code can emit (names from nbdscope/spec/, events from the decoder)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from nbdscope.analysis.rules import CATALOGUE
from nbdscope.decoder import events as ev
from nbdscope.report.fieldinfo import type_name as event_type
from nbdscope.spec import COMMANDS, ERRORS, INFO_TYPES, OPTION_REPLIES, OPTIONS, REPLY_TYPES, TRANSMISSION_FLAGS
from tests.contract.events import SAMPLES, concrete_event_classes, samples
from tests.contract.schemas import BASE, SCHEMAS, check_line, line_schema, registry, schema_files, validator


@pytest.mark.parametrize("path", schema_files(), ids=lambda p: p.name)
def test_schema_is_valid_2020_12(path: Any) -> None:
    contents = json.loads(path.read_text())
    assert contents["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert contents["$id"] == BASE + path.name
    Draft202012Validator.check_schema(contents)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_resolves() -> None:
    resolver = registry().resolver()
    for path in schema_files():
        contents = json.loads(path.read_text())
        base = registry().resolver(contents["$id"])
        for ref in _refs(contents):
            base.lookup(ref)  # raises when the file or the pointer is missing
    assert resolver.lookup(BASE + "common.schema.json#/$defs/flags").contents["required"] == ["value", "bits"]


def _enum(name: str) -> list[str]:
    defs = json.loads((SCHEMAS / "common.schema.json").read_text())["$defs"]
    node = defs[name]
    return node["enum"] if "enum" in node else node["anyOf"][0]["enum"]


def test_enumerations_are_the_spec_tables_and_the_rule_catalogue() -> None:
    assert _enum("command_name") == [c.name for c in COMMANDS]
    assert _enum("option_name") == [c.name for c in OPTIONS]
    assert _enum("option_reply_name") == [c.name for c in OPTION_REPLIES]
    assert _enum("reply_type_name") == [c.name for c in REPLY_TYPES]
    assert _enum("info_name") == [c.name for c in INFO_TYPES]
    assert _enum("error_name") == [c.name for c in ERRORS]
    assert _enum("transmission_flag_name") == [b.name for b in TRANSMISSION_FLAGS.bits]
    assert _enum("rule_id") == [info.id for info in CATALOGUE]


def test_every_event_class_has_samples() -> None:
    """A new event class must get samples here, and with them a line schema."""
    assert set(concrete_event_classes()) == set(SAMPLES)


def _spec_names(cls: type[ev.Event]) -> list[str]:
    table = {ev.Request: COMMANDS, ev.ReplyChunk: REPLY_TYPES, ev.OptionRequest: OPTIONS,
             ev.OptionReply: OPTION_REPLIES}.get(cls)
    return [c.name for c in table] + [table.name(0x7FFE)] if table is not None else []


EVENT_CLASSES = sorted(concrete_event_classes(), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=[c.__name__ for c in EVENT_CLASSES])
def test_every_message_type_has_a_line_schema_that_takes_it(cls: type[ev.Event]) -> None:
    """Every name a spec table gives (and its unknown-value form), each fixed name: the rendered
    line of a sample event meets the schema the documented rule picks for its type."""
    emitted: set[str] = set()
    for event in samples(cls):
        record = json.loads(_line(event))
        emitted.add(record["type"])
        assert record["type"] == event_type(event)
        assert line_schema(record["type"]) == SAMPLES[cls][0]
        assert check_line(record) == [], record
    assert set(_spec_names(cls)) <= emitted


def _line(event: ev.Event) -> bytes:
    from nbdscope.report.records import message_json

    return message_json("s1", event, 0.0)


def test_unknown_types_and_missing_keys_are_refused() -> None:
    assert line_schema("NBD_SOMETHING") is None
    assert validator("jsonl-line").is_valid({"type": "NBD_SOMETHING"}) is False
    good = json.loads(_line(next(samples(ev.Request))))
    for key in good:
        assert check_line({k: v for k, v in good.items() if k != key}), key
    assert check_line({**good, "extra": 1})
    assert check_line({**good, "dir": "up"})
    assert check_line({**good, "cookie": -1})


def test_session_line_schemas_say_what_the_report_says() -> None:
    """The SESSION lines carry the report's session facts (report/facts.py): each key's schema is the report's,
    without the nulls and empty values a JSONL line leaves out, so that the two cannot drift apart."""
    from nbdscope.report import facts
    from tests.contract.schemas import leaned

    report = json.loads((SCHEMAS / "report.schema.json").read_text())["properties"]["sessions"]["items"]["properties"]
    for name, keys in (("session-line", facts.OPENED), ("session-update-line", facts.NEGOTIATED),
                       ("session-end-line", facts.CLOSED)):
        line = json.loads((SCHEMAS / f"{name}.schema.json").read_text())["properties"]
        assert {k: line[k] for k in keys} == {k: leaned(report[k]) for k in keys}, name
    common = json.loads((SCHEMAS / "common.schema.json").read_text())["$defs"]
    assert set(common["summary"]["properties"]) == set(
        json.loads((SCHEMAS / "report.schema.json").read_text())["properties"]["summary"]["required"])
