"""Small widgets shared by the screens: the findings list and the sessions list."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from nbdscope.analysis.session import Session
from nbdscope.report.clock import TimeMode
from nbdscope.report.sessionpanel import SESSION_FLAGS
from nbdscope.tui.store import Store
from nbdscope.tui.times import moment

SEVERITY_STYLE = {"error": "bold red", "warning": "bold dark_orange3", "info": "dodger_blue2"}


def flags_summary(s: Session) -> str:
    if s.transmission_flags is None:
        return "?"
    names = [n.removeprefix("NBD_FLAG_") for n in SESSION_FLAGS.names(s.transmission_flags)]
    names = [n for n in names if n != "HAS_FLAGS"]
    return f"{s.transmission_flags:#x} " + ",".join(names)


class FindingsTable(DataTable[object]):
    """Anomalies: severity, check (the rule for a finding naming none), blame, session, frame, time, message.
    Enter jumps to the message."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Go to message", show=True)]

    def __init__(self, store: Store, session: str | None = None, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self.store = store
        self.session = session  # only this session's findings, when set
        self.shown = 0  # store.findings consumed so far
        self._last: float | None = None  # the time of the row above the next one (for delta times)

    def on_mount(self) -> None:
        self.add_columns("sev", "check", "blame", "ses", "frame", "time", "message")
        self.sync()

    def sync(self) -> None:
        """Append findings that arrived since the last call (they only ever grow)."""
        with self.store.lock:
            new = self.store.findings[self.shown:]
            self.shown = len(self.store.findings)
        mode: TimeMode = getattr(self.app, "time_mode", "rel")  # the NbdscopeApp's (--time, the c key)
        for i, f in enumerate(new, start=self.shown - len(new)):
            a = f.anomaly
            if self.session is not None and a.session != self.session:
                continue
            when = self.store.t0 + a.time  # a finding's time counts from the run's origin
            shown = moment(when, mode, self.store.t0, self.store.utc_offset, previous=self._last, short=True)
            self._last = when
            self.add_row(Text(a.severity, style=SEVERITY_STYLE.get(a.severity, "")), a.check or a.rule, a.blame,
                         a.session, str(a.frame), shown, a.message, key=str(i))

    def rebuild(self) -> None:
        """Write every row again (the time mode changed), keeping the cursor where it was."""
        where = self.cursor_row
        self.clear()
        self.shown, self._last = 0, None
        self.sync()
        if self.row_count:
            self.move_cursor(row=min(where, self.row_count - 1))

    def finding_index(self, row_key: object) -> int:
        return int(str(getattr(row_key, "value", row_key)))


class SessionsTable(DataTable[object]):
    """One row per NBD connection: endpoints, export, handshake, TLS, flags, messages, anomalies."""

    def __init__(self, store: Store, **kwargs: object) -> None:
        super().__init__(cursor_type="row", **kwargs)  # type: ignore[arg-type]
        self.store = store
        self._rows: dict[str, tuple[object, ...]] = {}

    def on_mount(self) -> None:
        for label, key in (("ses", "id"), ("client", "client"), ("server", "server"), ("export", "export"),
                           ("handshake", "hs"), ("TLS", "tls"), ("flags", "flags"), ("msgs", "msgs"),
                           ("anom", "anom"), ("end", "end")):
            self.add_column(label, key=key)
        self.sync()

    def sync(self) -> None:
        counts: dict[str, int] = {}
        with self.store.lock:
            for f in self.store.findings:
                counts[f.anomaly.session] = counts.get(f.anomaly.session, 0) + 1
        for s in list(self.store.sessions):
            n = counts.get(s.id, 0)
            values = (s.id, str(s.client), str(s.server), repr(s.export_name) if s.export_name is not None else "?",
                      s.handshake, "yes" if s.tls else "no", flags_summary(s), str(s.messages),
                      Text(str(n), style="bold red" if n else ""), s.disconnect)
            if s.id not in self._rows:
                self.add_row(*values, key=s.id)
            elif self._rows[s.id] != values:
                for col, value in zip(("id", "client", "server", "export", "hs", "tls", "flags", "msgs", "anom",
                                       "end"), values, strict=True):
                    self.update_cell(s.id, col, value)
            self._rows[s.id] = values

    def selected_session(self) -> str | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return str(key.value)
