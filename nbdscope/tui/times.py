"""How the TUI writes a moment: the run's one origin (the input's first packet, ``Engine.t0()``)
and the mode chosen with ``--time`` or cycled with ``c``, the same for the table, the detail
pane, the findings and the session summary.

``delta`` needs the moment shown just before; a virtualised table has no "line before" of
its own, so each caller passes the time of the row it shows above (the previous row of the
view, the previous finding), and the origin stands in for the first one.
"""

from __future__ import annotations

from nbdscope.report.clock import TIME_MODES, TimeMode, iso8601

SHORT_ABS = 15  # HH:MM:SS.ffffff: the wall-clock time of day, for narrow tables


def next_mode(mode: TimeMode) -> TimeMode:
    return TIME_MODES[(TIME_MODES.index(mode) + 1) % len(TIME_MODES)]


def moment(t: float, mode: TimeMode, origin: float, utc_offset: int | None = None, *,
           previous: float | None = None, short: bool = False) -> str:
    """The absolute capture time ``t`` in ``mode``; ``short`` writes ``abs`` as the time of day only."""
    if mode == "abs":
        text = iso8601(t, utc_offset)
        return text[11:11 + SHORT_ABS] if short else text
    if mode == "delta":
        return f"+{max(0.0, t - (origin if previous is None else previous)):.6f}"
    return f"{t - origin:.6f}"


def heading(mode: TimeMode, short: bool = False) -> str:
    """A column title that says which base the times are on."""
    return {"rel": "time", "abs": "time of day" if short else "time (ISO 8601)", "delta": "delta"}[mode]


def describe(mode: TimeMode) -> str:
    """What the mode means, for the status line when it changes."""
    return {"rel": "seconds since the first packet", "abs": "wall-clock time (ISO 8601, the capture's offset)",
            "delta": "seconds since the message shown before"}[mode]
