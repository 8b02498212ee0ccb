"""Which end of a TCP connection is the NBD server, and whether it is NBD at all: by port, by the
magic its first bytes carry, by a server already known from another connection, or by the header
search of sniff.py for a connection the capture joined part-way (see capture/tcp.py)."""

from __future__ import annotations

from collections.abc import Collection

from nbdscope.capture.halves import FIRST_KEPT, TcpConn
from nbdscope.capture.sniff import HeaderSearch, client_side
from nbdscope.spec import magics as M

_MAX_OPTION = 0xFFFF  # option numbers in use are small; a server's flags then reply magic read as far more
DETECT_SEGMENTS = 8  # payload segments examined before a connection on an unknown port is dropped (SYN seen)
_SERVER_FIRST = (M.NBDMAGIC_BYTES, M.OPTION_REPLY_MAGIC_BYTES)
_SERVER_WORDS = (M.SIMPLE_REPLY_MAGIC_BYTES, M.STRUCTURED_REPLY_MAGIC_BYTES, M.EXTENDED_REPLY_MAGIC_BYTES)
_CLIENT_WORDS = (M.REQUEST_MAGIC_BYTES, M.EXTENDED_REQUEST_MAGIC_BYTES)


def port_says(conn: TcpConn, ports: Collection[int]) -> int | None:
    """Client side by port, when one end uses an NBD port."""
    a_port, b_port = conn.key[1], conn.key[3]
    if conn.client_side is not None and (a_port in ports or b_port in ports):
        return conn.client_side
    if b_port in ports and a_port not in ports:
        return 0
    if a_port in ports and b_port not in ports:
        return 1
    if a_port in ports:
        return 0 if a_port > b_port else 1
    return None


def peer_says(conn: TcpConn, servers: Collection[tuple[bytes, int]]) -> int | None:
    """Client side when one end is the server of another NBD connection in the input."""
    if (conn.key[2], conn.key[3]) in servers:
        return 0
    if (conn.key[0], conn.key[1]) in servers:
        return 1
    return None


def search_says(conn: TcpConn) -> tuple[int, bool] | None:
    """Client side and whether the evidence is strong, from the headers found part-way (sniff.py)."""
    a, b = conn.halves[0].search, conn.halves[1].search
    return client_side(a or HeaderSearch(), b or HeaderSearch()) if a or b else None


def magic_says(conn: TcpConn, side: int) -> int | None:
    first = conn.halves[side].first
    if len(first) < 8:
        return None
    head = first[:8]
    if head in _SERVER_FIRST or head[:4] in _SERVER_WORDS:
        return 1 - side
    if head == M.IHAVEOPT_BYTES:
        # a client's option, or the second half of a server's greeting sent on its own (nbd-server does):
        # an option number follows in the client's case, the handshake flags and then an option reply
        # magic (0x0003e889...) in the server's
        if len(first) < FIRST_KEPT:
            return None
        return side if int.from_bytes(first[8:12], "big") <= _MAX_OPTION else 1 - side
    if head[:4] in _CLIENT_WORDS:
        return side
    return None


def last_chance(conn: TcpConn, ports: Collection[int], servers: Collection[tuple[bytes, int]]) -> int | None:
    """Client side of a connection still undecided when it closes, if it is NBD at all."""
    side = port_says(conn, ports)
    if side is None:
        side = peer_says(conn, servers)
    if side is None and not conn.syn_seen:
        found = search_says(conn)
        side = found[0] if found else None
    return side
