"""Shared by the tests that cut real captures (snapshot length, mid-stream starts): which stream bytes a
cut capture still holds, worked out from the whole capture's reassembly trace, not from the decoder."""

from __future__ import annotations


def covers(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether the byte ranges (possibly overlapping, in any order) hold every byte of [start, end)."""
    pos = start
    for a, b in sorted(ranges):
        if a <= pos < b:
            pos = b
        if pos >= end:
            return True
    return False
