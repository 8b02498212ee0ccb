"""TCP reassembly and NBD stream detection.

Each direction delivers bytes in sequence order exactly once: retransmissions
and overlaps are trimmed, out-of-order segments wait (bounded) for the hole to
fill, and a hole that cannot fill becomes a StreamGap. Memory is the open
connections plus their out-of-order backlog; delivered bytes are never kept.

A connection is NBD when one end is on 10809 or a ``--port``, when either direction starts
with an NBD magic, when its server end (address and port) is the server of another NBD
connection in the input (also one found later, as long as this one is undecided or was given up
part-way), or, for a connection whose SYN the capture missed, when the header search of
capture/sniff.py finds plausible headers in the first 256 KiB of a direction. Undecided, a
connection keeps at most that window (plus one segment) per direction; the decoder then hunts
for the first header itself, counting what it skips.

Given a ``trace`` list, TcpStreams also says where in the capture every payload
byte of an NBD connection lies: one Origin per delivered chunk (in the order of
the StreamData items) and one per piece it did not deliver again (retransmitted
or overlapping bytes), so a copy of the capture can be redacted without a second
reassembly. StreamData itself stays as small as it is (one is made per packet).

Once a connection is known to be NBD, both of its halves are also listed in
``TcpStreams.fast`` under the raw bytes source address + destination address +
ports (as they lie in an option-less IP header followed by TCP), so a reader can
take the next in-order segment on without building a Segment (capture/pcapfast.py).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Collection

from nbdscope.capture.detect import DETECT_SEGMENTS, last_chance, magic_says, peer_says, port_says, search_says
from nbdscope.capture.halves import FIRST_KEPT, OOO_LIMIT, Half, Origin, TcpConn, fast_key, signed
from nbdscope.capture.linklayer import ACK, FIN, RST, SYN, Segment
from nbdscope.capture.sniff import HeaderSearch
from nbdscope.spec import magics as M
from nbdscope.vocab import (
    Direction,
    Endpoint,
    StreamClose,
    StreamData,
    StreamGap,
    StreamItem,
    StreamOpen,
)

RECENTLY_CLOSED = 4096


class TcpStreams:
    """Feeds decoded TCP segments, returns stream items for NBD connections."""

    def __init__(self, source: str, extra_ports: Collection[int] = (), first_conn_id: int = 0,
                 trace: list[Origin] | None = None) -> None:
        self.source = source
        self.ports = {M.DEFAULT_PORT, *extra_ports}
        self.conns: dict[tuple[bytes, int, bytes, int], TcpConn] = {}
        self.closed: dict[tuple[bytes, int, bytes, int], int | None] = {}  # the NBD connection's id, if it was one
        self.next_id = first_conn_id
        self.out: list[StreamItem] = []
        self.trace = trace
        self.fast: dict[bytes, Half] = {}  # halves of NBD connections by fast_key (see the module's docstring)
        self.servers: set[tuple[bytes, int]] = set()  # server endpoints (address, port) of NBD connections seen

    # ------------------------------------------------------------------ input

    def feed(self, seg: Segment, frame: int, time: float) -> list[StreamItem]:  # noqa: C901
        # (C901: the one entry of every segment; its in-order fast path must stay ahead of any call)
        fwd = (seg.src, seg.sport, seg.dst, seg.dport)
        conn = self.conns.get(fwd)
        flags = seg.flags
        if conn is not None and conn.state == "nbd" and not flags & (SYN | FIN | RST) and seg.payload and not seg.cut:
            # fast path: the next in-order segment of an established connection
            side = 0
            half = conn.halves[0]
            if half.next_seq == seg.seq and not half.heap:
                half.next_seq = (seg.seq + len(seg.payload)) & 0xFFFFFFFF
                half.offset += len(seg.payload)
                d: Direction = "c2s" if conn.client_side == side else "s2c"
                if self.trace is not None:
                    self._trace_fast(conn, half, d, seg, frame)
                return [StreamData(conn.conn_id, d, seg.payload, frame, time)]
        rev = (seg.dst, seg.dport, seg.src, seg.sport)
        if conn is None:
            conn = self.conns.get(rev)
            if conn is not None and conn.state == "nbd" and not flags & (SYN | FIN | RST) and seg.payload \
                    and not seg.cut:
                half = conn.halves[1]
                if half.next_seq == seg.seq and not half.heap:
                    half.next_seq = (seg.seq + len(seg.payload)) & 0xFFFFFFFF
                    half.offset += len(seg.payload)
                    d = "c2s" if conn.client_side == 1 else "s2c"
                    if self.trace is not None:
                        self._trace_fast(conn, half, d, seg, frame)
                    return [StreamData(conn.conn_id, d, seg.payload, frame, time)]
        out: list[StreamItem] = []
        self.out = out
        if conn is None:
            key = fwd
            if key in self.closed or rev in self.closed:
                if not flags & SYN or flags & ACK:
                    if self.trace is not None and seg.payload:
                        self._trace_straggler(key if key in self.closed else rev, seg, frame)
                    return out  # stragglers of a connection already closed
                self.closed.pop(key, None)
                self.closed.pop(rev, None)
            if not seg.payload and not seg.cut and not flags & SYN:
                return out
            conn = self.conns[key] = TcpConn(key)
        elif flags & SYN and not flags & ACK and conn.syn_seen and conn.key == fwd:
            self._close(conn, "fin", frame, time)  # port reuse: a new connection on the same tuple
            conn = self.conns[fwd] = TcpConn(fwd)
        if conn.state == "ignored":
            if flags & (FIN | RST):
                self._forget(conn)
            return out
        side = 0 if conn.key == fwd else 1
        half = conn.halves[side]
        if flags & SYN:
            conn.syn_seen = True
            half.next_seq = (seg.seq + 1) & 0xFFFFFFFF
            if not flags & ACK:
                conn.client_side = side
            elif conn.client_side is None:
                conn.client_side = 1 - side
            if conn.state == "detect" and port_says(conn, self.ports) is not None:
                self._open(conn, frame, time)
            elif conn.state == "nbd":
                self._bind(conn)  # a SYN may have changed which side is the client
        if flags & ACK:
            self._ack_reveals_loss(conn, 1 - side, seg.ack, frame, time)
        if seg.payload or seg.cut:
            self._data(conn, side, seg.seq + (1 if flags & SYN else 0), seg.payload, frame, time, seg.offset,
                       seg.cut)
        if flags & (RST | FIN) and conn.closer is None:
            conn.closer = side
        if flags & RST:
            self._close(conn, "rst", frame, time)
        elif flags & FIN:
            half.fin = True
            if conn.halves[1 - side].fin:
                self._close(conn, "fin", frame, time)
        return out

    def finish(self, frame: int, time: float) -> list[StreamItem]:
        out: list[StreamItem] = []
        self.out = out
        for conn in list(self.conns.values()):
            if self.conns.get(conn.key) is conn:  # (not replaced meanwhile: see _wake)
                self._close(conn, "end-of-capture", frame, time)
        return out

    # ------------------------------------------------------------- reassembly

    def _data(self, conn: TcpConn, side: int, seq: int, payload: bytes | memoryview, frame: int, time: float,
              pos: int, cut: int = 0) -> None:
        """Place a segment's payload: deliver it when it is next, keep it while a hole is before it.
        ``cut`` bytes follow it that the capture did not keep (snapshot length): they are delivered
        as a gap of known size where they belong, so the decoder can skip them inside a payload."""
        half = conn.halves[side]
        if half.next_seq is None:
            half.next_seq = seq  # capture began mid-connection
        delta = signed(seq - half.next_seq)
        if delta < 0:
            if self.trace is not None and payload:
                self._trace_again(conn, side, half.offset + delta, min(-delta, len(payload)), frame, pos)
            if -delta >= len(payload) + cut:
                return  # pure retransmission
            if -delta >= len(payload):
                cut, payload = cut - (-delta - len(payload)), b""
            else:
                payload, pos = payload[-delta:], pos - delta
            seq, delta = half.next_seq, 0
        if delta > 0:
            self._hold(conn, side, half.offset + delta, payload, frame, time, pos, cut)
            return
        if payload:
            self._deliver(conn, side, payload, frame, time, frame, pos)
        if cut:
            self._lose(conn, side, cut, frame, time, snapped=True)
        if half.heap:
            self._drain(conn, side, frame, time)

    def _hold(self, conn: TcpConn, side: int, key: int, payload: bytes | memoryview, frame: int, time: float,
              pos: int, cut: int) -> None:
        """Keep a segment that lies beyond a hole (at stream offset ``key``) until the hole fills."""
        half = conn.halves[side]
        known = half.ooo.get(key)
        if known is None or len(known[0]) + known[3] < len(payload) + cut:
            if known is None:
                heapq.heappush(half.heap, key)
            elif self.trace is not None:
                self._trace_again(conn, side, key, len(known[0]), known[1], known[2])
            half.ooo_bytes += len(payload) - (len(known[0]) if known else 0)
            half.ooo[key] = (bytes(payload), frame, pos, cut)  # kept across packets: no view into the buffer
        elif self.trace is not None:
            self._trace_again(conn, side, key, len(payload), frame, pos)
        if half.ooo_bytes > OOO_LIMIT:
            self._give_up_hole(conn, side, frame, time)

    def _lose(self, conn: TcpConn, side: int, missing: int, frame: int, time: float, snapped: bool = False) -> None:
        """The next ``missing`` bytes of this half will never be seen: move past them, and tell the
        decoder once the connection is NBD (before that, they are counted as unseen)."""
        half = conn.halves[side]
        half.next_seq = (half.next_seq + missing) & 0xFFFFFFFF  # type: ignore[operator]
        half.offset += missing
        if conn.state == "nbd":
            self.out.append(StreamGap(conn.conn_id, self._dir(conn, side), missing, frame, time, snapped))
        elif conn.state == "detect" and any(p[0] == side for p in conn.pending):
            # after bytes the decoder will be given: it must learn of the loss in its place
            conn.pending.append((side, missing, frame, time, frame, -1, half.offset - missing - half.unseen))
        else:
            half.unseen += missing

    def _deliver(self, conn: TcpConn, side: int, data: bytes | memoryview, frame: int, time: float, src: int,
                 pos: int) -> None:
        """Hand on ``data``, found at ``pos`` in frame ``src`` (``frame`` is the one that completed it)."""
        half = conn.halves[side]
        at = half.offset - half.unseen
        half.next_seq = (half.next_seq + len(data)) & 0xFFFFFFFF  # type: ignore[operator]
        half.offset += len(data)
        if conn.state == "nbd":
            d = self._dir(conn, side)
            self.out.append(StreamData(conn.conn_id, d, data, frame, time))
            if self.trace is not None:
                self.trace.append(Origin(conn.conn_id, d, at, len(data), src, pos))
        elif conn.state == "detect":
            conn.pending.append((side, bytes(data), frame, time, src, pos, at))
            if len(half.first) < FIRST_KEPT:
                half.first += bytes(data[:FIRST_KEPT - len(half.first)])
            if not conn.syn_seen:
                if half.search is None:
                    half.search = HeaderSearch()
                half.search.feed(data)
            conn.segments += 1
            self._detect(conn, frame, time)

    def _drain(self, conn: TcpConn, side: int, frame: int, time: float) -> None:
        """Deliver waiting segments that the stream has now reached, in order."""
        half = conn.halves[side]
        while half.heap and half.heap[0] <= half.offset:
            key = heapq.heappop(half.heap)
            data, src, pos, cut = half.ooo.pop(key)
            half.ooo_bytes -= len(data)
            already = half.offset - key
            if already and self.trace is not None and data:
                self._trace_again(conn, side, key, min(already, len(data)), src, pos)
            if already < len(data):
                self._deliver(conn, side, data[already:], frame, time, src, pos + already)
            if cut and already < len(data) + cut:
                self._lose(conn, side, min(cut, len(data) + cut - already), frame, time, snapped=True)

    # ------------------------------------------------------------------ trace

    def _trace_fast(self, conn: TcpConn, half: Half, d: Direction, seg: Segment, frame: int) -> None:
        n = len(seg.payload)
        self.trace.append(Origin(conn.conn_id, d, half.offset - n - half.unseen, n, frame, seg.offset))  # type: ignore[union-attr]

    def _trace_again(self, conn: TcpConn, side: int, offset: int, length: int, frame: int, pos: int) -> None:
        """Bytes of a segment that were delivered before (or will be from another segment)."""
        if conn.state == "nbd" and length > 0:
            half = conn.halves[side]
            at = offset - half.unseen
            self.trace.append(Origin(conn.conn_id, self._dir(conn, side), at if at >= 0 else -1, length,  # type: ignore[union-attr]
                                     frame, pos))

    def _trace_straggler(self, key: tuple[bytes, int, bytes, int], seg: Segment, frame: int) -> None:
        conn_id = self.closed.get(key)
        if conn_id is not None:  # a late segment of a closed NBD connection: nowhere to place it
            self.trace.append(Origin(conn_id, "c2s", -1, len(seg.payload), frame, seg.offset))  # type: ignore[union-attr]

    def _give_up_hole(self, conn: TcpConn, side: int, frame: int, time: float, upto: int | None = None) -> None:
        """Declare the bytes before the earliest waiting segment (or before ``upto``) lost."""
        half = conn.halves[side]
        if half.next_seq is None:
            return
        targets = [half.heap[0] - half.offset] if half.heap else []
        if upto is not None:
            targets.append(signed(upto - half.next_seq))
        positive = [t for t in targets if t > 0]
        if not positive:
            return
        self._lose(conn, side, min(positive), frame, time)
        self._drain(conn, side, frame, time)

    def _ack_reveals_loss(self, conn: TcpConn, side: int, ack: int, frame: int, time: float) -> None:
        """The peer acknowledged bytes we never saw while later bytes already wait:
        the capture, not the network, lost them (no retransmission will come)."""
        half = conn.halves[side]
        if half.heap and half.next_seq is not None and signed(ack - half.next_seq) > 0:
            self._give_up_hole(conn, side, frame, time, upto=ack)

    # -------------------------------------------------------------- detection

    def _detect(self, conn: TcpConn, frame: int, time: float) -> None:
        verdicts = [magic_says(conn, side) for side in (0, 1)]
        by_magic = next((v for v in verdicts if v is not None), None)
        by_port = port_says(conn, self.ports)
        if by_magic is not None:
            if conn.client_side is None:
                conn.client_side = by_magic
        elif by_port is None:
            by_port = peer_says(conn, self.servers)
        if by_magic is None and by_port is None:
            if conn.syn_seen:  # a connection seen from its start begins with an NBD magic, or is not NBD
                decided = all(len(h.first) >= 8 or not h.first for h in conn.halves)
                if decided or conn.segments >= DETECT_SEGMENTS:
                    self._ignore(conn)
                return
            found = search_says(conn)
            spent = any(h.search is not None and h.search.spent for h in conn.halves)
            if found is None:
                if spent:
                    self._ignore(conn)  # the window passed without a plausible header
                return
            if not found[1] and not spent:
                return  # one header alone: wait for more evidence, the close or the end of the window
            by_port = found[0]
        if conn.client_side is None:
            conn.client_side = by_port
        self._open(conn, frame, time)

    def _ignore(self, conn: TcpConn) -> None:
        conn.state = "ignored"
        conn.pending.clear()
        for half in conn.halves:
            half.search = None

    def _wake(self, server: tuple[bytes, int]) -> list[TcpConn]:
        """Connections to a server just found to speak NBD that were not recognised yet: those
        still undecided, and (afresh, from their next segment) those given up part-way."""
        found = []
        for key, conn in list(self.conns.items()):
            if server not in ((key[0], key[1]), (key[2], key[3])) or conn.state == "nbd":
                continue
            if conn.state == "ignored":
                if conn.syn_seen:
                    continue
                conn = self.conns[key] = TcpConn(key)
            found.append(conn)
        return found

    def _open(self, conn: TcpConn, frame: int, time: float) -> None:
        assert conn.client_side is not None
        conn.state = "nbd"
        conn.conn_id = self.next_id
        self.next_id += 1
        a = Endpoint(str(ipaddress.ip_address(conn.key[0])), conn.key[1])
        b = Endpoint(str(ipaddress.ip_address(conn.key[2])), conn.key[3])
        client, server = (a, b) if conn.client_side == 0 else (b, a)
        server_key = (conn.key[2], conn.key[3]) if conn.client_side == 0 else (conn.key[0], conn.key[1])
        server_half = conn.halves[1 - conn.client_side]
        saw_start = conn.syn_seen or server_half.first.startswith(M.NBDMAGIC_BYTES)
        self.out.append(StreamOpen(conn.conn_id, client, server, conn.pending[0][2] if conn.pending else frame,
                                   conn.pending[0][3] if conn.pending else time, saw_start, self.source))
        for side, data, f, t, src, pos, at in conn.pending:
            d = self._dir(conn, side)
            if isinstance(data, int):
                self.out.append(StreamGap(conn.conn_id, d, data, f, t, snapped=True))
                continue
            self.out.append(StreamData(conn.conn_id, d, data, f, t))
            if self.trace is not None:
                self.trace.append(Origin(conn.conn_id, d, at, len(data), src, pos))
        conn.pending.clear()
        for half in conn.halves:
            half.search = None
        self._bind(conn)
        if server_key not in self.servers:
            self.servers.add(server_key)
            for other in self._wake(server_key):
                if other.pending:
                    self._detect(other, frame, time)  # (no bytes yet: the next segment decides)

    def _bind(self, conn: TcpConn) -> None:
        """List both halves of an NBD connection for the fast path, with their id and direction."""
        a, a_port, b, b_port = conn.key
        for side, key in ((0, fast_key(a, a_port, b, b_port)), (1, fast_key(b, b_port, a, a_port))):
            half = conn.halves[side]
            half.conn_id, half.dir = conn.conn_id, self._dir(conn, side)
            self.fast[key] = half

    @staticmethod
    def _dir(conn: TcpConn, side: int) -> Direction:
        return "c2s" if side == conn.client_side else "s2c"

    # ---------------------------------------------------------------- closing

    def _close(self, conn: TcpConn, how: str, frame: int, time: float) -> None:
        if conn.state == "detect" and conn.pending:
            side = last_chance(conn, self.ports, self.servers)
            if side is not None:
                if conn.client_side is None:
                    conn.client_side = side
                self._open(conn, frame, time)
        if conn.state == "nbd":
            for side in (0, 1):
                while conn.halves[side].heap:
                    before = len(conn.halves[side].heap)
                    self._give_up_hole(conn, side, frame, time)
                    if len(conn.halves[side].heap) == before:
                        break
            by = self._dir(conn, conn.closer) if conn.closer is not None else None
            self.out.append(StreamClose(conn.conn_id, how, frame, time, by))  # type: ignore[arg-type]
        self._forget(conn)

    def _forget(self, conn: TcpConn) -> None:
        self.conns.pop(conn.key, None)
        if conn.state == "nbd":
            a, a_port, b, b_port = conn.key
            self.fast.pop(fast_key(a, a_port, b, b_port), None)
            self.fast.pop(fast_key(b, b_port, a, a_port), None)
        self.closed[conn.key] = conn.conn_id if conn.state == "nbd" else None
        if len(self.closed) > RECENTLY_CLOSED:
            self.closed.pop(next(iter(self.closed)))
