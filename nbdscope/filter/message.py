"""What a filter reads from one decoded message: one accessor per quantity.

The TUI's columns use the same accessors (nbdscope/tui/fields.py re-exports them),
so a filter always agrees with what the table shows."""

from __future__ import annotations

from nbdscope.decoder import events as ev
from nbdscope.report.fieldinfo import (
    type_name as type_name,  # re-exported: the filter and the table name messages alike
)
from nbdscope.spec import COMMANDS
from nbdscope.spec.codes import is_rep_error


def command(e: ev.Event) -> int | None:
    """The command a request carries or a reply answers (None when unknown or not transmission)."""
    if isinstance(e, ev.Request):
        return e.command
    if isinstance(e, ev.Reply):
        return e.command
    return None


def command_name(e: ev.Event) -> str | None:
    cmd = command(e)
    return COMMANDS.name(cmd) if cmd is not None else None


def cookie(e: ev.Event) -> int | None:
    return e.cookie if isinstance(e, ev.Request | ev.Reply) else None


def offset(e: ev.Event) -> int | None:
    """Requests: their offset; replies: the chunk's own offset, else the request's."""
    if isinstance(e, ev.Request):
        return e.offset
    if isinstance(e, ev.ReplyChunk) and e.offset is not None:
        return e.offset
    if isinstance(e, ev.Reply):
        return e.request_offset
    return None


def length(e: ev.Event) -> int | None:
    """Requests: their length field; replies: the data they carry, else the request's length."""
    if isinstance(e, ev.Request):
        return e.length
    if isinstance(e, ev.SimpleReply):
        return e.data_length if e.data_length else e.request_length
    if isinstance(e, ev.ReplyChunk):
        if e.data_length is not None:
            return e.data_length
        if e.hole_length is not None:
            return e.hole_length
        return e.request_length
    if isinstance(e, ev.OptionRequest | ev.OptionReply):
        return e.length
    if isinstance(e, ev.TlsData | ev.Gap):
        return e.nbytes
    return None


def error(e: ev.Event) -> int | None:
    """The error value of a reply (None for success and for messages that carry none)."""
    if isinstance(e, ev.SimpleReply):
        return e.error or None
    if isinstance(e, ev.ReplyChunk):
        return e.error
    return None


def is_error(e: ev.Event) -> bool:
    """Replies reporting an error, option replies of the error kind, and broken bytes."""
    if isinstance(e, ev.SimpleReply):
        return e.error != 0
    if isinstance(e, ev.ReplyChunk):
        return e.error is not None or e.failed
    if isinstance(e, ev.OptionReply):
        return is_rep_error(e.reply)
    return isinstance(e, ev.Malformed)


def latency(e: ev.Event) -> float | None:
    return e.latency_us if isinstance(e, ev.Reply) else None
