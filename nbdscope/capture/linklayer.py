"""From a link-layer frame to a TCP segment, by hand with struct on purpose:
building dpkt packet objects per frame costs several times more, and a 1 GiB
capture has close to a million frames."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_RAW_BSD, DLT_RAW_OPENBSD = 0, 1, 101, 12, 14
DLT_LOOP, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_IPV4, DLT_IPV6 = 108, 113, 276, 228, 229
AF_INET = 2
AF_INET6 = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, macOS
IPPROTO_TCP = 6
IPV6_SKIPPABLE = (0, 43, 60)  # hop-by-hop, routing, destination options
IPV6_FRAGMENT = 44

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

_U16 = struct.Struct(">H")
_TCP = struct.Struct(">HHIIBB")


class Segment(NamedTuple):
    src: bytes  # raw address bytes (4 or 16)
    sport: int
    dst: bytes
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes | memoryview  # may be a view into the reader's buffer: copy before keeping it
    offset: int  # where the payload starts in the frame (for rewriting it in place)
    cut: int = 0  # payload bytes the IP length claims beyond the captured ones (the snapshot length cut them)


def ip_offset(linktype: int, buf: bytes | memoryview) -> int:
    """Offset of the IP header in the frame, or -1 when it carries no IP."""
    if linktype == DLT_EN10MB:
        if len(buf) < 14:
            return -1
        etype, off = _U16.unpack_from(buf, 12)[0], 14
        while etype in (ETH_VLAN, ETH_QINQ) and len(buf) >= off + 4:
            etype, off = _U16.unpack_from(buf, off + 2)[0], off + 4
        return off if etype in (ETH_IPV4, ETH_IPV6) else -1
    if linktype == DLT_LINUX_SLL:
        return 16 if len(buf) >= 16 and _U16.unpack_from(buf, 14)[0] in (ETH_IPV4, ETH_IPV6) else -1
    if linktype == DLT_LINUX_SLL2:
        return 20 if len(buf) >= 20 and _U16.unpack_from(buf, 0)[0] in (ETH_IPV4, ETH_IPV6) else -1
    if linktype in (DLT_NULL, DLT_LOOP):
        if len(buf) < 4:
            return -1
        family = struct.unpack_from(">I" if linktype == DLT_LOOP else "<I", buf, 0)[0]
        if family > 0xFFFF:  # written on a host of the other byte order
            family = struct.unpack_from("<I" if linktype == DLT_LOOP else ">I", buf, 0)[0]
        return 4 if family == AF_INET or family in AF_INET6 else -1
    if linktype in (DLT_RAW, DLT_RAW_BSD, DLT_RAW_OPENBSD, DLT_IPV4, DLT_IPV6):
        return 0
    return -1


_ETH_IPV4_TCP = struct.Struct(">12xHBxHxxHxB2x4s4sHHIIBB")  # Ethernet + option-less IPv4 + TCP


class FastLayout(NamedTuple):
    """Where the headers of a link type's common frame lie, for capture/pcapfast.py's fast path.

    ``unpack_from(frame)`` gives (ethertype, IP version and header length, IP total length,
    fragment word << 16 | TTL << 8 | protocol, the 12 bytes of source address + destination
    address + ports, TCP sequence number, TCP data offset << 12 | flags), read as if the IP
    header at ``ip`` had no options: the caller must check that it has none (0x45)."""

    ip: int
    unpack_from: Callable[..., tuple[Any, ...]]


def _layout(etype_at: int, ip: int) -> FastLayout:
    gap = ip - etype_at - 2
    fmt = f">{etype_at}xH{gap}xBxH2xI2x12sI4xH" if gap else f">{etype_at}xHBxH2xI2x12sI4xH"
    return FastLayout(ip, struct.Struct(fmt).unpack_from)


FAST_LAYOUTS = {DLT_EN10MB: _layout(12, 14), DLT_LINUX_SLL: _layout(14, 16), DLT_LINUX_SLL2: _layout(0, 20)}
ETYPE_AT = {DLT_EN10MB: 12, DLT_LINUX_SLL: 14, DLT_LINUX_SLL2: 0}  # where FAST_LAYOUTS read the ethertype


def tcp_segment(linktype: int, buf: bytes | memoryview) -> Segment | None:
    """The TCP segment in a frame, or None for anything else (or a non-first IP fragment)."""
    if linktype == DLT_EN10MB and len(buf) >= 54:
        # fast path for the common case: untagged Ethernet, IPv4 without options, no fragments
        etype, vihl, total, frag, proto, src, dst, sport, dport, seq, ack, doff, flags = _ETH_IPV4_TCP.unpack_from(buf)
        if etype == ETH_IPV4 and vihl == 0x45 and proto == IPPROTO_TCP and not frag & 0x3FFF:
            start = 34 + (doff >> 4) * 4
            claimed = 14 + total if total else len(buf)
            end = min(claimed, len(buf))
            return Segment(src, sport, dst, dport, seq, ack, flags, buf[start:end] if start < end else b"", start,
                           max(0, claimed - max(end, start)))
    off = ip_offset(linktype, buf)
    if off < 0 or len(buf) < off + 20:
        return None
    version = buf[off] >> 4
    if version == 4:
        ihl = (buf[off] & 0x0F) * 4
        total = _U16.unpack_from(buf, off + 2)[0]
        frag = _U16.unpack_from(buf, off + 6)[0]
        if buf[off + 9] != IPPROTO_TCP or frag & 0x3FFF or ihl < 20:
            return None  # not TCP, or fragmented (NBD over TCP on loopback never is)
        src, dst = bytes(buf[off + 12:off + 16]), bytes(buf[off + 16:off + 20])
        end = off + total if total else len(buf)  # TSO captures may say 0
        tcp = off + ihl
    elif version == 6:
        if len(buf) < off + 40:
            return None
        plen = _U16.unpack_from(buf, off + 4)[0]
        nxt = buf[off + 6]
        src, dst = bytes(buf[off + 8:off + 24]), bytes(buf[off + 24:off + 40])
        tcp = off + 40
        end = tcp + plen if plen else len(buf)
        while nxt in IPV6_SKIPPABLE and len(buf) >= tcp + 8:
            nxt, tcp = buf[tcp], tcp + (buf[tcp + 1] + 1) * 8
        if nxt != IPPROTO_TCP:
            return None  # includes IPV6_FRAGMENT
    else:
        return None
    claimed, end = end, min(end, len(buf))
    if end < tcp + 20:
        return None  # the TCP header itself was cut: its sequence number is unknown
    sport, dport, seq, ack, doff, flags = _TCP.unpack_from(buf, tcp)
    start = tcp + (doff >> 4) * 4
    return Segment(src, sport, dst, dport, seq, ack, flags, buf[start:end] if start < end else b"", start,
                   max(0, claimed - max(end, start)))
