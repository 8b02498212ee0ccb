"""Write what a relay saw as a pcapng capture: each session as a made-up TCP
connection (Ethernet, IPv4, TCP with consistent sequence numbers), so Wireshark,
tshark and `nbdscope analyze` open it like any capture. Packet comments mark
sessions that were really Unix sockets and any byte the relay changed."""

from __future__ import annotations

import struct
from typing import BinaryIO

from nbdscope.vocab import Direction, Endpoint

LINKTYPE_ETHERNET = 1
MAX_SEGMENT = 65000  # IPv4 total length must stay under 65536
OPT_COMMENT = 1
_MAC_CLIENT = b"\x02\x00\x00\x00\x00\x01"
_MAC_SERVER = b"\x02\x00\x00\x00\x00\x02"
SYN, ACK, FIN, PSH = 0x02, 0x10, 0x01, 0x08


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = len(body) + 12
    return struct.pack("<II", btype, size) + body + struct.pack("<I", size)


def _options(comment: str | None) -> bytes:
    if not comment:
        return b""
    raw = comment.encode()
    return struct.pack("<HH", OPT_COMMENT, len(raw)) + raw + b"\0" * (-len(raw) % 4) + struct.pack("<HH", 0, 0)


class _Flow:
    def __init__(self, client: Endpoint, server: Endpoint) -> None:
        self.addr = {"c2s": (_ip(client.host), _ip(server.host), client.port, server.port),
                     "s2c": (_ip(server.host), _ip(client.host), server.port, client.port)}
        self.seq = {"c2s": 1000, "s2c": 5000}


def _ip(host: str) -> bytes:
    parts = host.split(".")
    return bytes(int(p) for p in parts) if len(parts) == 4 and all(p.isdigit() for p in parts) else b"\xc0\x00\x02\x01"


class PcapngWriter:
    """Numbers frames as it writes them; ``frames`` is the count so far, which the
    relay uses as the frame number of its live findings so the two agree."""

    def __init__(self, out: BinaryIO | None) -> None:
        self.out = out
        self.frames = 0
        self.flows: dict[int, _Flow] = {}
        if out is not None:
            out.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
            out.write(_block(1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0) +
                             struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HH", 0, 0)))  # if_tsresol: microseconds

    def open(self, conn: int, client: Endpoint, server: Endpoint, time: float, comment: str | None = None) -> int:
        """A three-way handshake; returns the frame number of the SYN."""
        flow = self.flows[conn] = _Flow(client, server)
        first = self.frames + 1
        self._packet(flow, "c2s", SYN, b"", time, comment, advance=1)
        self._packet(flow, "s2c", SYN | ACK, b"", time, None, advance=1)
        self._packet(flow, "c2s", ACK, b"", time, None)
        return first

    def data(self, conn: int, direction: Direction, data: bytes | memoryview, time: float,
             comment: str | None = None) -> int:
        """Payload as one or more segments; returns the frame number of the last."""
        if self.out is None:  # numbering only
            self.frames += -(-len(data) // MAX_SEGMENT)
            return self.frames
        flow = self.flows[conn]
        for i in range(0, len(data), MAX_SEGMENT):
            self._packet(flow, direction, ACK | PSH, data[i:i + MAX_SEGMENT], time, comment if i == 0 else None,
                         advance=len(data[i:i + MAX_SEGMENT]))
        return self.frames

    def close(self, conn: int, by: Direction, time: float) -> int:
        flow = self.flows.pop(conn)
        other: Direction = "s2c" if by == "c2s" else "c2s"
        self._packet(flow, by, FIN | ACK, b"", time, None, advance=1)
        self._packet(flow, other, FIN | ACK, b"", time, None, advance=1)
        return self.frames

    def _packet(self, flow: _Flow, direction: Direction, flags: int, payload: bytes | memoryview, time: float,
                comment: str | None, advance: int = 0) -> None:
        self.frames += 1
        if self.out is None:
            flow.seq[direction] += advance
            return
        src, dst, sport, dport = flow.addr[direction]
        other: Direction = "s2c" if direction == "c2s" else "c2s"
        tcp = struct.pack(">HHIIBBHHH", sport, dport, flow.seq[direction] & 0xFFFFFFFF,
                          flow.seq[other] & 0xFFFFFFFF if flags & ACK else 0, 5 << 4, flags, 65535, 0, 0)
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
        macs = (_MAC_SERVER + _MAC_CLIENT) if direction == "c2s" else (_MAC_CLIENT + _MAC_SERVER)
        frame = macs + b"\x08\x00" + ip + tcp + payload
        ts = int(time * 1_000_000)
        body = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame
        body += b"\0" * (-len(body) % 4) + _options(comment)
        self.out.write(_block(6, body))
        flow.seq[direction] += advance
