"""Extended headers in transmission (branch extension-ext-header of doc/proto.md): which header
style each side must use once NBD_OPT_EXTENDED_HEADERS was or was not agreed, the payload/effect
length of extended requests, the offset echoed by extended reply chunks, NBD_REPLY_TYPE_BLOCK_STATUS_EXT
and the payload form of NBD_CMD_BLOCK_STATUS.

Checks run only when the handshake was seen in plaintext: a capture that began mid-stream does not
say what was agreed, and after STARTTLS nothing is decoded."""

from __future__ import annotations

from dataclasses import dataclass, field

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.rules.extended_checks import HEADER_CHECKS
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, Cmd, CommandFlag, Opt, Rep, ReplyType, TransmissionFlag
from nbdscope.spec.codes import is_rep_error

_PAYLOAD_LEN = int(CommandFlag.PAYLOAD_LEN)
_WRITE, _READ, _STATUS = int(Cmd.WRITE), int(Cmd.READ), int(Cmd.BLOCK_STATUS)
_STATUS32, _STATUS64 = int(ReplyType.BLOCK_STATUS), int(ReplyType.BLOCK_STATUS_EXT)
_STATUS_PAYLOAD = int(TransmissionFlag.BLOCK_STATUS_PAYLOAD)
_U32 = 0xFFFFFFFF
MAX_DESCRIPTORS = 1 << 20  # more than this many extents are not worth keeping for the count check


def _status_is_32_bits(context: str | None) -> bool:
    """Contexts known to carry only 32 bits of status: every one of the base: namespace."""
    return context is not None and context.startswith("base:")


@dataclass
class _Negotiated:
    """What the handshake of one session said about extended headers, as far as this rule needs."""

    refused: int | None = None  # frame of the server's error reply to NBD_OPT_EXTENDED_HEADERS
    bad_ids: dict[int, str] = field(default_factory=dict)  # BLOCK_STATUS payload form cookie -> what is wrong


class ExtendedHeaders(Rule):
    INFO = RuleInfo("extended-headers", "error", "either", "Request message; Extended reply chunk message; "
                    "NBD_REPLY_TYPE_BLOCK_STATUS_EXT; NBD_CMD_BLOCK_STATUS (extension-ext-header)",
                    "extended headers misused in transmission: the wrong header style for what was agreed, "
                    "NBD_CMD_FLAG_PAYLOAD_LEN misused, extended chunks echoing the wrong offset, malformed or "
                    "misplaced NBD_REPLY_TYPE_BLOCK_STATUS_EXT, the BLOCK_STATUS payload form misused")
    CHECKS = HEADER_CHECKS
    EVENTS = (ev.OptionReply, ev.TransmissionStart, ev.Request, ev.SimpleReply, ev.ReplyChunk,
              ev.ConnectionEnd)

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, _Negotiated] = {}

    def message(self, session: Session, event: ev.Event) -> None:
        cls = type(event)
        if not session.extended_headers and (
                cls is ev.SimpleReply
                or (cls is ev.Request and not event.extended and not event.flags & _PAYLOAD_LEN)  # type: ignore[attr-defined]
                or (cls is ev.ReplyChunk and not event.extended and event.reply_type != _STATUS64)):  # type: ignore[attr-defined]
            return  # the common case, compact headers as agreed: nothing to judge (one test per message)
        st = self.state.get(session.id)
        if st is None:
            st = self.state[session.id] = _Negotiated()
        if isinstance(event, ev.ConnectionEnd):
            del self.state[session.id]
            return
        if isinstance(event, ev.OptionReply):
            self._haggling(st, event)
            return
        if session.handshake == "unknown" or session.hidden or session.extended_headers is None:
            return
        if isinstance(event, ev.TransmissionStart):
            self._flags(session, event)
        elif isinstance(event, ev.Request):
            self._request(session, st, event)
        elif isinstance(event, ev.SimpleReply):
            if session.extended_headers:
                self.flag(session, event, f"simple reply (error {event.error}) to "
                          f"{_command(event.command)} cookie {event.cookie:#x} although extended headers were "
                          "agreed, so every reply must be an extended chunk", check="simple-reply",
                          cookie=event.cookie)
        elif isinstance(event, ev.ReplyChunk):
            self._chunk(session, event)

    # ------------------------------------------------------------ handshake

    @staticmethod
    def _haggling(st: _Negotiated, event: ev.OptionReply) -> None:
        """Remember a refusal of NBD_OPT_EXTENDED_HEADERS (a later acknowledgement forgets it)."""
        if event.option == Opt.EXTENDED_HEADERS and is_rep_error(event.reply):
            st.refused = event.frame
        elif event.option == Opt.EXTENDED_HEADERS and event.reply == Rep.ACK:
            st.refused = None

    def _flags(self, session: Session, event: ev.TransmissionStart) -> None:
        flags = event.transmission_flags
        if flags is None or not flags & _STATUS_PAYLOAD:
            return
        if not event.extended_headers:
            self.flag(session, event, f"transmission flags {flags:#06x} advertise NBD_FLAG_BLOCK_STATUS_PAYLOAD "
                      "(bit 12) although extended headers were not agreed", check="block-status-payload-unagreed",
                      transmission_flags=flags)
        elif event.how == "go" and not event.meta_contexts:
            self.flag(session, event, f"NBD_OPT_GO advertised NBD_FLAG_BLOCK_STATUS_PAYLOAD (flags {flags:#06x}) "
                      "although the client selected no metadata context", check="block-status-payload-no-contexts",
                      transmission_flags=flags)

    # ------------------------------------------------------------ requests

    def _request(self, session: Session, st: _Negotiated, event: ev.Request) -> None:
        name, cookie = COMMANDS.name(event.command), event.cookie
        payload_len = bool(event.flags & _PAYLOAD_LEN)
        if session.extended_headers and not event.extended:
            self.flag(session, event, f"compact (28-byte) {name} request cookie {cookie:#x} although extended "
                      "headers were agreed", check="compact-request", cookie=cookie)
            return
        if not session.extended_headers:
            if event.extended and st.refused is not None:
                self.flag(session, event, f"extended (32-byte) {name} request cookie {cookie:#x} although the "
                          f"server refused NBD_OPT_EXTENDED_HEADERS in frame {st.refused}",
                          check="extended-request-refused", cookie=cookie, refused_frame=st.refused)
            elif not event.extended and payload_len:
                self.flag(session, event, f"compact {name} request cookie {cookie:#x} sets NBD_CMD_FLAG_PAYLOAD_LEN, "
                          "which only extended requests may use", check="payload-len-compact", cookie=cookie,
                          flags=event.flags)
            return
        if event.command == _WRITE and not payload_len:
            self.flag(session, event, f"extended NBD_CMD_WRITE cookie {cookie:#x} ({event.length} bytes) without "
                      "NBD_CMD_FLAG_PAYLOAD_LEN", check="write-without-payload-len", cookie=cookie,
                      length=event.length)
        elif event.command == _READ and event.length > _U32:
            self.flag(session, event, f"NBD_CMD_READ cookie {cookie:#x} asks for {event.length} bytes, more than "
                      "32 bits can express", check="read-over-32-bits", cookie=cookie, length=event.length)
        elif event.command == _STATUS and payload_len:
            self._payload_form(session, st, event)

    def _payload_form(self, session: Session, st: _Negotiated, event: ev.Request) -> None:
        """NBD_CMD_BLOCK_STATUS with NBD_CMD_FLAG_PAYLOAD_LEN: effect length and context ids in a payload."""
        cookie, n = event.cookie, event.payload_length
        if not session.has_flag(_STATUS_PAYLOAD):
            self.flag(session, event, f"NBD_CMD_BLOCK_STATUS cookie {cookie:#x} uses the payload form although "
                      "the server did not advertise NBD_FLAG_BLOCK_STATUS_PAYLOAD",
                      check="payload-form-unadvertised", cookie=cookie)
        if n < 8 or (n - 8) % 4:
            self.flag(session, event, f"NBD_CMD_BLOCK_STATUS cookie {cookie:#x} carries a {n}-byte payload; the "
                      "payload form is 8 bytes of effect length and 4 bytes per context id",
                      check="payload-form-size", cookie=cookie, payload_length=n)
            return
        if event.effect_length == 0:
            self.flag(session, event, f"NBD_CMD_BLOCK_STATUS cookie {cookie:#x} asks about an effect length of 0",
                      check="payload-form-zero-length", cookie=cookie)
        ids = event.context_ids
        dup = sorted({i for i in ids if ids.count(i) > 1})
        unknown = sorted(set(ids) - set(session.meta_contexts)) if session.meta_contexts else []
        what = "; ".join(p for p in (f"context id(s) {dup} repeated" if dup else "",
                                    f"context id(s) {unknown} never negotiated" if unknown else "") if p)
        if what:
            st.bad_ids[cookie] = what
            session.await_reply(cookie, self._bad_ids_answered)

    def _bad_ids_answered(self, session: Session, reply: ev.Reply) -> None:
        st = self.state.get(session.id)
        what = st.bad_ids.pop(reply.cookie, None) if st is not None else None
        if what and not reply.failed:
            self.flag(session, reply, f"NBD_CMD_BLOCK_STATUS cookie {reply.cookie:#x} succeeded although its "
                      f"payload names {what} (the server must fail it with NBD_EINVAL)",
                      check="payload-form-bad-ids-accepted", cookie=reply.cookie, request_frame=reply.request_frame)

    # ------------------------------------------------------------ reply chunks

    def _chunk(self, session: Session, event: ev.ReplyChunk) -> None:
        cookie, extended = event.cookie, session.extended_headers
        if extended and not event.extended:
            self.flag(session, event, f"structured (20-byte) reply chunk for cookie {cookie:#x} although extended "
                      "headers were agreed", check="structured-chunk", cookie=cookie)
            return  # the header style is the fault: its type would only repeat it
        if not extended and event.extended:
            if event.command == _READ:  # other commands: structured-reply-not-negotiated judges the header
                agreed = "only structured replies were" if session.structured_replies else "neither structured " \
                    "replies nor extended headers were"
                self.flag(session, event, f"extended reply chunk to NBD_CMD_READ cookie {cookie:#x} although "
                          f"{agreed} agreed", check="extended-reply-unagreed", cookie=cookie)
            return
        if extended and event.command is not None and event.header_offset != event.request_offset:
            self.flag(session, event, f"extended reply chunk for {_command(event.command)} cookie {cookie:#x} "
                      f"carries offset {event.header_offset}, not the request's {event.request_offset} (frame "
                      f"{event.request_frame})", check="offset-mismatch", cookie=cookie,
                      offset=event.header_offset, request_offset=event.request_offset)
        rtype = event.reply_type
        if rtype == _STATUS32 and extended:
            self.flag(session, event, f"NBD_REPLY_TYPE_BLOCK_STATUS for cookie {cookie:#x} although extended "
                      "headers were agreed (NBD_REPLY_TYPE_BLOCK_STATUS_EXT is due)", check="status-32-under-extended",
                      cookie=cookie)
        elif rtype == _STATUS64 and not extended:
            self.flag(session, event, f"NBD_REPLY_TYPE_BLOCK_STATUS_EXT for cookie {cookie:#x} although extended "
                      "headers were not agreed", check="status-ext-unagreed", cookie=cookie)
        elif rtype == _STATUS64:
            self._status_ext(session, event)

    def _status_ext(self, session: Session, event: ev.ReplyChunk) -> None:
        cookie, length, count = event.cookie, event.length, event.descriptor_count
        if length == 8:
            return  # no descriptor at all: unaligned-extent reports the empty status chunk (for both types)
        if length < 24 or (length - 8) % 16:
            self.flag(session, event, f"NBD_REPLY_TYPE_BLOCK_STATUS_EXT for cookie {cookie:#x} has length {length}, "
                      "not 8 + a positive multiple of 16", check="status-ext-length", cookie=cookie, length=length)
            return
        if count != (length - 8) // 16:
            self.flag(session, event, f"NBD_REPLY_TYPE_BLOCK_STATUS_EXT for cookie {cookie:#x} says {count} "
                      f"descriptors but its length {length} holds {(length - 8) // 16}", check="status-ext-count",
                      cookie=cookie, descriptor_count=count, length=length)
        if _status_is_32_bits(event.context):
            high = next(((i, s) for i, (_n, s) in enumerate(event.extents) if s >> 32), None)
            if high is not None:
                self.flag(session, event, f"NBD_REPLY_TYPE_BLOCK_STATUS_EXT for cookie {cookie:#x}: descriptor "
                          f"{high[0]} of 32-bit context {event.context!r} has status {high[1]:#x}, upper 32 bits "
                          "set", check="status-ext-high-bits", cookie=cookie, status=high[1])


def _command(command: int | None) -> str:
    return COMMANDS.name(command) if command is not None else "an unknown request"
