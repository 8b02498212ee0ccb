"""What a relay saw, as packets of a made-up TCP connection per session (Ethernet,
IPv4, TCP with consistent sequence numbers), so Wireshark, tshark and `nbdscope
analyze` open the proxy's pcapng like any capture. Packet comments mark sessions
that were really Unix sockets and any byte the relay changed.

How many frames each step takes is fixed here (OPEN_FRAMES, data_frames,
CLOSE_FRAMES) so that the proxy can number its frames without writing any; the
frame numbers themselves are the proxy's."""

from __future__ import annotations

import struct
from typing import BinaryIO

from nbdscope.capture.pcapio.write import TSRESOL_MICRO, PcapngWriter
from nbdscope.vocab import Direction, Endpoint

LINKTYPE_ETHERNET = 1
MAX_SEGMENT = 65000  # IPv4 total length must stay under 65536
OPEN_FRAMES = 3  # SYN, SYN-ACK, ACK
CLOSE_FRAMES = 2  # a FIN each way (or a RST each way: the closer's, then the proxy's on the other side)
_MAC_CLIENT = b"\x02\x00\x00\x00\x00\x01"
_MAC_SERVER = b"\x02\x00\x00\x00\x00\x02"
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def data_frames(nbytes: int) -> int:
    """Frames that ``nbytes`` of payload take."""
    return -(-nbytes // MAX_SEGMENT)


class _Flow:
    def __init__(self, client: Endpoint, server: Endpoint) -> None:
        self.addr = {"c2s": (_ip(client.host), _ip(server.host), client.port, server.port),
                     "s2c": (_ip(server.host), _ip(client.host), server.port, client.port)}
        self.seq = {"c2s": 1000, "s2c": 5000}


def _ip(host: str) -> bytes:
    parts = host.split(".")
    return bytes(int(p) for p in parts) if len(parts) == 4 and all(p.isdigit() for p in parts) else b"\xc0\x00\x02\x01"


class SessionCapture:
    """Sessions as TCP packets in a pcapng (one Ethernet interface, microsecond timestamps)."""

    def __init__(self, out: BinaryIO) -> None:
        self.writer = PcapngWriter(out)
        self.writer.section()
        self.writer.interface(LINKTYPE_ETHERNET, 0, TSRESOL_MICRO)
        self.flows: dict[int, _Flow] = {}

    def open(self, conn: int, client: Endpoint, server: Endpoint, time: float, comment: str | None = None) -> None:
        """A three-way handshake (OPEN_FRAMES packets)."""
        flow = self.flows[conn] = _Flow(client, server)
        self._packet(flow, "c2s", SYN, b"", time, comment, advance=1)
        self._packet(flow, "s2c", SYN | ACK, b"", time, None, advance=1)
        self._packet(flow, "c2s", ACK, b"", time, None)

    def data(self, conn: int, direction: Direction, data: bytes | memoryview, time: float,
             comment: str | None = None) -> None:
        """Payload as data_frames(len(data)) segments, the comment on the first."""
        flow = self.flows[conn]
        for i in range(0, len(data), MAX_SEGMENT):
            piece = data[i:i + MAX_SEGMENT]
            self._packet(flow, direction, ACK | PSH, piece, time, comment if i == 0 else None, advance=len(piece))

    def close(self, conn: int, by: Direction, time: float, comment: str | None = None, reset: bool = False) -> None:
        """A FIN from the side that closed, then one from the other (CLOSE_FRAMES packets), the comment on the first;
        with ``reset`` a RST each way instead, so a reader ends the connection on the first."""
        flow = self.flows.pop(conn)
        other: Direction = "s2c" if by == "c2s" else "c2s"
        flags = RST | ACK if reset else FIN | ACK
        self._packet(flow, by, flags, b"", time, comment, advance=0 if reset else 1)
        self._packet(flow, other, flags, b"", time, None, advance=0 if reset else 1)

    def _packet(self, flow: _Flow, direction: Direction, flags: int, payload: bytes | memoryview, time: float,
                comment: str | None, advance: int = 0) -> None:
        src, dst, sport, dport = flow.addr[direction]
        other: Direction = "s2c" if direction == "c2s" else "c2s"
        tcp = struct.pack(">HHIIBBHHH", sport, dport, flow.seq[direction] & 0xFFFFFFFF,
                          flow.seq[other] & 0xFFFFFFFF if flags & ACK else 0, 5 << 4, flags, 65535, 0, 0)
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
        macs = (_MAC_SERVER + _MAC_CLIENT) if direction == "c2s" else (_MAC_CLIENT + _MAC_SERVER)
        frame = macs + b"\x08\x00" + ip + tcp + payload
        self.writer.packet(0, int(time * 1_000_000), frame, comments=(comment,) if comment else ())
        flow.seq[direction] += advance

    def flush(self) -> None:
        self.writer.flush()
