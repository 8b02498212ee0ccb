"""One JSON-ready record per decoded message: the JSONL timeline of docs/CONTRACT.md.

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
from nbdscope.report.fieldinfo import NOT_SHOWN, field_info, fixed_type_name, type_name, type_source
from nbdscope.spec.metacontexts import describe_status

# dir, frame, time and phase open every record; data, header and the decoder's positions never go into it
_BASE = set(NOT_SHOWN)


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


_HELPERS = {"type_of": type_name, "describe_status": describe_status}

# JSON shapes of the structured kinds of field (see fieldinfo.Kind)
_STRUCTURED = {
    "extents": "rec[{name!r}] = [{{'length': n, 'status': s, 'state': describe_status(e.context, s)}} for n, s in v]",
    "in-flight": "rec[{name!r}] = [{{'cookie': c, 'command': name_{name}(cmd), 'request_frame': f}} "
                 "for c, cmd, f in v]",
    "contexts": "rec[{name!r}] = {{str(k): c for k, c in v}}",
    "values": "rec[{name!r}] = dict(v)",  # (name, value) pairs on the frozen event
}


def _rendering(cls: type, name: str, env: dict[str, Any], as_json: bool) -> str | None:
    """The statement that renders one field of one event class into ``rec`` (the value is in
    ``v``), with any helper it calls put into ``env``; None: the value goes in as it is."""
    info = field_info(cls, name)
    if info is None:
        return None
    if info.kind in _STRUCTURED:
        if info.codes is not None:
            env[f"name_{name}"] = info.codes.name
        return _STRUCTURED[info.kind].format(name=name)
    if info.json == "value":
        return None
    if info.flags is not None:
        table = info.flags
        env[f"describe_{name}"] = _serialised(table.describe) if as_json else table.describe
        return f"rec[{name!r}] = describe_{name}(v)"
    assert info.codes is not None, f"{cls.__name__}.{name}: only flags and codes are decoded"
    env[f"name_{name}"] = info.codes.name
    if info.kind == "codes":
        return f"rec[{name!r}] = [name_{name}(t) for t in v]"
    if info.json == "value+name":
        return f"rec[{name!r}] = v; rec['{name}_name'] = name_{name}(v)"
    return f"rec[{name!r}] = name_{name}(v)"


def _type_expression(cls: type, env: dict[str, Any]) -> str:
    """The record's "type" for events of this class, as an expression (see fieldinfo.type_name)."""
    source = type_source(cls)
    if source is not None:
        field, codes = source
        env["type_name"] = codes.name
        return f"type_name(e.{field})"
    fixed = fixed_type_name(cls)
    return repr(fixed) if fixed is not None else "type_of(e)"


@cache
def _builder(cls: type, as_json: bool = False, with_input: bool = False) -> Callable[..., dict[str, Any]]:
    """Per event class, a record builder written out field by field (the way dataclasses
    writes __init__): straight-line code with the renderers inlined costs a third of a loop
    over the fields with a call per field. ``as_json``: the record goes straight to orjson,
    so parts of it may be JSON already. ``with_input``: the builder takes a fourth argument, the
    file that holds the frame (runs over several files), and writes it after the frame.

    Times are rounded to microseconds through an integer: ``round(t, 6)`` goes through decimal digits
    and cost a microsecond a line for each of ``time`` and ``epoch``. For times of microsecond
    resolution both give the same number; with nanoseconds they differ at most near a half microsecond."""
    env: dict[str, Any] = dict(_HELPERS)
    where = "'input': source, " if with_input else ""
    lines = [f"def build(session, e, t0{', source' if with_input else ''}):",
             f"    rec = {{'session': session, 'frame': e.frame, {where}'time': round((e.time - t0) * 1e6) / 1e6,",
             "           'epoch': round(e.time * 1e6) / 1e6, 'dir': e.dir,",
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
    # TEMPORARY: removed when the decoder rewrite lands (events made by partial(dataclass) are not hashable to mypy)
    return _builder(type(e))(session, e, t0)  # type: ignore[arg-type]


def json_line(record: dict[str, Any]) -> bytes:
    """One JSONL line; orjson because the proxy writes one per message while relaying."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def message_json(session: str, e: ev.Event, t0: float) -> bytes:
    # TEMPORARY: removed when the decoder rewrite lands (events made by partial(dataclass) are not hashable to mypy)
    return orjson.dumps(_builder(type(e), True)(session, e, t0),  # type: ignore[arg-type]
                        option=orjson.OPT_APPEND_NEWLINE)


def json_builder(cls: type, with_input: bool = False) -> Callable[..., dict[str, Any]]:
    """The record builder of one event class for a JSONL writer, which keeps it per class: called as
    ``build(session_id, event, t0)``, or with ``with_input`` as ``build(session_id, event, t0, input)``."""
    return _builder(cls, True, with_input)


def anomaly_json(a: Anomaly, with_input: bool = False, t0: float | None = None) -> bytes:
    """The timeline's line for a finding (``with_input``: name the file of its frame; ``t0``: add its epoch
    time; see Anomaly.as_json)."""
    return json_line({"type": "ANOMALY", **a.as_json(with_input, t0)})


def input_json(source: str) -> bytes:
    """The timeline's line that says the next file of a run over several begins: the frames of the
    lines after it are that file's."""
    return json_line({"type": "INPUT", "input": source})
