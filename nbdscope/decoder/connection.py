"""Sans-IO decoder for one NBD connection.

Feed it the bytes of each direction in capture order; it returns immutable
events. It never reads sockets or files, so the pcap reader, a live capture and
the proxy all share it. Bulk payloads (read and write data) are skipped by
count and never buffered; only headers and the bounded payloads whose contents
matter (options, block status, error messages) are held until complete.

This module feeds bytes in and holds what was negotiated; the messages are
decoded by phase (``handshake``, ``transmission``, ``resync``), states move only
through ``state.Machine``, replies find their requests in ``matching``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbdscope.decoder import events as ev
from nbdscope.decoder.buffer import ReceiveBuffer
from nbdscope.decoder.handshake import Handshake
from nbdscope.decoder.matching import InFlight
from nbdscope.decoder.resync import Hunter
from nbdscope.decoder.sinks import Sink
from nbdscope.decoder.state import Input, Machine, State
from nbdscope.decoder.transmission import Transmission
from nbdscope.spec import magics as M
from nbdscope.vocab import Direction

if TYPE_CHECKING:
    from nbdscope.decoder.decrypted import TlsLayer
    from nbdscope.tls.keylog import KeyLog

TLS_HEAD = 11  # bytes that show a record's type and version, and a ServerHello's version
FEED_PIECE = 16 << 10  # bytes put into a side's buffer at a time in transmission
HEADER_KEEP = 64  # keep_headers: wire bytes kept per message (the header and the start of a bounded payload)


class Connection:
    """Decoder for one NBD connection (both directions)."""

    def __init__(self, *, saw_start: bool = True, keep_data: bool = False, track_payload: bool = False,
                 keep_headers: bool = False, want_read: Callable[[int, int], bool] | None = None,
                 tls_keys: KeyLog | None = None) -> None:
        self.saw_start = saw_start
        self.keep_data = keep_data
        # keep_data: whether the read data of (disk offset, length) is worth gathering (None: always); the
        # data checks say no where nothing was written, so a capture without writes costs them nothing
        self.want_read = want_read
        self.keep_headers = keep_headers  # attach each message's header bytes to its event (for hex views)
        self._c = ReceiveBuffer("c2s", track_payload=track_payload)
        self._s = ReceiveBuffer("s2c", track_payload=track_payload)
        # what was negotiated (the handshake sets these; the phase flags only the state machine)
        self.style: str = "unknown"
        self.handshake_flags = 0
        self.client_flags = 0
        self.tls = False
        self.transmission = False
        self.phase: ev.Phase = "handshake"
        self.structured: bool | None = False if saw_start else None
        self.extended: bool | None = False if saw_start else None
        self.export_name: str | None = None
        self.size: int | None = None
        self.transmission_flags: int | None = None
        self.min_block: int | None = None
        self.preferred_block: int | None = None
        self.max_payload: int | None = None
        self.contexts: dict[int, str] = {}
        self.pending: deque[ev.OptionRequest] = deque()  # options awaiting their final reply
        self.flights = InFlight()
        self.in_flight = self.flights.view  # cookie -> request, read-only
        self.disc = False
        self.closing = False  # close() is draining: a reply may take whatever bytes are left
        self.tls_bytes = {"c2s": 0, "s2c": 0}
        self.tls_seen: set[str] = set()  # directions whose first bytes after STARTTLS were judged
        self.tls_head: dict[str, bytes] = {}  # a direction's first encrypted bytes, until TLS_HEAD of them
        self.tls_keys = tls_keys  # the peers' key log: decrypt after STARTTLS (decrypted.py)
        self.tls_layer: TlsLayer | None = None  # while decryption works
        self.tls_wire: TlsLayer | None = None  # the same, kept after it stops: maps payload ranges to the wire
        self.tls_plaintext = False  # the source terminates TLS and hands over plaintext (terminate_tls)
        self.next_seq = itertools.count().__next__
        self.out: list[ev.Event] = []  # the events of the current call
        handshake, transmission, hunter = Handshake(self), Transmission(self), Hunter(self)
        self.hunter = hunter
        self.machine = Machine(self, {
            State.WAIT_GREETING: handshake.wait_greeting, State.CLIENT_FLAGS: handshake.client_flags,
            State.OPTIONS: handshake.options, State.GREETING: handshake.greeting,
            State.OPTION_REPLIES: handshake.option_replies, State.REQUESTS: transmission.requests,
            State.REPLIES: transmission.replies, State.HUNT: hunter.hunt, State.TLS: _encrypted})
        if saw_start:
            self.machine.enter(self._c, State.WAIT_GREETING)
            self.machine.enter(self._s, State.GREETING)
        else:  # the capture began part-way through: find the first message quietly
            for side in (self._c, self._s):
                self.machine.enter(side, State.HUNT)
                side.after_gap = True

    # ------------------------------------------------------------------ input

    def feed(self, direction: Direction, data: bytes | memoryview, *, frame: int, time: float) -> list[ev.Event]:
        if self.tls_layer is not None:
            return self.tls_layer.feed(direction, data, frame, time)
        side = self._c if direction == "c2s" else self._s
        side.frame, side.time = frame, time
        n = len(data)
        if side.skip >= n and side.pos == len(side.buf) and side.sink is None:
            side.skip -= n  # inside a read or write payload: nothing to decode
            if side.payload is not None and side.skip_data:
                side.payload.append((side.fed, side.fed + n))
            side.fed += n
            return []
        out: list[ev.Event] = []
        self.out = out
        if side.state is State.TLS:
            self.tls_data(side, side.fed, n, bytes(data[:TLS_HEAD]))
            side.fed += n
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
                        self.sink_done(side)
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
        if self.tls_layer is not None:
            return 0  # ciphertext: every byte goes to the decryptor
        return side.skip if side.pos == len(side.buf) and side.sink is None and side.state is not State.TLS else 0

    def take_payload_ranges(self, direction: Direction) -> list[tuple[int, int]]:
        """Stream ranges of read and write data fed since the last call (track_payload). The
        same ranges, whole, are on the events: ``data_start`` to ``end``."""
        ranges = (self._c if direction == "c2s" else self._s).take_payload()
        return ranges if self.tls_wire is None else self.tls_wire.to_wire(direction, ranges)

    def settled(self, direction: Direction) -> int | None:
        """While TLS is decrypted: the stream offset up to which payload ranges are known (bytes of a TLS record
        still incomplete may turn out to be data); None: all bytes fed."""
        return self.tls_layer.settled(direction) if self.tls_layer is not None else None

    def gap(self, direction: Direction, nbytes: int, *, frame: int, time: float,
            snapped: bool = False) -> list[ev.Event]:
        """``nbytes`` of this direction were lost (``snapped``: cut off by the snapshot length). Inside
        a payload being skipped, or inside a buffered message whose header (all of it captured) gives its
        length, framing survives; anywhere else decoding hunts for the next header."""
        side = self._c if direction == "c2s" else self._s
        side.frame, side.time = frame, time
        out: list[ev.Event] = []
        self.out = out
        if self.tls_layer is not None:  # records cannot be framed or numbered past lost bytes
            self.tls_layer.gap(side, nbytes)
        taken = False
        if side.avail() and not side.skip and side.sink is None and side.state not in (State.HUNT, State.TLS):
            # the handler waits for the rest of a message: it may take the lost bytes as part of it,
            # emit the message as cut (``lost``) and pass over the rest by its length
            side.lost, waiting = nbytes, side.offset
            try:
                while side.step(side) and side.avail() and not side.skip:
                    pass  # (a step may only change state, e.g. a cut request that ends the handshake)
            finally:
                side.lost = 0
            taken = side.offset != waiting
        before = side.fed
        framed_to = side.hunt_from if side.state is State.HUNT else side.framed_to
        side.fed += nbytes
        if side.state is State.TLS:
            self.emit(ev.Gap, side, before, side.fed, nbytes=nbytes, resync=False, snapped=snapped)
            self.tls_bytes[direction] += nbytes
        elif side.skip >= nbytes and not side.avail():
            side.skip -= nbytes  # lost bytes were payload: framing survives
            if side.sink is not None:
                side.sink.lost = True
                if not side.skip:
                    self.sink_done(side)
            cut = next((_CUT_KINDS[type(e)] for e in reversed(out)
                        if type(e) in _CUT_KINDS and e.lost is not None), None)  # type: ignore[attr-defined]
            self.emit(ev.Gap, side, before, side.fed, nbytes=nbytes, resync=False, snapped=snapped, within=cut)
            if taken:
                self._pump()  # the message taken may let the other side on (the handshake ended)
        else:
            self.emit(ev.Gap, side, framed_to, side.fed, nbytes=nbytes, resync=True, snapped=snapped)
            side.buf.clear()
            side.pos = 0
            side.skip = 0
            side.sink = None
            side.after_gap = True
            side.hunt_from = side.fed
            self.machine.fire(Input.GAP, side)
            self._pump()
        return out

    def close(self, how: str, *, frame: int, time: float, by: Direction | None = None) -> list[ev.Event]:
        out: list[ev.Event] = []
        self.out = out
        self.closing = True
        if self.tls_layer is not None:
            self.tls_layer.close()
        self._pump()
        unparsed = tuple((s.dir, s.avail() + s.skip) for s in (self._c, self._s) if s.avail() + s.skip)
        flights = tuple((cookie, r.command, r.frame) for cookie, r in self.in_flight.items())
        s = self._s
        s.frame, s.time = frame, time
        self.emit(ev.ConnectionEnd, s, s.fed, s.fed, how=how, soft=self.disc, in_flight=flights,
                  unparsed=unparsed, by=by)
        return out

    # ------------------------------------------------- helpers for the phases

    def emit(self, cls: type[ev.Event], side: ReceiveBuffer, start: int, end: int, **fields: Any) -> Any:
        """Build an event of this side's current frame and append it (not for the hot paths,
        which build theirs without keyword dictionaries)."""
        event = cls(dir=side.dir, frame=side.frame, time=side.time, phase=self.phase, seq=self.next_seq(),
                    start=start, end=end, **fields)
        self.out.append(event)
        return event

    def cut_short(self, side: ReceiveBuffer, total: int) -> int | None:
        """While a gap is placed: when the lost bytes end inside the ``total``-byte message at the read
        position (its header already buffered), how many of its bytes go undecoded; else None."""
        if side.lost and side.avail() + side.lost <= total:
            return total - side.avail()
        return None

    def header(self, side: ReceiveBuffer, n: int) -> bytes | None:
        """The first bytes of the message at the read position, when headers are kept."""
        if not self.keep_headers:
            return None
        return bytes(side.buf[side.pos:side.pos + min(n, HEADER_KEEP)])

    def consume(self, side: ReceiveBuffer, n: int, payload: int = 0, sink: Sink | None = None,
                is_data: bool = False) -> None:
        """Drop a decoded header of ``n`` bytes and arrange to pass over ``payload`` more
        (handing the payload to ``sink`` when data is wanted; ``is_data``: it is read or
        write data, which redaction hides)."""
        side.pos += n
        side.skip_data = is_data
        if payload:
            take = min(payload, len(side.buf) - side.pos)
            if take and is_data and side.payload is not None:
                at = side.fed - len(side.buf) + side.pos
                side.payload.append((at, at + take))
            if sink is not None:
                sink.parts.append(bytes(side.buf[side.pos:side.pos + take]))
                side.sink = sink
            side.pos += take
            side.skip = payload - take
            if sink is not None and not side.skip:
                self.sink_done(side)

    def sink_done(self, side: ReceiveBuffer) -> None:
        sink, side.sink = side.sink, None
        if sink is not None and not sink.lost:
            self.emit(ev.PayloadData, side, sink.start, sink.end, cookie=sink.cookie, offset=sink.offset,
                      kind=sink.kind, data=b"".join(sink.parts))

    def tls_begin(self) -> None:
        """STARTTLS was acknowledged: what either side sent after the acknowledgement is encrypted (and,
        with a key log, decrypted from here on)."""
        if self.tls_keys is not None or self.tls_plaintext:
            from nbdscope.decoder.decrypted import Terminated, TlsLayer
            from nbdscope.tls.session import Decryptor

            decryptor = Terminated() if self.tls_plaintext else Decryptor(self.tls_keys)  # type: ignore[arg-type]
            self.tls_layer = self.tls_wire = TlsLayer(self, decryptor)
        for s in (self._c, self._s):
            start, rest = s.offset, s.avail()
            s.pos = len(s.buf)
            self.tls_data(s, start, rest, bytes(s.buf[s.pos - rest:s.pos - rest + TLS_HEAD]))
            if self.tls_layer is not None:
                self.tls_layer.begin(s, bytes(s.buf[s.pos - rest:]))

    def terminate_tls(self) -> None:
        """The source says the bytes after STARTTLS's acknowledgement will come decrypted (a proxy terminating
        TLS on both sides): they are decoded as the plaintext a key log gives. Given before the acknowledgement."""
        self.tls_plaintext = True

    def tls_data(self, side: ReceiveBuffer, start: int, n: int, head: bytes) -> None:
        """Count encrypted bytes; ``head`` (their first bytes) is judged on a direction's first ones."""
        if n:
            self.tls_bytes[side.dir] += n
            if side.dir in self.tls_seen:
                self.emit(ev.TlsData, side, start, start + n, nbytes=n)
                return
            # judged once TLS_HEAD bytes are in, however the stream was cut into pieces
            head = self.tls_head[side.dir] = (self.tls_head.get(side.dir, b"") + head)[:TLS_HEAD]
            if len(head) < TLS_HEAD:
                self.emit(ev.TlsData, side, start, start + n, nbytes=n)
                return
            self.tls_seen.add(side.dir)
            hello = head[9] << 8 | head[10] if head[0] == 22 and head[5] == 2 else None
            self.emit(ev.TlsData, side, start, start + n, nbytes=n, plaintext=not_a_tls_record(head),
                      hello_version=hello if side.dir == "s2c" else None)

    def _pump(self) -> None:
        c, s = self._c, self._s
        progress = True
        while progress:  # either side may unblock the other (replies wait for their requests)
            progress = False
            for side in (s, c):
                while not side.skip and len(side.buf) > side.pos and side.step(side):
                    progress = True
        c.compact()
        s.compact()


# the messages a gap may cut once their header is in (Connection.gap), by the name Gap.within gives them
_CUT_KINDS: dict[type[ev.Event], Any] = {ev.ServerGreeting: "greeting", ev.OptionRequest: "option",
                                         ev.OptionReply: "option-reply", ev.ExportNameReply: "export-name-reply",
                                         ev.ReplyChunk: "reply-chunk"}

_NBD_STARTS = ((M.IHAVEOPT_BYTES, "an NBD option (IHAVEOPT)"), (M.OPTION_REPLY_MAGIC_BYTES, "an NBD option reply"),
               (M.REQUEST_MAGIC_BYTES, "an NBD request"), (M.SIMPLE_REPLY_MAGIC_BYTES, "an NBD simple reply"),
               (M.STRUCTURED_REPLY_MAGIC_BYTES, "an NBD structured reply"))


def not_a_tls_record(head: bytes) -> str | None:
    """None when ``head`` can begin a TLS record (content type 20-24, major version 3); else what it is."""
    if head and 20 <= head[0] <= 24 and (len(head) < 2 or head[1] == 3):
        return None
    for magic, what in _NBD_STARTS:
        if head.startswith(magic):
            return what
    return f"bytes {head[:4].hex(' ')}"


def _encrypted(side: ReceiveBuffer) -> bool:
    return False  # bytes after STARTTLS are counted as they arrive, never buffered
