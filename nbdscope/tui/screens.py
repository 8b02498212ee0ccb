"""The screens: overview (sessions and findings), messages (table, detail, hex,
filter, search), per-session summary, and help."""

from __future__ import annotations

import time
from array import array
from typing import TYPE_CHECKING, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Label, Markdown, RichLog, Sparkline, Static

from nbdscope.analysis.stats import percentile
from nbdscope.decoder import events as ev
from nbdscope.filter import help_markdown
from nbdscope.report.sessionpanel import session_panel
from nbdscope.tui import detail as D
from nbdscope.tui import fields as F
from nbdscope.tui.filter import FilterError, Predicate, compile_filter
from nbdscope.tui.store import NO_ROW, Store
from nbdscope.tui.table import MessageTable
from nbdscope.tui.times import moment
from nbdscope.tui.widgets import FindingsTable, SessionsTable

if TYPE_CHECKING:
    from nbdscope.tui.app import NbdscopeApp

FILTER_CHUNK = 50_000  # rows tested per step when filtering in the background
WIDE = 120  # columns from which the hex pane sits beside the detail pane
DETAIL_DELAY = 0.06  # seconds the cursor rests before the detail and hex panes are rendered
LIVE_FILTER_DELAY = 0.35  # seconds of no typing before the filter bar's text is applied


class _Base(Screen[None]):
    @property
    def napp(self) -> NbdscopeApp:
        return self.app  # type: ignore[return-value]

    @property
    def store(self) -> Store:
        return self.napp.store

    def tick(self) -> None:
        """Called by the app a few times a second: pick up what the producer added."""

    def time_changed(self) -> None:
        """The time mode changed (the c key): write every time shown again."""

    def moment(self, t: float, previous: float | None = None, short: bool = False) -> str:
        """An absolute capture time in the app's time mode, from the run's origin (the first packet)."""
        return moment(t, self.napp.time_mode, self.store.t0, self.store.utc_offset, previous=previous, short=short)


class OverviewScreen(_Base):
    """What is wrong, at once: the sessions and every finding."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "messages", "Messages"),
        Binding("s", "summary", "Summary"),
        Binding("tab", "focus_next", "Switch pane", show=False),
    ]
    DEFAULT_CSS = """
    OverviewScreen #status { height: auto; padding: 0 1; background: $boost; }
    OverviewScreen .title { padding: 0 1; text-style: bold; color: $accent; }
    OverviewScreen SessionsTable { height: auto; max-height: 40%; }
    OverviewScreen FindingsTable { height: auto; max-height: 35%; }
    OverviewScreen #finding-scroll { height: 1fr; border-top: solid $primary; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Label("Sessions (enter: its messages, s: summary)", classes="title")
        yield SessionsTable(self.store, id="sessions")
        yield Label("Anomalies (enter: go to the message)", classes="title", id="findings-title")
        yield FindingsTable(self.store, id="findings")
        with VerticalScroll(id="finding-scroll"):
            yield Static("No anomalies found." if self.store.done else "", id="finding-detail")
        yield Footer()

    def on_mount(self) -> None:
        self._shown_finding: int | None = None  # the finding shown in full below the lists
        self.tick()
        self.query_one(FindingsTable if self.store.findings else SessionsTable).focus()

    def tick(self) -> None:
        sessions = self.query_one(SessionsTable)
        sessions.sync()
        findings = self.query_one(FindingsTable)
        findings.sync()
        if findings.row_count and self.focused is sessions and not sessions.cursor_row:
            # the source is read in the background: the first findings may come after the
            # screen; they take the focus the sessions were given only for want of them
            findings.focus()
        self.query_one("#status", Static).update(self.napp.status_text())
        sev: dict[str, int] = {}
        with self.store.lock:
            for f in self.store.findings:
                sev[f.anomaly.severity] = sev.get(f.anomaly.severity, 0) + 1
        parts = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in sorted(sev.items()))
        if not sev and self.store.done:
            self.query_one("#finding-detail", Static).update("No anomalies found.")
        self.query_one("#findings-title", Label).update(
            f"Anomalies: {parts or 'none'} (enter: go to the message)")

    @on(DataTable.RowSelected, "#findings")
    def _finding(self, event: DataTable.RowSelected) -> None:
        index = self.query_one(FindingsTable).finding_index(event.row_key)
        self.napp.open_finding(index)

    @on(DataTable.RowHighlighted, "#findings")
    def _finding_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The whole finding, wrapped, with any flags field it names bit by bit."""
        self._show_finding(self.query_one(FindingsTable).finding_index(event.row_key))

    def _show_finding(self, index: int) -> None:
        with self.store.lock:
            finding = self.store.findings[index]
        self._shown_finding = index
        when = self.moment(self.store.t0 + finding.anomaly.time)
        detail = D.finding_renderable(finding.anomaly, self.napp.palette(), when)
        self.query_one("#finding-detail", Static).update(detail)

    def time_changed(self) -> None:
        self.query_one(FindingsTable).rebuild()
        if self._shown_finding is not None:
            self._show_finding(self._shown_finding)

    @on(DataTable.RowSelected, "#sessions")
    def _session(self, event: DataTable.RowSelected) -> None:
        self.napp.open_messages(f"session={event.row_key.value}")

    def action_messages(self) -> None:
        self.napp.open_messages(None)

    def action_summary(self) -> None:
        sid = self._focused_session()
        if sid is not None:
            self.napp.push_screen(SummaryScreen(sid))

    def _focused_session(self) -> str | None:
        findings = self.query_one(FindingsTable)
        if self.focused is findings and findings.row_count:
            key = findings.coordinate_to_cell_key(findings.cursor_coordinate).row_key
            with self.store.lock:
                return self.store.findings[findings.finding_index(key)].anomaly.session
        return self.query_one(SessionsTable).selected_session()


class MessagesScreen(_Base):
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


SPARK_BUCKETS = 60
SUMMARY_EVERY = 2.0  # seconds between summary redraws while messages arrive
LAT_BUCKETS = 24  # powers of two of microseconds: 1 us .. 8 s


def session_series(store: Store, session_id: str) -> tuple[list[float], float, list[float], list[float]]:
    """Bytes moved per time bucket (and the bucket width in seconds), latency histogram (log2 us), latencies."""
    s_index = store.session_index(session_id)
    rows = [r for r in range(len(store)) if store.session_of[r] == s_index] if s_index is not None else []
    if not rows:
        return [], 0.0, [], []
    t_first, t_last = store.events[rows[0]].time, store.events[rows[-1]].time
    width = max((t_last - t_first) / SPARK_BUCKETS, 1e-6)
    moved = [0.0] * SPARK_BUCKETS
    hist = [0.0] * LAT_BUCKETS
    lats: list[float] = []
    for r in rows:
        e = store.events[r]
        n = 0
        if isinstance(e, ev.Request) and e.payload_length:
            n = e.payload_length
        elif isinstance(e, ev.SimpleReply) and e.data_length:
            n = e.data_length
        elif isinstance(e, ev.ReplyChunk) and e.data_length:
            n = e.data_length
        if n:
            moved[min(SPARK_BUCKETS - 1, int((e.time - t_first) / width))] += n
        lat = F.latency(e)
        if lat is not None:
            lats.append(lat)
            hist[min(LAT_BUCKETS - 1, max(0, int(lat).bit_length() - 1))] += 1
    return moved, width, hist, lats


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class SummaryScreen(_Base):
    """One session: what was negotiated, the command mix, throughput over time, latency distribution."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "app.pop_screen", "Back"),
                                             Binding("m", "messages", "Its messages")]
    DEFAULT_CSS = """
    SummaryScreen VerticalScroll { padding: 0 1; }
    SummaryScreen .title { text-style: bold; color: $accent; margin-top: 1; }
    SummaryScreen Sparkline { height: 3; margin: 0 0; }
    """

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="negotiated")
            yield Static(id="commands")
            yield Label("Throughput over time (bytes moved per interval)", classes="title")
            yield Sparkline([], id="throughput")
            yield Static(id="throughput-scale")
            yield Label("Latency distribution (count per power-of-two bucket, 1 us … 8 s)", classes="title")
            yield Sparkline([], id="latency")
            yield Static(id="latency-scale")
            yield Static(id="flags")
        yield Footer()

    def on_mount(self) -> None:
        self._seen = len(self.store)
        self._last = time.monotonic()
        self.refresh_summary()

    def time_changed(self) -> None:
        self.refresh_summary()

    def tick(self) -> None:
        """Live sources: redraw with what arrived, at most every SUMMARY_EVERY seconds."""
        if len(self.store) != self._seen and time.monotonic() - self._last >= SUMMARY_EVERY:
            self._seen, self._last = len(self.store), time.monotonic()
            self.refresh_summary()

    def refresh_summary(self) -> None:
        store = self.store
        s = next((x for x in store.sessions if x.id == self.session_id), None)
        if s is None:
            return
        pal = self.napp.palette()
        panel = session_panel(s, "screen", anomalies=store.anomaly_count(s.id))
        info = Table(box=None, show_header=False, pad_edge=False)
        info.add_column(style="bold")
        info.add_column(overflow="fold")
        for k, v in panel.rows:
            info.add_row(k, v)
        first, last = s.start_time, max(s.last_time, s.start_time)
        info.add_row("started", self.moment(first))  # (delta: after the first packet)
        info.add_row("last message", self.moment(last, previous=first))  # (delta: after the start)
        self.query_one("#negotiated", Static).update(
            Group(Text(f"Session {s.id}", style=f"bold {pal['accent']}"), info))
        if panel.flags_value is not None:
            self.query_one("#flags", Static).update(Group(
                Text(f"\n{panel.flags.field} {panel.flags_value:#06x}, bit by bit", style="bold"),
                D.bits_table(panel.bits, pal)))
        moved, width, hist, lats = session_series(store, s.id)
        self.query_one("#throughput", Sparkline).data = moved or [0.0]
        peak = max(moved, default=0.0)
        self.query_one("#throughput-scale", Static).update(
            f"{SPARK_BUCKETS} intervals of {width:.3f} s; peak {_human(peak)} in one interval "
            f"({_human(peak / width) if width else '0 B'}/s); total {_human(sum(moved))}")
        self.query_one("#latency", Sparkline).data = hist if lats else [0.0]
        if lats:
            lats.sort()
            self.query_one("#latency-scale", Static).update(
                f"{len(lats):,} replies: min {F.fmt_latency(lats[0])}  p50 {F.fmt_latency(percentile(lats, 50))}  "
                f"p99 {F.fmt_latency(percentile(lats, 99))}  "
                f"max {F.fmt_latency(lats[-1])}")
        else:
            self.query_one("#latency-scale", Static).update("no completed replies")
        mix = Table(title="Command mix", title_justify="left", title_style="bold", box=None, pad_edge=False)
        for col in ("command", "count", "bytes", "errors", "p50", "p99", "max"):
            mix.add_column(col, justify="left" if col == "command" else "right")
        for c in panel.commands:
            lat = c.latency_us or {}
            mix.add_row(c.name, f"{c.count:,}", _human(c.bytes), str(c.errors),
                        F.fmt_latency(lat.get("p50")), F.fmt_latency(lat.get("p99")), F.fmt_latency(lat.get("max")))
        self.query_one("#commands", Static).update(Group(Text(""), mix) if panel.commands else Text(""))

    def action_messages(self) -> None:
        self.napp.open_messages(f"session={self.session_id}")


HELP = """\
# nbdscope — keys

**Everywhere**: `?` this help · `q` quit · `t` dark/light theme · `c` times: seconds since the first
packet (rel), wall clock (abs, ISO 8601) or since the row above (delta) · `escape` back · `tab` next pane

**Overview** (first screen): sessions on top, anomalies below.
`enter` on an anomaly opens the message it is about; on a session, that session's messages.
`m` all messages · `s` summary of the selected session.

**Messages**: `↑↓ PgUp PgDn Home End` (also `j k g G space`) move · `r` jump between a request
and its reply · `]` / `[` next / previous anomalous row (marked `!` error or warning, `i` info) ·
`f` filter bar · `/` search, `n` / `N` next / previous match · `a` anomaly panel ·
`x` hex pane · `s` session summary · `F` follow the newest message · `p` pause / resume the live view.

**Summary**: negotiated features, flags bit by bit, command mix, throughput and latency sparklines.

**Plots** (`v` on any screen): I/O map (offset against time, per export: `e` next export), latency over time
and per command, request sizes, offset alignment, throughput; updated as a live source goes on.

""" + help_markdown("## Filter language (filter bar and search)")


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 90%; height: 90%; border: thick $accent; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll():
                yield Markdown(HELP)
            yield Footer()
