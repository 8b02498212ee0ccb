"""One socket of a relayed session as an asyncio buffered protocol: it receives straight into the
tap's ring (or into a buffer of its own when the session changes or holds bytes), and reading pauses
while the other socket has bytes unsent (back-pressure)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbdscope.proxy.relay import _Session

OTHER = {"c2s": "s2c", "s2c": "c2s"}
OWN_BUFFER = 256 << 10  # receive buffer of a session that rewrites or delays


class SocketEnd(asyncio.BufferedProtocol):
    """One socket of a session; ``direction`` is the direction of the bytes it receives.

    It receives straight into the tap's ring and the other end sends from there, unless
    the session changes or holds bytes (flag rewrite, --delay): then into a buffer of its own."""

    def __init__(self, session: _Session, direction: str) -> None:
        self.session, self.direction = session, direction
        self.transport: asyncio.Transport | None = None
        self.holds: set[str] = set()
        self.into: int | None = None  # ring position of the buffer handed out, if in the ring
        self.own: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # paused as soon as anything waits to be sent, resumed once all is: the ring space
        # those bytes sit in is pinned meanwhile (see resume_writing)
        self.transport.set_write_buffer_limits(high=0)  # type: ignore[union-attr]
        self.session.made(self)
        # uvloop starts reading only after connection_made returns, ignoring a pause asked for inside it
        asyncio.get_running_loop().call_soon(self._pause_if_held)

    def _pause_if_held(self) -> None:
        t = self.transport
        if self.holds and t is not None and not t.is_closing():
            t.pause_reading()

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        if self.session.direct:
            space = self.session.relay.tap.reserve()
            if space is not None:
                self.into, view = space
                return view
        self.into = None
        if self.own is None:
            self.own = bytearray(OWN_BUFFER)
        return self.own

    def buffer_updated(self, nbytes: int) -> None:
        if self.into is not None:
            self.session.forward_ring(self.direction, self.into, nbytes)
        else:
            assert self.own is not None
            self.session.forward(self.direction, bytes(self.own[:nbytes]))

    def eof_received(self) -> bool:
        self.session.eof(self.direction)
        return True  # keep the socket open: the other direction may still be talking

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.relay.tap.unpin(self.transport)
        self.session.lost(self.direction, isinstance(exc, ConnectionResetError))

    def pause_writing(self) -> None:  # bytes wait to be sent: stop reading the other side
        peer = self.session.ends.get(OTHER[self.direction])
        if peer is not None:
            peer.hold("peer", True)

    def resume_writing(self) -> None:  # all sent: the ring space they were in is free again
        self.session.relay.tap.unpin(self.transport)
        peer = self.session.ends.get(OTHER[self.direction])
        if peer is not None:
            peer.hold("peer", False)

    def hold(self, reason: str, on: bool) -> None:
        """Stop or restart reading this socket; it reads again only when no reason is left."""
        if on:
            self.holds.add(reason)
        else:
            self.holds.discard(reason)
        t = self.transport
        if t is None or t.is_closing():
            return
        if on:
            t.pause_reading()
        elif not self.holds:
            t.resume_reading()
