"""Checks of real output lines shared by the contract tests: each line against its schema, plus
what the contract says that a schema cannot (flags listed bit by bit, names agreeing with numbers)."""

from __future__ import annotations

from typing import Any

from nbdscope.spec import ERRORS, FLAG_FIELDS, OPTION_REPLIES, REPLY_TYPES
from tests.contract.outputs import lines
from tests.contract.schemas import check_line, line_schema

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
