"""Small helpers every text view shares: how wide to write, counts with the right plural, and a
line cut to fit (so "1 anomaly" and "2 anomalies" are spelled the same way everywhere)."""

from __future__ import annotations

import shutil

MIN_WIDTH = 40  # below this no layout is readable; a tiny COLUMNS is taken as this

_PLURALS = {"anomaly": "anomalies", "info": "info", "index": "indices"}


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 session``, ``2 sessions``, ``0 anomalies``; ``many`` for a plural the table does not know."""
    if n == 1:
        return f"{n:,} {noun}"
    return f"{n:,} {many or _PLURALS.get(noun) or noun + 's'}"


def text_width() -> int:
    """Columns to write text for: ``COLUMNS`` when set, else the terminal's, else 80 (a pipe or a file)."""
    return max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns)


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, ending with an ellipsis when something was cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"
