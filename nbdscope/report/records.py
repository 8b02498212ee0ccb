"""One JSON-ready record per decoded message: the JSONL timeline of CONTRACT.md."""

from __future__ import annotations

from dataclasses import fields
from functools import cache
from typing import Any

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
from nbdscope.spec.tables import FlagField

_BASE = {"dir", "frame", "time", "phase", "header"}  # header bytes never go into the timeline


@cache
def _plan(cls: type) -> tuple[tuple[str, object], ...]:
    """Per event class, each field with how to render it (worked out once, used per message)."""
    plan: list[tuple[str, object]] = []
    for f in fields(cls):
        if f.name in _BASE:
            continue
        table = None
        if f.name == "transmission_flags":
            table = TRANSMISSION_FLAGS
        elif f.name == "handshake_flags":
            table = HANDSHAKE_FLAGS
        elif f.name == "flags":
            table = {ev.Request: COMMAND_FLAGS, ev.ReplyChunk: REPLY_FLAGS, ev.ClientFlags: CLIENT_FLAGS}.get(cls)
        plan.append((f.name, table if table is not None else f.name))
    return tuple(plan)


def message_record(session: str, e: ev.Event, t0: float) -> dict[str, Any]:
    rec: dict[str, Any] = {"session": session, "frame": e.frame, "time": round(e.time - t0, 6), "dir": e.dir,
                           "phase": e.phase, "type": event_type(e)}
    for name, how in _plan(type(e)):
        value = getattr(e, name)
        if value is None or value == () or value == {}:
            continue
        if isinstance(how, FlagField):
            rec[name] = how.describe(value)
        elif name == "command":
            rec[name] = COMMANDS.name(value)
        elif name == "option":
            rec[name] = OPTIONS.name(value)
        elif name == "info_type":
            rec[name] = INFO_TYPES.name(value)
        elif name == "error" and isinstance(e, ev.SimpleReply | ev.ReplyChunk):
            rec[name] = value
            rec["error_name"] = ERRORS.name(value)
        elif name == "extents":
            ctx = getattr(e, "context", None)
            rec[name] = [{"length": n, "status": s, "state": describe_status(ctx, s)} for n, s in value]
        elif name == "in_flight":
            rec[name] = [{"cookie": c, "command": COMMANDS.name(cmd), "request_frame": f} for c, cmd, f in value]
        elif name == "meta_contexts":
            rec[name] = {str(k): v for k, v in value}
        elif name == "info_requests":
            rec[name] = [INFO_TYPES.name(v) for v in value]
        elif name == "data":
            continue  # payload bytes never go into the timeline
        else:
            rec[name] = value
    return rec
