"""The Textual application: one store, one background source, a timer that lets the
screens pick up what arrived."""

from __future__ import annotations

from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from nbdscope.report.clock import TimeMode
from nbdscope.tui.base import BaseScreen
from nbdscope.tui.detail import Palette
from nbdscope.tui.help import HelpScreen
from nbdscope.tui.messages import MessagesScreen
from nbdscope.tui.overview import OverviewScreen
from nbdscope.tui.sources import Producer
from nbdscope.tui.store import NO_ROW, Store
from nbdscope.tui.times import describe, next_mode

TICK = 0.25  # seconds between screen refreshes from the store
GC_THRESHOLD = 50_000  # allocations between young-generation collections (Python's default: 700)


class NbdscopeApp(App[None]):
    TITLE = "nbdscope"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("t", "toggle_theme", "Theme"),
        Binding("v", "plots", "Plots"),
        Binding("c", "cycle_time", "Time"),
    ]

    def __init__(self, store: Store, source: Producer | None = None, *, title: str = "",
                 time_mode: TimeMode = "rel") -> None:
        super().__init__()
        self.store = store
        self.time_mode: TimeMode = time_mode  # how every screen writes times (--time; c cycles it)
        self.source = source
        self.sub_title = title or (source.label if source else "")
        self.theme = "textual-dark"

    def on_mount(self) -> None:
        import gc

        # the store only grows, with acyclic events: collect cycles far less often than every
        # 700 allocations, each full pass of which would walk every stored message
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        if self.source is not None and not self.source.thread.is_alive() and not self.store.done:
            self.source.start()
        self.push_screen(OverviewScreen())
        self._notices_seen = 0
        self._ticks = 0
        self.set_interval(TICK, self._tick)

    def _tick(self) -> None:
        self._ticks += 1
        if not self.store.done and self.source is not None and not self.source.live and self._ticks % 4:
            return  # a file is loading: a progress update a second leaves the loader more of the interpreter
        screen = self.screen
        if isinstance(screen, BaseScreen) and screen.is_mounted:
            from textual.css.query import NoMatches

            try:
                screen.tick()
            except NoMatches:
                pass  # the screen is still composing; the next tick catches up
        with self.store.lock:
            new = self.store.notices[self._notices_seen:]
            self._notices_seen = len(self.store.notices)
        for text in new:
            self.notify(text, severity="warning", timeout=8)

    async def action_quit(self) -> None:
        """Quit; with clients connected through the proxy, only once the user says to close their sessions."""
        from nbdscope.tui.confirm import ConfirmQuit

        open_sessions = self.source.open_sessions() if self.source is not None else 0
        if not open_sessions:
            self.exit()
        elif not isinstance(self.screen, ConfirmQuit):
            self.push_screen(ConfirmQuit(open_sessions), lambda yes: self.exit() if yes else None)

    async def on_unmount(self) -> None:
        if self.source is not None:
            self.source.stop(now=True)  # quitting was confirmed: open sessions close at once, not after --grace

    # ------------------------------------------------------------- helpers

    def palette(self) -> Palette:
        """Theme colours meant for text on the theme's background (readable on dark and light)."""
        v = self.get_css_variables()
        return Palette(error=v.get("text-error", "red"), warning=v.get("text-warning", "yellow"),
                       accent=v.get("text-primary", "blue"), muted="dim")

    def source_state(self) -> str:
        if self.source is None:
            return ""
        if self.source.live:
            return f"LIVE {self.source.label}" if not self.store.done else f"{self.source.label} (stopped)"
        return f"loading {self.source.label}…" if not self.store.done else self.source.label

    def status_text(self) -> str:
        s = self.store

        def count(n: int, what: str) -> str:
            return f"{n:,} {what}{'' if n == 1 else 's'}"

        return (f"{count(len(s.sessions), 'session')} · {count(len(s), 'message')} · "
                f"{count(len(s.findings), 'anomaly').replace('anomalys', 'anomalies')} · {self.source_state()}")

    def open_messages(self, filter_text: str | None) -> MessagesScreen:
        screen = MessagesScreen(filter_text)
        self.push_screen(screen)
        return screen

    def open_finding(self, index: int) -> None:
        with self.store.lock:
            finding = self.store.findings[index]
        if finding.row == NO_ROW:
            self.notify("this finding names no single message", severity="warning")
            return
        screen = self.open_messages(None)
        screen.pending_row = finding.row

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_plots(self) -> None:
        from nbdscope.tui.plots import PlotsScreen

        if not isinstance(self.screen, PlotsScreen):
            self.push_screen(PlotsScreen())

    def action_cycle_time(self) -> None:
        """rel → abs → delta → rel: every screen on the stack redraws its times."""
        self.time_mode = next_mode(self.time_mode)
        for screen in self.screen_stack:
            if isinstance(screen, BaseScreen) and screen.is_mounted:
                screen.time_changed()
        self.notify(f"times: {self.time_mode} ({describe(self.time_mode)})", timeout=3)

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"
        screen = self.screen
        if isinstance(screen, MessagesScreen):
            screen.call_after_refresh(screen._show_detail)
