"""The filter bar as typed into: the text stays visible while the bar has the focus (at the
sizes people use), and a wrong expression is reported while it is typed, with its column,
without the count pretending the expression was applied."""

from __future__ import annotations

import asyncio

import pytest

from nbdscope.tui.messages import MessagesScreen
from tests.tui.helpers import file_app, screen_text, settle


def typed(size: tuple[int, int], text: str) -> tuple[str, bool, bool]:
    """The screen after typing ``text`` into the bar (no Enter); whether the bar has the focus, and
    whether the screen holds a filter error."""

    async def go() -> tuple[str, bool, bool]:
        app = file_app("seed-cache-flag.pcap")
        async with app.run_test(size=size) as pilot:
            await settle(pilot, app)
            await pilot.press("m", "f")
            await pilot.pause(0.2)
            for ch in text:
                await pilot.press(ch if ch != " " else "space")
            await pilot.pause(0.2)
            screen = app.screen
            assert isinstance(screen, MessagesScreen)
            return screen_text(app), screen.focused is screen.query_one("#filter"), screen.filter_error is not None

    return asyncio.run(asyncio.wait_for(go(), 60))


@pytest.mark.parametrize("size", [(160, 45), (80, 24), (120, 40)])
def test_focused_bar_shows_the_typed_text(size: tuple[int, int]) -> None:
    first, focused, _ = typed(size, "cmd=cache")
    assert focused
    assert first.splitlines()[0].split() == ["filter", "cmd=cache"]


def test_unknown_field_is_reported_as_typed_with_its_column() -> None:
    first, _, invalid = typed((100, 30), "cmd=cache bogus=1")
    lines = first.splitlines()
    assert "column 11" in lines[1] and "unknown field 'bogus'" in lines[1]  # under the bar, before any Enter
    assert lines[1].index("^") == lines[0].index("bogus")  # the caret points at the culprit
    status = next(line for line in lines if "filter not applied" in line)
    assert " of 26 messages" not in first and "26 of 26" not in first  # the count is not the invalid filter's
    assert "column 11" in status and "the table shows all 26 messages" in status
    assert invalid


def test_the_error_goes_once_the_text_is_valid() -> None:
    async def go() -> tuple[str, str]:
        app = file_app("seed-cache-flag.pcap")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, app)
            await pilot.press("m", "f", *"cmd=cac")
            await pilot.pause(0.2)
            broken = screen_text(app)
            await pilot.press("h", "e")
            await pilot.pause(0.8)
            return broken, screen_text(app)

    broken, fixed = asyncio.run(asyncio.wait_for(go(), 60))
    assert "unknown command 'cac'" in broken and "column 5" in broken
    assert "not applied" not in fixed and "2 of 26 messages · filter: cmd=cache" in fixed
