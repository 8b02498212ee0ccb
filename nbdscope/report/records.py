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
    OPTIONS,
    REPLY_FLAGS,
    TRANSMISSION_FLAGS,
)
from nbdscope.spec.metacontexts import describe_status

# data: payload bytes never go into the timeline; header: the wire header kept for the TUI's hex pane
_BASE = {"dir", "frame", "time", "phase", "data", "header"}

Render = Callable[[Any, ev.Event, dict[str, Any]], None] | None  # None: the value as it is


def _error(name: str) -> Render:
    def render(value: Any, e: ev.Event, rec: dict[str, Any]) -> None:
        rec[name] = value
        rec["error_name"] = ERRORS.name(value)
    return render


def _renderer(cls: type, name: str) -> Render:
    """How one field of one event class is rendered into the record."""
    table = {"transmission_flags": TRANSMISSION_FLAGS, "handshake_flags": HANDSHAKE_FLAGS}.get(name)
    if name == "flags":
        table = {ev.Request: COMMAND_FLAGS, ev.ReplyChunk: REPLY_FLAGS, ev.ClientFlags: CLIENT_FLAGS}.get(cls)
    if table is not None:
        describe = table.describe
        return lambda v, e, rec: rec.__setitem__(name, describe(v))
    named = {"command": COMMANDS, "option": OPTIONS, "info_type": INFO_TYPES}.get(name)
    if named is not None:
        to_name = named.name
        return lambda v, e, rec: rec.__setitem__(name, to_name(v))
    if name == "error" and issubclass(cls, ev.SimpleReply | ev.ReplyChunk):
        return _error(name)
    if name == "extents":
        return lambda v, e, rec: rec.__setitem__(name, [
            {"length": n, "status": s, "state": describe_status(getattr(e, "context", None), s)} for n, s in v])
    if name == "in_flight":
        return lambda v, e, rec: rec.__setitem__(name, [
            {"cookie": c, "command": COMMANDS.name(cmd), "request_frame": f} for c, cmd, f in v])
    if name == "meta_contexts":
        return lambda v, e, rec: rec.__setitem__(name, {str(k): c for k, c in v})
    if name == "info_requests":
        return lambda v, e, rec: rec.__setitem__(name, [INFO_TYPES.name(t) for t in v])
    return None


@cache
def _builder(cls: type) -> Callable[[str, ev.Event, float], dict[str, Any]]:
    """Per event class, a record builder written out field by field (the way dataclasses
    writes __init__): straight-line code costs a third of a loop over the fields."""
    env: dict[str, Any] = {"event_type": event_type}
    lines = ["def build(session, e, t0):",
             "    rec = {'session': session, 'frame': e.frame, 'time': round(e.time - t0, 6), 'dir': e.dir,",
             "           'phase': e.phase, 'type': event_type(e)}"]
    for i, f in enumerate(f for f in fields(cls) if f.name not in _BASE):
        # empty tuples and dicts are left out like None; False and 0 are values
        test = "v" if str(f.type).startswith(("tuple", "dict")) else "v is not None"
        lines += [f"    v = e.{f.name}", f"    if {test}:"]
        render = _renderer(cls, f.name)
        if render is None:
            lines.append(f"        rec[{f.name!r}] = v")
        else:
            env[f"render{i}"] = render
            lines.append(f"        render{i}(v, e, rec)")
    lines.append("    return rec")
    exec("\n".join(lines), env)
    return env["build"]  # type: ignore[no-any-return]


def message_record(session: str, e: ev.Event, t0: float) -> dict[str, Any]:
    return _builder(type(e))(session, e, t0)


def json_line(record: dict[str, Any]) -> bytes:
    """One JSONL line; orjson because the proxy writes one per message while relaying."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def message_json(session: str, e: ev.Event, t0: float) -> bytes:
    return json_line(message_record(session, e, t0))


def anomaly_json(a: Anomaly) -> bytes:
    """The timeline's line for a finding."""
    return json_line({"type": "ANOMALY", **a.as_json()})
