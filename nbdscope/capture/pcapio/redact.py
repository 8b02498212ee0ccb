"""Redaction: zero the read and write data in packets being written, keep every
header and length.

The decoder says which stream bytes are data (``Connection.take_payload_ranges``,
stream offsets per direction, reported as it is fed those bytes); DataMask holds
them and zeroes exactly those bytes of any chunk whose place in its stream is
known. The proxy knows the place of every chunk it writes. For a copy of a
capture, FrameRedaction learns it from the capture layer's trace (capture/tcp.py:
which frame, at which position, carries which stream bytes, retransmissions
included) while the analysis runs, and turns it into the byte spans to zero per
frame, so the copy needs no second reassembly. Nothing here parses NBD.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from nbdscope.capture.tcp import Origin
from nbdscope.vocab import ConnKey, Direction, StreamData, StreamGap, StreamItem

StreamKey = tuple[ConnKey, Direction]
Spans = dict[int, list[tuple[int, int]]]  # frame number -> [start, end) positions in the frame to zero


class PayloadSource(Protocol):
    def take_payload_ranges(self, direction: Direction) -> list[tuple[int, int]]: ...

    def settled(self, direction: Direction) -> int | None:
        """Where the ranges are known up to (None: every byte fed); short of it inside a TLS record that a key
        log decrypts, which is known to hold data only once it is whole (decoder/decrypted.py)."""


class DataMask:
    """Stream ranges to hide, per connection and direction, kept merged and sorted."""

    def __init__(self) -> None:
        self.starts: dict[StreamKey, list[int]] = {}
        self.ends: dict[StreamKey, list[int]] = {}

    def add(self, key: StreamKey, ranges: Iterable[tuple[int, int]]) -> None:
        starts = self.starts.setdefault(key, [])
        ends = self.ends.setdefault(key, [])
        for lo, hi in ranges:
            if hi <= lo:
                continue
            if not ends or lo > ends[-1]:  # the usual case: ranges come in stream order
                starts.append(lo)
                ends.append(hi)
            elif lo >= starts[-1]:
                ends[-1] = max(ends[-1], hi)
            else:
                self._insert(starts, ends, lo, hi)

    @staticmethod
    def _insert(starts: list[int], ends: list[int], lo: int, hi: int) -> None:
        i = bisect.bisect_left(ends, lo)  # first range that ends at or after lo
        j = bisect.bisect_right(starts, hi)  # ranges from i to j overlap or touch [lo, hi)
        if i < j:
            lo, hi = min(lo, starts[i]), max(hi, ends[j - 1])
        starts[i:j] = [lo]
        ends[i:j] = [hi]

    def pieces(self, key: StreamKey, offset: int, length: int) -> Iterator[tuple[int, int]]:
        """The parts of stream bytes [offset, offset + length) to hide, relative to ``offset``;
        an offset of -1 (bytes whose place is unknown) hides them all."""
        if offset < 0:
            yield 0, length
            return
        starts = self.starts.get(key)
        if not starts:
            return
        ends = self.ends[key]
        end = offset + length
        i = max(bisect.bisect_right(starts, offset) - 1, 0)
        while i < len(starts) and starts[i] < end:
            a, b = max(starts[i], offset), min(ends[i], end)
            if a < b:
                yield a - offset, b - offset
            i += 1

    def zero(self, buf: bytearray, at: int, key: StreamKey, offset: int, length: int) -> None:
        """Zero the data among the stream bytes [offset, offset + length), which sit at ``at`` in ``buf``."""
        for a, b in self.pieces(key, offset, length):
            buf[at + a:at + b] = bytes(b - a)

    def forget_before(self, key: StreamKey, offset: int) -> None:
        """Drop the ranges that end before ``offset`` (a writer that never goes back)."""
        ends = self.ends.get(key)
        if ends:
            i = bisect.bisect_right(ends, offset)
            if i:
                del ends[:i], self.starts[key][:i]

    def drop(self, conn: ConnKey) -> None:
        for d in ("c2s", "s2c"):
            self.starts.pop((conn, d), None)
            self.ends.pop((conn, d), None)


class FrameRedaction:
    """The byte spans to zero in each frame of a capture, learnt while it is analysed.

    Pass ``trace`` to the capture reader and the stream items through ``tap`` on their way
    to the engine whose decoders ``connection`` returns. Lost stream bytes (StreamGap) are
    hidden too, should a late retransmission carry them."""

    def __init__(self, connection: Callable[[ConnKey], PayloadSource | None]) -> None:
        self.connection = connection
        self.trace: list[Origin] = []
        self.mask = DataMask()
        self.fed: dict[StreamKey, int] = {}  # stream bytes the decoders have been given
        self.known: dict[StreamKey, int] = {}  # short of ``fed`` while a decrypted TLS record is incomplete
        self.spans: Spans = {}
        self._done = 0  # trace entries resolved

    def collect(self, item: StreamItem) -> None:
        """Call once the engine has been fed ``item``."""
        if isinstance(item, StreamData | StreamGap):
            key = (item.conn, item.dir)
            before = self.fed.get(key, 0)
            n = len(item.data) if isinstance(item, StreamData) else item.nbytes
            self.fed[key] = before + n
            decoder = self.connection(item.conn)
            if decoder is not None:
                self.mask.add(key, decoder.take_payload_ranges(item.dir))
                settled = decoder.settled(item.dir)
                self.known[key] = self.fed[key] if settled is None else min(settled, self.fed[key])
            if isinstance(item, StreamGap):
                self.mask.add(key, [(before, before + n)])
            self._resolve(final=False)

    def tap(self, items: Iterable[StreamItem]) -> Iterator[StreamItem]:
        """Pass items through; by the time the next one is asked for, the engine has fed the last."""
        last: StreamItem | None = None
        for item in items:
            if last is not None:
                self.collect(last)
            yield item
            last = item
        if last is not None:
            self.collect(last)

    def finish(self) -> Spans:
        self._resolve(final=True)
        return self.spans

    def _resolve(self, final: bool) -> None:
        """Turn trace entries whose bytes the decoder has seen into frame spans, in order."""
        trace, fed, i = self.trace, self.fed, self._done
        while i < len(trace):
            o = trace[i]
            key = (o.conn, o.dir)
            if not final and o.offset >= 0 and o.offset + o.length > self.known.get(key, fed.get(key, 0)):
                break  # its data ranges may not be known yet
            for a, b in self.mask.pieces(key, o.offset, o.length):
                self.spans.setdefault(o.frame, []).append((o.pos + a, o.pos + b))
            i += 1
        if i > 4096 or i == len(trace):
            del trace[:i]
            i = 0
        self._done = i


def apply_spans(data: bytes | memoryview, spans: list[tuple[int, int]] | None) -> bytes | memoryview:
    """The frame with the given spans zeroed (itself when there are none)."""
    if not spans:
        return data
    out = bytearray(data)
    for a, b in spans:
        out[a:b] = bytes(b - a)
    return bytes(out)
