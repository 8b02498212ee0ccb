"""The first screen: the sessions and the findings, with each finding's explanation."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Label, Static

from nbdscope.tui import detail as D
from nbdscope.tui.base import BaseScreen
from nbdscope.tui.summary import SummaryScreen
from nbdscope.tui.widgets import FindingsTable, SessionsTable


class OverviewScreen(BaseScreen):
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

