"""Gathering read and write payloads for the data checks (``keep_data``).

The decoder normally counts payload bytes and passes over them. When asked to
keep data, each read or write payload up to ``DATA_KEEP`` bytes is collected
piece by piece as it arrives and handed on whole as one ``PayloadData`` event;
a payload that lost bytes to a capture gap is dropped, not handed on short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DATA_KEEP = 64 << 20  # payloads longer than this are not gathered


@dataclass(slots=True)
class Sink:
    """One payload being gathered."""

    cookie: int
    offset: int  # on the disk
    kind: Literal["write", "read"]
    start: int  # stream span of the data
    end: int
    parts: list[bytes]
    lost: bool = False  # a gap took some of it


def open_sink(keep_data: bool, cookie: int, offset: int, kind: Literal["write", "read"], start: int,
              length: int) -> Sink | None:
    """A sink for a payload of ``length`` bytes at stream offset ``start``, if it is to be kept."""
    if not keep_data or length > DATA_KEEP:
        return None
    return Sink(cookie, offset, kind, start, start + length, [])
