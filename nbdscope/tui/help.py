"""The key help, with the filter language's help generated from its terms (nbdscope/filter)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown

from nbdscope.filter import help_markdown

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
