"""Write a capture back as pcapng with nbdscope's findings as packet comments.

Every original packet is kept with its original bytes and timestamp (pcap
timestamps are carried over exactly, at their own resolution; pcapng blocks
other than packets are copied as they are), so frame numbers stay those of the
input, which are the frame numbers `analyze` reports. Each anomaly becomes one
opt_comment on its frame, so any Wireshark shows it in `frame.comment` (or
`pkt_comment` in older ones) without the plugin.

With redaction, read and write data are zeroed and every header and length is
kept. The decoder already knows where those payloads are (stream ranges from
``Connection.take_payload_ranges``, gathered during the analysis pass); this
module only maps stream offsets back onto frames with the capture layer's own
TCP reassembly, so nothing here parses NBD. A segment whose bytes cannot be
placed exactly (a retransmission, or data delivered out of order) is zeroed
whole when it belongs to an NBD connection: redaction errs on the side of
hiding.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import IO, BinaryIO

from nbdscope import vocab as it
from nbdscope.analysis.anomaly import Anomaly
from nbdscope.capture import PacketStream
from nbdscope.capture.files import (
    PCAP_MAGICS,
    PCAPNG_EPB,
    PCAPNG_IDB,
    PCAPNG_PB,
    PCAPNG_SHB,
    PCAPNG_SPB,
    CaptureError,
    open_capture,
)
from nbdscope.capture.linklayer import Segment, tcp_segment
from nbdscope.decoder import Connection

OPT_END, OPT_COMMENT, IF_TSRESOL = 0, 1, 9
StreamKey = tuple[int, str]  # (connection id, direction)


def comment_text(a: Anomaly) -> str:
    """One finding as a packet comment: what `nbdscope rules` calls it, then the details."""
    return f"nbdscope {a.rule} [{a.severity}, blame {a.blame}, session {a.session}]: {a.message}"


# ------------------------------------------------------------------ redaction plan


class PayloadRanges:
    """Stream ranges of read/write data per connection and direction, collected while the
    engine runs: call ``collect`` after each stream item was fed."""

    def __init__(self, connection: Callable[[int], Connection | None]) -> None:
        self.connection = connection
        self.ranges: dict[StreamKey, list[tuple[int, int]]] = {}

    def collect(self, item: it.StreamItem) -> None:
        if isinstance(item, it.StreamData | it.StreamGap):
            decoder = self.connection(item.conn)
            if decoder is not None:
                got = decoder.take_payload_ranges(item.dir)
                if got:
                    self.ranges.setdefault((item.conn, item.dir), []).extend(got)

    def tap(self, items: Iterable[it.StreamItem]) -> Iterator[it.StreamItem]:
        """Pass items through; by the time the next one is asked for, the engine has fed the last."""
        last: it.StreamItem | None = None
        for item in items:
            if last is not None:
                self.collect(last)
            yield item
            last = item
        if last is not None:
            self.collect(last)

    def finish(self) -> dict[StreamKey, tuple[list[int], list[int]]]:
        """Merged, sorted ranges as (starts, ends) for bisecting."""
        out = {}
        for key, spans in self.ranges.items():
            spans.sort()
            starts: list[int] = []
            ends: list[int] = []
            for lo, hi in spans:
                if ends and lo <= ends[-1]:
                    ends[-1] = max(ends[-1], hi)
                else:
                    starts.append(lo)
                    ends.append(hi)
            out[key] = (starts, ends)
        return out


class Redactor:
    """Replays the capture layer over the frames being written and zeroes the data bytes."""

    def __init__(self, source: str, plan: dict[StreamKey, tuple[list[int], list[int]]],
                 extra_ports: Iterable[int] = ()) -> None:
        self.stream = PacketStream(source, tuple(extra_ports))
        self.plan = plan
        self.pos: dict[StreamKey, int] = {}
        self.nbd: set[int] = set()

    def frame(self, number: int, time: float, linktype: int, data: bytes) -> bytes:
        items = self.stream.feed_packet(time, linktype, data, number)
        seg = tcp_segment(linktype, data)
        span = (seg.offset, seg.offset + len(seg.payload)) if seg is not None and seg.payload else None
        out = bytearray(data)
        placed = unplaced = False
        for item in items:
            if isinstance(item, it.StreamGap):
                self.pos[(item.conn, item.dir)] = self.pos.get((item.conn, item.dir), 0) + item.nbytes
            elif isinstance(item, it.StreamData):
                key = (item.conn, item.dir)
                start = self.pos.get(key, 0)
                self.pos[key] = start + len(item.data)
                if (span is not None and not placed and item.frame == number
                        and bytes(item.data) == data[span[0]:span[1]]):
                    placed = True
                    self._zero(out, key, start, start + len(item.data), span[0])
                else:
                    unplaced = True
        if span is not None and not placed and (unplaced or self._in_nbd_connection(seg)):
            out[span[0]:span[1]] = bytes(span[1] - span[0])  # cannot place these bytes: hide them all
        return bytes(out)

    def _in_nbd_connection(self, seg: Segment) -> bool:
        conns = self.stream.tcp.conns
        conn = conns.get((seg.src, seg.sport, seg.dst, seg.dport)) or conns.get(
            (seg.dst, seg.dport, seg.src, seg.sport))
        return conn is not None and conn.state == "nbd"

    def _zero(self, out: bytearray, key: StreamKey, lo: int, hi: int, frame_off: int) -> None:
        plan = self.plan.get(key)
        if not plan:
            return
        starts, ends = plan
        i = max(bisect.bisect_right(starts, lo) - 1, 0)
        while i < len(starts) and starts[i] < hi:
            a, b = max(starts[i], lo), min(ends[i], hi)
            if a < b:
                out[frame_off + a - lo:frame_off + b - lo] = bytes(b - a)
            i += 1


# ------------------------------------------------------------------ pcapng writing


def _options(comments: list[str], endian: str = "<") -> bytes:
    raw = b""
    for text in comments:
        value = text.encode("utf-8")
        raw += struct.pack(endian + "HH", OPT_COMMENT, len(value)) + value + b"\0" * (-len(value) % 4)
    return raw


def _block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = len(body) + 12
    return struct.pack(endian + "II", btype, size) + body + struct.pack(endian + "I", size)


def _epb(iface: int, ts: int, data: bytes, wirelen: int, comments: list[str], old_opts: bytes = b"",
         endian: str = "<") -> bytes:
    body = struct.pack(endian + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), wirelen) + data
    body += b"\0" * (-len(body) % 4)
    opts = old_opts + _options(comments, endian)
    if opts:
        body += opts + struct.pack(endian + "HH", OPT_END, 0)
    return _block(PCAPNG_EPB, body, endian)


def _strip_end(opts: bytes, endian: str) -> bytes:
    """Options without their end marker (so more can follow)."""
    pos = 0
    while pos + 4 <= len(opts):
        code, length = struct.unpack_from(endian + "HH", opts, pos)
        if code == OPT_END:
            return opts[:pos]
        pos += 4 + length + (-length % 4)
    return opts[:pos]


def write_annotated(path: str, out: BinaryIO, anomalies: Iterable[Anomaly],
                    redactor: Redactor | None = None) -> int:
    """Copy ``path`` to ``out`` as pcapng with the anomalies as comments; returns the frames written."""
    comments: dict[int, list[str]] = {}
    for a in anomalies:
        comments.setdefault(a.frame, []).append(comment_text(a))
    f, kind = open_capture(path)
    try:
        if kind == "pcap":
            return _from_pcap(path, f, out, comments, redactor)
        return _from_pcapng(path, f, out, comments, redactor)
    finally:
        f.close()


def _from_pcap(path: str, f: IO[bytes], out: BinaryIO, comments: dict[int, list[str]],
               redactor: Redactor | None) -> int:
    head = f.read(24)
    if len(head) < 24 or head[:4] not in PCAP_MAGICS:
        raise CaptureError(f"{path}: bad pcap header")
    endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = head[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    snaplen, linktype = struct.unpack(endian + "II", head[16:24])
    linktype &= 0x0FFFFFFF
    scale = 10**9 if nano else 10**6
    out.write(_block(PCAPNG_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _options(
        ["annotated by nbdscope: anomalies are packet comments"]) + struct.pack("<HH", OPT_END, 0)))
    out.write(_block(PCAPNG_IDB, struct.pack("<HHI", linktype, 0, snaplen) + struct.pack(
        "<HHB3x", IF_TSRESOL, 1, 9 if nano else 6) + struct.pack("<HH", OPT_END, 0)))
    number = 0
    record = struct.Struct(endian + "IIII")
    while True:
        rh = f.read(16)
        if len(rh) < 16:
            return number
        sec, frac, caplen, wirelen = record.unpack(rh)
        data = f.read(caplen)
        if len(data) < caplen:
            return number
        number += 1
        if redactor is not None:
            data = redactor.frame(number, sec + frac / scale, linktype, data)
        out.write(_epb(0, sec * scale + frac, data, wirelen, comments.get(number, [])))


def _from_pcapng(path: str, f: IO[bytes], out: BinaryIO, comments: dict[int, list[str]],
                 redactor: Redactor | None) -> int:
    endian = "<"
    ifaces: list[tuple[int, float]] = []  # linktype, seconds per tick
    number = 0
    while True:
        head = f.read(8)
        if len(head) < 8:
            return number
        btype = struct.unpack(endian + "I", head[:4])[0]
        if btype == PCAPNG_SHB:
            bom = f.read(4)
            endian = "<" if struct.unpack("<I", bom)[0] == 0x1A2B3C4D else ">"
            size = struct.unpack(endian + "I", head[4:])[0]
            rest = f.read(size - 12)
            out.write(head + bom + rest)
            ifaces = []
            continue
        size = struct.unpack(endian + "I", head[4:])[0]
        if size < 12 or size % 4:
            raise CaptureError(f"{path}: corrupt pcapng block of length {size}")
        body = f.read(size - 12)
        trailer = f.read(4)
        if len(body) < size - 12 or len(trailer) < 4:
            return number
        if btype == PCAPNG_IDB:
            ifaces.append(_iface(body, endian))
        if btype not in (PCAPNG_EPB, PCAPNG_PB, PCAPNG_SPB):
            out.write(head + body + trailer)
            continue
        number += 1
        notes = comments.get(number, [])
        if btype == PCAPNG_SPB:
            wirelen = struct.unpack_from(endian + "I", body, 0)[0]
            iface, ts, data, opts = 0, 0, body[4:4 + min(wirelen, len(body) - 4)], b""
        elif btype == PCAPNG_PB:
            iface, _drops, hi, lo, caplen, wirelen = struct.unpack_from(endian + "HHIIII", body, 0)
            data, ts = body[20:20 + caplen], (hi << 32) | lo
            opts = _strip_end(body[20 + caplen + (-caplen % 4):], endian)
        else:
            iface, hi, lo, caplen, wirelen = struct.unpack_from(endian + "IIIII", body, 0)
            data, ts = body[20:20 + caplen], (hi << 32) | lo
            opts = _strip_end(body[20 + caplen + (-caplen % 4):], endian)
        if redactor is not None and iface < len(ifaces):
            linktype, tick = ifaces[iface]
            data = redactor.frame(number, ts * tick, linktype, data)
        if not notes and btype == PCAPNG_EPB and redactor is None:
            out.write(head + body + trailer)
        else:
            out.write(_epb(iface, ts, data, wirelen, notes, opts, endian))


def _iface(body: bytes, endian: str) -> tuple[int, float]:
    linktype = struct.unpack_from(endian + "H", body, 0)[0]
    tick, pos = 1e-6, 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(endian + "HH", body, pos)
        if code == OPT_END:
            break
        if code == IF_TSRESOL and length >= 1:
            r = body[pos + 4]
            tick = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -(r & 0x7F)
        pos += 4 + length + (-length % 4)
    return linktype, tick
