"""Spec names for events, shared by every view (JSONL, text timeline, TUI)."""

from __future__ import annotations

from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, OPTION_REPLIES, OPTIONS, REPLY_TYPES

_FIXED = {
    ev.ClientFlags: "CLIENT_FLAGS",
    ev.ExportNameReply: "EXPORT_NAME_REPLY",
    ev.TransmissionStart: "TRANSMISSION_START",
    ev.TlsStart: "TLS_START",
    ev.TlsData: "TLS_DATA",
    ev.SimpleReply: "NBD_SIMPLE_REPLY",
    ev.Gap: "CAPTURE_GAP",
    ev.Resync: "RESYNC",
    ev.Malformed: "MALFORMED",
    ev.ConnectionEnd: "CONNECTION_END",
}


def event_type(e: ev.Event) -> str:
    if isinstance(e, ev.Request):
        return COMMANDS.name(e.command)
    if isinstance(e, ev.ReplyChunk):
        return REPLY_TYPES.name(e.reply_type)
    if isinstance(e, ev.OptionRequest):
        return OPTIONS.name(e.option)
    if isinstance(e, ev.OptionReply):
        return OPTION_REPLIES.name(e.reply)
    if isinstance(e, ev.ServerGreeting):
        return "OLDSTYLE_GREETING" if e.style == "oldstyle" else "NEWSTYLE_GREETING"
    return _FIXED.get(type(e), type(e).__name__)
