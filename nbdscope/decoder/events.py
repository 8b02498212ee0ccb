"""Immutable events the decoder yields, one per decoded protocol message.

Events carry decoded values only (numbers, names, small tuples); bulk data such
as read and write payloads is counted, never kept, so memory does not grow with
the traffic.

Immutable by contract, not by ``frozen=True``: a frozen dataclass pays a generic
``object.__setattr__`` per field at construction, which tripled the cost of the
events the live proxy builds for every message. Nothing may assign to an event
after the decoder made it; they stay hashable and comparable by value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from nbdscope.vocab import Direction

Phase = Literal["handshake", "transmission"]

event = partial(dataclass, slots=True, kw_only=True, unsafe_hash=True)


@event()
class Event:
    dir: Direction
    frame: int
    time: float
    phase: Phase
    header: bytes | None = None  # the message's wire header, only when the decoder was asked to keep headers


@event()
class ServerGreeting(Event):
    """NBDMAGIC and what follows it: the newstyle flags or the oldstyle export."""

    style: Literal["oldstyle", "newstyle", "fixed-newstyle"]
    handshake_flags: int | None = None  # newstyle only
    size: int | None = None  # oldstyle only
    transmission_flags: int | None = None  # oldstyle only (low 16 bits of its 32-bit field)
    oldstyle_high_flags: int = 0  # oldstyle: the upper 16 bits, reserved


@event()
class ClientFlags(Event):
    flags: int


@event()
class OptionRequest(Event):
    option: int
    length: int
    export_name: str | None = None
    info_requests: tuple[int, ...] = ()
    queries: tuple[str, ...] = ()
    problem: str | None = None  # payload disagrees with its own length fields


@event()
class OptionReply(Event):
    option: int
    reply: int
    length: int
    info_type: int | None = None
    size: int | None = None
    transmission_flags: int | None = None
    min_block: int | None = None
    preferred_block: int | None = None
    max_payload: int | None = None
    name: str | None = None  # NBD_INFO_NAME, NBD_REP_SERVER export, NBD_REP_META_CONTEXT context
    description: str | None = None
    context_id: int | None = None
    message: str | None = None  # error replies: the server's text
    solicited: bool = True  # False when no matching option was pending
    problem: str | None = None


@event()
class ExportNameReply(Event):
    """The server's answer to NBD_OPT_EXPORT_NAME: size and flags, maybe 124 zeroes."""

    size: int
    transmission_flags: int
    zeroes: bool


@event()
class TransmissionStart(Event):
    """Both sides have left the handshake; summarises what was agreed."""

    how: Literal["oldstyle", "export-name", "go", "mid-stream"]
    export_name: str | None
    size: int | None
    transmission_flags: int | None
    structured_replies: bool | None  # None: the capture began after the handshake
    extended_headers: bool | None
    meta_contexts: tuple[tuple[int, str], ...] = ()
    min_block: int | None = None
    preferred_block: int | None = None
    max_payload: int | None = None


@event()
class TlsStart(Event):
    """STARTTLS was acknowledged: everything after this is encrypted."""


@event()
class TlsData(Event):
    nbytes: int


@event()
class Request(Event):
    cookie: int
    command: int
    flags: int
    offset: int
    length: int
    extended: bool  # sent with the 32-byte extended header
    payload_length: int  # data bytes following the header
    effect_length: int | None = None  # BLOCK_STATUS payload form: the length it asks about
    context_ids: tuple[int, ...] = ()  # BLOCK_STATUS payload form: contexts it asks for


@event()
class Reply(Event):
    """Fields shared by simple replies and reply chunks: the request they answer."""

    cookie: int
    command: int | None = None  # None: no request with this cookie was in flight
    request_frame: int | None = None
    request_offset: int | None = None
    request_length: int | None = None
    request_flags: int | None = None
    completes: bool = True  # last message of its reply
    failed: bool = False  # on the completing message: the reply as a whole reported an error
    latency_us: float | None = None  # set on the message that completes the reply


@event()
class SimpleReply(Reply):
    error: int
    data_length: int | None  # None: unknown (cookie not in flight and capture mid-stream)


@event()
class ReplyChunk(Reply):
    reply_type: int
    flags: int
    length: int
    extended: bool
    header_offset: int | None = None  # extended replies echo the request offset
    offset: int | None = None  # OFFSET_DATA, OFFSET_HOLE, ERROR_OFFSET
    data_length: int | None = None  # OFFSET_DATA payload bytes
    hole_length: int | None = None
    context_id: int | None = None
    context: str | None = None  # name of context_id when negotiation was seen
    extents: tuple[tuple[int, int], ...] = ()  # (length, status)
    descriptor_count: int | None = None  # BLOCK_STATUS_EXT header field
    extents_truncated: bool = False  # more extents than we keep
    error: int | None = None
    message: str | None = None
    problem: str | None = None  # payload disagrees with the chunk length or type


@event()
class PayloadData(Event):
    """The complete payload of a write request or of read data, emitted only when
    the decoder was asked to keep data (the shadow-disk checks need it)."""

    cookie: int
    offset: int
    kind: Literal["write", "read"]
    data: bytes


@event()
class Gap(Event):
    """Bytes the capture lost; ``resync`` says whether framing was lost with them."""

    nbytes: int
    resync: bool


@event()
class Resync(Event):
    """Decoding found its footing again after skipping bytes it could not frame."""

    skipped: int
    after_gap: bool = False  # the skipped bytes followed a capture gap (not the peer's fault)


@event()
class Malformed(Event):
    """Bytes that cannot be what the protocol allows at this point."""

    what: str  # short machine-readable category, e.g. "bad-magic"
    message: str
    values: dict[str, int | str | None] = field(default_factory=dict)


@event()
class ConnectionEnd(Event):
    how: Literal["fin", "rst", "end-of-capture"]
    soft: bool  # NBD_CMD_DISC was sent
    by: Direction | None = None  # who closed the TCP connection first, when the capture shows it
    in_flight: tuple[tuple[int, int, int], ...] = ()  # (cookie, command, request frame)
    unparsed: dict[str, int] = field(default_factory=dict)  # bytes left undecoded per direction
