"""The words every layer shares: directions, endpoints, connection keys and the
stream items a source hands to the decoder.

Stream items are ordered byte chunks per connection and direction, with the
frame and time they were seen, plus the openings, gaps and closings of each
connection. Sources (capture files, live capture, the proxy's tap) all produce
them, so the decoder and everything after it never knows where bytes came from.
This module imports nothing else of nbdscope: it sits below capture/, decoder/,
proxy/, analysis/ and the views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

Direction = Literal["c2s", "s2c"]
ConnKey = int
"""A connection's number within one run: unique across every input of that run, assigned by the source
in the order connections are first seen."""


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

    conn: ConnKey
    client: Endpoint
    server: Endpoint
    frame: int
    time: float
    saw_start: bool
    source: str  # input file name, "live" or "proxy"


class StreamData(NamedTuple):
    """Bytes of one direction, in order (a NamedTuple: one is made per packet, and a
    frozen dataclass costs several times more to build)."""

    conn: ConnKey
    dir: Direction
    data: bytes | memoryview  # may view the reader's buffer: copy it to keep it past this call
    frame: int  # frame in which the last byte of this chunk arrived
    time: float


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Bytes of one direction that the capture lost: missing TCP segments, or (``snapped``) the tail of
    a packet that the snapshot length cut off (``tcpdump -s 128``), whose size the IP header still gives."""

    conn: ConnKey
    dir: Direction
    nbytes: int
    frame: int
    time: float
    snapped: bool = False


@dataclass(frozen=True, slots=True)
class StreamClose:
    conn: ConnKey
    how: Literal["fin", "rst", "end-of-capture"]
    frame: int
    time: float
    by: Direction | None = None  # "c2s": the client closed first (FIN or RST); None: unknown


@dataclass(frozen=True, slots=True)
class StreamNote:
    """Something the source itself has to say about the next bytes of a direction (the proxy: which
    bytes it rewrote); writers of captures put it in a packet comment. The decoder never sees it."""

    conn: ConnKey
    dir: Direction
    text: str
    frame: int
    time: float
    # set when the note records something the proxy did on purpose: "rewrite-flags", "delay" or
    # "closed-at-shutdown" or "upstream-failed" (the session model keeps it, the proxy-action rule reports it)
    action: str = ""
    values: tuple[tuple[str, int], ...] = ()  # rewrite-flags: ("sent", flags), ("forwarded", flags)


@dataclass(frozen=True, slots=True)
class InputStart:
    """The items after this one come from ``source``, whose frames are numbered from 1 again. Only a run
    over several inputs read as one capture (a rotating set, ``tcpdump -C/-W/-G``) yields it, once per file,
    so that findings and reports can name the file that holds a frame. ``time`` is the file's first
    packet's timestamp (None when it cannot be known before reading: a pipe)."""

    source: str
    time: float | None


@dataclass(frozen=True, slots=True)
class TimeOrigin:
    """The moment every relative time of the run counts from: the input's first packet, whatever it
    carries (tshark's ``frame.time_relative`` counts from the same one). A source yields it first when it
    knows that moment before the connections' items; otherwise the first item's time serves.
    ``utc_offset`` is the capture's own offset from UTC in seconds when the file records one (classic
    pcap's ``thiszone``, almost always 0 and then not a claim), else None."""

    source: str
    time: float
    utc_offset: int | None = None


@dataclass(frozen=True, slots=True)
class CaptureProblem:
    """The input itself is damaged (truncated file, corrupt block): reading stopped
    or skipped here; everything before it is kept."""

    source: str
    frame: int
    message: str


StreamItem = (StreamOpen | StreamData | StreamGap | StreamClose | StreamNote | InputStart | TimeOrigin
              | CaptureProblem)
