"""The receive side of one direction: the bytes not yet decoded, where decoding
stands in the stream, and the payload bytes still to pass over.

Offsets: ``fed`` is the stream offset just past the last byte fed; the buffer
holds bytes that came before it, so ``buf[i]`` (for ``i >= pos``) is at stream
offset ``fed - len(buf) + i``. Bytes before ``pos`` are decoded and dropped when
the connection compacts the buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbdscope.vocab import Direction

if TYPE_CHECKING:
    from nbdscope.decoder.sinks import Sink
    from nbdscope.decoder.state import Handler, State


class ReceiveBuffer:
    """One direction's bytes, position and state (one object, so the per-message path
    reaches all it needs through one reference)."""

    __slots__ = ("after_gap", "announce", "buf", "dir", "fed", "frame", "hunt_from", "lost", "payload", "pos",
                 "sink", "skip", "skip_data", "skipped", "state", "step", "time")

    def __init__(self, direction: Direction, *, track_payload: bool) -> None:
        self.dir: Direction = direction
        self.buf = bytearray()
        self.pos = 0  # first byte not yet decoded
        self.fed = 0  # stream offset just past the last byte fed
        self.skip = 0  # payload bytes still to pass over uninspected
        self.skip_data = False  # the bytes being skipped are read or write data
        self.frame = 0  # of the bytes being decoded
        self.time = 0.0
        self.sink: Sink | None = None  # collects the payload being skipped, when data is wanted
        self.payload: list[tuple[int, int]] | None = [] if track_payload else None  # ranges of read/write data
        # set by the state machine (state.Machine), never by handlers
        self.state: State
        self.step: Handler  # the handler for ``state``: decodes one message, False when it needs more bytes
        self.announce = False  # hunting: report where decoding resumed even when nothing was skipped
        # hunting (resync.py)
        self.skipped = 0  # bytes dropped while hunting for sync
        self.after_gap = False  # hunting because the capture lost bytes, not because the peer sent garbage
        self.hunt_from = 0  # stream offset where the bytes the next Resync reports begin
        # while a gap is placed (Connection.gap): the bytes lost right after the buffered ones, which a
        # handler may take as the rest of a message whose length its header gave (Connection.cut_short)
        self.lost = 0

    def avail(self) -> int:
        return len(self.buf) - self.pos

    @property
    def base(self) -> int:
        """Stream offset of ``buf[0]`` (meaningful from ``pos`` on)."""
        return self.fed - len(self.buf)

    @property
    def offset(self) -> int:
        """Stream offset of the next byte to decode."""
        return self.fed - len(self.buf) + self.pos

    @property
    def framed_to(self) -> int:
        """Stream offset just past the last message decoded (its payload included)."""
        return self.fed - len(self.buf) + self.pos + self.skip

    def compact(self) -> None:
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0

    def note_data(self, lo: int, hi: int) -> None:
        """Record a range of read/write data, when tracking (redaction)."""
        if self.payload is not None:
            self.payload.append((lo, hi))

    def take_payload(self) -> list[tuple[int, int]]:
        ranges = self.payload
        if ranges is None:
            return []
        self.payload = []
        return ranges
