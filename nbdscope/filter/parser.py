"""Tokenizer and parser of filter expressions: text to one predicate, or a FilterError
that says where the text went wrong. Precedence: `not` binds tightest, then `and`
(or plain juxtaposition), then `or`."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from nbdscope.analysis.anomaly import Anomaly
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.filter.terms import FIELDS, KEYWORDS, ORDERED, Context, Predicate, field_named, word_for

_TOKEN = re.compile(r"\(|\)|!=|<=|>=|=|<|>|!|[^\s()!=<>]+")
_VALUE = re.compile(r"[^\s()]+")  # right of an operator: anything up to a space or parenthesis (dir=<- too)


class FilterError(ValueError):
    """The expression cannot be understood. `position` is the 0-based index in the
    expression where it went wrong; str() is one line that names the column."""

    def __init__(self, reason: str, position: int, expr: str) -> None:
        super().__init__(f"column {position + 1}: {reason}")
        self.reason, self.position, self.expr = reason, position, expr


class Token(NamedTuple):
    kind: str  # "(", ")", "!", "op", "name", "value"
    text: str
    pos: int


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while True:
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
        if pos >= len(expr):
            return tokens
        after_op = bool(tokens) and tokens[-1].kind == "op"
        m = (_VALUE if after_op else _TOKEN).match(expr, pos)
        if m is None:  # only a parenthesis where a value belongs
            m = _TOKEN.match(expr, pos)
            after_op = False
        assert m is not None  # every non-space character starts some token
        text = m.group()
        if after_op:
            kind = "value"
        elif text in ("(", ")", "!"):
            kind = text
        elif text in ORDERED:
            kind = "op"
        else:
            kind = "name"
        tokens.append(Token(kind, text, pos))
        pos = m.end()


class _Parser:
    def __init__(self, expr: str, ctx: Context) -> None:
        self.expr, self.ctx = expr, ctx
        self.tokens = tokenize(expr)
        self.i = 0

    def fail(self, reason: str, pos: int | None = None) -> FilterError:
        return FilterError(reason, len(self.expr) if pos is None else pos, self.expr)

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def keyword(self) -> str | None:
        tok = self.peek()
        return tok.text.lower() if tok is not None and tok.kind == "name" and tok.text.lower() in KEYWORDS else None

    def take(self, what: str = "a term") -> Token:
        tok = self.peek()
        if tok is None:
            raise self.fail(f"expression ends too early: {what} is missing")
        self.i += 1
        return tok

    def disjunction(self) -> Predicate:
        left = self.conjunction()
        while self.keyword() == "or":
            self.i += 1
            right = self.conjunction()
            left = (lambda a, b: lambda s, e, f: a(s, e, f) or b(s, e, f))(left, right)
        return left

    def conjunction(self) -> Predicate:
        left = self.unary()
        while True:
            tok = self.peek()
            if tok is None or tok.kind == ")" or self.keyword() == "or":
                return left
            if self.keyword() == "and":
                self.i += 1
            right = self.unary()
            left = (lambda a, b: lambda s, e, f: a(s, e, f) and b(s, e, f))(left, right)

    def unary(self) -> Predicate:
        tok = self.peek()
        if tok is not None and (tok.kind == "!" or self.keyword() == "not"):
            self.i += 1
            inner = self.unary()
            return lambda s, e, f: not inner(s, e, f)
        return self.atom()

    def atom(self) -> Predicate:
        tok = self.take()
        if tok.kind == "(":
            inner = self.disjunction()
            close = self.peek()
            if close is None or close.kind != ")":
                raise self.fail(f"missing ) for the ( at column {tok.pos + 1}", close.pos if close else None)
            self.i += 1
            return inner
        if tok.kind == ")":
            raise self.fail("unexpected )", tok.pos)
        if tok.kind == "op":
            raise self.fail(f"a field name must come before {tok.text}", tok.pos)
        if tok.text.lower() in KEYWORDS:
            raise self.fail(f"a term is missing before {tok.text!r}", tok.pos)
        nxt = self.peek()
        if nxt is not None and nxt.kind == "op":
            self.i += 1
            return self.comparison(tok, nxt)
        return self.word(tok)

    def comparison(self, name: Token, op: Token) -> Predicate:
        fld = field_named(name.text)
        if fld is None:
            known = ", ".join(sorted(n for f in FIELDS for n in f.names))
            raise self.fail(f"unknown field {name.text!r} (fields: {known})", name.pos)
        if op.text not in fld.ops:
            raise self.fail(f"{fld.name} compares only with {' or '.join(fld.ops)}", op.pos)
        value = self.peek()
        if value is None or value.kind != "value":
            raise self.fail(f"a value must follow {name.text}{op.text}" if value else
                            f"expression ends too early: a value must follow {name.text}{op.text}",
                            value.pos if value else None)
        self.i += 1
        try:
            parsed = fld.value.parse(value.text)
        except ValueError as exc:
            raise self.fail(f"{fld.name}: {exc}", value.pos) from None
        return fld.predicate(op.text, parsed, self.ctx)

    def word(self, tok: Token) -> Predicate:
        term = word_for(tok.text)
        if term is None:
            raise self.fail(f"{tok.text}: a field needs a comparison, e.g. {tok.text}=...", tok.pos)
        return term.predicate(tok.text.lower())


def _everything(s: Session, e: ev.Event, f: Sequence[Anomaly]) -> bool:
    return True


def compile(expr: str, t0: Callable[[], float] | None = None) -> Predicate:
    """The predicate `pred(session, event, findings) -> bool` for a filter expression.

    `findings` are the anomalies attached to that message (possibly none); `t0` gives the
    time `time=` counts seconds from (the input's first packet; default 0, i.e. capture
    timestamps). An empty expression matches everything. Raises FilterError."""
    if not expr.strip():
        return _everything
    parser = _Parser(expr, Context(t0 or (lambda: 0.0)))
    pred = parser.disjunction()
    extra = parser.peek()
    if extra is not None:
        raise parser.fail("unexpected )" if extra.kind == ")" else f"unexpected {extra.text!r}", extra.pos)
    return pred
