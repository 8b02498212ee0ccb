"""The TCP state of one connection as capture/tcp.py reassembles it: each direction's half (sequence
numbers, the out-of-order backlog, the first bytes for detection) and where delivered bytes lay in the
capture (Origin, for redaction)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from nbdscope.capture.sniff import HeaderSearch
from nbdscope.vocab import Direction

OOO_LIMIT = 16 << 20  # out-of-order bytes held per direction before the hole is declared lost
FIRST_KEPT = 16  # first bytes of each direction kept for detection


class Origin(NamedTuple):
    """Where ``length`` bytes of a connection's stream lie in the capture: at ``pos`` in
    frame ``frame``. ``offset`` is their stream offset as the decoder counts it, or -1
    when they cannot be placed in the stream (whoever redacts must hide them all)."""

    conn: int
    dir: Direction
    offset: int
    length: int
    frame: int
    pos: int


def signed(delta: int) -> int:
    delta &= 0xFFFFFFFF
    return delta - (1 << 32) if delta & 0x80000000 else delta


_PORTS = struct.Struct(">HH")


def fast_key(src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """The key of ``TcpStreams.fast`` for segments from (src, sport) to (dst, dport)."""
    return src + dst + _PORTS.pack(sport, dport)


@dataclass(slots=True)
class Half:
    """One direction of a connection (slots: the fast path reads it once per packet)."""

    next_seq: int | None = None
    offset: int = 0  # stream offset of next_seq (never wraps, unlike sequence numbers)
    ooo: dict[int, tuple[bytes, int, int, int]] = field(default_factory=dict)  # by stream offset: data, frame, pos,
    # and the bytes after data that the snapshot length cut off
    heap: list[int] = field(default_factory=list)  # the keys of ooo, smallest first
    ooo_bytes: int = 0
    fin: bool = False
    first: bytes = b""  # the first payload bytes, for detection
    unseen: int = 0  # bytes lost before the connection was found to be NBD (the decoder never counts them)
    search: HeaderSearch | None = None  # looking for headers in a connection the capture joined part-way
    conn_id: int = -1  # these two once the connection is NBD, for the fast path
    dir: Direction = "c2s"


@dataclass
class TcpConn:
    key: tuple[bytes, int, bytes, int]  # (a, a_port, b, b_port) as first seen
    halves: tuple[Half, Half] = field(default_factory=lambda: (Half(), Half()))
    client_side: int | None = None  # 0: "a" is the client, 1: "b" is
    syn_seen: bool = False
    state: str = "detect"  # detect, nbd, ignored
    conn_id: int = -1
    pending: list[tuple[int, bytes | int, int, float, int, int, int]] = field(default_factory=list)
    # side, data (or the size of a loss after earlier data), frame, time, then where the data came from:
    # frame, position in it, stream offset
    closer: int | None = None  # side that sent the first FIN or the RST
    segments: int = 0
