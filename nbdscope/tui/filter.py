"""The filter bar and search of the TUI: the shared filter language (nbdscope/filter)
applied to the store's rows. The language and its help live there."""

from __future__ import annotations

from collections.abc import Callable

from nbdscope.filter import FilterError, compile
from nbdscope.tui.store import Store

Predicate = Callable[[Store, int], bool]

__all__ = ["FilterError", "Predicate", "compile_filter"]


def compile_filter(text: str) -> Predicate | None:
    """A predicate over (store, row), or None for an empty expression (everything).
    `time=` counts from the first packet of the input the store's rows come from (the origin of every view)."""
    if not text.strip():
        return None
    current: list[Store] = []  # the store of the row being tested, for time=
    pred = compile(text, t0=lambda: current[0].t0)
    no_findings = ()

    def on_row(store: Store, row: int) -> bool:
        if not current or current[0] is not store:
            current[:] = [store]
        findings = store.anomalies_at(row) if store.marks[row] else no_findings  # the common case without a call
        return pred(store.sessions[store.session_of[row]], store.events[row], findings)

    return on_row
