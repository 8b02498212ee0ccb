"""Request/reply matching and reply-shape rules (spec "Transmission", "Simple
reply message", "Structured reply chunk message", "Structured reply types")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, REPLY_TYPES, Cmd, CommandFlag, ReplyType
from nbdscope.spec.codes import STATUS_REPLY_TYPES

# plain ints: comparing with enum members costs an attribute lookup through the enum class per message
_NONE, _DATA, _HOLE, _STATUS32, _STATUS64, _ERROR_OFFSET = (int(t) for t in (
    ReplyType.NONE, ReplyType.OFFSET_DATA, ReplyType.OFFSET_HOLE, ReplyType.BLOCK_STATUS, ReplyType.BLOCK_STATUS_EXT,
    ReplyType.ERROR_OFFSET))
_DF = int(CommandFlag.DF)
_READ = int(Cmd.READ)
_STATUS = STATUS_REPLY_TYPES
_CONTENT = frozenset({_DATA, _HOLE})
_CONTENT_OR_STATUS = _CONTENT | _STATUS
_LOCATED = _CONTENT | {_ERROR_OFFSET}  # chunk types with an offset into the request
_VALID_TYPES = {int(Cmd.READ): _CONTENT, int(Cmd.BLOCK_STATUS): _STATUS}


@dataclass
class _Open:
    command: int
    offset: int
    length: int
    request_frame: int
    chunks: int = 0
    content_chunks: int = 0  # OFFSET_DATA and OFFSET_HOLE chunks
    errors: int = 0
    covered: list[tuple[int, int]] = field(default_factory=list)  # read ranges delivered
    contexts: set[int] = field(default_factory=set)


class CookieReuse(Rule):
    INFO = RuleInfo("cookie-reuse", "warning", "client", "Transmission",
                    "a cookie reused while a request with that cookie is still in flight, so replies are ambiguous")
    EVENTS = (ev.Request,)

    def message(self, session: Session, event: ev.Event) -> None:
        assert isinstance(event, ev.Request)
        prior = session.in_flight.get(event.cookie)  # the session's table as it was before this request
        if prior is not None:
            self.flag(session, event, f"cookie {event.cookie:#x} reused by {COMMANDS.name(event.command)} while "
                      f"{COMMANDS.name(prior.request.command)} from frame {prior.request.frame} is unanswered",
                      cookie=event.cookie, first_frame=prior.request.frame)


class UnmatchedReply(Rule):
    INFO = RuleInfo("unmatched-reply", "error", "server", "Transmission",
                    "a reply whose cookie matches no request in flight: a double reply or an invented cookie")
    EVENTS = (ev.SimpleReply, ev.ReplyChunk)
    FOR_COMMANDS = frozenset({None})  # the decoder matched no request: command is None

    def message(self, session: Session, event: ev.Event) -> None:
        assert isinstance(event, ev.Reply)
        if event.command is not None or not session.reliable:
            return
        previous = session.recent.get(event.cookie)
        if isinstance(event, ev.ReplyChunk) and previous is not None:
            pass  # reported by bad-reply-chunk as a chunk after the final one
        elif previous is not None:
            self.flag(session, event, f"second reply for cookie {event.cookie:#x} "
                      f"({COMMANDS.name(previous)} already answered)", cookie=event.cookie)
        else:
            self.flag(session, event, f"reply for cookie {event.cookie:#x}, which no request in flight uses",
                      cookie=event.cookie)


class ReplyKind(Rule):
    INFO = RuleInfo("structured-reply-not-negotiated", "error", "either",
                    "Structured reply chunk message; Extended reply chunk message",
                    "a reply or request header style the handshake did not agree on (structured or extended "
                    "chunks without negotiation, simple replies or compact requests under extended headers)")
    EVENTS = (ev.Request, ev.SimpleReply, ev.ReplyChunk)

    def message(self, session: Session, event: ev.Event) -> None:
        if session.handshake == "unknown" or session.tls:
            return
        extended, structured = session.extended_headers, session.structured_replies
        if isinstance(event, ev.ReplyChunk):
            if event.extended and not extended:
                self.flag(session, event, "extended reply chunk although NBD_OPT_EXTENDED_HEADERS was not agreed",
                          cookie=event.cookie)
            elif not event.extended and extended:
                self.flag(session, event, "structured (20-byte) reply chunk although extended headers were agreed, "
                          "so every reply must use the extended header", cookie=event.cookie)
            elif not event.extended and not structured:
                self.flag(session, event, "structured reply chunk although NBD_OPT_STRUCTURED_REPLY was not agreed",
                          cookie=event.cookie)
        elif isinstance(event, ev.SimpleReply) and extended:
            self.flag(session, event, "simple reply although extended headers were agreed", cookie=event.cookie)
        elif isinstance(event, ev.Request) and event.extended != bool(extended):
            style = "extended (32-byte)" if event.extended else "compact (28-byte)"
            agreed = "were" if extended else "were not"
            self.flag(session, event, f"{style} request header although extended headers {agreed} agreed",
                      cookie=event.cookie)


class SimpleReplyToStructuredRead(Rule):
    INFO = RuleInfo("simple-reply-to-structured-read", "error", "server", "Structured reply chunk message",
                    "a simple reply to NBD_CMD_READ after structured replies were agreed")
    EVENTS = (ev.SimpleReply,)
    FOR_COMMANDS = frozenset({Cmd.READ})

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.SimpleReply) and event.command == Cmd.READ and session.structured_replies \
                and not session.extended_headers:
            self.flag(session, event, f"simple reply (error {event.error}) to NBD_CMD_READ cookie {event.cookie:#x} "
                      "although structured replies were agreed", cookie=event.cookie)


class BadReplyChunk(Rule):
    INFO = RuleInfo("bad-reply-chunk", "error", "server", "Structured reply chunk message; Structured reply types",
                    "a reply chunk that breaks the chunk rules: order, DONE, coverage of a read, offsets outside "
                    "the request, lengths, or a type not valid for the command")
    EVENTS = (ev.ReplyChunk, ev.ConnectionEnd)  # replies carry their request's fields

    def __init__(self) -> None:
        super().__init__()
        self.open: dict[str, dict[int, _Open]] = {}  # session -> cookie -> what its reply delivered so far

    def message(self, session: Session, event: ev.Event) -> None:
        opened = self.open.get(session.id)
        if opened is None:
            opened = self.open[session.id] = {}
        if isinstance(event, ev.ConnectionEnd):
            self._ended(session, event, opened)
            return
        assert isinstance(event, ev.ReplyChunk)
        cookie, rtype, command = event.cookie, event.reply_type, event.command
        o = opened.get(cookie)
        if (rtype == _DATA and event.completes and command == _READ and event.problem is None
                and event.offset == event.request_offset and event.data_length == event.request_length
                and (o is None or o.request_frame != event.request_frame)):
            if o is not None:
                del opened[cookie]
            return  # the usual read: all its data in one chunk, nothing else to check
        if command is None:
            if cookie in session.recent and session.reliable:
                self.flag(session, event, f"{REPLY_TYPES.name(rtype)} for cookie {cookie:#x} after its reply was "
                          "already complete (a chunk after the one marked DONE)", cookie=cookie)
            return
        if o is None or o.request_frame != event.request_frame:  # the first chunk, or the cookie was reused
            o = opened[cookie] = _Open(command, event.request_offset or 0, event.request_length or 0,
                                       event.request_frame or 0)
        o.chunks += 1
        self._check_kind(session, event, command, o)
        self._check_extent(session, event, o)
        if event.completes:
            del opened[cookie]
            self._complete(session, event, o)

    def _ended(self, session: Session, event: ev.ConnectionEnd, opened: dict[int, _Open]) -> None:
        if event.how == "end-of-capture" or event.by == "c2s" or session.proxy_closed:
            del self.open[session.id]  # the capture, the client or the proxy stopped it mid-reply: not the server
            return
        for cookie, o in opened.items():
            if o.chunks:
                self.flag(session, event, f"connection ended after {o.chunks} chunk(s) of the reply to "
                          f"{COMMANDS.name(o.command)} cookie {cookie:#x} without a chunk marked DONE",
                          cookie=cookie)
        del self.open[session.id]

    def _check_kind(self, session: Session, event: ev.ReplyChunk, command: int, o: _Open) -> None:
        """The chunk's type against the command, the DONE flag and the header style agreed."""
        rtype = event.reply_type
        if event.problem:  # a decoder problem: say which chunk of which request
            self._bad(session, event, f"{REPLY_TYPES.name(rtype)} for {COMMANDS.name(command)} "
                      f"(cookie {event.cookie:#x}): {event.problem}")
        if rtype in _CONTENT_OR_STATUS and rtype not in _VALID_TYPES.get(command, ()):
            self._bad(session, event, f"{REPLY_TYPES.name(rtype)} is not a valid reply to {COMMANDS.name(command)}")
        if rtype == _NONE and not event.completes:
            self._bad(session, event, "NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE")
        if (rtype == _STATUS32 and session.extended_headers) or (rtype == _STATUS64 and not session.extended_headers):
            self._bad(session, event, f"{REPLY_TYPES.name(rtype)} does not match the header style agreed")
        if event.error is not None:
            o.errors += 1

    def _check_extent(self, session: Session, event: ev.ReplyChunk, o: _Open) -> None:
        """What the chunk covers: inside the request, content not fragmented under DF, one status per context."""
        rtype = event.reply_type
        if rtype in _CONTENT:
            if rtype == _HOLE and event.hole_length == 0:
                self._bad(session, event, "NBD_REPLY_TYPE_OFFSET_HOLE with a hole size of 0 (must be nonzero)")
            o.content_chunks += 1
            if o.content_chunks == 2 and (event.request_flags or 0) & _DF:
                self._bad(session, event, "a second content chunk for a read sent with NBD_CMD_FLAG_DF "
                          "(the reply must not be fragmented)")
        if event.offset is not None and rtype in _LOCATED:
            extent = event.data_length or event.hole_length or (1 if rtype == _ERROR_OFFSET else 0)
            if event.offset < o.offset or event.offset + extent > o.offset + o.length:
                self._bad(session, event, f"{REPLY_TYPES.name(rtype)} covers {event.offset}+{extent}, outside the "
                          f"request {o.offset}+{o.length}", offset=event.offset, length=extent)
            elif rtype != _ERROR_OFFSET:
                o.covered.append((event.offset, event.offset + extent))
        if rtype in _STATUS and event.context_id is not None:
            if event.context_id in o.contexts:
                self._bad(session, event, f"second status chunk for context {event.context_id} in one reply")
            o.contexts.add(event.context_id)

    def _bad(self, session: Session, event: ev.ReplyChunk, message: str, **values: Any) -> None:
        self.flag(session, event, message, blame=None, severity=None, cookie=event.cookie, **values)

    def _complete(self, session: Session, event: ev.ReplyChunk, o: _Open) -> None:
        if o.errors:
            return
        if o.command == Cmd.READ and session.reliable:
            ranges = sorted(o.covered)
            pos, overlap = o.offset, None
            gaps = 0
            for lo, hi in ranges:
                if lo < pos:
                    overlap = (lo, hi)
                elif lo > pos:
                    gaps += lo - pos
                pos = max(pos, hi)
            gaps += max(0, o.offset + o.length - pos)
            if overlap:
                self.flag(session, event, f"successful read reply delivers {overlap[0]}..{overlap[1]} more than "
                          "once", cookie=event.cookie)
            if gaps:
                self.flag(session, event, f"successful read reply leaves {gaps} of {o.length} requested bytes "
                          "uncovered by data or hole chunks", cookie=event.cookie, missing=gaps)
        if o.command == Cmd.BLOCK_STATUS and session.meta_contexts:
            missing = set(session.meta_contexts) - o.contexts
            if missing and not (event.request_flags or 0) & CommandFlag.PAYLOAD_LEN:  # payload form narrows it
                self.flag(session, event, "successful block status reply lacks a chunk for context(s) "
                          + ", ".join(f"{c} ({session.meta_contexts[c]})" for c in sorted(missing)),
                          cookie=event.cookie)
