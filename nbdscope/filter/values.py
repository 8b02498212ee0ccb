"""The kinds of value a filter field compares against, each with its help line and
its parser. A parser raises ValueError with a short reason; the parser of the
expression adds where the value stands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbdscope.analysis.anomaly import SEVERITY_RANK
from nbdscope.analysis.rules import ALL_RULES
from nbdscope.spec import COMMANDS, ERRORS
from nbdscope.spec.tables import CodeTable

UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
DIRECTIONS = {"c2s": "c2s", "s2c": "s2c", "client": "c2s", "server": "s2c", "->": "c2s", "<-": "s2c"}
RULE_IDS = frozenset(r.INFO.id for r in ALL_RULES)
ANY_ERROR = "any"  # error=any: every message counted as an error


@dataclass(frozen=True)
class ValueKind:
    """What may stand right of a field's operator."""

    name: str  # placeholder in the help, e.g. NUMBER
    help: str
    parse: Callable[[str], Any]


def number(text: str) -> float:
    """Decimal, 0x hex, a decimal fraction or exponent, each optionally with a binary K/M/G/T suffix."""
    t = text.strip().lower()
    try:
        if t.startswith("0x"):
            return int(t, 16)
        if t and t[-1] in UNITS:
            return float(t[:-1]) * UNITS[t[-1]]
        return float(t) if "." in t or "e" in t else int(t)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def number_range(text: str) -> tuple[float, float]:
    """`A..B` (inclusive) or a single number N, which is the range N..N."""
    if ".." in text:
        a, b = text.split("..", 1)
        low, high = number(a), number(b)
        if high < low:
            raise ValueError(f"empty range {text}")
        return low, high
    n = number(text)
    return n, n


def _named(table: CodeTable, text: str, what: str, examples: str) -> int:
    """The value a spec name stands for (with or without its prefix: READ or NBD_CMD_READ)."""
    code = table.by_name(text.upper())
    if code is None:
        raise ValueError(f"unknown {what} {text!r} (e.g. {examples})")
    return code.value


def _command(text: str) -> int:
    return _named(COMMANDS, text, "command", "READ, WRITE, BLOCK_STATUS")


def _one_of(choices: dict[str, Any], text: str, expected: str) -> Any:
    """The value a word of a small fixed vocabulary stands for, whatever its case."""
    value = choices.get(text.lower())
    if value is None:
        raise ValueError(f"expected {expected}, not {text!r}")
    return value


def _direction(text: str) -> str:
    return str(_one_of(DIRECTIONS, text, "c2s or s2c"))


def _session(text: str) -> str:
    return text if text.startswith("s") else f"s{text}"


def _error(text: str) -> int | str:
    if text.lower() in (ANY_ERROR, "yes", "true"):
        return ANY_ERROR
    if text[0].isdigit():
        return int(number(text))
    return _named(ERRORS, text, "error", "EINVAL, EIO, 22, or any")


def _severity(text: str) -> int:
    return int(_one_of(SEVERITY_RANK, text, "info, warning or error"))


def _rule(text: str) -> str:
    if text not in RULE_IDS:
        raise ValueError(f"unknown rule {text!r} (`nbdscope rules` lists them)")
    return text


NUMBER = ValueKind("NUMBER", "a number or an inclusive range A..B; 0x hex, binary K M G T suffixes (0.5K is 512)",
                   number_range)
RANGE = ValueKind("A..B", "an inclusive byte range (or one byte N), numbers as for NUMBER", number_range)
TEXT = ValueKind("TEXT", "any text, compared without regard to case", str.upper)
COMMAND = ValueKind("COMMAND", "a command name with or without NBD_CMD_: READ, WRITE, BLOCK_STATUS, ...", _command)
DIRECTION = ValueKind("DIR", "c2s (also client) or s2c (also server)", _direction)
SESSION = ValueKind("SESSION", "a session id, s2 or just 2", _session)
ERROR = ValueKind("ERROR", "an error name (EINVAL), its number (22), or any", _error)
SEVERITY = ValueKind("SEVERITY", "info, warning or error", _severity)
RULE = ValueKind("RULE", "a rule id as `nbdscope rules` lists it, e.g. unaligned-extent", _rule)
