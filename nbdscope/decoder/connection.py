"""Sans-IO decoder for one NBD connection.

Feed it the bytes of each direction in capture order; it returns immutable
events. It never reads sockets or files, so the pcap reader, a live capture and
the proxy all share it. Bulk payloads (read and write data) are skipped by
count and never buffered; only headers and the bounded payloads whose contents
matter (options, block status, error messages) are held until complete.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

from nbdscope.decoder import events as ev
from nbdscope.decoder import payloads
from nbdscope.spec import ClientFlag, Cmd, CommandFlag, HandshakeFlag, Opt, Rep, ReplyFlag, ReplyType
from nbdscope.spec import magics as M
from nbdscope.spec.codes import (
    COMMANDS,
    ERRORS,
    EXTENDED_REPLY_HEADER,
    EXTENDED_REQUEST_HEADER,
    OPTION_HEADER,
    OPTION_REPLY_HEADER,
    OPTIONS,
    REPLY_TYPES,
    REQUEST_HEADER,
    SIMPLE_REPLY_HEADER,
    STRUCTURED_REPLY_HEADER,
    is_rep_error,
    is_reply_type_error,
)
from nbdscope.spec.flags import COMMAND_FLAGS, REPLY_FLAGS
from nbdscope.vocab import Direction

HANDSHAKE_KEEP = 1 << 20  # option payload bytes we hold at most; the rest is skipped
CHUNK_KEEP = 16 << 20  # reply chunk payload bytes we hold at most (2^20 extents is ~8 MiB)
MAX_EXTENTS = 1 << 20  # extents kept per chunk; the spec asks servers not to exceed this
DATA_KEEP = 64 << 20  # keep_data: payloads longer than this are not gathered
SANE_PAYLOAD = 64 << 20  # a header announcing more is implausible when hunting for sync
HEADER_KEEP = 64  # keep_headers: wire bytes kept per message (the header and the start of a bounded payload)
FEED_PIECE = 16 << 10  # bytes put into a side's buffer at a time in transmission

_REQ = struct.Struct(">IHHQQI")
_EREQ = struct.Struct(">IHHQQQ")
_SREP = struct.Struct(">IIQ")
_CHUNK = struct.Struct(">IHHQI")
_ECHUNK = struct.Struct(">IHHQQQ")
_OPT = struct.Struct(">QII")
_OREP = struct.Struct(">QIII")
_EXPORT = struct.Struct(">QH")
_OLD = struct.Struct(">QQQI")

_C2S_MAGICS = (M.REQUEST_MAGIC_BYTES, M.EXTENDED_REQUEST_MAGIC_BYTES, M.IHAVEOPT_BYTES)
_S2C_MAGICS = (M.SIMPLE_REPLY_MAGIC_BYTES, M.STRUCTURED_REPLY_MAGIC_BYTES, M.EXTENDED_REPLY_MAGIC_BYTES,
               M.OPTION_REPLY_MAGIC_BYTES, M.NBDMAGIC_BYTES)
# plain ints: `value & IntFlag` builds an enum value each time, too slow per message
_DONE, _PAYLOAD_LEN = int(ReplyFlag.DONE), int(CommandFlag.PAYLOAD_LEN)
_WRITE, _OFFSET_DATA = int(Cmd.WRITE), int(ReplyType.OFFSET_DATA)
_REPLY_MAGICS = (M.SIMPLE_REPLY_MAGIC_BYTES, M.STRUCTURED_REPLY_MAGIC_BYTES, M.EXTENDED_REPLY_MAGIC_BYTES)
_FINAL_OK = {Opt.STARTTLS, Opt.STRUCTURED_REPLY, Opt.EXTENDED_HEADERS, Opt.ABORT}


def _looks_like_tls(buf: bytearray, p: int) -> bool:
    """A TLS record header: handshake or alert content type, then protocol major version 3."""
    return buf[p] in (0x15, 0x16) and buf[p + 1] == 3


@dataclass(slots=True)
class _Flight:
    command: int
    flags: int
    offset: int
    length: int
    frame: int
    time: float
    errored: bool = False  # an error chunk was part of the reply so far


@dataclass(slots=True)
class _Sink:
    """A read or write payload being gathered for the data checks (keep_data)."""

    cookie: int
    offset: int
    kind: str  # "write" or "read"
    parts: list[bytes]
    lost: bool = False


class _Side:
    """Receive state of one direction."""

    __slots__ = ("after_gap", "buf", "dir", "fed", "frame", "payload", "pos", "resync_from", "sink", "skip",
                 "skip_data", "skipped", "state", "time")

    def __init__(self, direction: Direction, state: str) -> None:
        self.dir: Direction = direction
        self.buf = bytearray()
        self.pos = 0
        self.skip = 0  # payload bytes still to pass over uninspected
        self.state = state
        self.frame = 0
        self.time = 0.0
        self.resync_from: str | None = None  # the state to resume when sync is found
        self.skipped = 0  # bytes dropped while hunting for sync
        self.after_gap = False  # hunting because the capture lost bytes, not because the peer sent garbage
        self.sink: _Sink | None = None  # collects the payload being skipped, when data is wanted
        self.fed = 0  # stream offset just past the last byte fed; buf holds the bytes before it
        self.skip_data = False  # the bytes being skipped are read or write data
        self.payload: list[tuple[int, int]] | None = None  # stream ranges of read/write data, when tracked

    def avail(self) -> int:
        return len(self.buf) - self.pos


class Connection:
    """Decoder state machine for one NBD connection (both directions)."""

    def __init__(self, *, saw_start: bool = True, keep_data: bool = False, track_payload: bool = False,
                 keep_headers: bool = False) -> None:
        self.saw_start = saw_start
        self.keep_data = keep_data
        self.keep_headers = keep_headers  # attach each message's header bytes to its event (for hex views)
        if saw_start:
            self._c = _Side("c2s", "wait-greeting")
            self._s = _Side("s2c", "greeting")
        else:
            self._c = _Side("c2s", "hunt")
            self._s = _Side("s2c", "hunt")
            self._c.resync_from = self._s.resync_from = "any"
            self._c.after_gap = self._s.after_gap = True  # the capture began part-way through
        if track_payload:
            self._c.payload, self._s.payload = [], []
        self.style: str = "unknown"
        self.handshake_flags = 0
        self.client_flags = 0
        self.tls = False
        self.transmission = False
        self.structured: bool | None = False if saw_start else None
        self.extended: bool | None = False if saw_start else None
        self.export_name: str | None = None
        self.size: int | None = None
        self.transmission_flags: int | None = None
        self.min_block: int | None = None
        self.preferred_block: int | None = None
        self.max_payload: int | None = None
        self.contexts: dict[int, str] = {}
        self._pending_contexts: dict[int, str] = {}
        self.pending: deque[ev.OptionRequest] = deque()
        self._answered_early: list[int] = []
        self.in_flight: dict[int, _Flight] = {}
        self.disc = False
        self._closing = False
        self.tls_bytes = {"c2s": 0, "s2c": 0}
        self._out: list[ev.Event] = []

    # ------------------------------------------------------------------ input

    def feed(self, direction: Direction, data: bytes, *, frame: int, time: float) -> list[ev.Event]:
        side = self._c if direction == "c2s" else self._s
        side.frame, side.time = frame, time
        n = len(data)
        if side.skip >= n and side.pos == len(side.buf) and side.sink is None:
            side.skip -= n  # inside a read or write payload: nothing to decode
            if side.payload is not None and side.skip_data:
                side.payload.append((side.fed, side.fed + n))
            side.fed += n
            return []
        self._out = out = []
        if side.state == "tls":
            side.fed += n
            self._tls(side, n)
            return out
        # In transmission the bytes go into the buffer a piece at a time, so that read or
        # write data after a header is skipped where it lies instead of copied in and out.
        # (In the handshake all at once: STARTTLS must see every byte that follows it.)
        piece = FEED_PIECE if self.transmission else n
        i = 0
        while i < n:
            if side.skip and side.pos == len(side.buf):
                k = min(side.skip, n - i)
                side.skip -= k
                if side.payload is not None and side.skip_data:
                    side.payload.append((side.fed, side.fed + k))
                if side.sink is not None:
                    side.sink.parts.append(bytes(data[i:i + k]))
                    if not side.skip:
                        self._sink_done(side)
            else:
                k = min(piece, n - i)
                side.buf += data[i:i + k] if k < n else data
            side.fed += k
            i += k
            self._pump()
        return out

    def quiet_bytes(self, direction: Direction) -> int:
        """How many of the next bytes in this direction are read or write data that will
        decode to nothing: a caller may hand them over in one piece, whatever their framing."""
        side = self._c if direction == "c2s" else self._s
        return side.skip if side.pos == len(side.buf) and side.sink is None and side.state != "tls" else 0

    def take_payload_ranges(self, direction: Direction) -> list[tuple[int, int]]:
        """Stream ranges of read and write data found since the last call (track_payload)."""
        side = self._c if direction == "c2s" else self._s
        ranges, side.payload = side.payload or [], [] if side.payload is not None else None
        return ranges

    def gap(self, direction: Direction, nbytes: int, *, frame: int, time: float) -> list[ev.Event]:
        side = self._c if direction == "c2s" else self._s
        side.frame, side.time = frame, time
        side.fed += nbytes
        self._out = out = []
        phase = self._phase()
        if side.state == "tls":
            out.append(ev.Gap(dir=direction, frame=frame, time=time, phase=phase, nbytes=nbytes, resync=False))
            self.tls_bytes[direction] += nbytes
        elif side.skip >= nbytes and not side.avail():
            side.skip -= nbytes  # lost bytes were payload: framing survives
            if side.sink is not None:
                side.sink.lost = True
                if not side.skip:
                    self._sink_done(side)
            out.append(ev.Gap(dir=direction, frame=frame, time=time, phase=phase, nbytes=nbytes, resync=False))
        else:
            out.append(ev.Gap(dir=direction, frame=frame, time=time, phase=phase, nbytes=nbytes, resync=True))
            side.buf.clear()
            side.pos = 0
            side.skip = 0
            side.sink = None
            side.after_gap = True
            if side.state != "hunt":
                side.resync_from = side.state if side.state not in ("greeting", "wait-greeting") else "any"
                side.state = "hunt"
            self._pump()
        return out

    def close(self, how: str, *, frame: int, time: float, by: Direction | None = None) -> list[ev.Event]:
        self._out = out = []
        self._closing = True
        self._pump()
        unparsed = {s.dir: s.avail() + s.skip for s in (self._c, self._s) if s.avail() + s.skip}
        flights = tuple((cookie, f.command, f.frame) for cookie, f in self.in_flight.items())
        out.append(ev.ConnectionEnd(dir="s2c", frame=frame, time=time, phase=self._phase(),
                                    how=how, soft=self.disc, in_flight=flights,  # type: ignore[arg-type]
                                    unparsed=unparsed, by=by))
        return out

    # ---------------------------------------------------------------- helpers

    def _phase(self) -> ev.Phase:
        return "transmission" if self.transmission else "handshake"

    def _emit(self, cls: type[ev.Event], side: _Side, **fields: Any) -> Any:
        event = cls(dir=side.dir, frame=side.frame, time=side.time,
                    phase="transmission" if self.transmission else "handshake", **fields)
        self._out.append(event)
        return event

    def _consume(self, side: _Side, n: int, payload: int = 0, sink: _Sink | None = None,
                 is_data: bool = False) -> None:
        """Drop a parsed header of ``n`` bytes and arrange to skip ``payload`` more
        (handing the payload to ``sink`` when data is wanted; ``is_data``: it is read or
        write data, which redaction hides)."""
        if self.keep_headers and n and self._out:
            last = self._out[-1]  # the event these bytes were just decoded into
            if last.dir == side.dir and last.header is None:
                # set once, before the event leaves the decoder: no reader has seen it yet, so it is
                # still immutable to all of them (and far cheaper than building a copy with replace())
                last.header = bytes(side.buf[side.pos:side.pos + min(n, HEADER_KEEP)])
        side.pos += n
        side.skip_data = is_data
        if payload:
            take = min(payload, side.avail())
            if side.payload is not None and take and is_data:
                at = side.fed - len(side.buf) + side.pos
                side.payload.append((at, at + take))
            if sink is not None:
                sink.parts.append(bytes(side.buf[side.pos:side.pos + take]))
                side.sink = sink
            side.pos += take
            side.skip = payload - take
            if sink is not None and not side.skip:
                self._sink_done(side)

    def _sink(self, cookie: int, offset: int, kind: str, length: int) -> _Sink | None:
        return _Sink(cookie, offset, kind, []) if self.keep_data and length <= DATA_KEEP else None

    def _sink_done(self, side: _Side) -> None:
        sink, side.sink = side.sink, None
        if sink is not None and not sink.lost:
            self._emit(ev.PayloadData, side, cookie=sink.cookie, offset=sink.offset, kind=sink.kind,
                       data=b"".join(sink.parts))

    def _pump(self) -> None:
        c, s = self._c, self._s
        progress = True
        while progress:  # either side may unblock the other (replies wait for their requests)
            progress = False
            if not s.skip and len(s.buf) > s.pos:
                progress = self._step(s)
            if not c.skip and len(c.buf) > c.pos:
                progress = self._step(c) or progress
        for side in (c, s):
            if side.pos:
                del side.buf[:side.pos]
                side.pos = 0

    def _step(self, side: _Side) -> bool:
        moved = False
        handlers = _HANDLERS
        while not side.skip and len(side.buf) > side.pos:
            if not handlers[side.state](self, side):
                break
            moved = True
        return moved

    def _tls(self, side: _Side, n: int) -> None:
        if n:
            self.tls_bytes[side.dir] += n
            self._emit(ev.TlsData, side, nbytes=n)

    def _malformed(self, side: _Side, what: str, message: str, **values: int | str | None) -> bool:
        """Report bytes that cannot be valid here and hunt for the next message."""
        self._emit(ev.Malformed, side, what=what, message=message, values=values)
        side.after_gap = False
        side.resync_from = side.state
        side.state = "hunt"
        side.pos += 1
        side.skipped += 1
        return True

    # ------------------------------------------------------- handshake: server

    def _st_greeting(self, side: _Side) -> bool:
        buf, p = side.buf, side.pos
        if side.avail() < 16:
            return False
        if buf[p:p + 8] != M.NBDMAGIC_BYTES:
            return self._malformed(side, "bad-magic", "server greeting does not start with NBDMAGIC")
        second = buf[p + 8:p + 16]
        if second == M.CLISERV_MAGIC_BYTES:
            need = _OLD.size + M.OLDSTYLE_ZEROES
            if side.avail() < need:
                return False
            _, _, size, flags = _OLD.unpack_from(buf, p)
            self.style = "oldstyle"
            self.size, self.transmission_flags = size, flags & 0xFFFF
            self._emit(ev.ServerGreeting, side, style="oldstyle", size=size,
                       transmission_flags=flags & 0xFFFF, oldstyle_high_flags=flags >> 16)
            self._consume(side, need)
            self._start_transmission(side, "oldstyle")
            return True
        if second == M.IHAVEOPT_BYTES:
            if side.avail() < 18:
                return False
            (hflags,) = struct.unpack_from(">H", buf, p + 16)
            self.handshake_flags = hflags
            self.style = "fixed-newstyle" if hflags & HandshakeFlag.FIXED_NEWSTYLE else "newstyle"
            self._emit(ev.ServerGreeting, side, style=self.style, handshake_flags=hflags)
            self._consume(side, 18)
            side.state = "option-replies"
            if self._c.state == "wait-greeting":
                self._c.state = "client-flags"
            return True
        return self._malformed(side, "bad-magic", "NBDMAGIC is followed by neither the oldstyle nor the newstyle magic")

    def _st_option_replies(self, side: _Side) -> bool:
        buf, p = side.buf, side.pos
        export_name = next((o for o in self.pending if o.option == Opt.EXPORT_NAME), None)
        if export_name and (side.avail() < 8 or buf[p:p + 8] != M.OPTION_REPLY_MAGIC_BYTES):
            return self._export_name_reply(side, export_name)
        if side.avail() < OPTION_REPLY_HEADER:
            return False
        magic, option, reply, length = _OREP.unpack_from(buf, p)
        if magic != M.OPTION_REPLY_MAGIC:
            if buf[p:p + 4] in _REPLY_MAGICS and self._c.state == "requests":
                side.state = "replies"  # handshake ended without us seeing why
                return True
            if _looks_like_tls(buf, p):
                return self._malformed(side, "tls-without-starttls", "TLS record where a plaintext reply was due")
            return self._malformed(side, "bad-magic", "expected an option reply magic", magic=magic)
        keep = min(length, HANDSHAKE_KEEP)
        if side.avail() < OPTION_REPLY_HEADER + keep:
            return False
        data = bytes(buf[p + OPTION_REPLY_HEADER:p + OPTION_REPLY_HEADER + keep])
        fields = payloads.option_reply(reply, data)
        if keep < length:
            fields["problem"] = f"option reply length {length} exceeds what we decode ({HANDSHAKE_KEEP})"
        request = next((o for o in self.pending if o.option == option), None)
        early = request is None and self._option_in_progress() == option
        if early and (reply == Rep.ACK or is_rep_error(reply)):
            # the server answered from the option header alone, before the client's payload
            # finished arriving (nbdkit does this when it requires TLS)
            self._answered_early.append(option)
        event = self._emit(ev.OptionReply, side, option=option, reply=reply, length=length,
                           solicited=request is not None or early, **fields)
        self._consume(side, OPTION_REPLY_HEADER, length)
        self._apply_option_reply(side, request, event)
        return True

    def _apply_option_reply(self, side: _Side, request: ev.OptionRequest | None, reply: ev.OptionReply) -> None:
        rep, option = reply.reply, reply.option
        if rep == Rep.META_CONTEXT and reply.context_id is not None and option == Opt.SET_META_CONTEXT:
            self._pending_contexts[reply.context_id] = reply.name or ""
        if rep == Rep.INFO and option == Opt.GO:
            for attr in ("size", "transmission_flags", "min_block", "preferred_block", "max_payload"):
                value = getattr(reply, attr)
                if value is not None:
                    setattr(self, attr, value)
        final = rep == Rep.ACK or is_rep_error(rep)
        if not final or request is None:
            return
        self.pending.remove(request)
        if is_rep_error(rep):
            if option == Opt.SET_META_CONTEXT:
                self.contexts = {}
            return
        if option == Opt.SET_META_CONTEXT:
            self.contexts = dict(self._pending_contexts)
        elif option == Opt.STRUCTURED_REPLY:
            self.structured = True
        elif option == Opt.EXTENDED_HEADERS:
            self.extended = True
        elif option == Opt.STARTTLS:
            self.tls = True
            self._emit(ev.TlsStart, side)
            for s in (self._c, self._s):
                rest = s.avail()
                s.pos = len(s.buf)
                s.state = "tls"
                self._tls(s, rest)
        elif option == Opt.GO:
            self.export_name = request.export_name
            self._start_transmission(side, "go")

    def _option_in_progress(self) -> int | None:
        """The option whose header the client has sent but whose payload is still arriving."""
        c = self._c
        if c.state == "options" and c.avail() >= OPTION_HEADER and c.buf[c.pos:c.pos + 8] == M.IHAVEOPT_BYTES:
            return _OPT.unpack_from(c.buf, c.pos)[1]
        return None

    def _export_name_reply(self, side: _Side, request: ev.OptionRequest) -> bool:
        zeroes = not (self.handshake_flags & HandshakeFlag.NO_ZEROES and self.client_flags & ClientFlag.C_NO_ZEROES)
        need = _EXPORT.size + (M.OLDSTYLE_ZEROES if zeroes else 0)
        if side.avail() < need:
            return False
        size, tflags = _EXPORT.unpack_from(side.buf, side.pos)
        self.pending.remove(request)
        self.export_name = request.export_name
        self.size, self.transmission_flags = size, tflags
        self._emit(ev.ExportNameReply, side, size=size, transmission_flags=tflags, zeroes=zeroes)
        self._consume(side, need)
        self._start_transmission(side, "export-name")
        return True

    def _start_transmission(self, side: _Side, how: str) -> None:
        self.transmission = True
        self._s.state = "replies"
        if self._c.state not in ("hunt",):
            self._c.state = "requests"
        self._emit(ev.TransmissionStart, side, how=how, export_name=self.export_name, size=self.size,
                   transmission_flags=self.transmission_flags, structured_replies=self.structured,
                   extended_headers=self.extended, meta_contexts=tuple(sorted(self.contexts.items())),
                   min_block=self.min_block, preferred_block=self.preferred_block,
                   max_payload=self.max_payload)

    # ------------------------------------------------------- handshake: client

    def _st_wait_greeting(self, side: _Side) -> bool:
        return False  # the client's first bytes mean nothing until the server greeting is known

    def _st_client_flags(self, side: _Side) -> bool:
        if side.avail() < 4:
            return False
        (flags,) = struct.unpack_from(">I", side.buf, side.pos)
        self.client_flags = flags
        self._emit(ev.ClientFlags, side, flags=flags)
        self._consume(side, 4)
        side.state = "options"
        return True

    def _st_options(self, side: _Side) -> bool:
        buf, p = side.buf, side.pos
        if side.avail() < 4:
            return False
        if buf[p:p + 4] in (M.REQUEST_MAGIC_BYTES, M.EXTENDED_REQUEST_MAGIC_BYTES):
            if self.transmission:
                side.state = "requests"
                return True
            if any(o.option in (Opt.GO, Opt.EXPORT_NAME) for o in self.pending):
                return False  # wait for the server to settle the handshake
        if side.avail() < OPTION_HEADER:
            return False
        magic, option, length = _OPT.unpack_from(buf, p)
        if magic != M.IHAVEOPT:
            if _looks_like_tls(buf, p):
                return self._malformed(side, "tls-without-starttls", "TLS record where a plaintext option was due")
            return self._malformed(side, "bad-magic", "expected IHAVEOPT before an option", magic=magic)
        keep = min(length, HANDSHAKE_KEEP)
        if side.avail() < OPTION_HEADER + keep:
            return False
        data = bytes(buf[p + OPTION_HEADER:p + OPTION_HEADER + keep])
        fields = payloads.option_request(option, data)
        if keep < length:
            fields["problem"] = f"option length {length} exceeds what we decode ({HANDSHAKE_KEEP})"
        request = self._emit(ev.OptionRequest, side, option=option, length=length, **fields)
        self._consume(side, OPTION_HEADER, length)
        if option in self._answered_early:
            self._answered_early.remove(option)
        else:
            self.pending.append(request)
        if option == Opt.SET_META_CONTEXT:
            self._pending_contexts = {}
        return True

    # --------------------------------------------------------- transmission

    def _st_requests(self, side: _Side) -> bool:
        buf, p = side.buf, side.pos
        avail = len(buf) - p
        if avail < 4:
            return False
        head = buf[p:p + 4]
        if head == M.REQUEST_MAGIC_BYTES:
            if avail < REQUEST_HEADER:
                return False
            _, flags, cmd, cookie, offset, length = _REQ.unpack_from(buf, p)
            hsize, extended = REQUEST_HEADER, False
            payload = length if cmd == _WRITE else 0
        elif head == M.EXTENDED_REQUEST_MAGIC_BYTES:
            if avail < EXTENDED_REQUEST_HEADER:
                return False
            _, flags, cmd, cookie, offset, length = _EREQ.unpack_from(buf, p)
            hsize, extended = EXTENDED_REQUEST_HEADER, True
            payload = length if flags & _PAYLOAD_LEN or cmd == _WRITE else 0
        elif head == M.IHAVEOPT_BYTES[:4] and avail >= 8 and buf[p:p + 8] == M.IHAVEOPT_BYTES:
            return self._malformed(side, "option-after-handshake",
                                   "client sent an option after the handshake ended")
        else:
            return self._malformed(side, "bad-magic", "expected a request magic",
                                   magic=int.from_bytes(head, "big"))
        effect = length
        if cmd == Cmd.BLOCK_STATUS and payload and payload <= HANDSHAKE_KEEP:
            if avail < hsize + payload:
                return False
            extra = payloads.block_status_payload(bytes(buf[p + hsize:p + hsize + payload]))
            effect = extra.get("effect_length", length)
            self._emit(ev.Request, side, cookie=cookie, command=cmd, flags=flags, offset=offset, length=length,
                       extended=extended, payload_length=payload, **extra)
        else:  # the common case, built without keyword dictionaries
            self._out.append(ev.Request(dir=side.dir, frame=side.frame, time=side.time,
                                        phase="transmission" if self.transmission else "handshake",
                                        cookie=cookie, command=cmd, flags=flags, offset=offset, length=length,
                                        extended=extended, payload_length=payload))
        is_write = cmd == _WRITE
        self._consume(side, hsize, payload, self._sink(cookie, offset, "write", payload)
                      if is_write and payload and self.keep_data else None, is_data=is_write)
        if cmd == Cmd.DISC:
            self.disc = True  # no reply will come
        else:
            self.in_flight[cookie] = _Flight(cmd, flags, offset, effect, side.frame, side.time)
        if not self.transmission:
            self._begin_mid_stream(side)
        return True

    def _begin_mid_stream(self, side: _Side) -> None:
        if not self.transmission:
            self.transmission = True
            self._emit(ev.TransmissionStart, side, how="mid-stream", export_name=None, size=None,
                       transmission_flags=None, structured_replies=self.structured,
                       extended_headers=self.extended)

    def _answered(self, side: _Side, cookie: int, completes: bool,
                  error: bool) -> tuple[_Flight | None, bool, float | None]:
        """The request a reply message answers (None: no such request in flight), whether the
        reply as a whole failed (on its last message), and the latency when it completes."""
        flight = self.in_flight.get(cookie)
        if flight is None:
            return None, error and completes, None
        if error:
            flight.errored = True
        if not completes:
            return flight, False, None
        del self.in_flight[cookie]
        return flight, flight.errored, round((side.time - flight.time) * 1e6, 1)

    def _st_replies(self, side: _Side) -> bool:
        buf, p = side.buf, side.pos
        if side.avail() < 4:
            return False
        head = buf[p:p + 4]
        if head == M.SIMPLE_REPLY_MAGIC_BYTES:
            return self._simple_reply(side)
        if head == M.STRUCTURED_REPLY_MAGIC_BYTES:
            if side.avail() < STRUCTURED_REPLY_HEADER:
                return False
            _, flags, rtype, cookie, length = _CHUNK.unpack_from(buf, p)
            return self._chunk(side, flags, rtype, cookie, length, None, STRUCTURED_REPLY_HEADER, False)
        if head == M.EXTENDED_REPLY_MAGIC_BYTES:
            if side.avail() < EXTENDED_REPLY_HEADER:
                return False
            _, flags, rtype, cookie, offset, length = _ECHUNK.unpack_from(buf, p)
            return self._chunk(side, flags, rtype, cookie, length, offset, EXTENDED_REPLY_HEADER, True)
        return self._malformed(side, "bad-magic", "expected a reply magic", magic=int.from_bytes(head, "big"))

    def _simple_reply(self, side: _Side) -> bool:
        buf, p = side.buf, side.pos
        if side.avail() < SIMPLE_REPLY_HEADER:
            return False
        _, error, cookie = _SREP.unpack_from(buf, p)
        flight = self.in_flight.get(cookie)
        data: int | None
        if flight is not None:
            data = flight.length if flight.command == Cmd.READ and error == 0 else 0
        elif error:
            data = 0
        else:
            # A success for a cookie we never saw: read data may follow, of unknown length.
            if side.avail() < SIMPLE_REPLY_HEADER + 4:
                if not self._closing:
                    return False
                # the stream ended: whatever follows the header is all the data there is
                data = side.avail() - SIMPLE_REPLY_HEADER
                nxt = b""
            else:
                nxt = buf[p + SIMPLE_REPLY_HEADER:p + SIMPLE_REPLY_HEADER + 4]
            if nxt:
                data = 0 if nxt in _REPLY_MAGICS else None
        self._out.append(self._reply(ev.SimpleReply, side, cookie, True, error != 0, error=error,
                                     data_length=data))
        self._consume(side, SIMPLE_REPLY_HEADER, data or 0,
                      self._sink(cookie, flight.offset, "read", data) if data and flight is not None else None,
                      is_data=True)
        if data is None:
            side.resync_from, side.state = "replies", "hunt"
        if not self.transmission:
            self._begin_mid_stream(side)
        return True

    def _reply(self, cls: type[ev.Reply], side: _Side, cookie: int, completes: bool, is_error: bool, /,
               **fields: Any) -> Any:
        flight, failed, latency = self._answered(side, cookie, completes, is_error)
        phase: ev.Phase = "transmission" if self.transmission else "handshake"
        if flight is None:
            return cls(dir=side.dir, frame=side.frame, time=side.time, phase=phase, cookie=cookie,
                       completes=completes, failed=failed, **fields)
        return cls(dir=side.dir, frame=side.frame, time=side.time, phase=phase, cookie=cookie,
                   command=flight.command, request_frame=flight.frame, request_offset=flight.offset,
                   request_length=flight.length, request_flags=flight.flags, completes=completes, failed=failed,
                   latency_us=latency, **fields)

    def _chunk(self, side: _Side, flags: int, rtype: int, cookie: int, length: int, hoffset: int | None,
               hsize: int, extended: bool) -> bool:
        buf, p = side.buf, side.pos + hsize
        done = bool(flags & _DONE)
        if rtype == _OFFSET_DATA and length >= 9:  # read data, by far the most common chunk: no payload parser
            if len(buf) < p + 8:
                return False
            offset = int.from_bytes(buf[p:p + 8], "big")
            data_length = length - 8
            self._out.append(self._reply(ev.ReplyChunk, side, cookie, done, False, reply_type=rtype, flags=flags,
                                         length=length, extended=extended, header_offset=hoffset, offset=offset,
                                         data_length=data_length))
            sink = self._sink(cookie, offset, "read", data_length) if self.keep_data else None
            self._consume(side, hsize + 8, data_length, sink, is_data=True)
            if not self.transmission:
                self._begin_mid_stream(side)
            return True
        keep = 8 if rtype == _OFFSET_DATA else min(length, CHUNK_KEEP)
        keep = min(keep, length)
        if len(buf) < p + keep:
            return False
        fields = payloads.reply_chunk(rtype, bytes(buf[p:p + keep]), length, MAX_EXTENTS)
        if keep < length and rtype != _OFFSET_DATA:
            fields.setdefault("problem", f"chunk length {length} exceeds what we decode ({CHUNK_KEEP})")
        if "context_id" in fields:
            fields["context"] = self.contexts.get(fields["context_id"])
        self._out.append(self._reply(ev.ReplyChunk, side, cookie, done, is_reply_type_error(rtype), reply_type=rtype,
                                     flags=flags, length=length, extended=extended, header_offset=hoffset, **fields))
        sink = None
        if rtype == _OFFSET_DATA and "data_length" in fields:
            sink = self._sink(cookie, fields["offset"], "read", fields["data_length"])
        self._consume(side, hsize + keep, length - keep, sink, is_data=rtype == _OFFSET_DATA)
        if not self.transmission:
            self._begin_mid_stream(side)
        return True

    # ------------------------------------------------------------ resync

    def _st_hunt(self, side: _Side) -> bool:
        """Find the next offset where a plausible message header starts."""
        buf = side.buf
        start = side.pos
        magics = _C2S_MAGICS if side.dir == "c2s" else _S2C_MAGICS
        best = -1
        search = start
        while True:
            hits = [i for i in (buf.find(m, search) for m in magics) if i >= 0]
            if not hits:
                keep_tail = 7  # a magic may straddle this chunk and the next
                drop = max(0, len(buf) - keep_tail - start)
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
                best = cand
                break
            search = cand + 1
        side.skipped += best - start
        side.pos = best
        skipped, side.skipped = side.skipped, 0
        state = self._state_for_magic(side)
        if skipped or side.resync_from != "any":
            self._emit(ev.Resync, side, skipped=skipped, after_gap=side.after_gap)
        side.after_gap = False
        side.state = state
        side.resync_from = None
        return True

    def _state_for_magic(self, side: _Side) -> str:
        head = bytes(side.buf[side.pos:side.pos + 8])
        if side.dir == "c2s":
            return "options" if head == M.IHAVEOPT_BYTES else "requests"
        if head == M.NBDMAGIC_BYTES:
            return "greeting"
        return "option-replies" if head == M.OPTION_REPLY_MAGIC_BYTES else "replies"

    def _plausible(self, side: _Side, i: int) -> bool | None:
        """Would a header at ``i`` make sense? None when more bytes are needed to tell."""
        buf = side.buf
        n = len(buf) - i
        head = bytes(buf[i:i + 4])
        if n < 8:
            return None
        if side.dir == "c2s":
            if bytes(buf[i:i + 8]) == M.IHAVEOPT_BYTES:
                if n < OPTION_HEADER:
                    return None
                _, option, length = _OPT.unpack_from(buf, i)
                return option in OPTIONS and length <= HANDSHAKE_KEEP
            ext = head == M.EXTENDED_REQUEST_MAGIC_BYTES
            size = EXTENDED_REQUEST_HEADER if ext else REQUEST_HEADER
            if n < size:
                return None
            _, flags, cmd, cookie, _off, length = (_EREQ if ext else _REQ).unpack_from(buf, i)
            if cmd not in COMMANDS or COMMAND_FLAGS.reserved(flags):
                return False
            return cmd != Cmd.WRITE or length <= SANE_PAYLOAD
        if bytes(buf[i:i + 8]) in (M.NBDMAGIC_BYTES, M.OPTION_REPLY_MAGIC_BYTES):
            return True
        if head == M.SIMPLE_REPLY_MAGIC_BYTES:
            if n < SIMPLE_REPLY_HEADER:
                return None
            _, error, cookie = _SREP.unpack_from(buf, i)
            return cookie in self.in_flight or error in ERRORS
        ext = head == M.EXTENDED_REPLY_MAGIC_BYTES
        size = EXTENDED_REPLY_HEADER if ext else STRUCTURED_REPLY_HEADER
        if n < size:
            return None
        if ext:
            _, flags, rtype, cookie, _off, length = _ECHUNK.unpack_from(buf, i)
        else:
            _, flags, rtype, cookie, length = _CHUNK.unpack_from(buf, i)
        if REPLY_FLAGS.reserved(flags) or length > SANE_PAYLOAD:
            return False
        return cookie in self.in_flight or rtype in REPLY_TYPES or is_reply_type_error(rtype)


_HANDLERS = {name[4:].replace("_", "-"): fn for name, fn in vars(Connection).items() if name.startswith("_st_")}
