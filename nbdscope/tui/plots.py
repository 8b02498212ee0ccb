"""The TUI's plot screen: the HTML report's pictures (I/O map, latency over time and per command, request
sizes, alignment, throughput) drawn in the terminal with textual-plotext.

The data is the same model the HTML report draws (``nbdscope.analysis.iomap.IoModel``), fed here from the
store's rows instead of the engine's hooks: the store already holds every message and marks the rows that
findings name, so the screen needs no change to how sources are run. One model per store lives as long as
the store, so leaving and reopening the screen costs nothing; each tick feeds at most ``FEED_CHUNK`` new
rows and the plots are redrawn at most every ``REDRAW`` seconds, so a live source updates at a modest rate
and a large file never blocks the interface."""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from nbdscope.analysis.iohist import OFFSET_ZERO, bucket_floor
from nbdscope.analysis.iomap import ERROR, FINDING, RANGED, IoModel
from nbdscope.decoder import events as ev
from nbdscope.report.plotjson import alignment_series
from nbdscope.tui.base import BaseScreen

if TYPE_CHECKING:
    from nbdscope.tui.store import Store

FEED_CHUNK = 50_000  # store rows fed into the model per tick
REDRAW = 1.0  # seconds between redraws while data keeps coming
MAX_DRAWN = 4000  # scatter points drawn at most per plot (terminal cells are few); flagged ones always
PLOTS = ("iomap", "latency-time", "latency-dist", "sizes", "alignment", "throughput")
TITLES = {"iomap": "I/O map: offset (MiB) against time (s)", "latency-time": "Latency (µs) over time (s)",
          "latency-dist": "Latency distribution (replies per log2 µs bucket)",
          "sizes": "Request sizes (log2 bytes, as nbdkit-stats)", "alignment": "Offset alignment (log2 bytes)",
          "throughput": "Throughput (MiB/s) over time (s)"}
_KINDS = (ev.Request, ev.SimpleReply, ev.ReplyChunk)


class StoreFeeder:
    """Feeds one store's rows into an IoModel, in order, from where it stopped."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.model = IoModel()
        self.fed = 0
        self._index: dict[int, int] = {}  # store session index -> model session index

    def feed(self, limit: int = FEED_CHUNK) -> int:
        """Feed new rows; returns how many. The newest row waits while the source runs: the findings about a
        message arrive just after it, and its mark must be read once they have."""
        store = self.store
        end = len(store) if store.done else len(store) - 1
        end = min(end, self.fed + limit)
        if end <= self.fed:
            return 0
        if self.fed == 0:
            self.model.t0 = store.t0 or 0.0
        events, marks, session_of = store.events, store.marks, store.session_of
        for row in range(self.fed, end):
            e = events[row]
            kind = type(e)
            if kind not in _KINDS:
                continue
            s = session_of[row]
            m = self._index.get(s)
            if m is None:
                m = self._index[s] = self.model.session(store.sessions[s])
            if kind is ev.Request:
                self.model.request(m, e, bool(marks[row]))  # type: ignore[arg-type]
            else:
                self.model.reply(m, e, bool(marks[row]))  # type: ignore[arg-type]
        done, self.fed = end - self.fed, end
        return done


_FEEDERS: weakref.WeakKeyDictionary[Store, StoreFeeder] = weakref.WeakKeyDictionary()


def feeder_for(store: Store) -> StoreFeeder:
    feeder = _FEEDERS.get(store)
    if feeder is None:
        feeder = _FEEDERS[store] = StoreFeeder(store)
    return feeder


def _thin(indices: list[int], flags: list[int]) -> list[int]:
    """At most MAX_DRAWN of the indices, evenly spread, plus every flagged one."""
    if len(indices) <= MAX_DRAWN:
        return indices
    step = -(-len(indices) // MAX_DRAWN)
    return [i for n, i in enumerate(indices) if not n % step or flags[i] & (ERROR | FINDING)]


class PlotsScreen(BaseScreen):
    """What the disk saw, for every session in the store (``e`` steps the I/O map through the exports)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "app.pop_screen", "Back"),
                                             Binding("e", "next_export", "Next export")]
    DEFAULT_CSS = """
    PlotsScreen Grid { grid-size: 2 3; grid-gutter: 0 1; }
    PlotsScreen #plots-status { height: 1; padding: 0 1; background: $boost; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.group = 0
        self._drawn_at = 0.0
        self._stale = True

    def compose(self) -> ComposeResult:
        yield Static(id="plots-status")
        with Grid():
            for kind in PLOTS:
                yield PlotextPlot(id=f"plot-{kind}")
        yield Footer()

    @property
    def feeder(self) -> StoreFeeder:
        return feeder_for(self.store)

    def on_mount(self) -> None:
        self.tick()
        self.redraw()

    def tick(self) -> None:
        if self.feeder.feed():
            self._stale = True
        if self._stale and time.monotonic() - self._drawn_at >= REDRAW:
            self.redraw()

    def action_next_export(self) -> None:
        groups = len(self.feeder.model.as_json()["groups"])
        self.group = (self.group + 1) % max(1, groups)
        self.redraw()

    def redraw(self) -> None:
        self._drawn_at, self._stale = time.monotonic(), False
        data = self.feeder.model.as_json()
        p = data["points"]
        groups = data["groups"]
        self.group = min(self.group, max(0, len(groups) - 1))
        where = ""
        if groups:
            g = groups[self.group]
            name = repr(g["export"]) if g["export"] else "(default)"
            where = f" · I/O map of export {name} on {g['server']} ({self.group + 1} of {len(groups)}, e: next)"
        state = "" if self.store.done else " · updating"
        self.query_one("#plots-status", Static).update(
            f"{p['requests']:,} requests, {p['kept']:,} drawn{where}{state}")
        for kind in PLOTS:
            widget = self.query_one(f"#plot-{kind}", PlotextPlot)
            plt = widget.plt
            plt.clear_data()
            plt.clear_figure()
            plt.title(TITLES[kind])
            getattr(self, "_" + kind.replace("-", "_"))(plt, data)
            widget.refresh()

    # ------------------------------------------------------------ one plot each

    def _iomap(self, plt: Any, data: dict[str, Any]) -> None:
        p = data["points"]
        members = {i for i, s in enumerate(data["sessions"]) if s["group"] == self.group}
        idx = _thin([i for i in range(p["kept"]) if p["session"][i] in members and p["command"][i] in RANGED],
                    p["flags"])
        self._scatter(plt, data, idx, [p["offset"][i] / 2**20 for i in range(p["kept"])])

    def _latency_time(self, plt: Any, data: dict[str, Any]) -> None:
        p = data["points"]
        idx = _thin([i for i in range(p["kept"]) if p["latency_us"][i] is not None], p["flags"])
        self._scatter(plt, data, idx, [v if v is not None else 0.0 for v in p["latency_us"]])

    def _scatter(self, plt: Any, data: dict[str, Any], idx: list[int], y: list[float]) -> None:
        p, names = data["points"], data["commands"]
        by: dict[str, list[int]] = {}
        for i in idx:
            by.setdefault(names[str(p["command"][i])].removeprefix("NBD_CMD_").lower(), []).append(i)
        for name, rows in by.items():
            plt.scatter([p["t"][i] for i in rows], [y[i] for i in rows], label=name, marker="dot")
        errs = [i for i in idx if p["flags"][i] & ERROR]
        finds = [i for i in idx if p["flags"][i] & FINDING]
        if errs:
            plt.scatter([p["t"][i] for i in errs], [y[i] for i in errs], label="error", marker="x", color="red")
        if finds:
            plt.scatter([p["t"][i] for i in finds], [y[i] for i in finds], label="finding", marker="o",
                        color="white")

    def _latency_dist(self, plt: Any, data: dict[str, Any]) -> None:
        for name, buckets in data["latency"]["buckets"].items():
            xs = sorted(int(b) for b in buckets)
            plt.plot([bucket_floor(b) for b in xs], [buckets[str(b)] for b in xs],
                     label=name.removeprefix("NBD_CMD_").lower(), marker="braille")
        if data["latency"]["buckets"]:
            plt.xscale("log")

    def _bars(self, plt: Any, series: dict[str, dict[int, int]], label: Any) -> None:
        buckets = sorted({b for per in series.values() for b in per})
        if not buckets:
            return
        plt.multiple_bar([label(b) for b in buckets], [[per.get(b, 0) for b in buckets] for per in series.values()],
                         labels=[n.removeprefix("NBD_CMD_").lower() for n in series])

    def _sizes(self, plt: Any, data: dict[str, Any]) -> None:
        self._bars(plt, {n: {int(c): v[0] for c, v in h["sizes"].items()} for n, h in data["sizes"].items()},
                   lambda c: "0" if c < 0 else str(c))

    def _alignment(self, plt: Any, data: dict[str, Any]) -> None:
        series = alignment_series(data)
        self._bars(plt, series, lambda a: "off0" if a == OFFSET_ZERO else str(a))

    def _throughput(self, plt: Any, data: dict[str, Any]) -> None:
        tp = data["throughput"]
        width = tp["bin_s"]
        for key, colour in (("read", "blue"), ("write", "orange")):
            values = tp[key]
            if any(values):
                plt.plot([i * width for i in range(len(values))], [v / width / 2**20 for v in values], label=key,
                         color=colour, marker="braille")
