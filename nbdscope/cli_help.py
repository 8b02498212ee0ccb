"""What `--help` shows beyond argparse's own: each option's default where one means something,
and the exit codes of each command in its epilog (docs/CONTRACT.md, "Exit codes", says the same).

`finish` is applied to the whole parser once it is built, so options and commands added later
get the same treatment without repeating it at every `add_argument`."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

# Each command's exit statuses, as (code, when); tests/unit/test_cli_help.py runs a case for every row.
_USAGE = (2, "usage error, unreadable input or internal error: one line on stderr (NBDSCOPE_DEBUG=1 for a traceback)")
EXIT_CODES: dict[str, tuple[tuple[int, str], ...]] = {
    "analyze": (
        (0, "report written; no finding at or over --fail-on (the default, never, always gives 0)"),
        (1, "a finding at or over the --fail-on severity"),
        _USAGE,
        (130, "interrupted by Ctrl-C"),
    ),
    "live": (
        (0, "stopped by Ctrl-C or SIGTERM (what was captured is decoded first); no finding at or over --fail-on"),
        (1, "stopped as above, with a finding at or over the --fail-on severity"),
        _USAGE,
    ),
    "proxy": (
        (0, "stopped by Ctrl-C or SIGTERM; open sessions got --grace seconds"),
        (2, "usage error, an address it cannot listen on, or the relay failed (its log lines say why)"),
    ),
    "tui": (
        (0, "the UI was quit"),
        (2, "usage error, unreadable input, or stdout is not a terminal"),
    ),
    "rules": (
        (0, "the catalogue, explanation or coverage was printed"),
        (2, "an unknown rule or check id, or a bad combination of options"),
    ),
}
TOP_EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success (also when the reader of stdout went away, as with `| head`)"),
    (1, "analyze, live: a finding at or over --fail-on"),
    (2, "usage error, unreadable input, internal error, or the proxy's relay failed"),
    (130, "analyze: interrupted by Ctrl-C"),
)


def epilog(codes: tuple[tuple[int, str], ...]) -> str:
    """The exit-code table, wrapped to 79 columns (argparse leaves a raw epilog as it is)."""
    rows = "\n".join(textwrap.fill(when, 79, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
                     for code, when in codes)
    return f"exit status:\n{rows}\n\nmore: README.md, docs/CONTRACT.md"


def has_default(action: argparse.Action) -> bool:
    """Whether the action's default says something a user needs: not unset, not off, not an empty list."""
    d = action.default
    if d is None or d is False or d is argparse.SUPPRESS:
        return False
    return not (isinstance(d, (list, tuple, str)) and len(d) == 0)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, keeping the epilog's layout and appending "(default: X)" to each option
    whose default means something and whose help does not already place it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if has_default(action) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands by name."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choices: dict[str, Any] = action.choices
            found.update(choices)
    return found


def finish(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give the parser and every command the formatter and their exit-code epilog."""
    parser.formatter_class = HelpFormatter
    parser.epilog = epilog(TOP_EXIT_CODES)
    for name, command in subparsers(parser).items():
        command.formatter_class = HelpFormatter
        command.epilog = epilog(EXIT_CODES.get(name, TOP_EXIT_CODES))
    return parser
