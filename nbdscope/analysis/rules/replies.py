"""Request/reply matching and reply-style rules (spec "Transmission", "Simple reply message",
"Structured reply chunk message"); the chunk rules are in chunks.py."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.rules.chunks import BadReplyChunk
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, Cmd, Opt

_READ = int(Cmd.READ)

__all__ = ["BadReplyChunk", "CookieReuse", "ReplyKind", "SimpleReplyToStructuredRead", "UnmatchedReply"]

# Checks whose statements sit in another helper's part of the table (extended headers) cite no row yet;
# they state the severity of the MUST they enforce until the lead links them.
_EXT_NOTE = "the extended-header rows (ext.*) are linked at merge"


class CookieReuse(Rule):
    INFO = RuleInfo("cookie-reuse", "warning", "client", "Transmission",
                    "a cookie reused while a request with that cookie is still in flight, so replies are ambiguous")
    CHECKS = (
        Check("in-flight", ("transmission.2",), "a request reuses the cookie of a request still unanswered",
              consequence="the client cannot tell which reply answers which request; data of one read may land "
                          "in the buffer of the other",
              fix="client: keep a cookie unused until its reply has completed (a counter or a free list)",
              example="cookie 0x1 reused by NBD_CMD_READ while NBD_CMD_WRITE from frame 12 is unanswered"),
    )
    EVENTS = (ev.Request,)

    def message(self, session: Session, event: ev.Event) -> None:
        assert isinstance(event, ev.Request)
        prior = session.in_flight.get(event.cookie)  # the session's table as it was before this request
        if prior is not None:
            self.flag(session, event, f"cookie {event.cookie:#x} reused by {COMMANDS.name(event.command)} while "
                      f"{COMMANDS.name(prior.request.command)} from frame {prior.request.frame} is unanswered",
                      check="in-flight", cookie=event.cookie, first_frame=prior.request.frame)


class UnmatchedReply(Rule):
    INFO = RuleInfo("unmatched-reply", "error", "server", "Transmission",
                    "a reply whose cookie matches no request in flight: a double reply or an invented cookie")
    CHECKS = (
        Check("unknown-cookie", ("transmission.3",), "a reply carries a cookie no request in flight used",
              consequence="the client finds no request for the reply and must drop the connection; a reply "
                          "meant for another request is lost",
              fix="server: copy the request's cookie into its reply unchanged (it is opaque: no byte swapping, "
                  "no truncation to 32 bits)",
              example="reply for cookie 0x63, which no request in flight uses"),
        Check("second-reply", ("transmission.3",), "a second reply for a request already answered",
              consequence="the client takes the second reply for another request or drops the connection",
              fix="server: send exactly one simple reply (or one DONE-terminated structured reply) per request",
              example="second reply for cookie 0x1 (NBD_CMD_FLUSH already answered)"),
    )
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
                      f"({COMMANDS.name(previous)} already answered)", check="second-reply", cookie=event.cookie)
        else:
            self.flag(session, event, f"reply for cookie {event.cookie:#x}, which no request in flight uses",
                      check="unknown-cookie", cookie=event.cookie)


class ReplyKind(Rule):
    INFO = RuleInfo("structured-reply-not-negotiated", "error", "either",
                    "Structured reply chunk message; Extended reply chunk message",
                    "a reply or request header style the handshake did not agree on (structured or extended "
                    "chunks without negotiation, simple replies or compact requests under extended headers)")
    CHECKS = (
        Check("structured-without-negotiation",
              ("transmission.1", "simple-reply.1", "chunk.1", "cmd-read.1", "cmd-read.4"),
              "a structured reply chunk although NBD_OPT_STRUCTURED_REPLY was not agreed",
              consequence="a client that did not ask for structured replies reads the chunk header as a simple "
                          "reply with a bad magic and drops the connection",
              fix="server: send structured chunks only after acknowledging NBD_OPT_STRUCTURED_REPLY",
              example="structured reply chunk although NBD_OPT_STRUCTURED_REPLY was not agreed"),
        Check("extended-without-negotiation", (), "an extended reply chunk although extended headers were not "
              "agreed (" + _EXT_NOTE + ")", severity="error", blame="server",
              consequence="the client cannot parse the 32-byte header and drops the connection",
              fix="server: use extended headers only after acknowledging NBD_OPT_EXTENDED_HEADERS",
              example="extended reply chunk although NBD_OPT_EXTENDED_HEADERS was not agreed"),
        Check("request-header-style", (), "an extended request header from a client that never asked for "
              "extended headers (" + _EXT_NOTE + ")", severity="error", blame="client",
              consequence="the server misframes the request stream and drops the connection",
              fix="client: send 32-byte requests only after NBD_OPT_EXTENDED_HEADERS was acknowledged",
              example="extended (32-byte) request header although extended headers were not agreed"),
    )
    EVENTS = (ev.Request, ev.ReplyChunk)

    def message(self, session: Session, event: ev.Event) -> None:
        if session.handshake == "unknown" or session.hidden:
            return
        extended, structured = session.extended_headers, session.structured_replies
        # the header style under extended headers is extended-headers' to judge (compact requests, simple
        # replies, 20-byte chunks, extended READ replies, extended requests after a refusal)
        if isinstance(event, ev.ReplyChunk):
            if event.extended and not extended:
                if event.command != _READ:
                    self.flag(session, event, "extended reply chunk although NBD_OPT_EXTENDED_HEADERS was not "
                              "agreed", check="extended-without-negotiation", cookie=event.cookie)
            elif not event.extended and not extended and not structured:
                self.flag(session, event, "structured reply chunk although NBD_OPT_STRUCTURED_REPLY was not agreed",
                          check="structured-without-negotiation", cookie=event.cookie)
        elif isinstance(event, ev.Request) and event.extended and not extended \
                and Opt.EXTENDED_HEADERS not in session.handshake_log.asked:
            self.flag(session, event, "extended (32-byte) request header although the client never asked for "
                      "extended headers", check="request-header-style", cookie=event.cookie)


class SimpleReplyToStructuredRead(Rule):
    INFO = RuleInfo("simple-reply-to-structured-read", "error", "server", "Structured reply chunk message",
                    "a simple reply to NBD_CMD_READ after structured replies were agreed")
    CHECKS = (
        Check("with-data", ("chunk.2", "chunk.3", "cmd-read.1", "cmd-read.9"),
              "a successful simple reply (with its data) to a read although structured replies were agreed",
              consequence="a client that relies on structured replies to frame the stream reads the data as "
                          "headers and drops the connection",
              fix="server: once NBD_OPT_STRUCTURED_REPLY is acknowledged, answer every read with "
                  "NBD_REPLY_TYPE_OFFSET_DATA/OFFSET_HOLE chunks ending in DONE",
              example="simple reply with 4096 bytes of data to NBD_CMD_READ cookie 0x2 although structured "
                      "replies were agreed"),
        Check("with-error", ("chunk.3", "cmd-read.1", "cmd-read.9"),
              "a simple error reply to a read although structured replies were agreed (even early errors "
              "must be error chunks)",
              consequence="clients that expect only chunks for reads may misframe or reject the reply",
              fix="server: report read errors (including early NBD_EINVAL) as NBD_REPLY_TYPE_ERROR chunks",
              example="simple reply (error 22) to NBD_CMD_READ cookie 0x2 although structured replies were agreed"),
    )
    EVENTS = (ev.SimpleReply,)
    FOR_COMMANDS = frozenset({Cmd.READ})

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.SimpleReply) and event.command == Cmd.READ and session.structured_replies \
                and not session.extended_headers:
            if event.error:
                self.flag(session, event, f"simple reply (error {event.error}) to NBD_CMD_READ cookie "
                          f"{event.cookie:#x} although structured replies were agreed", check="with-error",
                          cookie=event.cookie, error=event.error)
            else:
                self.flag(session, event, f"simple reply with {event.data_length} bytes of data to NBD_CMD_READ "
                          f"cookie {event.cookie:#x} although structured replies were agreed", check="with-data",
                          cookie=event.cookie)
