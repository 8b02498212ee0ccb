"""What every screen of the app shares: the app, its store, the time mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen

from nbdscope.tui.store import Store
from nbdscope.tui.times import moment

if TYPE_CHECKING:
    from nbdscope.tui.app import NbdscopeApp


class BaseScreen(Screen[None]):
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

