"""What the capture layer hands to the decoder: ordered byte chunks per TCP
connection and direction, with the frame and time they were seen, plus the
openings, gaps and closings of each connection.

Sources (pcap files, live capture, the proxy) all produce these items, so the
decoder and everything after it never knows where bytes came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

Direction = Literal["c2s", "s2c"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # IPv4 dotted quad, IPv6 text, or a made-up label for Unix sockets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class StreamOpen:
    """A new TCP connection carrying (or suspected to carry) NBD.

    ``saw_start`` is False when the capture began mid-connection (no SYN seen and
    the first payload is not the start of a handshake)."""

    conn: int
    client: Endpoint
    server: Endpoint
    frame: int
    time: float
    saw_start: bool
    source: str  # input file name, "live" or "proxy"


class StreamData(NamedTuple):
    """Bytes of one direction, in order (a NamedTuple: one is made per packet, and a
    frozen dataclass costs several times more to build)."""

    conn: int
    dir: Direction
    data: bytes | memoryview  # may view the reader's buffer: copy it to keep it past this call
    frame: int  # frame in which the last byte of this chunk arrived
    time: float


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Bytes of one direction that the capture lost (missing TCP segments)."""

    conn: int
    dir: Direction
    nbytes: int
    frame: int
    time: float


@dataclass(frozen=True, slots=True)
class StreamClose:
    conn: int
    how: Literal["fin", "rst", "end-of-capture"]
    frame: int
    time: float
    by: Direction | None = None  # "c2s": the client closed first (FIN or RST); None: unknown


@dataclass(frozen=True, slots=True)
class CaptureProblem:
    """The input itself is damaged (truncated file, corrupt block): reading stopped
    or skipped here; everything before it is kept."""

    source: str
    frame: int
    message: str


StreamItem = StreamOpen | StreamData | StreamGap | StreamClose | CaptureProblem
