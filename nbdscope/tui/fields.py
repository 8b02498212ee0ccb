"""What each message shows in the table. The quantities themselves live with the
filter language (nbdscope/filter/message.py), so a filter always agrees with what
is on screen; this module adds what only the table needs."""

from __future__ import annotations

from nbdscope.decoder import events as ev
from nbdscope.filter.message import (
    command,
    command_name,
    cookie,
    error,
    is_error,
    latency,
    length,
    offset,
    type_name,
)
from nbdscope.spec import ERRORS
from nbdscope.vocab import Direction

__all__ = ["command", "command_name", "cookie", "error", "error_name", "fmt_latency", "is_error", "latency", "length",
           "offset", "short_type", "shown_direction", "type_name"]


def short_type(e: ev.Event) -> str:
    """The spec name without its family prefix, for narrow columns."""
    name = type_name(e)
    for prefix in ("NBD_REPLY_TYPE_", "NBD_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if isinstance(e, ev.ReplyChunk):
        name = "CHUNK " + name
    return name


def fmt_latency(us: float | None) -> str:
    if us is None:
        return ""
    if us < 10_000:
        return f"{us:.0f}us"
    if us < 10_000_000:
        return f"{us / 1000:.1f}ms"
    return f"{us / 1e6:.1f}s"


def shown_direction(e: ev.Event) -> Direction | None:
    """The direction the views show: a message's own, but for CONNECTION_END the side that closed first
    (the decoder files that event on the server's side whoever closed; None when the capture cannot tell)."""
    if isinstance(e, ev.ConnectionEnd):
        return e.by
    return e.dir


def error_name(e: ev.Event) -> str:
    """A reply's NBD error without the family prefix (EINVAL), empty for success and other messages."""
    code = error(e)
    return ERRORS.name(code).removeprefix("NBD_") if code is not None else ""
