"""Shared pieces of the TUI tests: build a store from a shipped capture, run the app
headless, read the screen as text."""

from __future__ import annotations

import time
from pathlib import Path

from nbdscope.analysis.engine import Engine
from nbdscope.capture import read_captures
from nbdscope.tui.app import NbdscopeApp
from nbdscope.tui.sources import file_producer
from nbdscope.tui.store import Store

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


def loaded_store(name: str) -> Store:
    """A store filled synchronously from a shipped capture, as the file source would fill it."""
    store = Store()
    engine = Engine([store])
    engine.run(read_captures([str(CAPTURES / name)]))
    store.done = True
    return store


def file_app(name: str) -> NbdscopeApp:
    store = Store()
    return NbdscopeApp(store, file_producer(store, [str(CAPTURES / name)]))


async def settle(pilot: object, app: NbdscopeApp, timeout: float = 10.0) -> None:
    """Wait (bounded) until the source has finished and the screens have picked it up."""
    deadline = time.monotonic() + timeout
    while not app.store.done and time.monotonic() < deadline:
        await pilot.pause(0.05)  # type: ignore[attr-defined]
    await pilot.pause(0.4)  # type: ignore[attr-defined]  # at least one tick after the end


def screen_text(app: NbdscopeApp) -> str:
    """The screen as plain text, one line per terminal row (trailing blanks removed)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(s.text.rstrip() for s in strips)
