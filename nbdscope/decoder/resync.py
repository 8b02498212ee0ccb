"""Losing and finding the framing: bytes that cannot be a message here, and the
hunt for the next offset where a plausible header starts.

A side hunts after malformed bytes, after a capture gap that took framing with
it, after a reply of unknown length, and from the start when the capture began
part-way through a connection. It finds its footing on a magic number whose
header also makes sense (known command, sane length, a cookie in flight...).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from nbdscope.decoder import events as ev
from nbdscope.decoder.buffer import ReceiveBuffer
from nbdscope.decoder.handshake import HANDSHAKE_KEEP
from nbdscope.decoder.state import Input
from nbdscope.spec import Cmd
from nbdscope.spec import magics as M
from nbdscope.spec.codes import (
    COMMANDS,
    ERRORS,
    EXTENDED_REPLY_HEADER,
    EXTENDED_REQUEST_HEADER,
    OPTION_HEADER,
    OPTIONS,
    REPLY_TYPES,
    REQUEST_HEADER,
    SIMPLE_REPLY_HEADER,
    STRUCTURED_REPLY_HEADER,
    is_reply_type_error,
)
from nbdscope.spec.flags import COMMAND_FLAGS, REPLY_FLAGS

if TYPE_CHECKING:
    from nbdscope.decoder.connection import Connection

SANE_PAYLOAD = 64 << 20  # a header announcing more is implausible when hunting for sync
_TAIL = 7  # bytes kept when no magic was found: a magic may straddle this piece and the next

_REQ = struct.Struct(">IHHQQI")
_EREQ = struct.Struct(">IHHQQQ")
_SREP = struct.Struct(">IIQ")
_CHUNK = struct.Struct(">IHHQI")
_ECHUNK = struct.Struct(">IHHQQQ")
_OPT = struct.Struct(">QII")
_C2S_MAGICS = (M.REQUEST_MAGIC_BYTES, M.EXTENDED_REQUEST_MAGIC_BYTES, M.IHAVEOPT_BYTES)
_S2C_MAGICS = (M.SIMPLE_REPLY_MAGIC_BYTES, M.STRUCTURED_REPLY_MAGIC_BYTES, M.EXTENDED_REPLY_MAGIC_BYTES,
               M.OPTION_REPLY_MAGIC_BYTES, M.NBDMAGIC_BYTES)


class Hunter:
    """Malformed input and resynchronisation for one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def malformed(self, side: ReceiveBuffer, what: str, message: str, **values: int | str | None) -> bool:
        """Report bytes that cannot be valid here and hunt for the next message."""
        conn = self.conn
        at = side.offset
        conn.emit(ev.Malformed, side, at, at, what=what, message=message, values=tuple(values.items()))
        side.after_gap = False
        conn.machine.fire(Input.BAD_BYTES, side)
        side.pos += 1
        side.skipped += 1
        return True

    def hunt(self, side: ReceiveBuffer) -> bool:
        """Find the next offset where a plausible message header starts."""
        buf = side.buf
        start = side.pos
        magics = _C2S_MAGICS if side.dir == "c2s" else _S2C_MAGICS
        search = start
        while True:
            hits = [i for i in (buf.find(m, search) for m in magics) if i >= 0]
            if not hits:
                drop = max(0, len(buf) - _TAIL - start)
                side.pos += drop
                side.skipped += drop
                return False
            cand = min(hits)
            verdict = self._plausible(side, cand)
            if verdict is None:  # need more bytes to judge
                side.skipped += cand - start
                side.pos = cand
                return False
            if verdict:
                break
            search = cand + 1
        side.skipped += cand - start
        side.pos = cand
        skipped, side.skipped = side.skipped, 0
        if skipped or side.announce:
            self.conn.emit(ev.Resync, side, side.hunt_from, side.offset, skipped=skipped, after_gap=side.after_gap)
        side.after_gap = False
        self.conn.machine.fire(self._found(side), side)
        return True

    def _found(self, side: ReceiveBuffer) -> Input:
        """What the message at the read position is, for the state machine."""
        head = bytes(side.buf[side.pos:side.pos + 8])
        if side.dir == "c2s":
            return Input.FOUND_OPTION if head == M.IHAVEOPT_BYTES else Input.FOUND_REQUEST
        if head == M.NBDMAGIC_BYTES:
            return Input.FOUND_GREETING
        return Input.FOUND_OPTION_REPLY if head == M.OPTION_REPLY_MAGIC_BYTES else Input.FOUND_REPLY

    def _plausible(self, side: ReceiveBuffer, i: int) -> bool | None:
        """Would a header at ``i`` make sense? None when more bytes are needed to tell."""
        if len(side.buf) - i < 8:
            return None
        return self._plausible_c2s(side.buf, i) if side.dir == "c2s" else self._plausible_s2c(side.buf, i)

    @staticmethod
    def _plausible_c2s(buf: bytearray, i: int) -> bool | None:
        n = len(buf) - i
        if bytes(buf[i:i + 8]) == M.IHAVEOPT_BYTES:
            if n < OPTION_HEADER:
                return None
            _, option, length = _OPT.unpack_from(buf, i)
            return option in OPTIONS and length <= HANDSHAKE_KEEP
        ext = bytes(buf[i:i + 4]) == M.EXTENDED_REQUEST_MAGIC_BYTES
        if n < (EXTENDED_REQUEST_HEADER if ext else REQUEST_HEADER):
            return None
        _, flags, cmd, _cookie, _off, length = (_EREQ if ext else _REQ).unpack_from(buf, i)
        if cmd not in COMMANDS or COMMAND_FLAGS.reserved(flags):
            return False
        return bool(cmd != Cmd.WRITE or length <= SANE_PAYLOAD)

    def _plausible_s2c(self, buf: bytearray, i: int) -> bool | None:
        n = len(buf) - i
        head = bytes(buf[i:i + 4])
        in_flight = self.conn.in_flight
        if bytes(buf[i:i + 8]) in (M.NBDMAGIC_BYTES, M.OPTION_REPLY_MAGIC_BYTES):
            return True
        if head == M.SIMPLE_REPLY_MAGIC_BYTES:
            if n < SIMPLE_REPLY_HEADER:
                return None
            _, error, cookie = _SREP.unpack_from(buf, i)
            return cookie in in_flight or error in ERRORS
        ext = head == M.EXTENDED_REPLY_MAGIC_BYTES
        if n < (EXTENDED_REPLY_HEADER if ext else STRUCTURED_REPLY_HEADER):
            return None
        if ext:
            _, flags, rtype, cookie, _off, length = _ECHUNK.unpack_from(buf, i)
        else:
            _, flags, rtype, cookie, length = _CHUNK.unpack_from(buf, i)
        if REPLY_FLAGS.reserved(flags) or length > SANE_PAYLOAD:
            return False
        return cookie in in_flight or rtype in REPLY_TYPES or is_reply_type_error(rtype)
