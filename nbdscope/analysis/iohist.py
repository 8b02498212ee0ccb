"""Exact counters behind the plots: request sizes and offset alignment per command (as nbdkit's
stats filter groups them), latency in logarithmic buckets, and bytes moved per time bin.

Everything here is counted, never sampled, and its memory is bounded by the number of buckets
(64 size classes x 65 alignments per command, a few hundred latency buckets, ``MAX_BINS`` time
bins), not by the traffic."""

from __future__ import annotations

import math
from array import array

OFFSET_ZERO = 64
"""The alignment recorded for offset 0, which every power of two divides."""
LATENCY_STEPS = 4  # latency buckets per doubling: bucket i holds [2^(i/4), 2^((i+1)/4)) microseconds
MAX_BINS = 512  # throughput bins kept; past them the bin width doubles and neighbours merge
FIRST_BIN = 0.001  # seconds: the first width of a throughput bin


def size_class(length: int) -> int:
    """The power-of-two class nbdkit's stats filter reports as "N bits": floor(log2(length)), so
    4096..8191 bytes are class 12. A zero length, which no class holds, is class -1."""
    return length.bit_length() - 1


def alignment(offset: int) -> int:
    """log2 of the largest power of two dividing the offset (its trailing zero bits); offset 0 is
    ``OFFSET_ZERO``."""
    if offset <= 0:
        return OFFSET_ZERO
    return (offset & -offset).bit_length() - 1


def latency_bucket(us: float) -> int:
    """The logarithmic bucket of a latency (below 1 us: bucket 0)."""
    if us <= 1.0:
        return 0
    return int(math.log2(us) * LATENCY_STEPS)


def bucket_floor(bucket: int) -> float:
    """The lower bound, in microseconds, of a latency bucket."""
    return float(2 ** (bucket / LATENCY_STEPS))


class SizeHistogram:
    """Requests of one command by size class: count and bytes per class, and per class how many
    offsets have each alignment (exact, so nbdkit's cumulative "N bit aligned" lines follow)."""

    __slots__ = ("align", "bytes", "counts")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.bytes: dict[int, int] = {}
        self.align: dict[int, dict[int, int]] = {}

    def add(self, offset: int, length: int) -> None:
        c = size_class(length)
        self.counts[c] = self.counts.get(c, 0) + 1
        self.bytes[c] = self.bytes.get(c, 0) + length
        per = self.align.get(c)
        if per is None:
            per = self.align[c] = {}
        a = alignment(offset)
        per[a] = per.get(a, 0) + 1

    def at_least(self, size: int, bits: int) -> int:
        """How many requests of a size class have offsets aligned to at least 2^bits (nbdkit's
        "N bit aligned" count)."""
        return sum(n for a, n in self.align.get(size, {}).items() if a >= bits)

    def alignments(self) -> dict[int, int]:
        """Requests by alignment over every size class."""
        out: dict[int, int] = {}
        for per in self.align.values():
            for a, n in per.items():
                out[a] = out.get(a, 0) + n
        return out

    def as_json(self) -> dict[str, object]:
        return {"sizes": {str(c): [self.counts[c], self.bytes[c]] for c in sorted(self.counts)},
                "alignment": {str(c): {str(a): n for a, n in sorted(per.items())}
                              for c, per in sorted(self.align.items())}}


class Throughput:
    """Bytes read and written per time bin, from the run's start. The bins start ``FIRST_BIN`` wide;
    when a time falls past ``MAX_BINS`` bins, the width doubles and each pair of bins is merged,
    so the totals stay exact and the memory fixed whatever the capture's length."""

    __slots__ = ("read", "width", "write")

    def __init__(self) -> None:
        self.width = FIRST_BIN
        self.read: array[int] = array("q")
        self.write: array[int] = array("q")

    def add(self, t: float, nbytes: int, *, write: bool) -> None:
        i = int(max(t, 0.0) / self.width)
        while i >= MAX_BINS:
            self._widen()
            i = int(max(t, 0.0) / self.width)
        bins = self.write if write else self.read
        for arr in (self.read, self.write):
            if len(arr) <= i:
                arr.extend([0] * (i + 1 - len(arr)))
        bins[i] += nbytes

    def _widen(self) -> None:
        self.width *= 2
        for name in ("read", "write"):
            old: array[int] = getattr(self, name)
            merged = array("q", (old[j] + (old[j + 1] if j + 1 < len(old) else 0) for j in range(0, len(old), 2)))
            setattr(self, name, merged)

    def as_json(self) -> dict[str, object]:
        return {"bin_s": self.width, "read": list(self.read), "write": list(self.write)}
