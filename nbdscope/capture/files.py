"""Capture files as a stream of raw link-layer frames.

Classic pcap goes through dpkt's reader. pcapng is read block by block here:
dpkt's pcapng reader takes the link type and timestamp resolution of the first
interface for every packet, which is wrong for captures of several interfaces
(dumpcap -i lo -i eth0), so we keep a per-interface table instead.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import IO, NamedTuple

import dpkt

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_PB = 0x00000002  # obsolete packet block
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_BOM = 0x1A2B3C4D
IF_TSRESOL = 9
IF_TSOFFSET = 14
MAX_BLOCK = 1 << 26  # a block claiming more than this is corrupt, not a packet
READ_SIZE = 1 << 20

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}


class CaptureError(Exception):
    """The input cannot be read at all; the message names the file and the reason."""


class Frame(NamedTuple):
    number: int
    time: float
    linktype: int
    data: bytes


def open_capture(path: str) -> tuple[IO[bytes], str]:
    """Open a capture, transparently gunzipping; return the stream and its format.

    For gzip input the returned stream carries the compressed file as ``raw`` so
    progress can be measured against the size on disk."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open: {exc.strerror}") from None
    head = raw.read(4)
    raw.seek(0)
    f: IO[bytes] = raw
    if head[:2] == b"\x1f\x8b":
        f = gzip.open(raw, "rb")  # type: ignore[assignment]
        try:
            head = f.read(4)
        except (OSError, EOFError, zlib.error) as exc:
            raw.close()
            raise CaptureError(f"{path}: corrupt gzip data: {exc}") from None
        raw.close()
        raw = open(path, "rb")
        f = gzip.open(raw, "rb")  # type: ignore[assignment]
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
    f, kind = open_capture(path)
    if position is not None:
        position.append(getattr(f, "raw", f).tell)
    try:
        if kind == "pcap":
            yield from pcap_frames(path, f, problems, reuse)
        else:
            yield from _pcapng(path, f, problems)
    except (OSError, EOFError, zlib.error) as exc:
        problems.append(f"read error: {exc}")
    finally:
        f.close()


def pcap_frames(path: str, f: IO[bytes], problems: list[str], reuse: bool) -> Iterator[Frame]:
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
    record = struct.Struct("<IIII" if little else ">IIII")
    window = _Window(f, reuse)
    number = 0
    while True:
        if not window.fill(16):
            if window.available():
                problems.append(f"file truncated inside the record header after frame {number}")
            return
        sec, frac, caplen, _wire = record.unpack_from(window.buf, window.start)
        if caplen > MAX_BLOCK:
            problems.append(f"corrupt record after frame {number}: captured length {caplen}")
            return
        if not window.fill(16 + caplen):
            problems.append(f"file truncated inside frame {number + 1}")
            return
        number += 1
        start = window.start + 16
        window.start = start + caplen
        # a plain tuple and a zero-copy view: this runs once per packet, and most payload
        # bytes are only counted downstream, never copied
        yield number, sec + frac / divisor, linktype, window.view[start:start + caplen]


class _Window:
    """A sliding window over the file, refilled with large reads.

    With ``reuse`` the same buffer is refilled in place, which spares a fresh
    allocation (and its page faults) per megabyte; views handed out are then only
    valid until the next frame is asked for, which is how the engine uses them."""

    def __init__(self, f: IO[bytes], reuse: bool) -> None:
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
            got = self.f.readinto(self.view[self.end:])  # type: ignore[attr-defined]
            if not got:
                return False
            self.end += got
        return True


def _pcapng(path: str, f: IO[bytes], problems: list[str]) -> Iterator[Frame]:
    endian = "<"
    interfaces: list[tuple[int, float, float]] = []  # linktype, seconds per tick, offset
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
            if len(f.read(body_len)) < body_len:
                problems.append(f"file truncated after frame {number}")
                return
            continue
        (blen,) = struct.unpack(endian + "I", head[4:])
        if blen < 12 or blen > MAX_BLOCK or blen % 4:
            raise_or_note(path, number, problems, f"block of type {btype:#x} with bad length {blen}")
            return
        body = f.read(blen - 8)
        if len(body) < blen - 8:
            problems.append(f"file truncated inside frame {number + 1}")
            return
        if btype == PCAPNG_IDB:
            interfaces.append(_interface(body, endian))
        elif btype == PCAPNG_EPB:
            if len(body) < 24:
                problems.append(f"corrupt packet block after frame {number}")
                return
            iface, hi, lo, caplen = struct.unpack_from(endian + "IIII", body, 0)
            if iface >= len(interfaces) or 20 + caplen > len(body):
                problems.append(f"corrupt packet block after frame {number}")
                return
            linktype, tick, offset = interfaces[iface]
            number += 1
            yield Frame(number, offset + ((hi << 32) | lo) * tick, linktype, body[20:20 + caplen])
        elif btype == PCAPNG_SPB:
            if not interfaces:
                problems.append(f"packet block before any interface after frame {number}")
                return
            (origlen,) = struct.unpack_from(endian + "I", body, 0)
            linktype, _tick, _offset = interfaces[0]
            number += 1
            yield Frame(number, 0.0, linktype, body[4:4 + min(origlen, len(body) - 8)])
        elif btype == PCAPNG_PB:
            iface, _drops, hi, lo, caplen = struct.unpack_from(endian + "HHIII", body, 0)
            if iface >= len(interfaces) or 20 + caplen > len(body):
                problems.append(f"corrupt packet block after frame {number}")
                return
            linktype, tick, offset = interfaces[iface]
            number += 1
            yield Frame(number, offset + ((hi << 32) | lo) * tick, linktype, body[20:20 + caplen])


def raise_or_note(path: str, number: int, problems: list[str], what: str) -> None:
    if number == 0:
        raise CaptureError(f"{path}: corrupt pcapng: {what}")
    problems.append(f"corrupt pcapng after frame {number}: {what}")


def _interface(body: bytes, endian: str) -> tuple[int, float, float]:
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
    return linktype, tick, offset
