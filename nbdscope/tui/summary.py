"""One session's summary: what was negotiated, the command mix, throughput and latency."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Label, Sparkline, Static

from nbdscope.analysis.stats import percentile
from nbdscope.decoder import events as ev
from nbdscope.report.sessionpanel import session_panel
from nbdscope.tui import detail as D
from nbdscope.tui import fields as F
from nbdscope.tui.base import BaseScreen
from nbdscope.tui.store import Store

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


class SummaryScreen(BaseScreen):
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

