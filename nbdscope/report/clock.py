"""How every view writes a time: one origin (the first packet of the input) and three ways
to show a moment, chosen with ``--time``.

``rel`` (the default) is seconds since that first packet, the number tshark prints as
``frame.time_relative``; ``abs`` is the wall-clock moment in ISO 8601 with its UTC offset, so
findings line up with an nbdkit or qemu log; ``delta`` is seconds since the line shown before
(tshark's ``-t dd``). Events and findings keep their absolute ``time``; only the views turn it
into text here, so that no view keeps its own origin.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

TimeMode = Literal["rel", "abs", "delta"]
TIME_MODES: tuple[TimeMode, ...] = ("rel", "abs", "delta")
TIME_HELP = ("how times are shown: rel = seconds since the first packet of the input, abs = wall-clock time in "
             "ISO 8601 with the UTC offset (the capture's own zone when it records one, else this machine's), "
             "delta = seconds since the line shown before (default: %(default)s)")


def add_time_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The ``--time`` option, the same in every command that shows times."""
    p.add_argument("--time", choices=TIME_MODES, default="rel", help=TIME_HELP)


class Clock:
    """Turns absolute capture times (seconds since the epoch) into the text of one view.

    ``origin`` is set once the run knows it (``Engine.t0()``, the input's first packet); ``utc_offset``
    is the capture's own offset from UTC in seconds when the file records one (pcap's ``thiszone``),
    else None for the local zone of the machine showing it. A Clock keeps the last moment it showed for
    ``delta``, so each view has its own."""

    def __init__(self, mode: TimeMode | str = "rel", origin: float | None = None,
                 utc_offset: int | None = None) -> None:
        if mode not in TIME_MODES:
            raise ValueError(f"unknown time mode {mode!r} (one of {', '.join(TIME_MODES)})")
        self.mode: TimeMode = mode  # (narrowed by the check just above)
        self.origin = origin
        self.utc_offset = utc_offset
        self._last: float | None = None

    def relative(self, t: float) -> float:
        """Seconds since the origin (the number JSON reports carry as the relative time)."""
        return t - (self.origin or 0.0)

    def text(self, t: float) -> str:
        """The moment as the chosen mode writes it; for ``delta``, also remembers it as the last one shown."""
        if self.mode == "abs":
            return iso8601(t, self.utc_offset)
        if self.mode == "delta":
            previous = self._last if self._last is not None else (self.origin if self.origin is not None else t)
            self._last = t
            return f"+{max(0.0, t - previous):.6f}"
        return f"{self.relative(t):.6f}"

    @property
    def width(self) -> int:
        """Characters the text of one moment takes, for column layouts."""
        return 32 if self.mode == "abs" else 11

    @property
    def heading(self) -> str:
        """A column title saying which base the times are on."""
        return {"rel": "time", "abs": "time (ISO 8601)", "delta": "delta"}[self.mode]


def iso8601(t: float, utc_offset: int | None = None) -> str:
    """``2026-12-02T02:31:41.123456+01:00``: microseconds, and the zone written as an offset (never a name,
    which log lines from other machines would not share)."""
    zone = timezone(timedelta(seconds=utc_offset)) if utc_offset is not None else None
    moment = datetime.fromtimestamp(t, tz=UTC).astimezone(zone)
    return moment.isoformat(timespec="microseconds")
