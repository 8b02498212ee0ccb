"""The filter language shared by every view: the TUI's filter bar and search, and the
CLI. `compile(expr)` gives a predicate over (session, event, findings); `help_text()`
describes the language, generated from the term definitions in terms.py."""

from nbdscope.filter.help import HelpRow, help_markdown, help_rows, help_text
from nbdscope.filter.parser import FilterError, compile
from nbdscope.filter.terms import Predicate

__all__ = ["FilterError", "HelpRow", "Predicate", "compile", "help_markdown", "help_rows", "help_text"]
