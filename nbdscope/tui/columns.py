"""The message table's columns and how they share the terminal's width.

Every column but the type has a natural width (its title, or the widest value seen on
screen so far); the type column takes what is left, between TYPE_MIN and TYPE_MAX
characters. When the terminal is too narrow the type column shrinks first, then whole
columns go in DROP_ORDER (the cookie before the latency, the frame, which findings cite,
last of all), so 80 columns keep frame, time, session, direction, type and error.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    right: bool  # numbers are right-aligned


COLUMNS: tuple[Column, ...] = (
    Column("mark", "", False),
    Column("frame", "frame", True),
    Column("time", "time", True),
    Column("ses", "ses", False),
    Column("dir", "", False),
    Column("type", "type", False),
    Column("error", "error", False),
    Column("offset", "offset", True),
    Column("length", "length", True),
    Column("latency", "latency", True),
    Column("cookie", "cookie", True),
)
BY_KEY = {c.key: c for c in COLUMNS}
TYPE_MIN, TYPE_MAX = 12, 26
DROP_ORDER = ("cookie", "latency", "length", "offset", "error", "frame")
# the least the type column may take before the next column of DROP_ORDER goes (the cookie goes
# as soon as the type would fall below 16 characters; the last entry applies once all have gone)
TYPE_FLOORS = (16, TYPE_MIN, TYPE_MIN, TYPE_MIN, TYPE_MIN, TYPE_MIN, 4)
CAPS = {"cookie": 16, "error": 14, "ses": 8}  # the widest these grow; longer values end in "…"


def fit(natural: dict[str, int], width: int) -> list[tuple[Column, int]]:
    """The columns shown at ``width`` characters (one space between two) and each one's width."""
    shown = [c.key for c in COLUMNS]
    for step, floor in enumerate(TYPE_FLOORS):
        others = sum(min(natural.get(k, 1), CAPS.get(k, 99)) for k in shown if k != "type") + len(shown) - 1
        room = width - others
        if room >= floor or step == len(DROP_ORDER):
            type_w = max(floor if step == len(DROP_ORDER) else TYPE_MIN, min(TYPE_MAX, room))
            return [(BY_KEY[k], type_w if k == "type" else min(natural.get(k, 1), CAPS.get(k, 99)))
                    for k in shown]
        shown.remove(DROP_ORDER[step])
    raise AssertionError("unreachable: the last step always returns")


def cell(text: str, width: int, right: bool = False) -> str:
    """``text`` padded to ``width``, cut with "…" when longer (numbers keep their last digits)."""
    if len(text) > width:
        if width <= 1:
            return text[:width]
        return ("…" + text[-(width - 1):]) if right else (text[:width - 1] + "…")
    return text.rjust(width) if right else text.ljust(width)
