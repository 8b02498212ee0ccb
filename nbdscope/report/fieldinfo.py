"""What every field of every decoder event is, for the views that show it.

One entry per (event class, field): its label, a one-line meaning, what kind of
value it holds (a byte count, an offset, flags...), the spec table that decodes it
and how the JSONL record spells it. The JSONL and text timelines, the text report
and the TUI all read this registry, so a field's decoding is decided here only.
It also names each message by its spec name (``type_name``).

Tables come from ``nbdscope.spec`` by reference; nothing here spells a bit or a code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from nbdscope.decoder import events as ev
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
from nbdscope.spec.tables import Bit, CodeTable, FlagField

Kind = Literal[
    "bytes",  # a byte count
    "offset",  # a byte offset into the export
    "count",  # a number of items
    "us",  # microseconds
    "frame",  # a capture frame number
    "cookie",  # the handle pairing a request with its reply
    "id",  # a number the peers assigned (a metadata context id)
    "ids",  # a tuple of those
    "code",  # an enumerated value: ``codes`` decodes it
    "codes",  # a tuple of enumerated values, each decoded by ``codes``
    "flags",  # a flags field: ``flags`` decodes it bit by bit
    "reserved",  # bits the spec reserves as a whole: no table, any set bit is wrong
    "bool",
    "choice",  # one of a few words the decoder chose (style, how ...)
    "text",  # a string from the wire or from the decoder
    "texts",  # a tuple of strings
    "extents",  # (length, status) pairs of a block status chunk
    "in-flight",  # (cookie, command, request frame) triples
    "contexts",  # (id, name) pairs of negotiated metadata contexts
    "values",  # a small dict of named numbers or words
]

Json = Literal[
    "value",  # the record holds the value as it is
    "decoded",  # the record holds the decoding instead (flags described bit by bit, a code's name)
    "value+name",  # the value, and beside it ``<field>_name`` with the code's name
]


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """How one field of one event class is presented."""

    label: str
    meaning: str
    kind: Kind
    flags: FlagField | None = None
    codes: CodeTable | None = None
    json: Json = "value"
    hex: bool = False  # numbers read best in hex (codes with a high error bit, cookies)


# Fields no view lists as a field of its own, and why.
NOT_SHOWN: dict[str, str] = {
    "dir": "every view shows it as the message's arrow",
    "frame": "every view shows it in the message's heading",
    "time": "every view shows it, relative to the first message, in the heading",
    "phase": "the JSONL record and the TUI heading carry it; the message type implies it",
    "header": "the raw wire header, for the TUI hex pane only",
    "data": "payload bytes, kept for the shadow-disk checks and never displayed",
    "seq": "the decoder's number for the message within its connection; views number their own",
    "start": "where the message begins in its direction's byte stream (capture writers and redaction use it)",
    "end": "just past where the message ends in its direction's byte stream",
    "data_start": "where the message's read or write data begins in its stream (redaction uses it)",
    "plaintext": "TLS data: what non-TLS first bytes look like; the tls-protocol finding reports it",
    "hello_version": "TLS data: the version a ServerHello selects; the tls-protocol finding reports it",
}


def _f(name: str, meaning: str, kind: Kind, **more: object) -> tuple[str, FieldInfo]:
    return name, FieldInfo(name, meaning, kind, **more)  # type: ignore[arg-type]


def _decoded_flags(name: str, meaning: str, table: FlagField) -> tuple[str, FieldInfo]:
    return _f(name, meaning, "flags", flags=table, json="decoded")


_TFLAGS = _decoded_flags("transmission_flags", "what the export supports, as the server announced it",
                         TRANSMISSION_FLAGS)
_SIZE = _f("size", "export size in bytes", "bytes")
_EXPORT = _f("export_name", "the export the client asked for", "text")
_BLOCKS = (
    _f("min_block", "smallest block size the server accepts", "bytes"),
    _f("preferred_block", "block size the server handles best", "bytes"),
    _f("max_payload", "largest payload the server accepts in one request", "bytes"),
)
_OPTION = _f("option", "the option this message belongs to", "code", codes=OPTIONS, json="decoded")
_LENGTH = _f("length", "length of the data after the header, as the header says", "bytes")
_PROBLEM = _f("problem", "how the payload disagrees with its own length fields", "text")
_LOST = _f("lost", "bytes of the message the capture did not hold (its fields come from the rest)", "bytes")
_COOKIE = _f("cookie", "handle pairing a request with its reply", "cookie", hex=True)
_COMMAND = _f("command", "the command, for a reply the command it answers", "code", codes=COMMANDS, json="decoded")
_EXTENDED = _f("extended", "sent with the extended (64-bit) header", "bool")
_MESSAGE = _f("message", "human-readable text the server sent with an error", "text")
_REPLY_ERROR = _f("error", "the error the server reports (0: success)", "code", codes=ERRORS, json="value+name")
_NBYTES = _f("nbytes", "bytes concerned", "bytes")

# Per class, the fields it declares itself (inherited ones come from its bases).
_OWN: dict[type, dict[str, FieldInfo]] = {
    ev.Event: {},
    ev.ServerGreeting: dict([
        _f("style", "which handshake the greeting starts", "choice"),
        _decoded_flags("handshake_flags", "what the server's newstyle handshake supports", HANDSHAKE_FLAGS),
        _SIZE,
        _TFLAGS,
        _f("oldstyle_high_flags", "upper half of the oldstyle 32-bit flags field, all reserved", "reserved"),
        _LOST,
    ]),
    ev.ClientFlags: dict([_decoded_flags("flags", "what the client's handshake supports", CLIENT_FLAGS)]),
    ev.OptionRequest: dict([
        _OPTION,
        _LENGTH,
        _EXPORT,
        _f("info_requests", "the NBD_INFO items the client asks for", "codes", codes=INFO_TYPES, json="decoded"),
        _f("queries", "metadata contexts the client lists or selects", "texts"),
        _PROBLEM,
        _LOST,
    ]),
    ev.OptionReply: dict([
        _OPTION,
        _f("reply", "the kind of reply (errors have the high bit set)", "code", codes=OPTION_REPLIES, hex=True),
        _LENGTH,
        _f("info_type", "which item an NBD_REP_INFO carries", "code", codes=INFO_TYPES, json="decoded"),
        _SIZE,
        _TFLAGS,
        *_BLOCKS,
        _f("name", "export or metadata context this reply names", "text"),
        _f("description", "the server's description of an export", "text"),
        _f("context_id", "id the server gave a metadata context", "id"),
        _MESSAGE,
        _f("solicited", "an option of this kind was pending when the reply came", "bool"),
        _PROBLEM,
        _LOST,
    ]),
    ev.ExportNameReply: dict([
        _SIZE,
        _TFLAGS,
        _f("zeroes", "the 124 reserved zero bytes followed", "bool"),
        _LOST,
    ]),
    ev.TransmissionStart: dict([
        _f("how", "how the handshake ended (or that the capture began after it)", "choice"),
        _EXPORT,
        _SIZE,
        _TFLAGS,
        _f("structured_replies", "structured replies were negotiated", "bool"),
        _f("extended_headers", "extended headers were negotiated", "bool"),
        _f("meta_contexts", "metadata contexts the server agreed to, by id", "contexts"),
        *_BLOCKS,
    ]),
    ev.TlsStart: {},
    ev.TlsData: dict([
        _NBYTES,
        _f("decryption", "with a key log: decryption's new status (decrypted, no-key, undecryptable)", "choice"),
        _f("detail", "with a key log: the TLS version and suite decrypted, or why not", "text"),
    ]),
    ev.Request: dict([
        _COOKIE,
        _COMMAND,
        _decoded_flags("flags", "modifiers of the command", COMMAND_FLAGS),
        _f("offset", "where in the export the command starts", "offset"),
        _f("length", "how many bytes the command covers (or its payload size)", "bytes"),
        _EXTENDED,
        _f("payload_length", "data bytes that follow the header", "bytes"),
        _f("effect_length", "bytes a block status payload asks about", "bytes"),
        _f("context_ids", "metadata contexts a block status payload asks for", "ids"),
    ]),
    ev.Reply: dict([
        _COOKIE,
        _COMMAND,
        _f("request_frame", "frame of the request this answers", "frame"),
        _f("request_offset", "offset of the request this answers", "offset"),
        _f("request_length", "length of the request this answers", "bytes"),
        _f("request_flags", "flags of the request this answers", "flags", flags=COMMAND_FLAGS),
        _f("completes", "last message of its reply", "bool"),
        _f("failed", "the reply as a whole reported an error", "bool"),
        _f("latency_us", "time from the request to this completing message", "us"),
    ]),
    ev.SimpleReply: dict([
        _REPLY_ERROR,
        _f("data_length", "read data following the reply", "bytes"),
    ]),
    ev.ReplyChunk: dict([
        _f("reply_type", "what this chunk carries", "code", codes=REPLY_TYPES),
        _decoded_flags("flags", "chunk flags", REPLY_FLAGS),
        _f("length", "length of the chunk's payload", "bytes"),
        _EXTENDED,
        _f("header_offset", "request offset echoed by an extended reply header", "offset"),
        _f("offset", "where the data, hole or error of the chunk lies", "offset"),
        _f("data_length", "read data bytes in the chunk", "bytes"),
        _f("hole_length", "bytes of the hole the chunk reports", "bytes"),
        _f("context_id", "metadata context the extents describe", "id"),
        _f("context", "name of that context, when its negotiation was seen", "text"),
        _f("extents", "(length, status) of each extent, as kept", "extents"),
        _f("descriptor_count", "number of extents the extended chunk header announces", "count"),
        _f("extents_truncated", "the chunk held more extents than are kept", "bool"),
        ("error", replace(_REPLY_ERROR[1], meaning="the error the chunk reports")),
        _MESSAGE,
        _f("problem", "how the payload disagrees with the chunk's length or type", "text"),
        _LOST,
    ]),
    ev.PayloadData: dict([
        _COOKIE,
        _f("offset", "where the payload lies in the export", "offset"),
        _f("kind", "written or read data", "choice"),
    ]),
    ev.Gap: dict([
        _f("nbytes", "bytes the capture lost", "bytes"),
        _f("resync", "framing was lost with them", "bool"),
        _f("snapped", "the snapshot length cut them off the packet (header-only capture)", "bool"),
        _f("within", "the kind of message they fell in, decoded from the bytes before them", "choice"),
    ]),
    ev.Resync: dict([
        _f("skipped", "bytes skipped to find the next message", "bytes"),
        _f("after_gap", "the skipped bytes followed a capture gap", "bool"),
    ]),
    ev.Malformed: dict([
        _f("what", "short category of the problem", "choice"),
        _f("message", "what is wrong with the bytes", "text"),
        _f("values", "the numbers that show it", "values"),
    ]),
    ev.ConnectionEnd: dict([
        _f("how", "how the TCP connection ended", "choice"),
        _f("soft", "NBD_CMD_DISC was sent first", "bool"),
        _f("by", "who closed first, when the capture shows it", "choice"),
        _f("in_flight", "requests never answered", "in-flight", codes=COMMANDS),
        _f("unparsed", "bytes left undecoded, per direction", "values"),
    ]),
}


def _merged(cls: type) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for base in reversed(cls.__mro__):
        out.update(_OWN.get(base, {}))
    return out


FIELDS: dict[type, dict[str, FieldInfo]] = {cls: _merged(cls) for cls in _OWN}


def field_info(cls: type, name: str) -> FieldInfo | None:
    """The metadata of one field; None for a field (or class) the registry does not know."""
    return FIELDS.get(cls, {}).get(name)


def flag_table(cls: type, name: str) -> FlagField | None:
    """The spec flags table that decodes this field of this class, if it is a flags field."""
    info = field_info(cls, name)
    return info.flags if info is not None else None


def code_name(cls: type, name: str, value: int) -> str:
    """The spec name of an enumerated field's value (NBD_CMD_READ, NBD_INFO_EXPORT, ...)."""
    info = FIELDS[cls][name]
    assert info.codes is not None, f"{cls.__name__}.{name} is not an enumerated field"
    return info.codes.name(value)


# ------------------------------------------------------------------ message type names

# Messages named by the code of one of their fields ...
_TYPE_FIELD: dict[type, str] = {ev.Request: "command", ev.ReplyChunk: "reply_type", ev.OptionRequest: "option",
                                ev.OptionReply: "reply"}
# ... and messages whose name is fixed (the spec has no name for these: they are ours)
_FIXED_TYPE: dict[type, str] = {
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


def type_source(cls: type) -> tuple[str, CodeTable] | None:
    """For messages named by a field's code: that field and the table naming it."""
    for named, field in _TYPE_FIELD.items():
        if issubclass(cls, named):
            codes = FIELDS[named][field].codes
            assert codes is not None
            return field, codes
    return None


def fixed_type_name(cls: type) -> str | None:
    """The name every message of this class has; None when it depends on the message."""
    if type_source(cls) is not None or issubclass(cls, ev.ServerGreeting):
        return None
    return _FIXED_TYPE.get(cls, cls.__name__)


def _greeting_name(e: ev.Event) -> str:
    return "OLDSTYLE_GREETING" if e.style == "oldstyle" else "NEWSTYLE_GREETING"  # type: ignore[attr-defined]


def _namer(cls: type) -> Callable[[ev.Event], str]:
    source = type_source(cls)
    if source is not None:
        field, codes = source
        return lambda e: codes.name(getattr(e, field))
    if issubclass(cls, ev.ServerGreeting):
        return _greeting_name
    name = fixed_type_name(cls)
    return lambda e: name  # type: ignore[return-value]


_NAMERS: dict[type, Callable[[ev.Event], str]] = {}


def type_name(e: ev.Event) -> str:
    """The message's name in every view: the spec name of its command, option, reply or
    chunk type (NBD_CMD_READ, NBD_OPT_GO, NBD_REPLY_TYPE_OFFSET_DATA), else a fixed one."""
    namer = _NAMERS.get(type(e))
    if namer is None:
        namer = _NAMERS[type(e)] = _namer(type(e))
    return namer(e)


# ------------------------------------------------------------------ flags, bit by bit

@dataclass(frozen=True, slots=True)
class BitRow:
    """One line of a flags field shown bit by bit."""

    number: int
    bit: Bit | None  # None: a bit the spec does not define, shown only when set
    set: bool


def bit_rows(table: FlagField, value: int) -> list[BitRow]:
    """Every defined bit of ``table``, set or clear, then every undefined bit ``value`` sets."""
    rows = [BitRow(b.number, b, bool(value & b.mask)) for b in table.bits]
    rows += [BitRow(n, None, True) for n in range(table.width) if value & (1 << n) and table.bit(n) is None]
    return rows
