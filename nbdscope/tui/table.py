"""A virtualised message table: only the visible rows are ever formatted.

It is a Line API ScrollView over the store's rows (or over a filtered view, an
array of row numbers), so its cost depends on the window height, not on how many
messages there are. The first line is a sticky column header.
"""

from __future__ import annotations

from array import array
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from nbdscope.decoder import events as ev
from nbdscope.report.clock import TimeMode
from nbdscope.tui import fields as F
from nbdscope.tui import times as T
from nbdscope.tui.columns import COLUMNS, Column, cell, fit
from nbdscope.tui.store import NO_ROW, Store

MARKS = ("", "i", "!", "!")  # by store mark: none, info, warning, error
MARK_CLASSES = ("", "mtable--info", "mtable--warning", "mtable--error")
WIDE_ABS = 140  # columns from which absolute times are written in full ISO 8601, date and offset included


class MessageTable(ScrollView, can_focus=True):
    """An anomaly mark, frame, time, session, direction, type, error, offset, length, latency and cookie per
    message, as many as the width holds (nbdscope.tui.columns)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "PgUp", show=False),
        Binding("pagedown,space", "page(1)", "PgDn", show=False),
        Binding("home,g", "edge(0)", "First", show=False),
        Binding("end,G", "edge(1)", "Last", show=False),
        Binding("r", "jump_link", "Req/Reply"),
        Binding("right_square_bracket", "next_anomaly(1)", "Next !", show=False),
        Binding("left_square_bracket", "next_anomaly(-1)", "Prev !", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"mtable--header", "mtable--cursor", "mtable--linked", "mtable--error",
                                             "mtable--warning", "mtable--info", "mtable--s2c"}
    DEFAULT_CSS = """
    MessageTable { scrollbar-size-vertical: 1; scrollbar-size-horizontal: 0; }
    MessageTable > .mtable--header { text-style: bold; background: $panel; color: $text; }
    MessageTable > .mtable--cursor { background: $accent 40%; }
    MessageTable:focus > .mtable--cursor { background: $accent; color: $text; text-style: bold; }
    MessageTable > .mtable--linked { background: $secondary 30%; }
    MessageTable > .mtable--error { color: $text-error; text-style: bold; }
    MessageTable > .mtable--warning { color: $text-warning; text-style: bold; }
    MessageTable > .mtable--info { color: $text-primary; }
    MessageTable > .mtable--s2c { color: $text-muted; }
    """

    cursor: reactive[int] = reactive(0, always_update=True, init=False)

    class Highlighted(Message):
        """The cursor moved to another message."""

        def __init__(self, table: MessageTable, row: int) -> None:
            super().__init__()
            self.table = table
            self.row = row  # store row, NO_ROW when the view is empty

    def __init__(self, store: Store, time_mode: TimeMode = "rel", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store = store
        self.time_mode: TimeMode = time_mode
        self._natural: dict[str, int] = {c.key: len(c.title) for c in COLUMNS}  # widest text seen per column
        self._natural["time"] = len(T.heading(time_mode))
        self._natural.update(mark=1, dir=1, latency=len("9999.9ms"))
        self._layout: list[tuple[Column, int]] = []
        self._frame_cells: dict[int, dict[str, str]] = {}  # the cells of the rows being drawn, by view index
        self._short = False  # whether the last screen wrote absolute times as the time of day only
        self.view: array[int] | None = None  # None: every row of the store
        self.count = 0
        self.follow = False
        self._styles: dict[str, Style] = {}  # component class -> rich style, until the CSS or theme changes

    def notify_style_update(self) -> None:
        self._styles.clear()
        super().notify_style_update()

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(name)
        return style

    # ---------------------------------------------------------------- content

    def set_view(self, view: array[int] | None, keep_row: int | None = None) -> None:
        """Show these rows (None: all); keep the cursor on ``keep_row`` if it is shown."""
        self.view = view
        self.count = len(view) if view is not None else len(self.store)
        self._resize()
        target = 0
        if keep_row is not None and keep_row != NO_ROW:
            target = self.index_of(keep_row)
        self.cursor = min(target, max(0, self.count - 1))

    def grow(self, count: int) -> None:
        """The view gained rows at its end (live append)."""
        if count == self.count:
            return
        self.count = count
        self._resize()
        if self.follow:
            self.cursor = max(0, count - 1)
        else:
            self.refresh()

    def _resize(self) -> None:
        self.virtual_size = Size(self.size.width, self.count + 1)
        self.refresh()

    def row_at(self, index: int) -> int:
        if not 0 <= index < self.count:
            return NO_ROW
        return self.view[index] if self.view is not None else index

    def index_of(self, row: int) -> int:
        """Index in the view of a store row, or of the nearest row shown before it."""
        if self.view is None:
            return min(row, self.count - 1)
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.view[mid] < row:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.count and self.view[lo] == row:
            return lo
        return max(0, lo - 1)

    @property
    def current_row(self) -> int:
        return self.row_at(self.cursor)

    def go_to_row(self, row: int) -> bool:
        """Put the cursor on a store row; False when the current view hides it."""
        index = self.index_of(row)
        self.cursor = index
        return self.row_at(index) == row

    # ---------------------------------------------------------------- cursor

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, self.count - 1)) if self.count else 0

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.Highlighted(self, self.current_row))

    def _scroll_to_cursor(self) -> None:
        if not self.size.height:
            return  # not laid out yet: on_resize will do it
        top = self.scroll_offset.y
        visible = max(1, self.size.height - 1)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False, immediate=True)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, self.count + 1)
        self._scroll_to_cursor()

    def action_move(self, delta: int) -> None:
        self.follow = False if delta < 0 else self.follow
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        if direction < 0:
            self.follow = False
        self.cursor += direction * max(1, self.size.height - 2)

    def action_edge(self, end: int) -> None:
        if not end:
            self.follow = False
        self.cursor = self.count - 1 if end else 0

    def action_jump_link(self) -> None:
        row = self.current_row
        if row == NO_ROW:
            return
        other = self.store.link[row]
        if other == NO_ROW:
            self.notify("no linked request or reply for this message", severity="warning")
            return
        self.follow = False
        if not self.go_to_row(other):
            self.notify("the linked message is hidden by the filter", severity="warning")

    def action_next_anomaly(self, direction: int) -> None:
        marks = self.store.marks
        i = self.cursor + direction
        while 0 <= i < self.count:
            if marks[self.row_at(i)]:
                self.follow = False
                self.cursor = i
                return
            i += direction
        self.notify("no further anomalous message in this view")

    def on_click(self, event: object) -> None:
        y = getattr(event, "y", 0)
        if y >= 1:
            self.cursor = self.scroll_offset.y + y - 1

    # ---------------------------------------------------------------- drawing

    def set_time_mode(self, mode: TimeMode) -> None:
        self.time_mode = mode
        self._natural["time"] = len(T.heading(mode, self._short))  # the new mode's texts are measured afresh
        self.refresh()

    def _time_text(self, index: int, row: int, short: bool) -> str:
        store = self.store
        previous = None
        if self.time_mode == "delta" and index > 0:
            previous = store.events[self.row_at(index - 1)].time
        return T.moment(store.events[row].time, self.time_mode, store.t0, store.utc_offset, previous=previous,
                        short=short)

    def _cells(self, index: int, row: int, short: bool) -> dict[str, str]:
        """Every column's text for one row (the layout decides which are shown)."""
        store = self.store
        e = store.events[row]
        cookie, offset, length = F.cookie(e), F.offset(e), F.length(e)
        direction = F.shown_direction(e)
        return {
            "mark": MARKS[store.marks[row]] or " ",
            "frame": str(e.frame),
            "time": self._time_text(index, row, short),
            "ses": store.session_id(row),
            "dir": {"c2s": "→", "s2c": "←"}.get(direction or "", "?"),
            "type": F.short_type(e),
            "error": F.error_name(e),
            "offset": str(offset) if offset is not None else "",
            "length": str(length) if length is not None else "",
            "latency": F.fmt_latency(F.latency(e)),
            "cookie": f"{cookie:x}" if cookie is not None else "",
        }

    def _short_abs(self, width: int) -> bool:
        return width < WIDE_ABS

    def render_lines(self, crop: Region) -> list[Strip]:
        """Measure the rows about to be drawn first, so that one screen shares one set of widths
        (they only grow: scrolling never makes the columns jump back)."""
        width = self.scrollable_content_region.width
        short = self._short_abs(width)
        if short != self._short:  # the width crossed WIDE_ABS: absolute times change length
            self._short = short
            self._natural["time"] = len(T.heading(self.time_mode, short))
        top = self.scroll_offset.y
        self._frame_cells = {}
        for y in range(crop.y, crop.y + crop.height):
            index = top + y - 1
            row = self.row_at(index) if y >= 1 else NO_ROW
            if row == NO_ROW:
                continue
            cells = self._frame_cells[index] = self._cells(index, row, short)
            for key, text in cells.items():
                if key != "type" and len(text) > self._natural.get(key, 0):
                    self._natural[key] = len(text)
        layout = fit(self._natural, width)
        if layout != self._layout:
            self._layout = layout
            self._styles_cache.clear()  # lines kept from before were laid out with the old widths
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        layout = self._layout or fit(self._natural, width)
        if y == 0:
            titles = {"time": T.heading(self.time_mode, self._short_abs(width))}
            header = " ".join(cell(titles.get(c.key, c.title), w, c.right) for c, w in layout)
            style = self._style("mtable--header")
            return Strip([Segment(cell(header, width), style)]).adjust_cell_length(width, style)
        index = self.scroll_offset.y + y - 1
        row = self.row_at(index)
        base = self._styles.get("") or self._styles.setdefault("", self.rich_style)
        if row == NO_ROW:
            return Strip.blank(width, base)
        store = self.store
        e = store.events[row]
        mark = store.marks[row]
        cells = self._frame_cells.get(index) or self._cells(index, row, self._short_abs(width))
        style = base
        if index == self.cursor:
            style = base + self._style("mtable--cursor")
        else:
            cur = self.current_row
            if cur != NO_ROW and (store.link[cur] == row or store.link[row] == cur):
                style = base + self._style("mtable--linked")
        body_style = style + self._style("mtable--s2c") if F.shown_direction(e) == "s2c" and index != self.cursor \
            else style
        text = " ".join(cell(cells[c.key], w, c.right) for c, w in layout[1:])
        segments = [Segment(cells["mark"], style + self._style(MARK_CLASSES[mark]) if mark else style),
                    Segment(" ")]
        if mark or isinstance(e, ev.Malformed) or cells["error"]:
            cls = MARK_CLASSES[mark] if mark else "mtable--error"
            body_style = body_style + Style(bold=True) + self._style(cls) \
                if index != self.cursor else body_style
        segments.append(Segment(text, body_style))
        return Strip(segments).crop(0, width).adjust_cell_length(width, style)
