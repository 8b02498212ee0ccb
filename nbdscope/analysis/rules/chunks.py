"""The structured reply chunk rule (spec "Structured reply chunk message", "Structured reply flags",
"Structured reply types", and NBD_CMD_READ's structured replies): each chunk's shape, and what the
chunks of one reply deliver together."""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Any

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.rules.chunk_checks import CHECKS
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, REPLY_TYPES, Cmd, CommandFlag, Errno, ReplyFlag, ReplyType, TransmissionFlag
from nbdscope.spec.codes import MAX_STRING, STATUS_REPLY_TYPES, is_reply_type_error

# plain ints: comparing with enum members costs an attribute lookup through the enum class per message
_NONE, _DATA, _HOLE, _STATUS32, _STATUS64, _ERROR, _ERROR_OFFSET = (int(t) for t in (
    ReplyType.NONE, ReplyType.OFFSET_DATA, ReplyType.OFFSET_HOLE, ReplyType.BLOCK_STATUS, ReplyType.BLOCK_STATUS_EXT,
    ReplyType.ERROR, ReplyType.ERROR_OFFSET))
_DONE = int(ReplyFlag.DONE)
_DF = int(CommandFlag.DF)
_READ, _BLOCK_STATUS = int(Cmd.READ), int(Cmd.BLOCK_STATUS)
_EOVERFLOW = int(Errno.EOVERFLOW)
_STATUS = STATUS_REPLY_TYPES
_CONTENT = frozenset({_DATA, _HOLE})
_KNOWN = frozenset({_NONE, _DATA, _HOLE, _STATUS32, _STATUS64})
# "Valid as a reply to": every command takes NONE and ERROR; these types only the commands listed
_VALID_FOR: dict[int, frozenset[int]] = {
    _DATA: frozenset({_READ}), _HOLE: frozenset({_READ}),
    _STATUS32: frozenset({_BLOCK_STATUS}), _STATUS64: frozenset({_BLOCK_STATUS}),
    _ERROR_OFFSET: frozenset(int(c) for c in (Cmd.READ, Cmd.WRITE, Cmd.TRIM, Cmd.CACHE, Cmd.WRITE_ZEROES,
                                              Cmd.BLOCK_STATUS)),
}
_MIN_LENGTH = {_ERROR: 6, _ERROR_OFFSET: 14}
DF_GUARANTEE = 65536  # unfragmented reads up to this length must be supported


@dataclass
class _Open:
    """What one reply delivered so far."""

    command: int
    offset: int
    length: int
    request_frame: int
    flags: int
    chunks: int = 0
    content_type: int | None = None  # of the first content chunk
    content_chunks: int = 0
    errors: int = 0  # error chunks of any type
    generic_errors: int = 0  # NBD_REPLY_TYPE_ERROR
    overflow: bool = False  # an error chunk said NBD_EOVERFLOW
    covered: list[tuple[int, int]] = field(default_factory=list)  # content ranges, sorted, not overlapping
    error_offsets: list[int] = field(default_factory=list)  # sorted
    blamed_ranges: dict[tuple[int, int], int] = field(default_factory=dict)  # content range -> its error offset
    contexts: set[int] = field(default_factory=set)
    flawed: bool = False  # a content chunk was already reported: coverage would only repeat it


class BadReplyChunk(Rule):
    INFO = RuleInfo("bad-reply-chunk", "error", "server", "Structured reply chunk message; Structured reply types",
                    "a reply chunk that breaks the chunk rules: order, DONE, coverage of a read, offsets outside "
                    "the request, lengths, or a type not valid for the command")
    CHECKS = CHECKS
    EVENTS = (ev.ReplyChunk, ev.ConnectionEnd)  # replies carry their request's fields

    def __init__(self) -> None:
        super().__init__()
        self.open: dict[str, dict[int, _Open]] = {}  # session -> cookie -> what its reply delivered so far
        self.hinted: dict[str, int] = {}  # session -> undefined reply-flag bits already reported

    def settled(self, session: Session) -> bool:
        """No reply of this session is open here (then a whole read in one DONE chunk passes unremarked):
        the compiled path asks before it takes a connection over."""
        return not self.open.get(session.id)

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.ConnectionEnd):
            # a reply cut off by the close is no chunk error: the disconnect (or the capture) is the story
            self.open.pop(session.id, None)
            self.hinted.pop(session.id, None)
            return
        assert isinstance(event, ev.ReplyChunk)
        opened = self.open.get(session.id)
        if opened is None:
            opened = self.open[session.id] = {}
        cookie, rtype, command, flags = event.cookie, event.reply_type, event.command, event.flags
        o = opened.get(cookie)
        if (rtype == _DATA and flags == _DONE and command == _READ and event.problem is None
                and event.offset == event.request_offset and event.data_length == event.request_length
                and (o is None or o.request_frame != event.request_frame)):
            if o is not None:
                del opened[cookie]
            if session.max_payload and event.data_length and event.data_length > session.max_payload:
                self._too_big(session, event)
            return  # the usual read: all its data in one chunk, nothing else to check
        if flags & ~_DONE:
            self._hint(session, event)
        self._shape(session, event)
        if command is None:
            if cookie in session.recent and session.reliable:
                self.flag(session, event, f"{REPLY_TYPES.name(rtype)} for cookie {cookie:#x} after its reply was "
                          "already complete (a chunk after the one marked DONE)", check="after-done", cookie=cookie)
            return
        flight = session.in_flight.get(cookie)
        if flight is not None and flight.ambiguous:
            opened.pop(cookie, None)  # the cookie was reused: which request this answers is unknown
            return
        if o is None or o.request_frame != event.request_frame:  # the first chunk, or the cookie was reused
            o = opened[cookie] = _Open(command, event.request_offset or 0, event.request_length or 0,
                                       event.request_frame or 0, event.request_flags or 0)
        o.chunks += 1
        self._against_request(session, event, o)
        if event.completes:
            del opened[cookie]
            self._complete(session, event, o)

    # ------------------------------------------------------------ one chunk by itself

    def _shape(self, session: Session, event: ev.ReplyChunk) -> None:
        """What a chunk must be whatever it answers: lengths, DONE on NONE, error values, payload limit."""
        rtype, length = event.reply_type, event.length
        if rtype == _NONE:
            if length:
                self._bad(session, event, "none-length", f"NBD_REPLY_TYPE_NONE with length {length} (must be 0)")
            if not event.completes:
                self._bad(session, event, "none-without-done", "NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE")
        elif rtype in _CONTENT:
            self._content_shape(session, event)
        elif is_reply_type_error(rtype):
            self._error_shape(session, event)
        elif rtype in _STATUS:
            pass  # status chunks: their shape is unaligned-extent's, their header style extended-headers'
        elif rtype not in _KNOWN:
            self._bad(session, event, "unknown-type", f"reply chunk type {rtype} is not defined and has no error "
                      "bit (15); a client must hang up on it", reply_type=rtype)

    def _content_shape(self, session: Session, event: ev.ReplyChunk) -> None:
        length = event.length
        if event.reply_type == _DATA:
            if length < 9:
                self._bad(session, event, "data-length", f"NBD_REPLY_TYPE_OFFSET_DATA with length {length} (needs "
                          "8 bytes of offset and at least one byte of data)", length=length)
            elif session.max_payload and event.data_length and event.data_length > session.max_payload:
                self._too_big(session, event)
        elif length != 12:
            self._bad(session, event, "hole-length", f"NBD_REPLY_TYPE_OFFSET_HOLE with length {length} "
                      "(must be 12)", length=length)
        elif event.hole_length == 0:
            self._bad(session, event, "empty-hole", "NBD_REPLY_TYPE_OFFSET_HOLE with a hole size of 0 "
                      "(must be nonzero)")

    def _error_shape(self, session: Session, event: ev.ReplyChunk) -> None:
        rtype, length = event.reply_type, event.length
        need = _MIN_LENGTH.get(rtype, 6)
        if length < need:
            self._bad(session, event, "error-length", f"{REPLY_TYPES.name(rtype)} with length {length} (at least "
                      f"{need})", length=length)
            return
        if event.error == 0:
            self._bad(session, event, "error-zero", f"{REPLY_TYPES.name(rtype)} carries error value 0 (an error "
                      "chunk must name a nonzero error)")
        if event.problem:
            self._bad(session, event, "message-length", f"{REPLY_TYPES.name(rtype)}: {event.problem}", length=length)
        elif event.message is not None and len(event.message.encode()) > MAX_STRING:
            self._bad(session, event, "message-too-long", f"{REPLY_TYPES.name(rtype)} message of "
                      f"{len(event.message.encode())} bytes (the limit is {MAX_STRING})")

    def _hint(self, session: Session, event: ev.ReplyChunk) -> None:
        bits = event.flags & ~_DONE
        seen = self.hinted.get(session.id, 0)
        if bits & ~seen:  # once per session and bit: a hint bit is usually set on every chunk
            self.hinted[session.id] = seen | bits
            self._bad(session, event, "undefined-flag", f"reply chunk sets reply flag bit(s) "
                      f"{', '.join(str(n) for n in range(16) if bits >> n & 1)} that the spec does not define "
                      "(allowed for hints a client can ignore)", value=event.flags)

    def _too_big(self, session: Session, event: ev.ReplyChunk) -> None:
        self._bad(session, event, "over-max-payload", f"NBD_REPLY_TYPE_OFFSET_DATA carries {event.data_length} "
                  f"bytes, more than the advertised maximum payload {session.max_payload}",
                  length=event.data_length, max_payload=session.max_payload)

    # ------------------------------------------------------------ a chunk within its reply

    def _against_request(self, session: Session, event: ev.ReplyChunk, o: _Open) -> None:
        rtype, command = event.reply_type, o.command
        valid = _VALID_FOR.get(rtype)
        if valid is not None and command not in valid:
            self._bad(session, event, "wrong-type", f"{REPLY_TYPES.name(rtype)} is not a valid reply to "
                      f"{COMMANDS.name(command)}", reply_type=rtype)
            return
        if is_reply_type_error(rtype):
            self._error_chunk(session, event, o)
        elif rtype in _CONTENT:
            self._content(session, event, o)

    def _error_chunk(self, session: Session, event: ev.ReplyChunk, o: _Open) -> None:
        rtype = event.reply_type
        o.errors += 1
        if event.error == _EOVERFLOW:
            self._overflow(session, event, o)
        if rtype == _ERROR:
            o.generic_errors += 1
            if o.generic_errors == 2:
                self._bad(session, event, "error-repeated", "a second NBD_REPLY_TYPE_ERROR in one reply")
            elif o.command == _READ and o.error_offsets and o.generic_errors == 1:
                self._bad(session, event, "mixed-errors", "NBD_REPLY_TYPE_ERROR in a read reply that also has "
                          "NBD_REPLY_TYPE_ERROR_OFFSET chunks")
        elif rtype == _ERROR_OFFSET and event.offset is not None:
            self._error_offset(session, event, o, event.offset)

    def _overflow(self, session: Session, event: ev.ReplyChunk, o: _Open) -> None:
        o.overflow = True
        if o.command == _READ and o.flags & _DF and o.length <= DF_GUARANTEE \
                and session.has_flag(TransmissionFlag.SEND_DF):
            self._bad(session, event, "df-overflow-small", f"NBD_EOVERFLOW for an unfragmented (DF) read of "
                      f"{o.length} bytes; reads up to {DF_GUARANTEE} bytes must be served whole", length=o.length)
        elif o.flags & _DF and o.content_chunks:
            self._overflow_with_content(session, event)

    def _error_offset(self, session: Session, event: ev.ReplyChunk, o: _Open, off: int) -> None:
        if not o.offset <= off < o.offset + o.length:
            self._bad(session, event, "error-offset-outside", f"NBD_REPLY_TYPE_ERROR_OFFSET at {off}, outside the "
                      f"request {o.offset}+{o.length}", offset=off)
            return
        if o.command == _READ and o.generic_errors and not o.error_offsets:
            self._bad(session, event, "mixed-errors", "NBD_REPLY_TYPE_ERROR_OFFSET in a read reply that also has "
                      "an NBD_REPLY_TYPE_ERROR chunk")
        i = bisect_left(o.error_offsets, off)
        if i < len(o.error_offsets) and o.error_offsets[i] == off:
            self._bad(session, event, "error-offset-repeated", f"NBD_REPLY_TYPE_ERROR_OFFSET repeats offset {off}",
                      offset=off)
            return
        o.error_offsets.insert(i, off)
        span = self._containing(o.covered, off)
        if span is not None:
            earlier = o.blamed_ranges.setdefault(span, off)
            if earlier != off:
                self._bad(session, event, "error-offsets-in-one-chunk", f"error offsets {earlier} and {off} both "
                          f"fall in the content chunk {span[0]}..{span[1]}", offset=off)

    @staticmethod
    def _containing(covered: list[tuple[int, int]], off: int) -> tuple[int, int] | None:
        i = bisect_left(covered, (off + 1,)) - 1
        return covered[i] if i >= 0 and covered[i][0] <= off < covered[i][1] else None

    def _content(self, session: Session, event: ev.ReplyChunk, o: _Open) -> None:
        rtype = event.reply_type
        o.content_chunks += 1
        if o.content_type is None:
            o.content_type = rtype
        elif o.flags & _DF and o.content_chunks == 2:
            if rtype != o.content_type:
                self._bad(session, event, "df-data-and-hole", "a read sent with NBD_CMD_FLAG_DF answered with both "
                          "data and hole chunks (the zeroes must be sent as data in one chunk)")
            else:
                self._bad(session, event, "df-fragmented", "a second content chunk for a read sent with "
                          "NBD_CMD_FLAG_DF (the reply must not be fragmented)")
        if o.overflow and o.flags & _DF:
            self._overflow_with_content(session, event)
        if event.offset is None:
            return
        extent = event.data_length or event.hole_length or 0
        if not extent:
            return  # a length error, reported by _shape
        lo, hi = event.offset, event.offset + extent
        if lo < o.offset or hi > o.offset + o.length:
            o.flawed = True
            self._bad(session, event, "content-outside", f"{REPLY_TYPES.name(rtype)} covers {lo}+{extent}, outside "
                      f"the request {o.offset}+{o.length}", offset=lo, length=extent)
            return
        j = bisect_left(o.error_offsets, lo)
        if j < len(o.error_offsets) and o.error_offsets[j] < hi:
            o.flawed = True
            self._bad(session, event, "content-after-error", f"{REPLY_TYPES.name(rtype)} covers {lo}+{extent}, "
                      f"which includes the offset {o.error_offsets[j]} of an earlier error chunk", offset=lo,
                      length=extent)
            return
        i = bisect_left(o.covered, (lo,))
        clash = next((c for c in o.covered[max(0, i - 1):i + 1] if c[0] < hi and lo < c[1]), None)
        if clash is not None:
            o.flawed = True
            self._bad(session, event, "overlap", f"{REPLY_TYPES.name(rtype)} covers {lo}..{hi}, overlapping the "
                      f"earlier content chunk {clash[0]}..{clash[1]}", offset=lo, length=extent)
            return
        insort(o.covered, (lo, hi))

    def _overflow_with_content(self, session: Session, event: ev.ReplyChunk) -> None:
        self._bad(session, event, "overflow-with-content", "a DF read refused with NBD_EOVERFLOW also got a "
                  "content chunk")

    def _complete(self, session: Session, event: ev.ReplyChunk, o: _Open) -> None:
        if o.errors:
            return
        if o.command == _READ and session.reliable and not o.flawed:
            pos, gaps = o.offset, 0
            for lo, hi in o.covered:
                gaps += max(0, lo - pos)
                pos = max(pos, hi)
            gaps += max(0, o.offset + o.length - pos)
            if gaps:
                self._bad(session, event, "incomplete", f"successful read reply leaves {gaps} of {o.length} "
                          "requested bytes uncovered by data or hole chunks", missing=gaps)
        # a status chunk per selected context, once each: block-status's (metadata.py)

    def _bad(self, session: Session, event: ev.ReplyChunk, check: str, message: str, **values: Any) -> None:
        self.flag(session, event, message, check=check, cookie=event.cookie, **values)
