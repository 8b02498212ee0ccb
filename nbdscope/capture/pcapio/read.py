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

import gzip
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import dpkt

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

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}


class CaptureError(Exception):
    """The input cannot be read at all; the message names the file and the reason."""


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


def open_capture(path: str) -> tuple[io.BufferedIOBase, str]:
    """Open a capture, transparently gunzipping; return the stream and its format.

    For gzip input the returned stream carries the compressed file as ``raw`` so
    progress can be measured against the size on disk."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open: {exc.strerror}") from None
    head = raw.read(4)
    raw.seek(0)
    f: io.BufferedIOBase = raw
    if head[:2] == b"\x1f\x8b":
        f = gzip.open(raw, "rb")
        try:
            head = f.read(4)
        except (OSError, EOFError, zlib.error) as exc:
            raw.close()
            raise CaptureError(f"{path}: corrupt gzip data: {exc}") from None
        raw.close()
        raw = open(path, "rb")
        f = gzip.open(raw, "rb")
        f.raw = raw  # type: ignore[attr-defined]
    if len(head) < 4:
        f.close()
        raise CaptureError(f"{path}: empty or too short to be a capture")
    if head in PCAP_MAGICS:
        return f, "pcap"
    if struct.unpack("<I", head)[0] == PCAPNG_SHB:
        return f, "pcapng"
    f.close()
    raise CaptureError(f"{path}: not a pcap or pcapng file (starts with {head.hex()})")


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


def _pcap(path: str, f: ByteSource, problems: list[str], reuse: bool, detail: bool) -> Iterator[Frame | Record]:
    """Classic pcap: dpkt parses and validates the file header; records are then
    sliced from large reads with one struct call each, because building a dpkt
    header object per record costs more than everything else we do per packet."""
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
    linktype, divisor = fh.linktype & 0x0FFFFFFF, 1e9 if nano else 1e6
    scale = 10**9 if nano else 10**6
    if detail:
        yield PcapHeader(linktype, fh.snaplen, TSRESOL_NANO if nano else TSRESOL_MICRO)
    record = struct.Struct("<IIII" if little else ">IIII")
    window = _Window(f, reuse)
    number = 0
    while True:
        if not window.fill(16):
            if window.available():
                problems.append(f"file truncated inside the record header after frame {number}")
            return
        sec, frac, caplen, wire = record.unpack_from(window.buf, window.start)
        if caplen > MAX_BLOCK:
            problems.append(f"corrupt record after frame {number}: captured length {caplen}")
            return
        if not window.fill(16 + caplen):
            problems.append(f"file truncated inside frame {number + 1}")
            return
        number += 1
        start = window.start + 16
        window.start = start + caplen
        if detail:
            yield Packet(number, sec + frac / divisor, linktype, window.view[start:start + caplen], 0,
                         sec * scale + frac, wire, b"", None, "<")
        else:
            # a plain tuple and a zero-copy view: this runs once per packet, and most payload
            # bytes are only counted downstream, never copied
            yield number, sec + frac / divisor, linktype, window.view[start:start + caplen]  # type: ignore[misc]


class _Window:
    """A sliding window over the file, refilled with large reads.

    With ``reuse`` the same buffer is refilled in place, which spares a fresh
    allocation (and its page faults) per megabyte; views handed out are then only
    valid until the next frame is asked for, which is how the engine uses them."""

    def __init__(self, f: ByteSource, reuse: bool) -> None:
        self.f, self.reuse = f, reuse
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)
        self.start = self.end = 0

    def available(self) -> int:
        return self.end - self.start

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
    tick: float  # seconds per timestamp unit (if_tsresol)
    offset: float  # seconds added to every timestamp (if_tsoffset)


def _pcapng(path: str, f: io.BufferedIOBase, problems: list[str], detail: bool) -> Iterator[Frame | Record]:
    endian = "<"
    interfaces: list[_Interface] = []
    number = 0
    while True:
        head = f.read(8)
        if len(head) < 8:
            if head:
                problems.append(f"file truncated after frame {number}")
            return
        btype = struct.unpack(endian + "I", head[:4])[0]
        if btype == PCAPNG_SHB:
            section = _section_start(path, f, head, number, problems)
            if section is None:
                return
            endian, block = section
            interfaces = []
            if detail:
                yield Block(btype, block)
            continue
        body = _block_body(path, f, head, endian, btype, number, problems)
        if body is None:
            return
        if btype == PCAPNG_EPB or btype == PCAPNG_PB or btype == PCAPNG_SPB:
            packet = _packet(btype, head, body, endian, interfaces, number, detail, problems)
            if packet is None:
                return
            number += 1
            yield packet
        else:
            if btype == PCAPNG_IDB:
                interfaces.append(_interface(body, endian))
            if detail:
                yield Block(btype, head + body)


def _section_start(path: str, f: io.BufferedIOBase, head: bytes, number: int,
                   problems: list[str]) -> tuple[str, bytes] | None:
    """A section header block: the byte order it sets and the whole block; None where reading ends."""
    rest = f.read(4)
    if len(rest) < 4:
        problems.append(f"file truncated after frame {number}")
        return None
    endian = "<" if struct.unpack("<I", rest)[0] == PCAPNG_BOM else ">"
    (blen,) = struct.unpack(endian + "I", head[4:])
    if blen < 28 or blen > MAX_BLOCK or blen % 4:
        raise_or_note(path, number, problems, f"section header block with bad length {blen}")
        return None
    body = f.read(blen - 12)
    if len(body) < blen - 12:
        problems.append(f"file truncated after frame {number}")
        return None
    return endian, head + rest + body


def _block_body(path: str, f: io.BufferedIOBase, head: bytes, endian: str, btype: int, number: int,
                problems: list[str]) -> bytes | None:
    """The rest of any other block (its body and trailing length); None where reading ends."""
    (blen,) = struct.unpack(endian + "I", head[4:])
    if blen < 12 or blen > MAX_BLOCK or blen % 4:
        raise_or_note(path, number, problems, f"block of type {btype:#x} with bad length {blen}")
        return None
    body = f.read(blen - 8)
    if len(body) < blen - 8:
        problems.append(f"file truncated inside frame {number + 1}")
        return None
    return body


def _packet(btype: int, head: bytes, body: bytes, endian: str, interfaces: list[_Interface], number: int,
            detail: bool, problems: list[str]) -> Frame | Packet | None:
    """An enhanced, obsolete or simple packet block as the frame after ``number``; None if it is corrupt."""
    if btype == PCAPNG_SPB:
        if not interfaces:
            problems.append(f"packet block before any interface after frame {number}")
            return None
        (origlen,) = struct.unpack_from(endian + "I", body, 0)
        data = body[4:4 + min(origlen, len(body) - 8)]
        if detail:
            return Packet(number + 1, 0.0, interfaces[0].linktype, data, 0, 0, origlen, b"", head + body, endian)
        return Frame(number + 1, 0.0, interfaces[0].linktype, data)
    if len(body) < 24:
        problems.append(f"corrupt packet block after frame {number}")
        return None
    if btype == PCAPNG_EPB:
        iface, hi, lo, caplen, wire = struct.unpack_from(endian + "IIIII", body, 0)
    else:
        iface, _drops, hi, lo, caplen, wire = struct.unpack_from(endian + "HHIIII", body, 0)
    if iface >= len(interfaces) or 20 + caplen > len(body):
        problems.append(f"corrupt packet block after frame {number}")
        return None
    linktype, tick, offset = interfaces[iface]
    ticks = (hi << 32) | lo
    if detail:
        opts = strip_end(body[20 + caplen + (-caplen % 4):len(body) - 4], endian)
        return Packet(number + 1, offset + ticks * tick, linktype, body[20:20 + caplen], iface, ticks, wire, opts,
                      head + body, endian)
    return Frame(number + 1, offset + ticks * tick, linktype, body[20:20 + caplen])


def raise_or_note(path: str, number: int, problems: list[str], what: str) -> None:
    if number == 0:
        raise CaptureError(f"{path}: corrupt pcapng: {what}")
    problems.append(f"corrupt pcapng after frame {number}: {what}")


def _interface(body: bytes, endian: str) -> _Interface:
    linktype = struct.unpack_from(endian + "H", body, 0)[0]
    tick, offset = 1e-6, 0.0
    pos = 8
    while pos + 4 <= len(body) - 4:
        code, length = struct.unpack_from(endian + "HH", body, pos)
        if code == 0:
            break
        value = body[pos + 4:pos + 4 + length]
        if code == IF_TSRESOL and length >= 1:
            r = value[0]
            tick = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -(r & 0x7F)
        elif code == IF_TSOFFSET and length >= 8:
            offset = float(struct.unpack(endian + "q", value[:8])[0])
        pos += 4 + ((length + 3) & ~3)
    return _Interface(linktype, tick, offset)
