"""Textual pilot tests: the app driven by key presses, headless, on shipped captures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from textual.pilot import Pilot

from nbdscope.capture import read_captures
from nbdscope.decoder import events as ev
from nbdscope.spec import Cmd, ReplyType
from nbdscope.tui.app import NbdscopeApp
from nbdscope.tui.help import HelpScreen
from nbdscope.tui.messages import MessagesScreen
from nbdscope.tui.overview import OverviewScreen
from nbdscope.tui.sources import Producer
from nbdscope.tui.store import NO_ROW, Store
from nbdscope.tui.summary import SummaryScreen
from nbdscope.tui.table import MessageTable
from nbdscope.tui.widgets import FindingsTable, SessionsTable
from nbdscope.vocab import StreamItem
from tests.tui.helpers import CAPTURES, file_app, screen_text, settle


def run(coro) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(asyncio.wait_for(coro, 60))


def test_anomaly_to_message_to_request() -> None:
    """The newcomer's path on the seed: overview → finding → message detail → its request."""

    async def go() -> None:
        app = file_app("seed-unaligned-extent.pcap")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, app)
            assert isinstance(app.screen, OverviewScreen)
            text = screen_text(app)
            assert "unaligned-extent" in text and "server" in text
            findings = app.screen.query_one(FindingsTable)
            assert findings.row_count == 3  # captures/README.md: three unaligned replies over two clients
            assert app.screen.focused is findings
            await pilot.press("enter")
            await pilot.pause(0.3)
            screen = app.screen
            assert isinstance(screen, MessagesScreen)
            table = screen.query_one(MessageTable)
            row = table.current_row
            e = app.store.events[row]
            first = app.store.findings[0].anomaly
            assert isinstance(e, ev.ReplyChunk) and e.reply_type == ReplyType.BLOCK_STATUS
            assert e.frame == first.frame and app.store.session_id(row) == first.session
            assert (1000, 0) in [(n, s & 0) for n, s in e.extents]  # the 1000-byte extent the finding names
            detail = screen_text(app)
            assert "unaligned-extent" in detail and "NBD_REPLY_TYPE_BLOCK_STATUS" in detail
            await pilot.press("r")  # jump to the request
            await pilot.pause(0.2)
            req_row = table.current_row
            req = app.store.events[req_row]
            assert isinstance(req, ev.Request) and req.command == Cmd.BLOCK_STATUS and req.cookie == e.cookie
            assert req.frame == e.request_frame
            await pilot.press("r")  # and back to the reply
            await pilot.pause(0.2)
            assert table.current_row == row
            await pilot.press("escape")
            await pilot.pause(0.2)
            assert isinstance(app.screen, OverviewScreen)

    run(go())


def test_navigation_filter_and_search() -> None:
    async def go() -> None:
        app = file_app("fio-iodepth8.pcap")
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            await pilot.press("m")
            await pilot.pause(0.3)
            screen = app.screen
            assert isinstance(screen, MessagesScreen)
            table = screen.query_one(MessageTable)
            total = len(app.store)
            assert table.count == total > 400
            await pilot.press("end")
            assert table.cursor == total - 1
            await pilot.press("home", "down", "down")
            assert table.cursor == 2
            await pilot.press("pagedown")
            assert table.cursor > 2
            # filter: typed into the bar, applied as it is typed
            await pilot.press("f")
            for ch in "cmd=write requests":
                await pilot.press(ch if ch != " " else "space")
            await pilot.press("enter")
            await pilot.pause(0.5)
            expected = [r for r in range(total) if isinstance(app.store.events[r], ev.Request)
                        and app.store.events[r].command == Cmd.WRITE]
            got = [table.row_at(i) for i in range(table.count)]
            assert table.count == len(expected) > 50, (sorted(set(expected) - set(got)), screen.filter_text, len(screen.view), screen.scanned)
            assert [table.row_at(i) for i in range(table.count)] == expected
            assert screen.focused is table
            # search inside the filtered view: the next write at offset 0 or above 512K
            await pilot.press("home", "slash")
            for ch in "offset>=512K":
                await pilot.press(ch)
            await pilot.press("enter")
            await pilot.pause(0.2)
            hit = app.store.events[table.current_row]
            assert isinstance(hit, ev.Request) and hit.offset >= 512 * 1024
            first_hit = table.cursor
            await pilot.press("n")
            assert table.cursor > first_hit
            await pilot.press("N")
            assert table.cursor == first_hit
            # a bad filter is refused and keeps the view
            await pilot.press("f", "ctrl+a", "ctrl+k")
            for ch in "offset=zz":
                await pilot.press(ch)
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert table.count == len(expected)
            # summary and help
            assert screen.focused is table
            await pilot.press("s")
            await pilot.pause(0.3)
            assert isinstance(app.screen, SummaryScreen)
            assert "NBD_CMD_WRITE" in screen_text(app)
            await pilot.press("escape", "question_mark")
            await pilot.pause(0.2)
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")

    run(go())


class _TrickleSource:
    """A capture handed to the pipeline a few items at a time, as a live source would."""

    live = True
    label = "trickle"

    def __init__(self, path: str, gate: threading.Event, before_gate: float = 0.5) -> None:
        self.all = list(read_captures([path]))
        self.gate = gate
        self.halt = threading.Event()
        self.before_gate = before_gate  # the share of the items delivered before the gate opens

    def items(self) -> Iterator[StreamItem]:
        half = int(len(self.all) * self.before_gate)
        yield from self.all[:half]
        self.gate.wait(20)
        for item in self.all[half:]:
            if self.halt.is_set():
                return
            yield item
            time.sleep(0.001)

    def stop(self) -> None:
        self.halt.set()
        self.gate.set()


def _trickle(store: Store, path: str, gate: threading.Event, before_gate: float = 0.5) -> Producer:
    return Producer(store, _TrickleSource(path, gate, before_gate))


@asynccontextmanager
async def _trickle_app(capture: str) -> AsyncIterator[tuple[NbdscopeApp, Pilot[None], MessageTable, threading.Event]]:
    """The messages view over a trickle source that has delivered half of ``capture``;
    setting the gate releases the rest."""
    gate = threading.Event()
    app = NbdscopeApp(store := Store(), _trickle(store, str(CAPTURES / capture), gate))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("m")
        await pilot.pause(0.4)
        yield app, pilot, app.screen.query_one(MessageTable), gate


async def _until_done(pilot: Pilot[None], store: Store) -> None:
    deadline = time.monotonic() + 20
    while not store.done and time.monotonic() < deadline:
        await pilot.pause(0.1)


def test_live_append_follow_and_pause() -> None:
    async def go() -> None:
        async with _trickle_app("fio-iodepth8.pcap") as (app, pilot, table, gate):
            store = app.store
            first = table.count
            assert 0 < first < 418
            await pilot.press("down", "down", "down")
            assert table.cursor == 3
            gate.set()  # the rest arrives while the user sits on row 3
            await _until_done(pilot, store)
            await pilot.pause(0.5)
            assert table.count == len(store) > first
            assert table.cursor == 3  # not yanked away
            await pilot.press("F")  # follow: to the newest message
            assert table.cursor == table.count - 1
            await pilot.press("p")
            assert "PAUSED" in screen_text(app)
            await pilot.press("p")
            assert "PAUSED" not in screen_text(app)
            assert "LIVE trickle" in screen_text(app) or "trickle (stopped)" in screen_text(app)

    run(go())


def test_findings_that_arrive_late_take_the_focus() -> None:
    """The overview is up before the source has found anything: the sessions get the focus
    for want of findings, and the first findings take it over (no key was pressed)."""

    async def go() -> None:
        gate = threading.Event()
        app = NbdscopeApp(store := Store(), _trickle(store, str(CAPTURES / "seed-unaligned-extent.pcap"), gate,
                                                           before_gate=0.0))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.5)
            assert isinstance(app.screen, OverviewScreen)
            assert not store.findings and isinstance(app.screen.focused, SessionsTable)
            gate.set()
            await _until_done(pilot, store)
            await pilot.pause(0.5)
            findings = app.screen.query_one(FindingsTable)
            assert findings.row_count == 3 and app.screen.focused is findings

    run(go())


def test_pause_holds_new_rows_back() -> None:
    """While paused the view does not grow; resuming catches up with everything the source kept adding."""

    async def go() -> None:
        async with _trickle_app("nbdcopy-4conn-nbdkit-memory.pcap") as (app, pilot, table, gate):
            store = app.store
            await pilot.press("p")
            before = table.count
            gate.set()
            await _until_done(pilot, store)
            await pilot.pause(0.4)
            assert table.count == before < len(store)
            await pilot.press("p")
            await pilot.pause(0.3)
            assert table.count == len(store)

    run(go())


def test_findings_panel_jumps_and_links_are_symmetric() -> None:
    async def go() -> None:
        app = file_app("client-misbehaves-nbdsh.pcap")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            store = app.store
            for r in range(len(store)):  # every completed reply and its request point at each other
                e = store.events[r]
                if isinstance(e, ev.Reply) and e.completes and store.link[r] != NO_ROW:
                    assert store.link[store.link[r]] == r
                    assert store.events[store.link[r]].cookie == e.cookie  # type: ignore[attr-defined]
            await pilot.press("m", "a")
            await pilot.pause(0.3)
            panel = app.screen.query_one(FindingsTable)
            assert panel.display and panel.row_count == len(store.findings)
            await pilot.press("down", "enter")
            await pilot.pause(0.3)
            table = app.screen.query_one(MessageTable)
            assert table.current_row == store.findings[1].row
            assert app.screen.focused is table

    run(go())
