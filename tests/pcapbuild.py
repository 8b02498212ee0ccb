"""Build small captures for tests: TCP segments framed in any link type, written
as pcap (through dpkt's writer) or pcapng (blocks written here)."""

from __future__ import annotations

import socket
import struct
from decimal import Decimal

import dpkt

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def ip_packet(src: str, dst: str, sport: int, dport: int, seq: int, flags: int, payload: bytes = b"",
              ack: int = 0) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=flags,
                       data=payload)
    if ":" in src:
        ip6 = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src), dst=socket.inet_pton(socket.AF_INET6, dst),
                           nxt=6, hlim=64, data=tcp, plen=len(bytes(tcp)))
        return bytes(ip6)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    return bytes(ip)


def frame(linktype: int, ip: bytes, vlan: int | None = None) -> bytes:
    v6 = ip[0] >> 4 == 6
    etype = 0x86DD if v6 else 0x0800
    if linktype == 1:
        tag = struct.pack(">HH", 0x8100, vlan) if vlan is not None else b""
        return b"\x00\x11\x22\x33\x44\x55" * 2 + tag + struct.pack(">H", etype) + ip
    if linktype == 113:  # Linux cooked v1
        return struct.pack(">HHH8sH", 0, 772, 6, b"\0" * 8, etype) + ip
    if linktype == 276:  # Linux cooked v2
        return struct.pack(">HHIHBB8s", etype, 0, 1, 772, 0, 6, b"\0" * 8) + ip
    if linktype == 0:  # BSD loopback, host byte order family
        return struct.pack("<I", 30 if v6 else 2) + ip
    if linktype == 101:
        return ip
    raise ValueError(linktype)


def write_pcap(path: str, packets: list[tuple[float, bytes]], linktype: int = 1, nano: bool = False) -> None:
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=linktype, nano=nano)
        for ts, buf in packets:
            w.writepkt(buf, ts=ts)


def write_pcapng(path: str, packets: list[tuple[float | Decimal, int, bytes]], linktypes: list[int],
                 tsresol: list[int] | None = None, tsoffset: list[int] | None = None) -> None:
    """packets: (time, interface index, frame). Per interface, ``tsresol`` is the if_tsresol
    byte (decimal digits, default 6) and ``tsoffset`` the if_tsoffset seconds (default none):
    stored timestamps are then (time - offset) in those units (give times as Decimal for
    nanoseconds a float of today's epoch cannot hold)."""
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    resol = tsresol or [6] * len(linktypes)
    offset = tsoffset or [0] * len(linktypes)
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    for lt, r, o in zip(linktypes, resol, offset, strict=True):
        opts = b""
        if tsresol is not None:
            opts += struct.pack("<HHB3x", 9, 1, r)
        if tsoffset is not None:
            opts += struct.pack("<HHq", 14, 8, o)
        out += block(1, struct.pack("<HHI", lt, 0, 0) + (opts + struct.pack("<HH", 0, 0) if opts else b""))
    for ts, iface, buf in packets:
        t = round((ts - offset[iface]) * 10 ** resol[iface])
        out += block(6, struct.pack("<IIIII", iface, t >> 32, t & 0xFFFFFFFF, len(buf), len(buf)) + buf)
    with open(path, "wb") as f:
        f.write(out)


class Flow:
    """A TCP conversation between a client and a server, segment by segment."""

    def __init__(self, client: str = "10.0.0.1", server: str = "10.0.0.2", cport: int = 40000,
                 sport: int = 10809, cseq: int = 1000, sseq: int = 5000) -> None:
        self.c, self.s, self.cp, self.sp = client, server, cport, sport
        self.cseq, self.sseq = cseq, sseq

    def syn(self) -> list[bytes]:
        out = [ip_packet(self.c, self.s, self.cp, self.sp, self.cseq, SYN),
               ip_packet(self.s, self.c, self.sp, self.cp, self.sseq, SYN | ACK, ack=self.cseq + 1)]
        self.cseq += 1
        self.sseq += 1
        out.append(ip_packet(self.c, self.s, self.cp, self.sp, self.cseq, ACK, ack=self.sseq))
        return out

    def c2s(self, data: bytes, seq: int | None = None, advance: bool = True, flags: int = ACK | PSH) -> bytes:
        pkt = ip_packet(self.c, self.s, self.cp, self.sp, self.cseq if seq is None else seq, flags, data,
                        ack=self.sseq)
        if advance:
            self.cseq += len(data)
        return pkt

    def s2c(self, data: bytes, seq: int | None = None, advance: bool = True, flags: int = ACK | PSH) -> bytes:
        pkt = ip_packet(self.s, self.c, self.sp, self.cp, self.sseq if seq is None else seq, flags, data,
                        ack=self.cseq)
        if advance:
            self.sseq += len(data)
        return pkt

    def ack_from_client(self, ack: int) -> bytes:
        return ip_packet(self.c, self.s, self.cp, self.sp, self.cseq, ACK, ack=ack)

    def fin(self) -> list[bytes]:
        return [ip_packet(self.c, self.s, self.cp, self.sp, self.cseq, FIN | ACK, ack=self.sseq),
                ip_packet(self.s, self.c, self.sp, self.cp, self.sseq, FIN | ACK, ack=self.cseq + 1)]
