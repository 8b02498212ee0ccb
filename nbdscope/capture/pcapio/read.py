"""Capture files as a stream of raw link-layer frames.

Classic pcap: dpkt parses and checks the file header, records are then sliced
from large reads. pcapng is read block by block here: dpkt's pcapng reader takes
the link type and timestamp resolution of the first interface for every packet,
which is wrong for captures of several interfaces (dumpcap -i lo -i eth0), so we
keep a per-interface table (link type, if_tsresol, if_tsoffset).

One reader serves two uses. ``frames`` yields (number, time, linktype, data)
tuples for decoding, as cheaply as we can. ``records`` yields, in file order,
what a faithful copy needs: every packet with its timestamp in its interface's
own units, its wire length and options, every other pcapng block as it is, and
for classic pcap the file header as a PcapHeader.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import dpkt

from nbdscope.capture.pcapio.opening import CaptureError, open_capture  # read.py is where callers find them
from nbdscope.capture.pcapio.write import (
    IF_TSOFFSET,
    IF_TSRESOL,
    PCAPNG_BOM,
    PCAPNG_EPB,
    PCAPNG_IDB,
    PCAPNG_PB,
    PCAPNG_SHB,
    PCAPNG_SPB,
    TSRESOL_MICRO,
    TSRESOL_NANO,
    strip_end,
)

MAX_BLOCK = 1 << 26  # a block claiming more than this is corrupt, not a packet
READ_SIZE = 1 << 20

class ByteSource(Protocol):
    """What classic pcap is read from: a file, or the live capture's pipe."""

    def read(self, n: int, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int: ...


class Frame(NamedTuple):
    number: int
    time: float
    linktype: int
    data: bytes


class Packet(NamedTuple):
    """A packet as ``records`` gives it: enough to write it back unchanged or amended."""

    number: int
    time: float  # seconds, if_tsoffset applied
    linktype: int
    data: bytes | memoryview
    iface: int  # interface index within its section (0 for classic pcap)
    ticks: int  # timestamp in the interface's units, as stored (if_tsoffset not applied)
    wirelen: int
    options: bytes  # the block's options without their end marker (b"" for classic pcap)
    block: bytes | None  # the original pcapng block, None for classic pcap
    endian: str  # byte order of its section ("<" for classic pcap, which is copied little-endian)


class Block(NamedTuple):
    """A pcapng block other than a packet, to be copied as it is."""

    btype: int
    raw: bytes


class PcapHeader(NamedTuple):
    """What a classic pcap file says of its one interface."""

    linktype: int
    snaplen: int
    tsresol: int  # if_tsresol for the same units: 6 (microseconds) or 9 (nanoseconds)


Record = Packet | Block | PcapHeader


def frames(path: str, problems: list[str], position: list[Callable[[], int]] | None = None,
           reuse: bool = False) -> Iterator[Frame]:
    """Every frame of one capture file, in file order. Damage part-way through
    ends the iteration after appending a one-line description to ``problems``.
    ``position``, if given, receives a function telling how far into the file
    (in bytes on disk) reading has got."""
    return _read(path, problems, position, reuse, False)  # type: ignore[return-value]


def records(path: str, problems: list[str]) -> Iterator[Record]:
    """Everything of one capture file a copy needs, in file order (see the module's docstring);
    damage ends it as for ``frames``, at the same frame."""
    return _read(path, problems, None, False, True)  # type: ignore[return-value]


def _read(path: str, problems: list[str], position: list[Callable[[], int]] | None, reuse: bool,
          detail: bool) -> Iterator[Frame | Record]:
    f, kind = open_capture(path)
    if position is not None:
        position.append(getattr(f, "raw", f).tell)
    try:
        if kind == "pcap":
            yield from _pcap(path, f, problems, reuse, detail)
        else:
            yield from _pcapng(path, f, problems, detail)
    except (OSError, EOFError, zlib.error) as exc:
        problems.append(f"read error: {exc}")
    finally:
        f.close()


def pcap_frames(path: str, f: ByteSource, problems: list[str], reuse: bool) -> Iterator[Frame]:
    """The frames of a classic pcap stream (a file or tcpdump's pipe)."""
    return _pcap(path, f, problems, reuse, False)  # type: ignore[return-value]


def pcap_records(path: str, f: ByteSource, problems: list[str]) -> Iterator[Record]:
    """A classic pcap stream as ``records`` gives it: its PcapHeader, then every Packet with its
    stored timestamp and wire length (what a faithful copy needs; the live capture's ``-w``)."""
    return _pcap(path, f, problems, False, True)  # type: ignore[return-value]


def pcapng_frames(path: str, f: io.BufferedIOBase, problems: list[str]) -> Iterator[Frame]:
    """The frames of a pcapng stream, as ``frames`` gives them (read errors are the caller's to catch)."""
    return _pcapng(path, f, problems, False)  # type: ignore[return-value]


class PcapFormat(NamedTuple):
    """What the header of a classic pcap file says about its records."""

    linktype: int
    snaplen: int
    little: bool  # records are little-endian
    nano: bool  # timestamps in nanoseconds rather than microseconds
    utc_offset: int | None = None  # the header's thiszone, when nonzero (libpcap always writes 0)


def pcap_format(path: str, f: ByteSource) -> PcapFormat:
    """Read and check the 24-byte header of a classic pcap stream (dpkt does the checking)."""
    head = f.read(dpkt.pcap.FileHdr.__hdr_len__)
    try:
        fh = dpkt.pcap.FileHdr(head)
    except (dpkt.NeedData, dpkt.UnpackError) as exc:
        raise CaptureError(f"{path}: bad pcap header: {exc}") from None
    magic = fh.magic
    little = magic in (dpkt.pcap.PMUDPCT_MAGIC, dpkt.pcap.PMUDPCT_MAGIC_NANO)
    if little:
        fh = dpkt.pcap.LEFileHdr(head)
    nano = magic in (dpkt.pcap.TCPDUMP_MAGIC_NANO, dpkt.pcap.PMUDPCT_MAGIC_NANO)
    zone = fh.thiszone - (1 << 32) if fh.thiszone >= 1 << 31 else fh.thiszone  # dpkt reads it unsigned
    return PcapFormat(fh.linktype & 0x0FFFFFFF, fh.snaplen, little, nano, zone or None)


def record_header(fmt: PcapFormat) -> struct.Struct:
    """The record header of that file: seconds, fraction, captured length (the wire length is skipped)."""
    return struct.Struct("<III4x" if fmt.little else ">III4x")


def _pcap(path: str, f: ByteSource, problems: list[str], reuse: bool, detail: bool) -> Iterator[Frame | Record]:
    """Classic pcap: records are sliced from large reads with one struct call each, because
    building a dpkt header object per record costs more than everything else we do per packet.
    (capture/pcapfast.py runs the same loop with the link and TCP layers folded in.)"""
    fmt = pcap_format(path, f)
    linktype, divisor = fmt.linktype, 1e9 if fmt.nano else 1e6
    scale = 10**9 if fmt.nano else 10**6
    if detail:
        yield PcapHeader(linktype, fmt.snaplen, TSRESOL_NANO if fmt.nano else TSRESOL_MICRO)
    unpack = struct.Struct("<IIII" if fmt.little else ">IIII").unpack_from
    window = Window(f, reuse, record_header(fmt))
    buf, view, pos, end = window.buf, window.view, 0, 0
    number = 0
    while True:
        if end - pos >= 16:
            sec, frac, caplen, wire = unpack(buf, pos)
            start = pos + 16
            if start + caplen <= end:
                number += 1
                pos = start + caplen
                if detail:
                    yield Packet(number, sec + frac / divisor, linktype, view[start:pos], 0, sec * scale + frac, wire,
                                 b"", None, "<")
                else:
                    # a plain tuple and a zero-copy view: this runs once per packet, and most payload
                    # bytes are only counted downstream, never copied
                    yield number, sec + frac / divisor, linktype, view[start:pos]  # type: ignore[misc]
                continue
        window.start, window.end = pos, end
        problem = window.refill(number)
        if problem:
            problems.append(problem)
            return
        if problem is not None:
            return
        buf, view, pos, end = window.buf, window.view, window.start, window.end


class Window:
    """A sliding window over the file, refilled with large reads.

    With ``reuse`` the same buffer is refilled in place, which spares a fresh
    allocation (and its page faults) per megabyte; views handed out are then only
    valid until the next frame is asked for, which is how the engine uses them."""

    def __init__(self, f: ByteSource, reuse: bool, record: struct.Struct) -> None:
        self.f, self.reuse, self.record = f, reuse, record  # record: the pcap record header (record_header)
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)
        self.start = self.end = 0

    def available(self) -> int:
        return self.end - self.start

    def refill(self, number: int) -> str | None:
        """Make the next whole pcap record available from ``start``: None once it is, "" at a
        clean end of file, else what is wrong with the file after frame ``number``."""
        if not self.fill(16):
            return f"file truncated inside the record header after frame {number}" if self.available() else ""
        caplen = self.record.unpack_from(self.buf, self.start)[2]
        if caplen > MAX_BLOCK:
            return f"corrupt record after frame {number}: captured length {caplen}"
        if not self.fill(16 + caplen):
            return f"file truncated inside frame {number + 1}"
        return None

    def fill(self, need: int) -> bool:
        """Make ``need`` bytes available from ``start``; False at end of file."""
        if self.end - self.start >= need:
            return True
        if self.start + need > len(self.buf):
            leftover = bytes(self.view[self.start:self.end])
            if self.reuse and need <= len(self.buf):
                self.buf[:len(leftover)] = leftover
            else:
                self.buf = bytearray(max(need, READ_SIZE))
                self.view = memoryview(self.buf)
                self.buf[:len(leftover)] = leftover
            self.start, self.end = 0, len(leftover)
        while self.end - self.start < need:
            got = self.f.readinto(self.view[self.end:])
            if not got:
                return False
            self.end += got
        return True


class _Interface(NamedTuple):
    linktype: int
    units: int  # timestamp units per second for a decimal if_tsresol (10**6 by default), else 0
    tick: float  # seconds per timestamp unit (if_tsresol), for a binary one
    offset: float  # seconds added to every timestamp (if_tsoffset)

    def seconds(self, ticks: int) -> float:
        """The timestamp as classic pcap's reader computes it (whole seconds plus the fraction), so
        that a packet has the very same time in pcap and pcapng (latencies equal to the last digit)."""
        if self.units:
            sec, frac = divmod(ticks, self.units)
            return self.offset + (sec + frac / self.units)
        return self.offset + ticks * self.tick


def _pcapng(path: str, f: io.BufferedIOBase, problems: list[str],  # noqa: C901
            detail: bool) -> Iterator[Frame | Record]:
    # (C901: one loop over every block kind, run once per packet; splitting it adds a call per packet)
    endian = "<"
    interfaces: list[_Interface] = []
    number = 0
    while True:
        head = f.read(8)
        if not head:
            return
        if len(head) < 8:
            problems.append(f"file truncated after frame {number}")
            return
        btype = struct.unpack(endian + "I", head[:4])[0]
        if btype == PCAPNG_SHB:
            rest = f.read(4)
            if len(rest) < 4:
                problems.append(f"file truncated after frame {number}")
                return
            endian = "<" if struct.unpack("<I", rest)[0] == PCAPNG_BOM else ">"
            (blen,) = struct.unpack(endian + "I", head[4:])
            body_len = blen - 12
            interfaces = []
            if blen < 28 or blen > MAX_BLOCK or blen % 4:
                raise_or_note(path, number, problems, f"section header block with bad length {blen}")
                return
            body = f.read(body_len)
            if len(body) < body_len:
                problems.append(f"file truncated after frame {number}")
                return
            if detail:
                yield Block(btype, head + rest + body)
            continue
        (blen,) = struct.unpack(endian + "I", head[4:])
        if blen < 12 or blen > MAX_BLOCK or blen % 4:
            raise_or_note(path, number, problems, f"block of type {btype:#x} with bad length {blen}")
            return
        body = f.read(blen - 8)  # the block's body and its trailing length
        if len(body) < blen - 8:
            problems.append(f"file truncated inside frame {number + 1}")
            return
        if btype == PCAPNG_EPB or btype == PCAPNG_PB:
            if len(body) < 24:
                problems.append(f"corrupt packet block after frame {number}")
                return
            if btype == PCAPNG_EPB:
                iface, hi, lo, caplen, wire = struct.unpack_from(endian + "IIIII", body, 0)
            else:
                iface, _drops, hi, lo, caplen, wire = struct.unpack_from(endian + "HHIIII", body, 0)
            if iface >= len(interfaces) or 20 + caplen > len(body):
                problems.append(f"corrupt packet block after frame {number}")
                return
            interface = interfaces[iface]
            number += 1
            ticks = (hi << 32) | lo
            if detail:
                opts = strip_end(body[20 + caplen + (-caplen % 4):len(body) - 4], endian)
                yield Packet(number, interface.seconds(ticks), interface.linktype, body[20:20 + caplen], iface, ticks,
                             wire, opts, head + body, endian)
            else:
                yield Frame(number, interface.seconds(ticks), interface.linktype, body[20:20 + caplen])
        elif btype == PCAPNG_SPB:
            if not interfaces:
                problems.append(f"packet block before any interface after frame {number}")
                return
            (origlen,) = struct.unpack_from(endian + "I", body, 0)
            linktype = interfaces[0].linktype
            number += 1
            data = body[4:4 + min(origlen, len(body) - 8)]
            if detail:
                yield Packet(number, 0.0, linktype, data, 0, 0, origlen, b"", head + body, endian)
            else:
                yield Frame(number, 0.0, linktype, data)
        else:
            if btype == PCAPNG_IDB:
                interfaces.append(_interface(body, endian))
            if detail:
                yield Block(btype, head + body)


def raise_or_note(path: str, number: int, problems: list[str], what: str) -> None:
    if number == 0:
        raise CaptureError(f"{path}: corrupt pcapng: {what}")
    problems.append(f"corrupt pcapng after frame {number}: {what}")


def _interface(body: bytes, endian: str) -> _Interface:
    linktype = struct.unpack_from(endian + "H", body, 0)[0]
    units, tick, offset = 10**6, 1e-6, 0.0
    pos = 8
    while pos + 4 <= len(body) - 4:
        code, length = struct.unpack_from(endian + "HH", body, pos)
        if code == 0:
            break
        value = body[pos + 4:pos + 4 + length]
        if code == IF_TSRESOL and length >= 1:
            r = value[0]
            units = 0 if r & 0x80 else 10 ** (r & 0x7F)
            tick = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -(r & 0x7F)
        elif code == IF_TSOFFSET and length >= 8:
            offset = float(struct.unpack(endian + "q", value[:8])[0])
        pos += 4 + ((length + 3) & ~3)
    return _Interface(linktype, units, tick, offset)
