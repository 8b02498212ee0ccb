"""Decoding the handshake: the server's greeting, the client's flags, options and
their replies, the export-name reply; and what they negotiate.

Each handler decodes at most one message at the read position of its side and
returns False when it needs more bytes. What a message means for the states
(greeting seen, handshake over, STARTTLS) goes to the state machine as an input.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from nbdscope.decoder import events as ev
from nbdscope.decoder import payloads
from nbdscope.decoder.buffer import ReceiveBuffer
from nbdscope.decoder.state import Input, State
from nbdscope.spec import ClientFlag, HandshakeFlag, Opt, Rep
from nbdscope.spec import magics as M
from nbdscope.spec.codes import OPTION_HEADER, OPTION_REPLY_HEADER, is_rep_error

if TYPE_CHECKING:
    from nbdscope.decoder.connection import Connection

HANDSHAKE_KEEP = 1 << 20  # bounded payloads outside option haggling (block status), and plausible option lengths
OPTION_KEEP = 16 << 20  # option and option reply payload bytes we hold at most; the rest is skipped
# (the spec sets no limit on an option's length: 300 queries of 4 KiB make a legal 1.2 MB
# NBD_OPT_SET_META_CONTEXT; what we cannot hold is our limit, so a cut payload reports no problem)

_OPT = struct.Struct(">QII")
_OREP = struct.Struct(">QIII")
_EXPORT = struct.Struct(">QH")
_OLD = struct.Struct(">QQQI")
_NEWSTYLE_GREETING = 18
_REPLY_MAGICS = (M.SIMPLE_REPLY_MAGIC_BYTES, M.STRUCTURED_REPLY_MAGIC_BYTES, M.EXTENDED_REPLY_MAGIC_BYTES)
_REQUEST_MAGICS = (M.REQUEST_MAGIC_BYTES, M.EXTENDED_REQUEST_MAGIC_BYTES)


def looks_like_tls(buf: bytearray, p: int) -> bool:
    """A TLS record header: handshake or alert content type, then protocol major version 3."""
    return buf[p] in (0x15, 0x16) and buf[p + 1] == 3


class Handshake:
    """The handshake handlers of one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pending_contexts: dict[int, str] = {}  # SET_META_CONTEXT replies before its ACK
        self.answered_early: list[int] = []  # options the server answered before their payload was in

    # ------------------------------------------------------------ server

    def greeting(self, side: ReceiveBuffer) -> bool:
        conn = self.conn
        buf, p = side.buf, side.pos
        if side.avail() < 16:
            return False
        if buf[p:p + 8] != M.NBDMAGIC_BYTES:
            return conn.hunter.malformed(side, "bad-magic", "server greeting does not start with NBDMAGIC")
        second = buf[p + 8:p + 16]
        start = side.offset
        if second == M.CLISERV_MAGIC_BYTES:
            need = _OLD.size + M.OLDSTYLE_ZEROES
            lost = None
            if side.avail() < need:
                lost = conn.cut_short(side, need) if side.avail() >= _OLD.size else None
                if lost is None:
                    return False
            _, _, size, flags = _OLD.unpack_from(buf, p)
            conn.style = "oldstyle"
            conn.size, conn.transmission_flags = size, flags & 0xFFFF
            conn.emit(ev.ServerGreeting, side, start, start + need, header=conn.header(side, need), style="oldstyle",
                      size=size, transmission_flags=flags & 0xFFFF, oldstyle_high_flags=flags >> 16, lost=lost)
            conn.consume(side, _OLD.size, M.OLDSTYLE_ZEROES)
            self._start_transmission(side, "oldstyle")
            return True
        if second == M.IHAVEOPT_BYTES:
            if side.avail() < _NEWSTYLE_GREETING:
                return False
            (hflags,) = struct.unpack_from(">H", buf, p + 16)
            conn.handshake_flags = hflags
            conn.style = "fixed-newstyle" if hflags & HandshakeFlag.FIXED_NEWSTYLE else "newstyle"
            conn.emit(ev.ServerGreeting, side, start, start + _NEWSTYLE_GREETING,
                      header=conn.header(side, _NEWSTYLE_GREETING), style=conn.style, handshake_flags=hflags)
            conn.consume(side, _NEWSTYLE_GREETING)
            conn.machine.fire(Input.NEWSTYLE_GREETING, side)
            return True
        return conn.hunter.malformed(side, "bad-magic",
                                     "NBDMAGIC is followed by neither the oldstyle nor the newstyle magic")

    def option_replies(self, side: ReceiveBuffer) -> bool:
        conn = self.conn
        buf, p = side.buf, side.pos
        export_name = next((o for o in conn.pending if o.option == Opt.EXPORT_NAME), None)
        if export_name and (side.avail() < 8 or buf[p:p + 8] != M.OPTION_REPLY_MAGIC_BYTES):
            return self._export_name_reply(side, export_name)
        if side.avail() < OPTION_REPLY_HEADER:
            return False
        magic, option, reply, length = _OREP.unpack_from(buf, p)
        if magic != M.OPTION_REPLY_MAGIC:
            if buf[p:p + 4] in _REPLY_MAGICS and conn._c.state is State.REQUESTS:
                conn.machine.fire(Input.REPLY_AMONG_OPTION_REPLIES, side)  # the handshake ended unseen
                return True
            return self._wrong_magic(side, p, "a plaintext reply", "an option reply magic", magic)
        held = _held(conn, side, p, OPTION_REPLY_HEADER, length)
        if held is None:
            return False
        data, lost = held
        fields = _cut_short(payloads.option_reply(reply, data), data, length)
        request = next((o for o in conn.pending if o.option == option), None)
        early = request is None and self._option_in_progress() == option
        if early and (reply == Rep.ACK or is_rep_error(reply)):
            # the server answered from the option header alone, before the client's payload
            # finished arriving (nbdkit does this when it requires TLS)
            self.answered_early.append(option)
        pad = 0
        if request is not None and option == Opt.GO and reply == Rep.ACK:
            found = self._go_padding(side, OPTION_REPLY_HEADER + length)
            if found is None:
                return False
            pad = found
        start = side.offset
        # zero padding after a GO's ACK (which the spec forbids) is spanned by the ACK, past its length
        event = conn.emit(ev.OptionReply, side, start, start + OPTION_REPLY_HEADER + length + pad,
                          header=conn.header(side, OPTION_REPLY_HEADER), option=option, reply=reply, length=length,
                          solicited=request is not None or early, lost=lost, **fields)
        conn.consume(side, OPTION_REPLY_HEADER, length + pad)
        self._apply_option_reply(side, request, event)
        return True

    def _apply_option_reply(self, side: ReceiveBuffer, request: ev.OptionRequest | None,
                            reply: ev.OptionReply) -> None:
        conn = self.conn
        rep, option = reply.reply, reply.option
        if rep == Rep.META_CONTEXT and reply.context_id is not None and option == Opt.SET_META_CONTEXT:
            self.pending_contexts[reply.context_id] = reply.name or ""
        if rep == Rep.INFO and option == Opt.GO:
            for attr in ("size", "transmission_flags", "min_block", "preferred_block", "max_payload"):
                value = getattr(reply, attr)
                if value is not None:
                    setattr(conn, attr, value)
        final = rep == Rep.ACK or is_rep_error(rep)
        if not final or request is None:
            return
        conn.pending.remove(request)
        if is_rep_error(rep):
            if option == Opt.SET_META_CONTEXT:
                conn.contexts = {}
            return
        self._option_agreed(side, request, option)

    def _option_agreed(self, side: ReceiveBuffer, request: ev.OptionRequest, option: int) -> None:
        """The server acknowledged an option: what that option then changes."""
        conn = self.conn
        if option == Opt.SET_META_CONTEXT:
            conn.contexts = dict(self.pending_contexts)
        elif option == Opt.STRUCTURED_REPLY:
            conn.structured = True
        elif option == Opt.EXTENDED_HEADERS:
            conn.extended = True
        elif option == Opt.STARTTLS:
            conn.machine.fire(Input.STARTTLS, side)
            conn.emit(ev.TlsStart, side, side.framed_to, side.framed_to)
            conn.tls_begin()
        elif option == Opt.GO:
            conn.export_name = request.export_name
            self._start_transmission(side, "go")

    def _wrong_magic(self, side: ReceiveBuffer, p: int, due: str, expected: str, magic: int) -> bool:
        """Bytes that are not the magic due here: a TLS record sent without STARTTLS, or garbage."""
        if looks_like_tls(side.buf, p):
            return self.conn.hunter.malformed(side, "tls-without-starttls", f"TLS record where {due} was due")
        return self.conn.hunter.malformed(side, "bad-magic", f"expected {expected}", magic=magic)

    def _option_in_progress(self) -> int | None:
        """The option whose header the client has sent but whose payload is still arriving."""
        c = self.conn._c
        if c.state is State.OPTIONS and c.avail() >= OPTION_HEADER and c.buf[c.pos:c.pos + 8] == M.IHAVEOPT_BYTES:
            return int(_OPT.unpack_from(c.buf, c.pos)[1])
        return None

    def _export_name_reply(self, side: ReceiveBuffer, request: ev.OptionRequest) -> bool:
        conn = self.conn
        due = not (conn.handshake_flags & HandshakeFlag.NO_ZEROES and conn.client_flags & ClientFlag.C_NO_ZEROES)
        if side.avail() < _EXPORT.size:
            return False
        zeroes = self._padding(side, due)
        lost = None
        if zeroes is None:  # zeroes so far: the capture may have lost the rest of them
            lost = conn.cut_short(side, _EXPORT.size + M.OLDSTYLE_ZEROES)
            if lost is None:
                return False
            zeroes = True
        need = _EXPORT.size + (M.OLDSTYLE_ZEROES if zeroes else 0)
        size, tflags = _EXPORT.unpack_from(side.buf, side.pos)
        conn.pending.remove(request)
        conn.export_name = request.export_name if request.lost is None else None  # a cut name is not the name
        conn.size, conn.transmission_flags = size, tflags
        start = side.offset
        conn.emit(ev.ExportNameReply, side, start, start + need, header=conn.header(side, need), size=size,
                  transmission_flags=tflags, zeroes=zeroes, lost=lost)
        conn.consume(side, _EXPORT.size, need - _EXPORT.size)
        self._start_transmission(side, "export-name")
        return True

    def _padding(self, side: ReceiveBuffer, due: bool) -> bool | None:
        """Whether the 124 zero bytes follow the export-name reply's size and flags (None: cannot tell yet).

        The flags say whether they are due; the bytes overrule them only when they prove otherwise:
        a reply magic where the padding was due (the server left it out), or zero bytes where none
        was due (the server sent it anyway). Either way the stream stays framed."""
        buf, p = side.buf, side.pos + _EXPORT.size
        extra = side.avail() - _EXPORT.size
        if due:
            if extra >= 4 and bytes(buf[p:p + 4]) in _REPLY_MAGICS:
                return False
            return True if extra >= M.OLDSTYLE_ZEROES else None
        if extra <= 0 or any(buf[p:p + min(extra, 4)]):
            return False
        if extra < M.OLDSTYLE_ZEROES:
            return False if self.conn.closing else None
        return not any(buf[p:p + M.OLDSTYLE_ZEROES])

    def _go_padding(self, side: ReceiveBuffer, at: int) -> int | None:
        """How many zero bytes a server put after the ACK ending NBD_OPT_GO, in the bytes that came with it
        (None: zeroes so far, wait for the rest). A reply magic is never zero, so zeroes here are padding."""
        extra = side.avail() - at
        p = side.pos + at
        if extra <= 0 or any(side.buf[p:p + min(extra, 4)]):
            return 0
        if extra < M.OLDSTYLE_ZEROES and not self.conn.closing:
            return None
        zeroes = side.buf[p:p + min(extra, M.OLDSTYLE_ZEROES)]
        return len(zeroes) - len(bytes(zeroes).lstrip(b"\0"))

    def _start_transmission(self, side: ReceiveBuffer, how: str) -> None:
        conn = self.conn
        conn.machine.fire(Input.HANDSHAKE_DONE, side)
        conn.emit(ev.TransmissionStart, side, side.framed_to, side.framed_to, how=how, export_name=conn.export_name,
                  size=conn.size, transmission_flags=conn.transmission_flags, structured_replies=conn.structured,
                  extended_headers=conn.extended, meta_contexts=tuple(sorted(conn.contexts.items())),
                  min_block=conn.min_block, preferred_block=conn.preferred_block, max_payload=conn.max_payload)
        if how in ("export-name", "go"):
            # requests the client sent while the handshake was still open come before any reply that
            # follows in this direction (a server that left out the export-name padding is only known
            # to have done so once its first reply arrived)
            c = conn._c
            while not c.skip and c.avail() and c.step(c):
                pass

    # ------------------------------------------------------------ client

    def wait_greeting(self, side: ReceiveBuffer) -> bool:
        return False  # the client's first bytes mean nothing until the server greeting is known

    def client_flags(self, side: ReceiveBuffer) -> bool:
        conn = self.conn
        if side.avail() < 4:
            return False
        (flags,) = struct.unpack_from(">I", side.buf, side.pos)
        conn.client_flags = flags
        start = side.offset
        conn.emit(ev.ClientFlags, side, start, start + 4, header=conn.header(side, 4), flags=flags)
        conn.consume(side, 4)
        conn.machine.fire(Input.CLIENT_FLAGS, side)
        return True

    def options(self, side: ReceiveBuffer) -> bool:
        conn = self.conn
        buf, p = side.buf, side.pos
        if side.avail() < 4:
            return False
        if buf[p:p + 4] in _REQUEST_MAGICS:
            if conn.transmission:
                conn.machine.fire(Input.REQUEST_AMONG_OPTIONS, side)
                return True
            if any(o.option in (Opt.GO, Opt.EXPORT_NAME) for o in conn.pending):
                if not side.lost:
                    return False  # wait for the server to settle the handshake
                # the capture cut this request, so it cannot wait: the client saw the handshake end
                conn.machine.fire(Input.REQUEST_AMONG_OPTIONS, side)
                return True
        if side.avail() < OPTION_HEADER:
            return False
        magic, option, length = _OPT.unpack_from(buf, p)
        if magic != M.IHAVEOPT:
            return self._wrong_magic(side, p, "a plaintext option", "IHAVEOPT before an option", magic)
        held = _held(conn, side, p, OPTION_HEADER, length)
        if held is None:
            return False
        data, lost = held
        fields = _cut_short(payloads.option_request(option, data), data, length)
        start = side.offset
        request = conn.emit(ev.OptionRequest, side, start, start + OPTION_HEADER + length,
                            header=conn.header(side, OPTION_HEADER), option=option, length=length, lost=lost,
                            **fields)
        conn.consume(side, OPTION_HEADER, length)
        if option in self.answered_early:
            self.answered_early.remove(option)
        else:
            conn.pending.append(request)
        if option == Opt.SET_META_CONTEXT:
            self.pending_contexts = {}
        return True


def _held(conn: Connection, side: ReceiveBuffer, p: int, header: int, length: int) -> tuple[bytes, int | None] | None:
    """The payload after a header at ``p``, up to OPTION_KEEP bytes of it (the rest is skipped), and how
    many bytes of the message the capture lost (None: none); None until all that can arrive has. What is
    held has arrived: the length field sizes nothing."""
    keep = min(length, OPTION_KEEP)
    if side.avail() < header + keep:
        lost = conn.cut_short(side, header + length)
        if lost is None:
            return None
        return bytes(side.buf[p + header:]), lost
    return bytes(side.buf[p + header:p + header + keep]), None


def _cut_short(fields: dict[str, Any], data: bytes, length: int) -> dict[str, Any]:
    """The decoded fields; when only part of a longer payload was held, whatever its parse found
    missing is our cut, not the peer's doing, so no problem is reported (rules see ``length``
    beyond OPTION_KEEP and note nbdscope's limit)."""
    if len(data) < length:
        fields.pop("problem", None)
    return fields
