"""The filter language of the message table (also used by search).

    expr   := term ( ["and"] term | "or" term )*        juxtaposition means and
    term   := "not" term | "!" term | "(" expr ")" | field OP value | word
    OP     := = != < <= > >=        value: number (0x.., K/M/G suffix), name, or A..B (inclusive range)

Fields: type, cmd, dir, session (s), cookie, offset, length (len), range (A..B: the
bytes a message covers overlap A..B), frame, time (seconds), latency (us), error,
rule, severity. Words: errors, anomalies, requests, replies, handshake, c2s, s2c,
or any other text, which matches the message type or command name.
See the README ("The terminal UI") for examples.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from nbdscope.analysis.anomaly import SEVERITY_RANK
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, ERRORS
from nbdscope.tui import fields as F
from nbdscope.tui.store import Store

Predicate = Callable[[Store, int], bool]

_TOKEN = re.compile(r"\s*(\(|\)|!=|<=|>=|=|<|>|!|[^\s()!=<>]+)")
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_FIELDS = {"type", "cmd", "command", "dir", "session", "s", "cookie", "offset", "length", "len", "range", "frame",
           "time", "latency", "error", "rule", "severity"}
_NUMERIC = {"cookie", "offset", "length", "len", "frame", "time", "latency"}


class FilterError(ValueError):
    """The expression cannot be understood; the message says where."""


def _number(text: str, what: str) -> float:
    t = text.strip().lower()
    try:
        if t.startswith("0x"):
            return int(t, 16)
        if t and t[-1] in _UNITS:
            return float(t[:-1]) * _UNITS[t[-1]]
        return float(t) if "." in t or "e" in t else int(t)
    except ValueError:
        raise FilterError(f"{what}: {text!r} is not a number") from None


def _cmp(op: str, low: float, high: float) -> Callable[[float | None], bool]:
    if op == "=":
        return lambda v: v is not None and low <= v <= high
    if op == "!=":
        return lambda v: v is None or not low <= v <= high
    if op == "<":
        return lambda v: v is not None and v < low
    if op == "<=":
        return lambda v: v is not None and v <= high
    if op == ">":
        return lambda v: v is not None and v > high
    return lambda v: v is not None and v >= low


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[str] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise FilterError(f"cannot read {text[pos:]!r}")
            self.tokens.append(m.group(1))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise FilterError("expression ends too early")
        self.i += 1
        return tok

    def expr(self) -> Predicate:
        left = self.term()
        while True:
            tok = self.peek()
            if tok is None or tok == ")":
                return left
            if tok.lower() == "or":
                self.take()
                right = self.term()
                left = (lambda a, b: lambda s, r: a(s, r) or b(s, r))(left, right)
            else:
                if tok.lower() == "and":
                    self.take()
                right = self.term()
                left = (lambda a, b: lambda s, r: a(s, r) and b(s, r))(left, right)

    def term(self) -> Predicate:
        tok = self.take()
        if tok.lower() == "not" or tok == "!":
            inner = self.term()
            return lambda s, r: not inner(s, r)
        if tok == "(":
            inner = self.expr()
            if self.peek() != ")":
                raise FilterError("missing )")
            self.take()
            return inner
        if tok == ")":
            raise FilterError("unexpected )")
        nxt = self.peek()
        if nxt in ("=", "!=", "<", "<=", ">", ">="):
            self.take()
            return _field(tok.lower(), nxt, self.take())
        return _word(tok)


def _word(word: str) -> Predicate:
    w = word.lower()
    if w in ("errors", "error", "err"):
        return lambda s, r: F.is_error(s.events[r])
    if w in ("anomalies", "anomaly", "anomalous", "bad"):
        return lambda s, r: s.marks[r] > 0
    if w in ("requests", "request", "req"):
        return lambda s, r: isinstance(s.events[r], ev.Request)
    if w in ("replies", "reply"):
        return lambda s, r: isinstance(s.events[r], ev.Reply)
    if w in ("handshake", "transmission"):
        return lambda s, r: s.events[r].phase == w
    if w in ("c2s", "s2c"):
        return lambda s, r: s.events[r].dir == w
    if re.fullmatch(r"s\d+", w):
        return lambda s, r: s.sessions[s.session_of[r]].id == w
    if w in _FIELDS:
        raise FilterError(f"{word}: a field needs a comparison, e.g. {word}=...")
    needle = w.upper()
    return lambda s, r: needle in F.type_name(s.events[r]) or needle in (F.command_name(s.events[r]) or "")


def _field(name: str, op: str, value: str) -> Predicate:
    if name not in _FIELDS:
        raise FilterError(f"unknown field {name!r} (fields: {', '.join(sorted(_FIELDS))})")
    if name in ("type", "cmd", "command", "dir", "session", "s", "error", "rule", "severity") and op not in ("=", "!="):
        raise FilterError(f"{name} compares only with = or !=")
    neg = op == "!="
    pred: Predicate
    if name == "type":
        needle = value.upper()
        pred = lambda s, r: needle in F.type_name(s.events[r])  # noqa: E731
    elif name in ("cmd", "command"):
        code = COMMANDS.by_name(value.upper())
        if code is None:
            raise FilterError(f"unknown command {value!r} (e.g. READ, WRITE, BLOCK_STATUS)")
        pred = lambda s, r: F.command(s.events[r]) == code.value  # noqa: E731
    elif name == "dir":
        d = {"c2s": "c2s", "s2c": "s2c", "->": "c2s", "<-": "s2c", "client": "c2s", "server": "s2c"}.get(value.lower())
        if d is None:
            raise FilterError("dir is c2s or s2c")
        pred = lambda s, r: s.events[r].dir == d  # noqa: E731
    elif name in ("session", "s"):
        sid = value if value.startswith("s") else f"s{value}"
        pred = lambda s, r: s.sessions[s.session_of[r]].id == sid  # noqa: E731
    elif name == "error":
        if value.lower() in ("any", "yes", "true"):
            pred = lambda s, r: F.is_error(s.events[r])  # noqa: E731
        else:
            code = ERRORS.by_name(value.upper()) if not value[0].isdigit() else None
            number = code.value if code is not None else int(_number(value, "error"))
            pred = lambda s, r: F.error(s.events[r]) == number  # noqa: E731
    elif name == "rule":
        pred = lambda s, r: s.marks[r] > 0 and any(f.anomaly.rule == value for f in s.findings_for(r))  # noqa: E731
    elif name == "severity":
        if value.lower() not in SEVERITY_RANK:
            raise FilterError("severity is info, warning or error")
        mark = 1 + SEVERITY_RANK[value.lower()]
        pred = lambda s, r: s.marks[r] == mark  # noqa: E731
    else:
        low, high = _range(value, name)
        test = _cmp(op, low, high)
        if name == "range":
            if op not in ("=", "!="):
                raise FilterError("range compares only with = or !=, e.g. range=0..64K")

            def overlaps(s: Store, r: int) -> bool:
                e = s.events[r]
                off, ln = F.offset(e), F.length(e) or 0
                return off is not None and off <= high and off + max(ln, 1) > low

            return (lambda s, r: not overlaps(s, r)) if neg else overlaps
        getter: Callable[[Store, int], float | None] = {
            "cookie": lambda s, r: F.cookie(s.events[r]),
            "offset": lambda s, r: F.offset(s.events[r]),
            "length": lambda s, r: F.length(s.events[r]),
            "len": lambda s, r: F.length(s.events[r]),
            "frame": lambda s, r: s.events[r].frame,
            "time": lambda s, r: s.rel_time(r),
            "latency": lambda s, r: F.latency(s.events[r]),
        }[name]
        return lambda s, r: test(getter(s, r))
    return (lambda s, r: not pred(s, r)) if neg else pred


def _range(value: str, name: str) -> tuple[float, float]:
    if ".." in value:
        a, b = value.split("..", 1)
        low, high = _number(a, name), _number(b, name)
        if high < low:
            raise FilterError(f"{name}: empty range {value}")
        return low, high
    n = _number(value, name)
    return n, n


def compile_filter(text: str) -> Predicate | None:
    """A predicate over (store, row), or None for an empty expression (everything)."""
    if not text.strip():
        return None
    p = _Parser(text)
    pred = p.expr()
    if p.peek() is not None:
        raise FilterError(f"unexpected {p.peek()!r}")
    return pred
