"""One JSON-ready record per decoded message: the JSONL timeline of CONTRACT.md.

The proxy builds one of these per message while it relays, so the per-class work
(which fields exist, how each is rendered) is planned once and the per-message work
is a single attribute fetch and a short loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from functools import cache
from typing import Any

import orjson

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.decoder import events as ev
from nbdscope.report.names import event_type
from nbdscope.spec import (
    CLIENT_FLAGS,
    COMMAND_FLAGS,
    COMMANDS,
    ERRORS,
    HANDSHAKE_FLAGS,
    INFO_TYPES,
    OPTION_REPLIES,
    OPTIONS,
    REPLY_FLAGS,
    REPLY_TYPES,
    TRANSMISSION_FLAGS,
)
from nbdscope.spec.metacontexts import describe_status

# data: payload bytes never go into the timeline; header: the wire header kept for the TUI's hex pane;
# seq, start, end, data_start: the decoder's positions, not part of the record (the report layer numbers its own)
_BASE = {"dir", "frame", "time", "phase", "data", "header", "seq", "start", "end", "data_start"}

def _serialised(describe: Callable[[int], dict[str, object]]) -> Callable[[int], orjson.Fragment]:
    """A flags description already in JSON: a field takes few values, and serialising the
    same bit list again for every message was a fifth of the cost of a line."""
    done: dict[int, orjson.Fragment] = {}

    def render(value: int) -> orjson.Fragment:
        fragment = done.get(value)
        if fragment is None:
            fragment = orjson.Fragment(orjson.dumps(describe(value)))
            if len(done) < 4096:
                done[value] = fragment
        return fragment
    return render


_HELPERS = {"event_type": event_type, "describe_status": describe_status, "command_name": COMMANDS.name,
            "info_name": INFO_TYPES.name}


def _rendering(cls: type, name: str, env: dict[str, Any], as_json: bool) -> str | None:
    """The statement that renders one field of one event class into ``rec`` (the value is in
    ``v``), with any helper it calls put into ``env``; None: the value goes in as it is."""
    table = {"transmission_flags": TRANSMISSION_FLAGS, "handshake_flags": HANDSHAKE_FLAGS}.get(name)
    if name == "flags":
        table = {ev.Request: COMMAND_FLAGS, ev.ReplyChunk: REPLY_FLAGS, ev.ClientFlags: CLIENT_FLAGS}.get(cls)
    if table is not None:
        env[f"describe_{name}"] = _serialised(table.describe) if as_json else table.describe
        return f"rec[{name!r}] = describe_{name}(v)"
    named = {"command": COMMANDS, "option": OPTIONS, "info_type": INFO_TYPES}.get(name)
    if named is not None:
        env[f"name_{name}"] = named.name
        return f"rec[{name!r}] = name_{name}(v)"
    if name == "error" and issubclass(cls, ev.SimpleReply | ev.ReplyChunk):
        env["error_name"] = ERRORS.name
        return "rec['error'] = v; rec['error_name'] = error_name(v)"
    return {  # helpers from _HELPERS
        "extents": "rec['extents'] = [{'length': n, 'status': s, 'state': describe_status(e.context, s)} "
                   "for n, s in v]",
        "in_flight": "rec['in_flight'] = [{'cookie': c, 'command': command_name(cmd), 'request_frame': f} "
                     "for c, cmd, f in v]",
        "meta_contexts": "rec['meta_contexts'] = {str(k): c for k, c in v}",
        "values": "rec['values'] = dict(v)",  # (name, value) pairs on the event
        "unparsed": "rec['unparsed'] = dict(v)",
        "info_requests": "rec['info_requests'] = [info_name(t) for t in v]",
    }.get(name)


def _type_expression(cls: type, env: dict[str, Any]) -> str:
    """The record's "type" for events of this class, as an expression (see names.event_type)."""
    field = {ev.Request: "command", ev.ReplyChunk: "reply_type", ev.OptionRequest: "option",
             ev.OptionReply: "reply"}.get(cls)
    if field is None:
        return "event_type(e)"
    env["type_name"] = {"command": COMMANDS, "reply_type": REPLY_TYPES, "option": OPTIONS,
                        "reply": OPTION_REPLIES}[field].name
    return f"type_name(e.{field})"


@cache
def _builder(cls: type, as_json: bool = False) -> Callable[[str, ev.Event, float], dict[str, Any]]:
    """Per event class, a record builder written out field by field (the way dataclasses
    writes __init__): straight-line code with the renderers inlined costs a third of a loop
    over the fields with a call per field. ``as_json``: the record goes straight to orjson,
    so parts of it may be JSON already."""
    env: dict[str, Any] = dict(_HELPERS)
    lines = ["def build(session, e, t0):",
             "    rec = {'session': session, 'frame': e.frame, 'time': round(e.time - t0, 6), 'dir': e.dir,",
             f"           'phase': e.phase, 'type': {_type_expression(cls, env)}}}"]
    for f in fields(cls):
        if f.name in _BASE:
            continue
        # empty tuples and dicts are left out like None; False and 0 are values
        test = "v" if str(f.type).startswith(("tuple", "dict")) else "v is not None"
        render = _rendering(cls, f.name, env, as_json) or f"rec[{f.name!r}] = v"
        lines += [f"    v = e.{f.name}", f"    if {test}:", f"        {render}"]
    lines.append("    return rec")
    exec("\n".join(lines), env)
    return env["build"]  # type: ignore[no-any-return]


def message_record(session: str, e: ev.Event, t0: float) -> dict[str, Any]:
    return _builder(type(e))(session, e, t0)


def json_line(record: dict[str, Any]) -> bytes:
    """One JSONL line; orjson because the proxy writes one per message while relaying."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def message_json(session: str, e: ev.Event, t0: float) -> bytes:
    return orjson.dumps(_builder(type(e), True)(session, e, t0), option=orjson.OPT_APPEND_NEWLINE)


def anomaly_json(a: Anomaly) -> bytes:
    """The timeline's line for a finding."""
    return json_line({"type": "ANOMALY", **a.as_json()})
