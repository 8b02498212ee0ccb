"""Decoding the transmission phase: requests, simple replies, structured and
extended reply chunks.

This is the per-message path of every capture and of the proxy, so the common
messages (requests, simple replies, read data chunks) are built without keyword
dictionaries or helper calls; the rare ones share ``_chunk``'s general path.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from nbdscope.decoder import events as ev
from nbdscope.decoder import payloads
from nbdscope.decoder.buffer import ReceiveBuffer
from nbdscope.decoder.handshake import HANDSHAKE_KEEP
from nbdscope.decoder.sinks import open_sink
from nbdscope.decoder.state import Input
from nbdscope.spec import Cmd, CommandFlag, ReplyFlag, ReplyType
from nbdscope.spec import magics as M
from nbdscope.spec.codes import (
    EXTENDED_REPLY_HEADER,
    EXTENDED_REQUEST_HEADER,
    REQUEST_HEADER,
    SIMPLE_REPLY_HEADER,
    STRUCTURED_REPLY_HEADER,
    is_reply_type_error,
)

if TYPE_CHECKING:
    from nbdscope.decoder.connection import Connection

CHUNK_KEEP = 16 << 20  # reply chunk payload bytes we hold at most (2^20 extents is ~8 MiB)
MAX_EXTENTS = 1 << 20  # extents kept per chunk; the spec asks servers not to exceed this

_REQ = struct.Struct(">IHHQQI")
_EREQ = struct.Struct(">IHHQQQ")
_SREP = struct.Struct(">IIQ")
_CHUNK = struct.Struct(">IHHQI")
_ECHUNK = struct.Struct(">IHHQQQ")
# plain ints: `value & IntFlag` builds an enum value each time, too slow per message
_DONE, _PAYLOAD_LEN = int(ReplyFlag.DONE), int(CommandFlag.PAYLOAD_LEN)
_WRITE, _READ, _DISC, _BLOCK_STATUS = int(Cmd.WRITE), int(Cmd.READ), int(Cmd.DISC), int(Cmd.BLOCK_STATUS)
_OFFSET_DATA = int(ReplyType.OFFSET_DATA)
_REQ_MAGIC, _EREQ_MAGIC = M.REQUEST_MAGIC_BYTES, M.EXTENDED_REQUEST_MAGIC_BYTES
_SIMPLE_MAGIC, _CHUNK_MAGIC, _ECHUNK_MAGIC = (M.SIMPLE_REPLY_MAGIC_BYTES, M.STRUCTURED_REPLY_MAGIC_BYTES,
                                             M.EXTENDED_REPLY_MAGIC_BYTES)
_REPLY_MAGICS = (_SIMPLE_MAGIC, _CHUNK_MAGIC, _ECHUNK_MAGIC)


class Transmission:
    """The transmission handlers of one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _mid_stream(self, side: ReceiveBuffer) -> None:
        """A request or reply while we thought the handshake still ran: it ended unseen."""
        conn = self.conn
        conn.machine.fire(Input.MID_STREAM, side)
        conn.emit(ev.TransmissionStart, side, side.framed_to, side.framed_to, how="mid-stream", export_name=None,
                  size=None, transmission_flags=None, structured_replies=conn.structured,
                  extended_headers=conn.extended)

    # ------------------------------------------------------------ client

    def requests(self, side: ReceiveBuffer) -> bool:
        conn = self.conn
        buf, p = side.buf, side.pos
        avail = len(buf) - p
        if avail < 4:
            return False
        head = buf[p:p + 4]
        if head == _REQ_MAGIC:
            if avail < REQUEST_HEADER:
                return False
            _, flags, cmd, cookie, offset, length = _REQ.unpack_from(buf, p)
            hsize, extended = REQUEST_HEADER, False
            payload = length if cmd == _WRITE else 0
        elif head == _EREQ_MAGIC:
            if avail < EXTENDED_REQUEST_HEADER:
                return False
            _, flags, cmd, cookie, offset, length = _EREQ.unpack_from(buf, p)
            hsize, extended = EXTENDED_REQUEST_HEADER, True
            payload = length if flags & _PAYLOAD_LEN or cmd == _WRITE else 0
        elif head == M.IHAVEOPT_BYTES[:4] and avail >= 8 and buf[p:p + 8] == M.IHAVEOPT_BYTES:
            return conn.hunter.malformed(side, "option-after-handshake",
                                         "client sent an option after the handshake ended")
        else:
            return conn.hunter.malformed(side, "bad-magic", "expected a request magic",
                                         magic=int.from_bytes(head, "big"))
        start = side.fed - len(buf) + p
        is_write = cmd == _WRITE
        header = bytes(buf[p:p + min(hsize, 64)]) if conn.keep_headers else None
        if cmd == _BLOCK_STATUS and payload and payload <= HANDSHAKE_KEEP:
            if avail < hsize + payload:
                return False
            extra = payloads.block_status_payload(bytes(buf[p + hsize:p + hsize + payload]))
            effect = extra.get("effect_length", length)
            request = ev.Request(dir=side.dir, frame=side.frame, time=side.time, phase=conn.phase,
                                 seq=conn.next_seq(), start=start, end=start + hsize + payload, header=header,
                                 cookie=cookie, command=cmd, flags=flags, offset=offset, length=length,
                                 extended=extended, payload_length=payload, **extra)
        else:  # the common case, by position (ev.make_request: fields in order)
            effect = length
            request = ev.make_request(side.dir, side.frame, side.time, conn.phase, header, conn.next_seq(),
                                      start, start + hsize + payload,
                                      cookie, cmd, flags, offset, length, extended, payload,
                                      None, (), start + hsize if is_write and payload else None)
        conn.out.append(request)
        conn.consume(side, hsize, payload, open_sink(True, cookie, offset, "write", start + hsize, payload)
                     if is_write and payload and conn.keep_data else None, is_write)
        if cmd == _DISC:
            conn.disc = True  # no reply will come
        else:
            conn.flights.add(request, cookie, cmd, side.frame, offset, effect, flags, side.time)
        if not conn.transmission:
            self._mid_stream(side)
        return True

    # ------------------------------------------------------------ server

    def replies(self, side: ReceiveBuffer) -> bool:
        buf, p = side.buf, side.pos
        avail = len(buf) - p
        if avail < 4:
            return False
        head = buf[p:p + 4]
        if head == _SIMPLE_MAGIC:
            return self._simple_reply(side)
        if head == _CHUNK_MAGIC:
            if avail < STRUCTURED_REPLY_HEADER:
                return False
            _, flags, rtype, cookie, length = _CHUNK.unpack_from(buf, p)
            return self._chunk(side, flags, rtype, cookie, length, None, STRUCTURED_REPLY_HEADER, False)
        if head == _ECHUNK_MAGIC:
            if avail < EXTENDED_REPLY_HEADER:
                return False
            _, flags, rtype, cookie, offset, length = _ECHUNK.unpack_from(buf, p)
            return self._chunk(side, flags, rtype, cookie, length, offset, EXTENDED_REPLY_HEADER, True)
        return self.conn.hunter.malformed(side, "bad-magic", "expected a reply magic",
                                          magic=int.from_bytes(head, "big"))

    def _simple_reply(self, side: ReceiveBuffer) -> bool:
        conn = self.conn
        buf, p = side.buf, side.pos
        avail = len(buf) - p
        if avail < SIMPLE_REPLY_HEADER:
            return False
        _, error, cookie = _SREP.unpack_from(buf, p)
        entry = conn.flights.get(cookie)
        data: int | None
        if entry is not None:
            _, command, rframe, roffset, rlength, rflags, _t = entry
            data = rlength if command == _READ and error == 0 else 0
        elif error:
            data = 0
        else:
            # A success for a cookie we never saw: read data may follow, of unknown length.
            if avail < SIMPLE_REPLY_HEADER + 4:
                if not conn.closing:
                    return False
                data = avail - SIMPLE_REPLY_HEADER  # the stream ended: what follows the header is all the data
            else:
                nxt = buf[p + SIMPLE_REPLY_HEADER:p + SIMPLE_REPLY_HEADER + 4]
                data = 0 if nxt in _REPLY_MAGICS else None
        start = side.fed - len(buf) + p
        data_start = start + SIMPLE_REPLY_HEADER if data else None
        end = start + SIMPLE_REPLY_HEADER + (data or 0)
        header = bytes(buf[p:p + SIMPLE_REPLY_HEADER]) if conn.keep_headers else None
        # by position (ev.make_simple_reply): event, then request fields, completes, failed, latency, ...
        if entry is None:
            reply = ev.make_simple_reply(side.dir, side.frame, side.time, conn.phase, header, conn.next_seq(),
                                         start, end, cookie, None, None, None, None, None,
                                         True, error != 0, None, data_start, error, data)
        else:
            failed, latency = conn.flights.finish(cookie, entry, error != 0, side.time)
            reply = ev.make_simple_reply(side.dir, side.frame, side.time, conn.phase, header, conn.next_seq(),
                                         start, end, cookie, command, rframe, roffset, rlength, rflags,
                                         True, failed, latency, data_start, error, data)
        conn.out.append(reply)
        conn.consume(side, SIMPLE_REPLY_HEADER, data or 0,
                     open_sink(True, cookie, roffset, "read", start + SIMPLE_REPLY_HEADER, data)
                     if data and entry is not None and conn.keep_data and _wanted(conn, roffset, data) else None,
                     True)
        if data is None:
            conn.machine.fire(Input.UNFRAMED, side)
        if not conn.transmission:
            self._mid_stream(side)
        return True

    def _chunk(self, side: ReceiveBuffer, flags: int, rtype: int, cookie: int, length: int, hoffset: int | None,
               hsize: int, extended: bool) -> bool:
        conn = self.conn
        buf, p = side.buf, side.pos + hsize
        done = bool(flags & _DONE)
        start = side.fed - len(buf) + side.pos
        end = start + hsize + length
        if rtype == _OFFSET_DATA and length >= 9:  # read data, by far the most common chunk: no payload parser
            if len(buf) < p + 8:
                return False
            offset = int.from_bytes(buf[p:p + 8], "big")
            data_length = length - 8
            header = bytes(buf[side.pos:side.pos + min(hsize + 8, 64)]) if conn.keep_headers else None
            entry, failed, latency = conn.flights.answer(cookie, done, False, side.time)
            # by position (ev.make_data_chunk): event, request fields, completes, failed, latency, data_start,
            # then the chunk's own up to data_length
            if entry is None:
                chunk = ev.make_data_chunk(side.dir, side.frame, side.time, conn.phase, header, conn.next_seq(),
                                           start, end, cookie, None, None, None, None, None,
                                           done, failed, None, start + hsize + 8,
                                           rtype, flags, length, extended, hoffset, offset, data_length)
            else:
                _, command, rframe, roffset, rlength, rflags, _t = entry
                chunk = ev.make_data_chunk(side.dir, side.frame, side.time, conn.phase, header, conn.next_seq(),
                                           start, end, cookie, command, rframe, roffset, rlength, rflags,
                                           done, failed, latency, start + hsize + 8,
                                           rtype, flags, length, extended, hoffset, offset, data_length)
            conn.out.append(chunk)
            sink = (open_sink(True, cookie, offset, "read", start + hsize + 8, data_length)
                    if conn.keep_data and _wanted(conn, offset, data_length) else None)
            conn.consume(side, hsize + 8, data_length, sink, True)
            if not conn.transmission:
                self._mid_stream(side)
            return True
        keep = 8 if rtype == _OFFSET_DATA else min(length, CHUNK_KEEP)
        keep = min(keep, length)
        lost = None
        if len(buf) < p + keep:
            lost = conn.cut_short(side, hsize + length)  # the capture lost the rest: decode what it holds
            if lost is None:
                return False
            keep = len(buf) - p
        fields = _chunk_fields(rtype, bytes(buf[p:p + keep]), length, lost)
        if "context_id" in fields:
            fields["context"] = conn.contexts.get(fields["context_id"])
        header = conn.header(side, hsize + keep)
        entry, failed, latency = conn.flights.answer(cookie, done, is_reply_type_error(rtype), side.time)
        if entry is not None:
            _, command, rframe, roffset, rlength, rflags, _t = entry
            fields.update(command=command, request_frame=rframe, request_offset=roffset, request_length=rlength,
                          request_flags=rflags, latency_us=latency)
        conn.emit(ev.ReplyChunk, side, start, end, header=header, cookie=cookie, completes=done, failed=failed,
                  reply_type=rtype, flags=flags, length=length, extended=extended, header_offset=hoffset, **fields)
        conn.consume(side, hsize + keep, length - keep, None, rtype == _OFFSET_DATA)
        if not conn.transmission:
            self._mid_stream(side)
        return True


def _chunk_fields(rtype: int, data: bytes, length: int, lost: int | None) -> dict[str, Any]:
    """A chunk's payload fields from the ``data`` held (``lost``: the capture cut the rest)."""
    fields = payloads.reply_chunk(rtype, data, length, MAX_EXTENTS)
    if lost is not None:
        if len(data) < payloads.judged_prefix(rtype):
            fields.pop("problem", None)  # its checks would judge bytes the capture lost
        fields["lost"] = lost
    elif len(data) < length and rtype != _OFFSET_DATA:
        fields.setdefault("problem", f"chunk length {length} exceeds what we decode ({CHUNK_KEEP})")
    return fields


def _wanted(conn: Connection, offset: int, length: int) -> bool:
    """Whether read data at this disk offset is to be gathered (keep_data asked, and the checks want it)."""
    return conn.want_read is None or conn.want_read(offset, length)
