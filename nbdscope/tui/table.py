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
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from nbdscope.decoder import events as ev
from nbdscope.tui import fields as F
from nbdscope.tui.store import NO_ROW, Store

MARKS = ("", "i", "!", "!")  # by store mark: none, info, warning, error
MARK_CLASSES = ("", "mtable--info", "mtable--warning", "mtable--error")


def _fit(text: str, width: int, right: bool = False) -> str:
    if len(text) > width:
        return ("…" + text[-(width - 1):]) if right else (text[:width - 1] + "…")
    return text.rjust(width) if right else text.ljust(width)


class MessageTable(ScrollView, can_focus=True):
    """Time, direction, type, cookie, offset, length, latency and an anomaly mark per message."""

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

    def __init__(self, store: Store, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store = store
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

    def _widths(self, width: int) -> tuple[int, int, int]:
        """Session, type and cookie column widths: the type column takes what is left, then the cookie."""
        sess = max(3, max((len(s.id) for s in self.store.sessions), default=3))
        fixed = 1 + 10 + sess + 1 + 12 + 9 + 8 + 8  # the other columns and the separating spaces
        type_w = max(10, min(26, width - fixed - 8))
        cookie_w = max(8, min(16, width - fixed - type_w))
        return sess, type_w, cookie_w

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        sess_w, type_w, cookie_w = self._widths(width)
        if y == 0:
            header = (f"{'':1} {'time':>10} {'ses':<{sess_w}} {'':1} {'type':<{type_w}} {'cookie':>{cookie_w}} "
                      f"{'offset':>12} {'length':>9} {'latency':>8}")
            style = self._style("mtable--header")
            return Strip([Segment(_fit(header, width), style)]).adjust_cell_length(width, style)
        index = self.scroll_offset.y + y - 1
        row = self.row_at(index)
        base = self._styles.get("") or self._styles.setdefault("", self.rich_style)
        if row == NO_ROW:
            return Strip.blank(width, base)
        store = self.store
        e = store.events[row]
        mark = store.marks[row]
        style = base
        if index == self.cursor:
            style = base + self._style("mtable--cursor")
        else:
            cur = self.current_row
            if cur != NO_ROW and (store.link[cur] == row or store.link[row] == cur):
                style = base + self._style("mtable--linked")
        body_style = style + self._style("mtable--s2c") if e.dir == "s2c" and index != self.cursor \
            else style
        cookie = F.cookie(e)
        offset, length, lat = F.offset(e), F.length(e), F.latency(e)
        text = (f" {store.rel_time(row):>10.6f} {_fit(store.session_id(row), sess_w)} "
                f"{'→' if e.dir == 'c2s' else '←'} {_fit(F.short_type(e), type_w)} "
                f"{_fit(f'{cookie:x}' if cookie is not None else '', cookie_w, True)} "
                f"{_fit(str(offset) if offset is not None else '', 12, True)} "
                f"{_fit(str(length) if length is not None else '', 9, True)} "
                f"{_fit(F.fmt_latency(lat), 8, True)}")
        segments = [Segment(MARKS[mark] or " ", style + self._style(MARK_CLASSES[mark])
                            if mark else style)]
        if mark or isinstance(e, ev.Malformed):
            cls = MARK_CLASSES[mark] if mark else "mtable--error"
            body_style = body_style + Style(bold=True) + self._style(cls) \
                if index != self.cursor else body_style
        segments.append(Segment(text, body_style))
        return Strip(segments).crop(0, width).adjust_cell_length(width, style)
