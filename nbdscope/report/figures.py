"""The HTML report's charts, drawn with matplotlib from the plot data (``plotjson``) as inline SVG.

Only the figure API is used (no pyplot), so nothing global is touched and no display is needed.
Dense marks (the I/O map, latency over time) are rasterised inside the SVG, which keeps a page of
tens of thousands of requests small; text is drawn as paths, so the page needs no font. No text
from the capture goes into a figure: export names and endpoints are written by the page, escaped."""

from __future__ import annotations

import io
import math
import re
from typing import Any

from nbdscope.analysis.iohist import OFFSET_ZERO, bucket_floor
from nbdscope.report.plotjson import alignment_series

MAX_MAPS = 6  # I/O maps drawn, one per export group, the groups with most requests first
COLOURS = {
    "NBD_CMD_READ": "#1f77b4", "NBD_CMD_WRITE": "#ff7f0e", "NBD_CMD_TRIM": "#2ca02c",
    "NBD_CMD_WRITE_ZEROES": "#9467bd", "NBD_CMD_CACHE": "#8c564b", "NBD_CMD_BLOCK_STATUS": "#7f7f7f",
    "NBD_CMD_FLUSH": "#e377c2", "NBD_CMD_RESIZE": "#bcbd22",
}
ERROR_COLOUR = "#d62728"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human(n: float) -> str:
    """Bytes with a binary unit, short enough for an axis label."""
    i = 0
    while abs(n) >= 1024 and i < len(_UNITS) - 1:
        n /= 1024
        i += 1
    return f"{n:.0f} {_UNITS[i]}" if n == int(n) else f"{n:.1f} {_UNITS[i]}"


def _short(name: str) -> str:
    return name.removeprefix("NBD_CMD_").lower()


def _colour(name: str) -> str:
    return COLOURS.get(name, "#17becf")


def _figure(height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, height), dpi=100)
    fig.subplots_adjust(left=0.09, right=0.86, bottom=0.17, top=0.96)
    return fig, fig.add_subplot()


def _svg(fig: Any) -> str:
    """The figure as an SVG element for inlining (no XML prolog, no doctype, no creation date)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "nbdscope", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def pow2_ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Tick positions at multiples of a power of two (whole KiB, MiB... read better than 976.6 KiB)."""
    span = max(hi - lo, 1.0)
    step = 2.0 ** max(0, math.ceil(math.log2(span / most)))
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) // step) + 1)]


def _bytes_axis(axis: Any) -> None:
    from matplotlib.ticker import FuncFormatter, Locator

    class Pow2(Locator):
        def __call__(self) -> list[float]:
            lo, hi = self.axis.get_view_interval()  # type: ignore[union-attr]
            return pow2_ticks(lo, hi)

    axis.set_major_locator(Pow2())
    axis.set_major_formatter(FuncFormatter(lambda v, _: human(v) if v >= 0 else ""))


def _log_axis(ax: Any, which: str, lo: float, hi: float) -> None:
    """A logarithmic axis labelled in plain numbers (500, 1000, 2000 rather than 5 x 10^2), when the values
    span more than a decade; a linear one when they do not (a log axis there would have no labelled tick)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if hi < 10 * max(lo, 1e-9):
        return
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _by_command(data: dict[str, Any], indices: list[int]) -> dict[str, list[int]]:
    p, names = data["points"], data["commands"]
    out: dict[str, list[int]] = {}
    for i in indices:
        out.setdefault(names[str(p["command"][i])], []).append(i)
    return out


def _marks(ax: Any, data: dict[str, Any], indices: list[int], y: list[float]) -> None:
    """Errors and findings on top of a scatter: red crosses and black rings."""
    from nbdscope.analysis.iomap import ERROR, FINDING

    p = data["points"]
    errs = [i for i in indices if p["flags"][i] & ERROR]
    finds = [i for i in indices if p["flags"][i] & FINDING]
    if errs:
        ax.scatter([p["t"][i] for i in errs], [y[i] for i in errs], marker="x", s=36, c=ERROR_COLOUR,
                   label="error reply", zorder=4)
    if finds:
        ax.scatter([p["t"][i] for i in finds], [y[i] for i in finds], marker="o", s=70, facecolors="none",
                   edgecolors="black", linewidths=1.2, label="has a finding", zorder=5)


def io_map(data: dict[str, Any], group: int) -> str:
    """Offset against time for one export: a vertical stroke per request over the range it touched."""
    from nbdscope.analysis.iomap import RANGED

    p = data["points"]
    members = {i for i, s in enumerate(data["sessions"]) if s["group"] == group}
    idx = [i for i in range(p["kept"]) if p["session"][i] in members and p["command"][i] in RANGED]
    fig, ax = _figure(3.8)
    offsets = [float(o) for o in p["offset"]]
    for name, rows in _by_command(data, idx).items():
        t = [p["t"][i] for i in rows]
        ax.vlines(t, [offsets[i] for i in rows], [offsets[i] + p["length"][i] for i in rows], colors=_colour(name),
                  linewidth=1.0, rasterized=True)
        ax.scatter(t, [offsets[i] for i in rows], s=9, c=_colour(name), label=_short(name), rasterized=True,
                   linewidths=0)
    _marks(ax, data, idx, offsets)
    size = data["groups"][group]["size"]
    if size:
        ax.set_ylim(0, size)
    _bytes_axis(ax.yaxis)
    ax.set_xlabel("seconds since the first packet")
    ax.set_ylabel("offset")
    ax.grid(alpha=0.3)
    if idx:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return _svg(fig)


def latency_over_time(data: dict[str, Any]) -> str:
    p = data["points"]
    idx = [i for i in range(p["kept"]) if p["latency_us"][i] is not None]
    fig, ax = _figure()
    lat = [v if v is not None else math.nan for v in p["latency_us"]]
    for name, rows in _by_command(data, idx).items():
        ax.scatter([p["t"][i] for i in rows], [max(lat[i], 0.1) for i in rows], s=9, c=_colour(name),
                   label=_short(name), rasterized=True, linewidths=0)
    _marks(ax, data, idx, [max(v, 0.1) if not math.isnan(v) else 0.1 for v in lat])
    if idx:
        _log_axis(ax, "y", min(lat[i] for i in idx), max(lat[i] for i in idx))
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_xlabel("seconds since the first packet")
    ax.set_ylabel("latency (µs)")
    ax.grid(alpha=0.3)
    return _svg(fig)


def latency_distribution(data: dict[str, Any]) -> str:
    """Per command, how many replies took how long (exact counts in logarithmic buckets)."""
    fig, ax = _figure()
    for name, buckets in data["latency"]["buckets"].items():
        lo, hi = min(int(b) for b in buckets), max(int(b) for b in buckets)
        counts = [buckets.get(str(b), 0) for b in range(lo, hi + 1)]  # empty buckets between as zeroes
        ax.stairs(counts, [bucket_floor(b) for b in range(lo, hi + 2)], color=_colour(name), label=_short(name),
                  linewidth=1.5)
    used = [int(b) for per in data["latency"]["buckets"].values() for b in per]
    if used:
        _log_axis(ax, "x", bucket_floor(min(used)), bucket_floor(max(used) + 1))
        ax.legend(fontsize="small")
    ax.set_xlabel("latency (µs)")
    ax.set_ylabel("replies")
    ax.grid(alpha=0.3)
    return _svg(fig)


def _bars(ax: Any, series: dict[str, dict[int, int]], label: Any) -> None:
    """Grouped bars: one group per bucket, one bar per command."""
    buckets = sorted({b for per in series.values() for b in per})
    width = 0.8 / max(1, len(series))
    for j, (name, per) in enumerate(series.items()):
        ax.bar([k + j * width for k in range(len(buckets))], [per.get(b, 0) for b in buckets], width=width,
               color=_colour(name), label=_short(name), align="edge")
    ax.set_xlim(-0.2, max(len(buckets), 6))
    slant = len(buckets) > 10
    ax.set_xticks([k + 0.4 for k in range(len(buckets))], [label(b) for b in buckets], rotation=45 if slant else 0,
                  ha="right" if slant else "center", fontsize="small")
    if slant:
        ax.figure.subplots_adjust(bottom=0.3)
    ax.set_ylabel("requests")
    ax.grid(alpha=0.3, axis="y")
    if series:
        ax.legend(fontsize="small")


def sizes(data: dict[str, Any]) -> str:
    """Requests by size class (as nbdkit-stats groups them: 2^N up to 2^(N+1)-1 bytes)."""
    series = {name: {int(c): v[0] for c, v in h["sizes"].items()} for name, h in data["sizes"].items()}
    fig, ax = _figure()
    _bars(ax, series, lambda c: "0 B" if c < 0 else human(2 ** c))
    ax.set_xlabel("request size (from)")
    return _svg(fig)


def alignments(data: dict[str, Any]) -> str:
    """Requests by the largest power of two dividing their offset."""
    series = alignment_series(data)
    fig, ax = _figure()
    _bars(ax, series, lambda a: "offset 0" if a == OFFSET_ZERO else human(2 ** a))
    ax.set_xlabel("offset alignment")
    return _svg(fig)


def throughput(data: dict[str, Any]) -> str:
    tp = data["throughput"]
    width = tp["bin_s"]
    fig, ax = _figure()
    for key, colour in (("read", _colour("NBD_CMD_READ")), ("write", _colour("NBD_CMD_WRITE"))):
        values = tp[key]
        if any(values):
            ax.stairs([v / width for v in values], [i * width for i in range(len(values) + 1)], color=colour,
                      label=key, linewidth=1.2)
    _bytes_axis(ax.yaxis)
    ax.set_xlabel("seconds since the first packet")
    ax.set_ylabel(f"bytes per second ({width:g} s bins)")
    ax.grid(alpha=0.3)
    if any(tp["read"]) or any(tp["write"]):
        ax.legend(fontsize="small")
    return _svg(fig)


def map_groups(data: dict[str, Any]) -> list[int]:
    """The export groups that get an I/O map: those with most requests, at most MAX_MAPS."""
    p = data["points"]
    count = [0] * len(data["groups"])
    for s in p["session"]:
        count[data["sessions"][s]["group"]] += 1
    ranked = sorted((g for g in range(len(count)) if count[g]), key=lambda g: (-count[g], g))
    return ranked[:MAX_MAPS]


def strip_ids(svg: str, prefix: str) -> str:
    """Make the ids inside one inlined SVG unique in the page (matplotlib names clip paths and images
    by a hash, and two figures may use the same)."""
    return re.sub(r'(id="|url\(#|href="#)([^")]+)', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
