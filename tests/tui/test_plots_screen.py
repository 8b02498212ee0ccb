"""The TUI's plot screen (nbdscope.tui.plots), driven headless by Textual's pilot: it opens on a shipped
capture with every plot drawn, shows the same counts as the report, and follows a store that grows."""

from __future__ import annotations

import asyncio
import time

from nbdscope import pipeline
from nbdscope.analysis.engine import Engine
from nbdscope.analysis.iomap import IoMap
from nbdscope.capture import read_captures
from nbdscope.tui.app import NbdscopeApp
from nbdscope.tui.overview import OverviewScreen
from nbdscope.tui.plots import PLOTS, TITLES, PlotsScreen, feeder_for
from nbdscope.tui.store import Store
from tests.tui.helpers import CAPTURES, file_app, screen_text, settle


def run(coro) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(asyncio.wait_for(coro, 90))


async def until(pilot: object, check: object, timeout: float = 15.0) -> None:
    """Wait (bounded) until ``check()`` holds: the machine may be slow, the screen redraws on its ticks."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        await pilot.pause(0.1)  # type: ignore[attr-defined]


def test_plot_screen_opens_and_draws_every_plot() -> None:
    async def go() -> None:
        app = file_app("fio-iodepth8.pcap")
        async with app.run_test(size=(160, 50)) as pilot:
            await settle(pilot, app)
            await until(pilot, lambda: "v Plots" in screen_text(app))
            assert "v Plots" in screen_text(app)  # the key is in the footer
            await pilot.press("v")
            await until(pilot, lambda: "200 requests" in screen_text(app))
            assert isinstance(app.screen, PlotsScreen)
            text = screen_text(app)
            for kind in PLOTS:
                assert TITLES[kind] in text, kind
            assert "200 requests, 200 drawn" in text  # fio's 99 reads and 101 writes
            assert "•" in text and "█" in text  # scatter points and histogram bars were drawn
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, OverviewScreen))
            assert isinstance(app.screen, OverviewScreen)

    run(go())


def test_plot_data_from_the_store_equals_the_engines() -> None:
    """The screen feeds the model from the store's rows; it must see what the engine-fed addon sees."""
    path = str(CAPTURES / "client-misbehaves-nbdsh.pcap")
    io = IoMap()
    pipeline.run(pipeline.FileSource([path]), [io])
    store = Store()
    Engine([store]).run(read_captures([path]))
    store.done = True
    feeder = feeder_for(store)
    while feeder.feed():
        pass
    engine_data, store_data = io.model.as_json(), feeder.model.as_json()
    for key in ("totals", "sizes", "latency", "throughput"):
        assert store_data[key] == engine_data[key], key
    # the findings the store marked on rows are the points the addon flagged
    assert store_data["points"]["flags"] == engine_data["points"]["flags"]
    assert any(engine_data["points"]["flags"])


def test_plot_screen_follows_a_growing_store() -> None:
    async def go() -> None:
        items = list(read_captures([str(CAPTURES / "fio-iodepth8.pcap")]))
        store = Store()
        engine = Engine([store])
        half = len(items) // 2
        for item in items[:half]:
            engine.feed(item)
        app = NbdscopeApp(store, None)
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("v")
            await until(pilot, lambda: "requests" in screen_text(app).splitlines()[0])
            first = screen_text(app).splitlines()[0]
            assert "updating" in first
            for item in items[half:]:
                engine.feed(item)
            engine.finish()
            store.done = True
            await until(pilot, lambda: "200 requests" in screen_text(app).splitlines()[0])
            last = screen_text(app).splitlines()[0]
            assert "200 requests" in last and "updating" not in last, last
            assert first != last

    run(go())
