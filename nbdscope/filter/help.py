"""The filter language's help, generated from the term definitions: plain text for a
terminal, rows for a table, Markdown for the TUI and docs/FILTER.md."""

from __future__ import annotations

import re
import textwrap
from typing import NamedTuple

from nbdscope.filter import values as V
from nbdscope.filter.terms import EXAMPLES, FIELDS, WORDS, MatchField, NumberField, Term

GRAMMAR = ("A term is `field OP value` or a word. OP is one of `=` `!=` `<` `<=` `>` `>=`, except for the fields "
           "shown with `=`, which take only `=` and `!=`. Terms are joined by `and` (or just a space) and `or`, "
           "negated by `not` or `!`, and grouped with parentheses; `not` binds tightest, then `and`, then `or`.")
WIDTH = 100  # of the plain text
VALUE_KINDS = (V.NUMBER, V.RANGE, V.TEXT, V.COMMAND, V.DIRECTION, V.SESSION, V.ERROR, V.SEVERITY, V.RULE)


class HelpRow(NamedTuple):
    kind: str  # "field" or "word"
    term: str  # how it is written, e.g. "cmd=COMMAND", "offset OP NUMBER", "errors"
    aliases: tuple[str, ...]  # other names of the same term
    matches: str  # the one-line help
    example: str


def _syntax(t: Term) -> str:
    if isinstance(t, MatchField):
        return f"{t.name}={t.value.name}"
    if isinstance(t, NumberField):
        return f"{t.name} OP {t.value.name}"
    return t.name


def help_rows() -> list[HelpRow]:
    """One row per term (fields first, then words), in definition order."""
    rows = [HelpRow("field", _syntax(f), f.aliases, f.help, f.example) for f in FIELDS]
    rows += [HelpRow("word", _syntax(w), w.aliases, w.help, w.example) for w in WORDS]
    return rows


def _plain(text: str) -> str:
    """Markdown code spans to plain text: words stay quoted (`and` -> "and"), operators go bare."""
    return re.sub(r"`([^`]*)`", lambda m: f'"{m.group(1)}"' if re.search("[a-z]", m.group(1)) else m.group(1), text)


def _wrapped(left: str, text: str, width: int) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=f"  {left:<{width}}  ", subsequent_indent=" " * (width + 4))


def help_text() -> str:
    """The whole help as plain text (no markup), for a terminal."""
    rows = help_rows()
    width = max(len(r.term) for r in rows)
    vwidth = max(len(k.name) for k in VALUE_KINDS)
    out = ["Filter expressions select messages.", "", *textwrap.wrap(_plain(GRAMMAR), WIDTH)]
    for kind, title in (("field", "Fields"), ("word", "Words")):
        out += ["", f"{title}:"]
        for r in rows:
            if r.kind == kind:
                out += _wrapped(r.term, r.matches + _extras(r), width)
    out += ["", "Values:"]
    for k in VALUE_KINDS:
        out += _wrapped(k.name, _plain(k.help), vwidth)
    ewidth = max(len(e) for e, _ in EXAMPLES)
    out += ["", "Examples:"]
    out += [f"  {e:<{ewidth}}  {what}" for e, what in EXAMPLES]
    return "\n".join(out) + "\n"


def _extras(r: HelpRow) -> str:
    bits = []
    if r.aliases:
        sep = "=" if r.kind == "field" else ""
        bits.append("also " + ", ".join(a + sep for a in r.aliases))
    if r.example != r.term:
        bits.append(f"e.g. {r.example}")
    return f" ({'; '.join(bits)})" if bits else ""


def help_markdown(heading: str = "## Filter language") -> str:
    """The help as Markdown under a heading: the grammar, a table of terms, the value kinds and examples."""
    out = [heading, "", GRAMMAR, "", "| term | matches |", "|---|---|"]
    for r in help_rows():
        sep = "=" if r.kind == "field" else ""
        names = ", ".join([f"`{r.term}`", *(f"`{a}{sep}`" for a in r.aliases)])
        example = "" if r.example == r.term else " (e.g. " + ", ".join(
            f"`{x.strip()}`" for x in r.example.split(",")) + ")"
        out.append(f"| {names} | {r.matches}{example} |")
    out += ["", "| value | is |", "|---|---|"]
    out += [f"| `{k.name}` | {k.help} |" for k in VALUE_KINDS]
    out += ["", "Examples: " + "; ".join(f"`{e}` ({what})" for e, what in EXAMPLES) + "."]
    return "\n".join(out) + "\n"
