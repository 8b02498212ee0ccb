"""The question asked before quitting a live proxy with clients connected: quitting closes their
sessions, which a stray `q` should not do unasked."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


def quit_question(open_sessions: int) -> str:
    them = "it" if open_sessions == 1 else "them"
    return f"{open_sessions} session{'' if open_sessions == 1 else 's'} open: quit and close {them}? y/n"


class ConfirmQuit(ModalScreen[bool]):
    """Dismissed with True on `y`, False on `n` or escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Quit, closing the sessions"),
        Binding("n,escape", "answer(False)", "Stay"),
    ]
    DEFAULT_CSS = """
    ConfirmQuit { align: center middle; }
    ConfirmQuit > Vertical { width: auto; height: auto; padding: 1 2; border: thick $warning; background: $surface; }
    ConfirmQuit Static { width: auto; }
    """

    def __init__(self, open_sessions: int) -> None:
        super().__init__()
        self.question = quit_question(open_sessions)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question)

    def action_answer(self, quit_now: bool) -> None:
        self.dismiss(quit_now)
