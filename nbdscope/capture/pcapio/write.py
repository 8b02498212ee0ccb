"""pcapng blocks and a writer of them: sections, interfaces and enhanced packets
with comments, timestamps in the interface's own units (so a copy of a capture
keeps every timestamp to the tick). The writer only writes: frame numbers belong
to whoever produces the packets."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_PB = 0x00000002  # obsolete packet block
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_BOM = 0x1A2B3C4D
OPT_END, OPT_COMMENT = 0, 1
IF_TSRESOL = 9
IF_TSOFFSET = 14
TSRESOL_MICRO, TSRESOL_NANO = 6, 9


def _pad(raw: bytes) -> bytes:
    return raw + b"\0" * (-len(raw) % 4)


def options(comments: Iterable[str] = (), raw: bytes = b"", endian: str = "<") -> bytes:
    """An option list: ``raw`` (options already encoded, without their end marker), then
    one opt_comment per comment, then the end marker; empty when there is nothing."""
    out = raw
    for text in comments:
        value = text.encode("utf-8")
        out += struct.pack(endian + "HH", OPT_COMMENT, len(value)) + _pad(value)
    return out + struct.pack(endian + "HH", OPT_END, 0) if out else b""


def strip_end(opts: bytes, endian: str) -> bytes:
    """The options of a block without their end marker (so more can follow)."""
    pos = 0
    while pos + 4 <= len(opts):
        code, length = struct.unpack_from(endian + "HH", opts, pos)
        if code == OPT_END:
            return opts[:pos]
        pos += 4 + length + (-length % 4)
    return opts[:min(pos, len(opts))]


def block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body = _pad(body)
    size = len(body) + 12
    return struct.pack(endian + "II", btype, size) + body + struct.pack(endian + "I", size)


def section_block(comments: Iterable[str] = ()) -> bytes:
    """A little-endian section header of unknown length."""
    return block(PCAPNG_SHB, struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1) + options(comments))


def interface_block(linktype: int, snaplen: int = 0, tsresol: int = TSRESOL_MICRO) -> bytes:
    """An interface of the current (little-endian) section; ``tsresol`` is if_tsresol's byte."""
    opts = struct.pack("<HHB3x", IF_TSRESOL, 1, tsresol) + struct.pack("<HH", OPT_END, 0)
    return block(PCAPNG_IDB, struct.pack("<HHI", linktype, 0, snaplen) + opts)


def packet_block(iface: int, ticks: int, data: bytes | bytearray | memoryview, wirelen: int | None = None,
                 comments: Iterable[str] = (), raw_options: bytes = b"", endian: str = "<") -> bytes:
    """An enhanced packet block; ``ticks`` is the timestamp in the interface's units."""
    ticks &= 0xFFFFFFFFFFFFFFFF
    head = struct.pack(endian + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data) if wirelen is None else wirelen)
    return block(PCAPNG_EPB, _pad(head + bytes(data)) + options(comments, raw_options, endian), endian)


class PcapngWriter:
    """Blocks to a binary file, in the order given."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def section(self, comments: Iterable[str] = ()) -> None:
        self.out.write(section_block(comments))

    def interface(self, linktype: int, snaplen: int = 0, tsresol: int = TSRESOL_MICRO) -> None:
        self.out.write(interface_block(linktype, snaplen, tsresol))

    def packet(self, iface: int, ticks: int, data: bytes | bytearray | memoryview, wirelen: int | None = None,
               comments: Iterable[str] = (), raw_options: bytes = b"", endian: str = "<") -> None:
        self.out.write(packet_block(iface, ticks, data, wirelen, comments, raw_options, endian))

    def raw(self, blk: bytes) -> None:
        """A block copied as it is (from a pcapng being copied)."""
        self.out.write(blk)

    def flush(self) -> None:
        self.out.flush()
