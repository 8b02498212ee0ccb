"""The message screen: the table with its filter bar and search, the detail and hex panes,
and the findings panel."""

from __future__ import annotations

from array import array
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Label, RichLog, Static

from nbdscope.tui import detail as D
from nbdscope.tui.base import BaseScreen
from nbdscope.tui.filter import FilterError, Predicate, compile_filter
from nbdscope.tui.store import NO_ROW
from nbdscope.tui.summary import SummaryScreen
from nbdscope.tui.table import MessageTable
from nbdscope.tui.widgets import FindingsTable

FILTER_CHUNK = 50_000  # rows tested per step when filtering in the background
WIDE = 120  # columns from which the hex pane sits beside the detail pane
DETAIL_DELAY = 0.06  # seconds the cursor rests before the detail and hex panes are rendered
LIVE_FILTER_DELAY = 0.35  # seconds of no typing before the filter bar's text is applied


class MessagesScreen(BaseScreen):
    """The message table with a live filter bar, search, detail and hex panes, and a findings panel."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("f", "focus_filter", "Filter"),
        Binding("slash", "search", "Search"),
        Binding("n", "search_next(1)", "Next match", show=False),
        Binding("N", "search_next(-1)", "Prev match", show=False),
        Binding("a", "toggle_findings", "Anomalies"),
        Binding("x", "toggle_hex", "Hex"),
        Binding("s", "summary", "Summary"),
        Binding("F", "follow", "Follow"),
        Binding("p", "pause", "Pause"),
        Binding("tab", "focus_next", "Next pane", show=False),
    ]
    DEFAULT_CSS = """
    MessagesScreen #bar { height: 1; }
    MessagesScreen #bar Label { padding: 0 1; color: $accent; text-style: bold; }
    MessagesScreen Input { padding: 0 1; }
    MessagesScreen Input.-invalid { color: $text-error; }
    MessagesScreen #filter-error { display: none; height: auto; max-height: 2; color: $text-error; }
    MessagesScreen #filter-error.-shown { display: block; }
    MessagesScreen #status { height: 1; padding: 0 1; background: $boost; }
    MessagesScreen MessageTable { height: 1fr; min-height: 5; }
    MessagesScreen #lower { height: 50%; }
    MessagesScreen RichLog { scrollbar-gutter: stable; overflow-x: hidden; }
    MessagesScreen #detail-scroll { width: 1fr; border-top: solid $primary; }
    MessagesScreen #hex-scroll { width: 44; border-top: solid $primary; border-left: solid $primary; }
    MessagesScreen #hex-scroll.-alone { width: 1fr; border-left: none; }
    MessagesScreen FindingsTable { height: 30%; border-top: solid $warning; }
    MessagesScreen #search { display: none; }
    MessagesScreen #search.-shown { display: block; }
    """

    def __init__(self, initial_filter: str | None = None) -> None:
        super().__init__()
        self.filter_text = initial_filter or ""
        self.predicate: Predicate | None = None
        self.view: array[int] | None = None  # rows passing the filter (None: all)
        self.scanned = 0  # store rows the view has considered
        self.paused = False
        self.pending_row: int | None = None  # row to select once the view contains it
        self.search_text = ""
        self._debounce: Timer | None = None
        self._detail_timer: Timer | None = None
        self._detail_row = NO_ROW
        self._status_text = ""
        self._filtering = False  # a background pass over the stored rows is running
        self.filter_error: FilterError | None = None  # what is wrong with the text in the bar, while it is

    def compose(self) -> ComposeResult:
        with Horizontal(id="bar"):
            yield Label("filter")
            yield Input(value=self.filter_text, placeholder="e.g. cmd=read latency>1000, errors, anomalies, s2",
                        id="filter", compact=True)  # one line, focused or not: the typed text stays in view
        yield Static(id="filter-error")
        yield Input(placeholder="search (same language; enter: next match, n/N later)", id="search", compact=True)
        yield MessageTable(self.store, time_mode=self.napp.time_mode, id="table")
        with Horizontal(id="lower"):
            yield RichLog(id="detail-scroll", wrap=True, auto_scroll=False, min_width=20)
            yield RichLog(id="hex-scroll", wrap=False, auto_scroll=False, min_width=20)
        findings = FindingsTable(self.store, id="findings")
        findings.display = False
        yield findings
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#hex-scroll").display = self.app.size.width >= WIDE
        self._apply(self.filter_text)
        self.query_one(MessageTable).focus()

    # ------------------------------------------------------------- filtering

    @property
    def table(self) -> MessageTable:
        return self.query_one(MessageTable)

    def _apply(self, text: str) -> None:
        try:
            predicate = compile_filter(text)
        except FilterError as exc:
            self._show_filter_error(exc)
            self.notify(f"filter: {exc}", severity="error", timeout=4)
            return
        self._show_filter_error(None)
        self.filter_text, self.predicate = text, predicate
        keep = self.pending_row if self.pending_row is not None else self.table.current_row
        if predicate is None:
            self._filtering = False
            self.view, self.scanned = None, len(self.store)
            self.table.set_view(None, keep_row=keep)
            self._select_pending()
            return
        self.view, self.scanned = array("q"), 0
        self.table.set_view(self.view, keep_row=None)
        self._filtering = True
        self._filter_worker(predicate, keep)

    @work(thread=True, exclusive=True, group="filter")
    def _filter_worker(self, predicate: Predicate, keep: int) -> None:
        """Test every row already stored, in chunks, off the UI thread."""
        store = self.store
        end = len(store)
        found = array("q")
        for start in range(0, end, FILTER_CHUNK):
            for row in range(start, min(end, start + FILTER_CHUNK)):
                if predicate(store, row):
                    found.append(row)
            if self.predicate is not predicate:
                return  # a newer filter replaced this one
        self.app.call_from_thread(self._filtered, predicate, found, end, keep)

    def _filtered(self, predicate: Predicate, found: array[int], end: int, keep: int) -> None:
        if self.predicate is not predicate:
            return
        self._filtering = False
        self.view, self.scanned = found, end
        self.table.set_view(found, keep_row=keep)
        self._select_pending()
        self._status()

    def _select_pending(self) -> None:
        if self.pending_row is not None:
            if not self.table.go_to_row(self.pending_row):
                self.notify("that message is hidden by the filter; clear the filter (f, then empty) to see it",
                            severity="warning")
            self.pending_row = None

    def show_row(self, row: int) -> None:
        """Select a store row (from a finding); the filter is kept if it shows the row, else cleared."""
        if self.predicate is not None and not self.predicate(self.store, row):
            self.query_one("#filter", Input).value = ""
            self.pending_row = row
            self._apply("")
            return
        self.table.follow = False
        if self.table.go_to_row(row):
            return
        self.pending_row = row  # the view is still being built

    def tick(self) -> None:
        store = self.store
        end = len(store)
        if not self.paused and self.scanned < end and (self.predicate is None or self.view is not None):
            if self.predicate is None:
                self.scanned = end
                self.table.grow(end)
            elif not self._filtering:  # rows that arrived after the background pass
                pred, view = self.predicate, self.view
                assert view is not None
                for row in range(self.scanned, end):
                    if pred(store, row):
                        view.append(row)
                self.scanned = end
                self.table.grow(len(view))
        self._status()

    def _show_filter_error(self, exc: FilterError | None) -> None:
        """Say at once what is wrong with the bar's text, pointing at the column (a caret under it while the
        whole text is in view), or take the message away once the text is valid."""
        self.filter_error = exc
        box, line = self.query_one("#filter", Input), self.query_one("#filter-error", Static)
        box.set_class(exc is not None, "-invalid")
        line.set_class(exc is not None, "-shown")
        if exc is not None:
            start = box.region.x - self.region.x + box.styles.padding.left
            caret = " " * (start + exc.position) + "^ " if len(exc.expr) < box.content_region.width else ""
            line.update(Text(f"{caret}{exc} (not applied)"))
        self._status()

    def _status(self) -> None:
        shown = self.table.count
        total = len(self.store)
        if self.filter_error is not None:  # the count below belongs to the filter still applied, not to the text
            what = f"{shown:,} message{'' if shown == 1 else 's'}"
            bits = [f"filter not applied (column {self.filter_error.position + 1})",
                    f'the table still shows "{self.filter_text}": {what}' if self.filter_text
                    else f"the table shows all {what}"]
        else:
            bits = [f"{shown:,} of {total:,} messages"]
        if self.filter_text and self.filter_error is None:
            bits.append(f"filter: {self.filter_text}")
        if self.table.follow:
            bits.append("FOLLOWING")
        if self.paused:
            bits.append(f"PAUSED (+{total - self.scanned:,} new)")
        bits.append(self.napp.source_state())
        text = " · ".join(b for b in bits if b)
        if text != self._status_text:  # an update re-lays the screen out: only when something changed
            # (a filter worker can finish while the screen is being removed: no status bar left to write)
            for bar in self.query("#status").results(Static):
                self._status_text = text
                bar.update(text)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        """Applied live: once typing pauses briefly and the expression is complete."""
        if self._debounce is not None:
            self._debounce.stop()
            self._debounce = None
        try:
            compile_filter(event.value)
        except FilterError as exc:
            self._show_filter_error(exc)
            return
        self._show_filter_error(None)
        if event.value != self.filter_text:
            self._debounce = self.set_timer(LIVE_FILTER_DELAY, lambda: self._apply(event.value))

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self._debounce is not None:
            self._debounce.stop()
            self._debounce = None
        self._apply(event.value)
        self.table.focus()

    # ---------------------------------------------------------------- search

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        self.search_text = event.value
        self.query_one("#search", Input).remove_class("-shown")
        self.table.focus()
        self.action_search_next(1)

    def action_search_next(self, direction: int) -> None:
        if not self.search_text:
            self.action_search()
            return
        try:
            pred = compile_filter(self.search_text)
        except FilterError as exc:
            self.notify(f"search: {exc}", severity="error")
            return
        if pred is None:
            return
        t = self.table
        i = t.cursor + direction
        while 0 <= i < t.count:
            if pred(self.store, t.row_at(i)):
                t.follow = False
                t.cursor = i
                return
            i += direction
        self.notify(f"no {'further' if direction > 0 else 'earlier'} match for {self.search_text!r}")

    # ------------------------------------------------------------ selection

    @on(MessageTable.Highlighted)
    def _highlighted(self, event: MessageTable.Highlighted) -> None:
        """Panes follow the cursor, rendered once it rests (holding PgDn does not render every row)."""
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_row = event.row
        self._detail_timer = self.set_timer(DETAIL_DELAY, self._show_detail)
        self._status()

    def _show_detail(self) -> None:
        self._detail_timer = None
        pal, row, table = self.napp.palette(), self._detail_row, self.table
        index = table.index_of(row) if row != NO_ROW else 0
        previous = self.store.events[table.row_at(index - 1)].time if index > 0 and table.count else None
        panes = (("#detail-scroll", D.message_renderable(self.store, row, pal, self.napp.time_mode, previous)),
                 ("#hex-scroll", D.hex_renderable(self.store, row, pal)))
        for pane_id, renderable in panes:
            pane = self.query_one(pane_id, RichLog)
            pane.clear()
            if pane.display:
                pane.write(renderable, scroll_end=False)
            pane.scroll_home(animate=False)

    def time_changed(self) -> None:
        self.table.set_time_mode(self.napp.time_mode)
        self.query_one(FindingsTable).rebuild()
        self.call_after_refresh(self._show_detail)

    def on_resize(self) -> None:
        self.call_after_refresh(self._show_detail)  # re-wrap the panes for the new width

    @on(DataTable.RowSelected, "#findings")
    def _finding(self, event: DataTable.RowSelected) -> None:
        index = self.query_one(FindingsTable).finding_index(event.row_key)
        with self.store.lock:
            row = self.store.findings[index].row
        if row == NO_ROW:
            self.notify("this finding names no single message", severity="warning")
            return
        self.show_row(row)
        self.table.focus()

    # -------------------------------------------------------------- actions

    def action_back(self) -> None:
        box = self.query_one("#search", Input)
        if box.has_class("-shown"):
            box.remove_class("-shown")
            self.table.focus()
        elif self.focused is not self.table:
            self.table.focus()
        else:
            self.app.pop_screen()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_toggle_findings(self) -> None:
        findings = self.query_one(FindingsTable)
        findings.display = not findings.display
        if findings.display:
            findings.sync()
            findings.focus()
        else:
            self.table.focus()

    def action_toggle_hex(self) -> None:
        """Wide terminals show hex beside the detail; narrow ones swap one for the other."""
        pane, detail = self.query_one("#hex-scroll"), self.query_one("#detail-scroll")
        pane.display = not pane.display
        narrow = self.app.size.width < WIDE
        detail.display = not (narrow and pane.display)
        pane.set_class(narrow, "-alone")
        self.call_after_refresh(self._show_detail)

    def action_summary(self) -> None:
        row = self.table.current_row
        if row != NO_ROW:
            self.app.push_screen(SummaryScreen(self.store.session_id(row)))
        elif self.store.sessions:
            self.app.push_screen(SummaryScreen(self.store.sessions[0].id))

    def action_follow(self) -> None:
        t = self.table
        t.follow = not t.follow
        if t.follow:
            self.paused = False
            self.tick()
            t.cursor = max(0, t.count - 1)
        self._status()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.tick()

