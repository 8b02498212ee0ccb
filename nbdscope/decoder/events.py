"""Immutable events the decoder yields, one per decoded protocol message.

Events carry decoded values only (numbers, names, small tuples); bulk data such
as read and write payloads is counted, never kept, so memory does not grow with
the traffic. They are frozen and hashable (see ``frozen.py`` for how, and why not
``dataclass(frozen=True)``); mappings are tuples of pairs.

Positions: every event has ``seq``, its number within its connection (from 0, in
the order the decoder emits them), and ``start``/``end``, a span of offsets in
its direction's byte stream (offset 0: the first byte the capture holds):

- a message (greeting, flags, option, option reply, request, reply, chunk) spans
  its header and all its payload, even bytes not yet received; ``data_start`` says
  where read or write data begins inside it (the data runs to ``end``);
- ``TlsData`` spans the encrypted bytes, ``Resync`` the bytes it skipped, and a
  ``Gap`` that lost framing spans from the end of the last decoded message to the
  end of the lost bytes; these and the messages tile each direction's stream;
- a ``Gap`` inside a payload spans the lost bytes and ``PayloadData`` the data, both
  inside the message that carries them;
- the others (``TransmissionStart``, ``TlsStart``, ``Malformed``, ``ConnectionEnd``)
  are points: ``start == end`` where the decoder stood.
"""

from __future__ import annotations

from typing import Literal

from nbdscope.decoder.frozen import frozen_event as event
from nbdscope.decoder.frozen import positional
from nbdscope.vocab import Direction

Phase = Literal["handshake", "transmission"]


@event
class Event:
    dir: Direction
    frame: int
    time: float
    phase: Phase
    header: bytes | None = None  # the message's wire header, only when the decoder was asked to keep headers
    seq: int  # number within the connection, from 0, in emission order
    start: int  # stream offset (this direction) of the first byte
    end: int  # just past the last byte, payload included


@event
class ServerGreeting(Event):
    """NBDMAGIC and what follows it: the newstyle flags or the oldstyle export."""

    style: Literal["oldstyle", "newstyle", "fixed-newstyle"]
    handshake_flags: int | None = None  # newstyle only
    size: int | None = None  # oldstyle only
    transmission_flags: int | None = None  # oldstyle only (low 16 bits of its 32-bit field)
    oldstyle_high_flags: int = 0  # oldstyle: the upper 16 bits, reserved
    lost: int | None = None  # bytes of the message the capture lost (from the first lost byte on); None: none


@event
class ClientFlags(Event):
    flags: int


@event
class OptionRequest(Event):
    option: int
    length: int
    export_name: str | None = None
    info_requests: tuple[int, ...] = ()
    queries: tuple[str, ...] = ()
    problem: str | None = None  # payload disagrees with its own length fields
    lost: int | None = None  # bytes of the message the capture lost (from the first lost byte on); None: none


@event
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
    lost: int | None = None  # bytes of the message the capture lost (from the first lost byte on); None: none


@event
class ExportNameReply(Event):
    """The server's answer to NBD_OPT_EXPORT_NAME: size and flags, maybe 124 zeroes."""

    size: int
    transmission_flags: int
    zeroes: bool
    lost: int | None = None  # bytes of the message the capture lost (from the first lost byte on); None: none


@event
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


@event
class TlsStart(Event):
    """STARTTLS was acknowledged: everything after this is encrypted."""


@event
class TlsData(Event):
    nbytes: int
    # on the first encrypted bytes of a direction only: what they look like when they cannot begin a
    # TLS record (a peer that kept talking plaintext NBD after STARTTLS was acknowledged); None otherwise
    plaintext: str | None = None
    hello_version: int | None = None  # first server bytes only: the version a plaintext ServerHello selects
    # with a key log, a point (nbytes 0) where decryption's status changed: "decrypted", "no-key" or
    # "undecryptable"; ``detail`` says what was decrypted (version, suite) or why not
    decryption: str | None = None
    detail: str | None = None


@event
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
    data_start: int | None = None  # write data: where it begins (it runs to ``end``)


@event
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
    data_start: int | None = None  # read data: where it begins (it runs to ``end``)


@event
class SimpleReply(Reply):
    error: int
    data_length: int | None  # None: unknown (cookie not in flight and capture mid-stream)


@event
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
    lost: int | None = None  # bytes of the message the capture lost (from the first lost byte on); None: none


@event
class PayloadData(Event):
    """The complete payload of a write request or of read data, emitted only when
    the decoder was asked to keep data (the shadow-disk checks need it)."""

    cookie: int
    offset: int
    kind: Literal["write", "read"]
    data: bytes


@event
class Gap(Event):
    """Bytes the capture lost; ``resync`` says whether framing was lost with them, ``snapped`` that
    the snapshot length cut them off a packet (a header-only capture) rather than a packet missing."""

    nbytes: int
    resync: bool
    snapped: bool = False
    # the bytes fell inside a message decoded from the bytes before them (its ``lost`` says how many of
    # its bytes went undecoded): which kind it was, so the checks skipped with it can be named
    within: Literal["greeting", "option", "option-reply", "export-name-reply", "reply-chunk"] | None = None


@event
class Resync(Event):
    """Decoding found its footing again after skipping bytes it could not frame."""

    skipped: int
    after_gap: bool = False  # the skipped bytes followed a capture gap (not the peer's fault)


@event
class Malformed(Event):
    """Bytes that cannot be what the protocol allows at this point."""

    what: str  # short machine-readable category, e.g. "bad-magic"
    message: str
    values: tuple[tuple[str, int | str | None], ...] = ()  # (name, value) pairs, in the order reported


@event
class ConnectionEnd(Event):
    how: Literal["fin", "rst", "end-of-capture"]
    soft: bool  # NBD_CMD_DISC was sent
    by: Direction | None = None  # who closed the TCP connection first, when the capture shows it
    in_flight: tuple[tuple[int, int, int], ...] = ()  # (cookie, command, request frame)
    unparsed: tuple[tuple[Direction, int], ...] = ()  # (direction, bytes left undecoded), c2s first


# Positional builders for the decoder's per-message path (see frozen.positional): every
# argument in field order, i.e. Event's fields (dir, frame, time, phase, header, seq, start,
# end), then the class's own as declared above.
make_request = positional(Request)
make_simple_reply = positional(SimpleReply)
make_data_chunk = positional(ReplyChunk, last="data_length")  # OFFSET_DATA: the fields after are defaults
